"""The calls role as ecallmgr is to Kazoo's apps, driven over the bus by the test itself in
place of the callflow app: it answers route_req with park, takes route_win, sends commands to
the Control-Queue and watches the call events. Real phones (pjsua2) through a real node.

- commands run one at a time in order; ``Insert-At`` ``head`` jumps the queue, ``tail``
  waits its turn, ``flush`` drops what is queued, ``now`` runs at once (a hangup during a
  ringing bridge cancels it);
- a bridge that fails reports its cause and ``sip:<code>`` in CHANNEL_EXECUTE_COMPLETE and
  the call waits for the next command;
- the call events of a bridged call, on both legs, in Kazoo's order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.calls.conftest import PBX, Phone, start_pbx, stop_pbx, wait_until
from tests.calls.fake_app import FakeApp
from tests.calls.fake_app import complete as _complete

pytestmark = pytest.mark.timeout(300)

REALM = "control.example.com"
ROLES_WITHOUT_CALLFLOW = ["ops", "registrar", "edge", "cdr", "calls"]


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    pbx = start_pbx(tmp_path_factory.mktemp("control"), roles=ROLES_WITHOUT_CALLFLOW)
    try:
        pbx.provision(REALM, ["1001", "2001", "2002"])
        yield pbx
    finally:
        stop_pbx(pbx)


def _endpoint(user: str, timeout: int = 20) -> dict[str, Any]:
    return {"Invite-Format": "contact", "To-User": user, "To-Realm": REALM,
            "Endpoint-Timeout": timeout}


def test_insert_at_head_tail_flush_now(pbx: PBX, app: FakeApp, tmp_path: Path,
                                       phones: list[Phone]) -> None:
    caller = Phone(pbx, "1001", tmp_path, record=False)
    ringing = Phone(pbx, "2001", tmp_path, record=False)  # rings, never answers
    phones += [caller, ringing]
    caller.registered()
    ringing.registered()
    caller.call("5000", REALM)
    call_id = str(caller.state("CALLING")["call_id"])
    wait_until(lambda: app.routed(call_id), timeout=10, what="route_win")

    # While a bridge rings (2 s), "tail" waits its turn and "head" jumps ahead of it.
    app.command(call_id, "bridge", Endpoints=[_endpoint("2001", 2)])
    ringing.incoming()
    app.command(call_id, "set", **{"Custom-Channel-Vars": {"Order": "tail"},
                                   "Custom-Call-Vars": {}, "Insert-At": "tail"})
    app.command(call_id, "set", **{"Custom-Channel-Vars": {"Order": "head"},
                                   "Custom-Call-Vars": {}, "Insert-At": "head"})
    failed = app.wait(call_id, _complete("bridge"), "the bridge's failure")[0]
    assert failed["Application-Response"] == "NO_ANSWER"
    assert failed["Hangup-Code"] == "sip:487"  # the unanswered leg was cancelled
    sets = app.wait(call_id, _complete("set"), "both set commands", count=2)
    assert [s["Custom-Channel-Vars"]["Order"] for s in sets] == ["head", "tail"]
    assert not any(e.get("state") == "DISCONNECTED" for e in caller.events)  # still there

    # "flush" drops what was queued behind the running bridge.
    app.command(call_id, "bridge", Endpoints=[_endpoint("2001", 2)])
    app.command(call_id, "set", **{"Custom-Channel-Vars": {"Flushed": "no"},
                                   "Custom-Call-Vars": {}})
    app.command(call_id, "set", **{"Custom-Channel-Vars": {"Kept": "yes"},
                                   "Custom-Call-Vars": {}, "Insert-At": "flush"})
    app.wait(call_id, _complete("bridge"), "the second bridge's failure", count=2)
    sets = app.wait(call_id, _complete("set"), "the flushing set", count=3)
    assert sets[2]["Custom-Channel-Vars"].get("Kept") == "yes"
    assert "Flushed" not in sets[2]["Custom-Channel-Vars"]

    # "now" does not wait: a hangup during a ringing bridge cancels it and ends the call.
    since = len(ringing.events)
    app.command(call_id, "bridge", Endpoints=[_endpoint("2001", 20)])
    ringing.wait_for(lambda e: e.get("event") == "incoming", after=since, what="third ring")
    app.command(call_id, "hangup", **{"Hangup-Cause": "USER_BUSY", "Insert-At": "now"})
    assert caller.state("DISCONNECTED")["code"] == 486
    ringing.wait_for(lambda e: e.get("event") == "state" and e["state"] == "DISCONNECTED",
                     after=since, what="the callee stopped ringing")
    destroy = app.wait(call_id, lambda e: e.get("Event-Name") == "CHANNEL_DESTROY", "destroy")[0]
    assert destroy["Hangup-Cause"] == "USER_BUSY"


def test_events_of_a_bridged_call(pbx: PBX, app: FakeApp, tmp_path: Path,
                                  phones: list[Phone]) -> None:
    caller = Phone(pbx, "1001", tmp_path, record=False)
    callee = Phone(pbx, "2002", tmp_path, answer_after=0.5, record=False)
    phones += [caller, callee]
    caller.registered()
    callee.registered()
    caller.call("5001", REALM)
    call_id = str(caller.state("CALLING")["call_id"])
    wait_until(lambda: app.routed(call_id), timeout=10, what="route_win")
    assert app.wins[call_id]["Custom-Channel-Vars"]["Authorizing-ID"] == pbx.devices["1001"]
    app.command(call_id, "bridge", Endpoints=[_endpoint("2002")])
    caller.state("CONFIRMED")
    callee.send(cmd="hangup")
    caller.state("DISCONNECTED")
    app.wait(call_id, lambda e: e.get("Event-Name") == "CHANNEL_DESTROY", "the A-leg's destroy")
    names = [e["Event-Name"] for e in app.seen(call_id, lambda e: True)]
    expected = ["CHANNEL_CREATE", "CHANNEL_EXECUTE", "CHANNEL_PROGRESS", "CHANNEL_ANSWER",
                "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_EXECUTE_COMPLETE",
                "CHANNEL_DESTROY"]
    assert [n for n in names if n in expected] == expected, names
    bridge = app.seen(call_id, lambda e: e.get("Event-Name") == "CHANNEL_BRIDGE")[0]
    b_call_id = str(bridge["Other-Leg-Call-ID"])
    app.wait(b_call_id, lambda e: e.get("Event-Name") == "CHANNEL_DESTROY", "the B-leg's destroy")
    b_names = [e["Event-Name"] for e in app.seen(b_call_id, lambda e: True)]
    assert b_names[0] == "CHANNEL_CREATE" and b_names[-1] == "CHANNEL_DESTROY", b_names
    assert {"CHANNEL_ANSWER", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE"} <= set(b_names)
    b_destroy = app.seen(b_call_id, lambda e: e.get("Event-Name") == "CHANNEL_DESTROY")[0]
    assert b_destroy["Other-Leg-Call-ID"] == call_id
    assert b_destroy["Call-Direction"] == "outbound"
    assert b_destroy["Hangup-Cause"] == "NORMAL_CLEARING"
