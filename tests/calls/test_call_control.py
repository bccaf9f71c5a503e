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

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.calls.conftest import PBX, Phone, start_pbx, stop_pbx, wait_until

pytestmark = pytest.mark.timeout(300)

REALM = "control.example.com"
ROLES_WITHOUT_CALLFLOW = ["ops", "registrar", "edge", "cdr", "calls"]


class FakeApp:
    """What the callflow app does on the bus, scripted by the test. Its bus lives in a thread
    of its own running a gevent hub, so it answers route_req while the test waits on phones."""

    def __init__(self, pbx: PBX) -> None:
        self.pbx = pbx
        self.events: list[dict[str, Any]] = []
        self.wins: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.outbox: queue.Queue[tuple[dict[str, Any], str] | None] = queue.Queue()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the fake app's bus did not start"

    def _run(self) -> None:
        import gevent

        from bus import Binding, connect
        from bus.api.route import route_resp

        bus = connect(self.pbx.node.env["MIRLITON_BUS__URL"], node="control-test",
                      data_dir=self.pbx.node.data_dir)

        def on_route_req(msg: dict[str, Any], delivery: Any) -> None:
            bus.reply(msg, route_resp.build({"Method": "park"}))

        def on_route_win(msg: dict[str, Any], delivery: Any) -> None:
            with self.lock:
                self.wins[str(msg["Call-ID"])] = msg

        def on_event(msg: dict[str, Any], delivery: Any) -> None:
            with self.lock:
                self.events.append(msg)

        bus.consume([Binding("callmgr", "route.req.#")], on_route_req)
        bus.on_targeted([("dialplan", "route_win")], on_route_win)
        bus.consume([Binding("callevt", "call.*.*")], on_event)
        self.ready.set()
        try:
            while True:
                try:
                    item = self.outbox.get_nowait()
                except queue.Empty:
                    gevent.sleep(0.01)
                    continue
                if item is None:
                    return
                bus.publish(item[0], routing_key=item[1])
        finally:
            bus.close()

    def command(self, call_id: str, application: str, **fields: Any) -> None:
        from bus.api.dialplan import COMMANDS

        with self.lock:
            win = self.wins[call_id]
        self.outbox.put((COMMANDS[application].build({"Call-ID": call_id, **fields}),
                         str(win["Control-Queue"])))

    def routed(self, call_id: str) -> bool:
        with self.lock:
            return call_id in self.wins

    def seen(self, call_id: str, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("Call-ID") == call_id and predicate(e)]

    def wait(self, call_id: str, predicate: Callable[[dict[str, Any]], bool], what: str,
             count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = wait_until(
            lambda: (lambda got: got if len(got) >= count else None)(self.seen(call_id, predicate)),
            timeout=timeout, interval=0.05, what=what)
        return found

    def close(self) -> None:
        self.outbox.put(None)
        self.thread.join(10)


def _complete(application: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (e.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE"
                      and e.get("Application-Name") == application)


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    pbx = start_pbx(tmp_path_factory.mktemp("control"), roles=ROLES_WITHOUT_CALLFLOW)
    try:
        pbx.provision(REALM, ["1001", "2001", "2002"])
        yield pbx
    finally:
        stop_pbx(pbx)


@pytest.fixture
def app(pbx: PBX) -> Iterator[FakeApp]:
    fake = FakeApp(pbx)
    try:
        yield fake
    finally:
        fake.close()


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
