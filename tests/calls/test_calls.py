"""Calls through a real node: pjsua2 phones register with digest through the edge, the
callflow app routes by the account's callflows, the calls shards bridge them (media direct
between the phones), CDRs land in the account's month database.

Every test runs twice: on the embedded defaults (local bus, embedded store) and with
``bus=amqp`` (a real RabbitMQ) and ``store=couchdb`` (the CouchDB-API server of the suite).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.calls.conftest import (
    PBX,
    Phone,
    backends,
    dominant_frequency,
    start_pbx,
    stop_pbx,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)

REALM = "calls.example.com"
TONE_A, TONE_B = 440.0, 1000.0


def _device(pbx: PBX, user: str, **data: object) -> dict[str, object]:
    return {"module": "device", "data": {"id": pbx.devices[user], **data}}


@pytest.fixture(scope="module", params=["embedded", "amqp+couchdb"])
def pbx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    pbx = start_pbx(tmp_path_factory.mktemp("calls"), **backends(request))
    try:
        pbx.provision(REALM, ["1001", "1002", "2001", "2002", "2003"])
        pbx.add_user("Bob", ["1002"])
        pbx.add_callflow(["1001"], _device(pbx, "1001"))
        pbx.add_callflow(["1002"], {"module": "user", "data": {"id": pbx.users["Bob"]}})
        pbx.add_callflow(["2100"], {**_device(pbx, "2001"),
                                    "children": {"_": _device(pbx, "2002")}})
        pbx.add_callflow(["2200"], {**_device(pbx, "2001", timeout=3),
                                    "children": {"_": _device(pbx, "2002")}})
        pbx.add_callflow(["2300"], {"module": "ring_group", "data": {
            "strategy": "simultaneous", "timeout": 20,
            "endpoints": [{"id": pbx.devices[u], "endpoint_type": "device"}
                          for u in ("2001", "2002", "2003")]}})
        pbx.add_callflow(["2400"], {"module": "ring_group", "data": {
            "strategy": "single",
            "endpoints": [{"id": pbx.devices["2001"], "endpoint_type": "device", "timeout": 2},
                          {"id": pbx.devices["2002"], "endpoint_type": "device", "timeout": 2},
                          {"id": pbx.devices["2003"], "endpoint_type": "device", "timeout": 10}]}})
        ring_2001 = pbx.add_callflow(["2500"], _device(pbx, "2001"))
        # Patterns (longest match wins), set_cid, and a jump to another callflow.
        pbx.add_callflow([], {"module": "set_cid", "data": {"caller_id_name": "Via Pattern",
                                                            "caller_id_number": "5550000"},
                              "children": {"_": {"module": "callflow",
                                                 "data": {"id": ring_2001}}}},
                         patterns=[r"^9(\d{4})$"])
        pbx.add_callflow([], {"module": "response", "data": {"code": 503}},
                         patterns=[r"^9"])
        always = pbx.add_doc("temporal_rule", {
            "name": "always", "cycle": "weekly", "interval": 1,
            "wdays": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                      "sunday"], "time_window_start": 0, "time_window_stop": 86400})
        never = pbx.add_doc("temporal_rule", {"name": "never", "cycle": "weekly", "wdays": [],
                                              "time_window_start": 0, "time_window_stop": 86400})
        for number, rule in (("2600", always), ("2601", never)):
            pbx.add_callflow([number], {
                "module": "temporal_route", "data": {"rules": [rule], "timezone": "Europe/Paris"},
                "children": {rule: {"module": "response", "data": {"code": 486}},
                             "_": {"module": "response", "data": {"code": 503}}}})
        pbx.add_callflow(["2800"], {"module": "answer", "data": {},
                                    "children": {"_": _device(pbx, "2002")}})
        pbx.add_callflow(["2700"], {"module": "callflow", "data": {"id": "loop-2700"}},
                         doc_id="loop-2700")
        yield pbx
    finally:
        stop_pbx(pbx)


def _phones(pbx: PBX, tmp_path: Path, phones: list[Phone], **spec: dict[str, object]) -> dict[str, Phone]:
    made = {user: Phone(pbx, user, tmp_path, **options) for user, options in spec.items()}  # type: ignore[arg-type]
    phones.extend(made.values())
    for phone in made.values():
        phone.registered()
    return made


def test_a_calls_user_b_audio_both_ways_b_hangs_up_cdrs(pbx: PBX, tmp_path: Path,
                                                        phones: list[Phone]) -> None:
    p = _phones(pbx, tmp_path, phones, **{"1001": {"tone": TONE_A},
                                          "1002": {"tone": TONE_B, "answer_after": 1.0}})
    a, b = p["1001"], p["1002"]
    a.call("1002", REALM)
    b.incoming()
    a_call_id = a.state("CONFIRMED")["call_id"]
    b.state("CONFIRMED")
    rows = wait_until(lambda: [r for r in pbx.calls() if r["state"] == "answered"] or None,
                      timeout=10, what="the call in `mirliton calls`")
    assert {r["direction"] for r in rows} == {"inbound", "outbound"}
    assert any(r["call_id"] == a_call_id and r["other_leg_call_id"] for r in rows)
    time.sleep(3.0)  # talk: each phone plays its tone to the other
    b.send(cmd="hangup")
    b.state("DISCONNECTED")
    assert a.state("DISCONNECTED")["code"] in (200, 0)

    a_leg, b_leg = pbx.legs_of(a_call_id)
    for leg in (a_leg, b_leg):
        assert leg["hangup_cause"] == "NORMAL_CLEARING", leg
        assert leg["custom_channel_vars"]["Account-ID"] == pbx.account_id
        assert 2 <= leg["billing_seconds"] <= 6, leg
        assert leg["duration_seconds"] >= leg["billing_seconds"]
    assert a_leg["call_direction"] == "inbound" and b_leg["call_direction"] == "outbound"
    assert a_leg["caller_id_number"] == "1001" and a_leg["callee_id_number"] == "1002"
    assert a_leg["custom_channel_vars"]["Authorizing-ID"] == pbx.devices["1001"]
    assert b_leg["custom_channel_vars"]["Authorizing-ID"] == pbx.devices["1002"]
    assert b_leg["custom_channel_vars"]["Owner-ID"] == pbx.users["Bob"]
    assert b_leg["other_leg_call_id"] == a_call_id
    assert a_leg["ringing_seconds"] >= 1
    wait_until(lambda: not pbx.calls(), timeout=10, what="no call left in `mirliton calls`")
    # The log lines of the call's actors (edge relay, shard legs, callflow) name its Call-ID.
    about_the_call = [line for line in pbx.node.log_text().splitlines()
                      if f"call_id={a_call_id}" in line]
    for where in ("mirliton.edge.dispatch", "mirliton.calls.legs", "mirliton.callflow.exe"):
        assert any(where in line for line in about_the_call), where

    a.stop()
    b.stop()
    assert a.recording is not None and b.recording is not None
    heard_by_a, share_a = dominant_frequency(a.recording)
    heard_by_b, share_b = dominant_frequency(b.recording)
    assert abs(heard_by_a - TONE_B) < 20 and share_a > 0.5, (heard_by_a, share_a)
    assert abs(heard_by_b - TONE_A) < 20 and share_b > 0.5, (heard_by_b, share_b)


def test_busy_runs_the_default_child(pbx: PBX, tmp_path: Path, phones: list[Phone]) -> None:
    p = _phones(pbx, tmp_path, phones, **{"1001": {}, "2001": {"reject": 486},
                                          "2002": {"answer_after": 0.5}})
    p["1001"].call("2100", REALM)
    p["2001"].incoming()
    a_call_id = p["1001"].state("CONFIRMED")["call_id"]
    p["2002"].state("CONFIRMED")
    p["1001"].send(cmd="hangup")
    p["2002"].state("DISCONNECTED")
    busy = wait_until(lambda: [c for c in pbx.cdrs() if c.get("other_leg_call_id") == a_call_id
                               and c.get("hangup_cause") == "USER_BUSY"] or None,
                      timeout=20, what="the busy B-leg's CDR")
    assert busy[0]["hangup_code"] == "sip:486"
    assert busy[0]["custom_channel_vars"]["Authorizing-ID"] == pbx.devices["2001"]
    a_leg, b_leg = pbx.legs_of(a_call_id)
    assert b_leg["custom_channel_vars"]["Authorizing-ID"] == pbx.devices["2002"]
    assert a_leg["hangup_cause"] == "NORMAL_CLEARING"


def test_no_answer_runs_the_default_child(pbx: PBX, tmp_path: Path, phones: list[Phone]) -> None:
    p = _phones(pbx, tmp_path, phones, **{"1001": {}, "2001": {}, "2002": {"answer_after": 0.5}})
    p["1001"].call("2200", REALM)
    p["2001"].incoming()
    # 2001 rings for its 3 s timeout, is cancelled, and the "_" child rings 2002.
    p["2001"].state("DISCONNECTED", timeout=15)
    a_call_id = p["1001"].state("CONFIRMED", timeout=15)["call_id"]
    p["2002"].state("CONFIRMED")
    p["2002"].send(cmd="hangup")
    p["1001"].state("DISCONNECTED")
    unanswered = wait_until(lambda: [c for c in pbx.cdrs() if c.get("other_leg_call_id") == a_call_id
                                     and c.get("hangup_cause") == "NO_ANSWER"] or None,
                            timeout=20, what="the unanswered B-leg's CDR")
    assert unanswered[0]["billing_seconds"] == 0
    assert unanswered[0]["ringing_seconds"] >= 2


def test_caller_cancel_stops_the_ringing(pbx: PBX, tmp_path: Path, phones: list[Phone]) -> None:
    p = _phones(pbx, tmp_path, phones, **{"1001": {}, "2001": {}})
    p["1001"].call("2500", REALM)
    p["2001"].incoming()
    early = p["1001"].state("EARLY")
    time.sleep(0.5)
    p["1001"].send(cmd="hangup")
    caller = p["1001"].state("DISCONNECTED")
    assert caller["code"] == 487, caller
    callee = p["2001"].state("DISCONNECTED")
    assert callee["code"] == 487, callee
    a_leg = pbx.cdr(early["call_id"])
    assert a_leg["hangup_cause"] == "ORIGINATOR_CANCEL"
    assert a_leg["hangup_code"] == "sip:487"
    assert a_leg["billing_seconds"] == 0
    b_legs = wait_until(lambda: [c for c in pbx.cdrs()
                                 if c.get("other_leg_call_id") == early["call_id"]] or None,
                        timeout=20, what="the cancelled B-leg's CDR")
    assert b_legs[0]["hangup_cause"] == "ORIGINATOR_CANCEL"


def test_ring_group_simultaneous_first_answer_wins(pbx: PBX, tmp_path: Path,
                                                   phones: list[Phone]) -> None:
    p = _phones(pbx, tmp_path, phones, **{"1001": {}, "2001": {}, "2002": {"answer_after": 1.0},
                                          "2003": {}})
    p["1001"].call("2300", REALM)
    for user in ("2001", "2002", "2003"):
        p[user].incoming()
    a_call_id = p["1001"].state("CONFIRMED")["call_id"]
    p["2002"].state("CONFIRMED")
    for loser in ("2001", "2003"):
        assert p[loser].state("DISCONNECTED")["code"] == 487
    p["1001"].send(cmd="hangup")
    p["2002"].state("DISCONNECTED")
    _, b_leg = pbx.legs_of(a_call_id)
    assert b_leg["custom_channel_vars"]["Authorizing-ID"] == pbx.devices["2002"]
    losers = wait_until(lambda: [c for c in pbx.cdrs() if c.get("other_leg_call_id") == a_call_id
                                 and c.get("hangup_cause") == "LOSE_RACE"] or None,
                        timeout=20, what="the losing legs' CDRs")
    assert len(losers) == 2


def test_ring_group_single_tries_in_order(pbx: PBX, tmp_path: Path, phones: list[Phone]) -> None:
    p = _phones(pbx, tmp_path, phones, **{"1001": {}, "2001": {}, "2002": {},
                                          "2003": {"answer_after": 0.5}})
    p["1001"].call("2400", REALM)
    p["2001"].incoming()
    first_gone = p["2001"].state("DISCONNECTED", timeout=15)
    second_rings = p["2002"].incoming(timeout=15)
    second_gone = p["2002"].state("DISCONNECTED", timeout=15)
    third_rings = p["2003"].incoming(timeout=15)
    # One at a time, in order: each rang once the one before it had stopped ringing.
    assert second_rings["t"] >= first_gone["t"] - 0.05
    assert third_rings["t"] >= second_gone["t"] - 0.05
    a_call_id = p["1001"].state("CONFIRMED", timeout=15)["call_id"]
    p["1001"].send(cmd="hangup")
    p["2003"].state("DISCONNECTED")
    _, b_leg = pbx.legs_of(a_call_id)
    assert b_leg["custom_channel_vars"]["Authorizing-ID"] == pbx.devices["2003"]
    tried = wait_until(lambda: [c for c in pbx.cdrs() if c.get("other_leg_call_id") == a_call_id
                                and c.get("hangup_cause") == "NO_ANSWER"] or None,
                       timeout=20, what="the CDRs of the devices that did not answer")
    assert len(tried) == 2
    # In order: each B-leg started once the one before it had ended.
    first, second = sorted(tried, key=lambda c: c["timestamp"])
    assert first["custom_channel_vars"]["Authorizing-ID"] == pbx.devices["2001"]
    assert second["custom_channel_vars"]["Authorizing-ID"] == pbx.devices["2002"]


def _caller_ends(pbx: PBX, tmp_path: Path, phones: list[Phone], number: str,
                 timeout: float = 20.0) -> dict[str, object]:
    caller = Phone(pbx, "1001", tmp_path, record=False)
    phones.append(caller)
    caller.registered()
    caller.call(number, REALM)
    return caller.state("DISCONNECTED", timeout=timeout)


def test_pattern_longest_match_set_cid_and_jump(pbx: PBX, tmp_path: Path,
                                                 phones: list[Phone]) -> None:
    p = _phones(pbx, tmp_path, phones, **{"1001": {"record": False},
                                          "2001": {"answer_after": 0.3, "record": False}})
    # "91234" matches both ^9 and ^9(\d{4})$: the longer match routes it.
    p["1001"].call("91234", REALM)
    incoming = p["2001"].incoming()
    assert "5550000" in str(incoming["remote"]) and "Via Pattern" in str(incoming["remote"])
    a_call_id = p["1001"].state("CONFIRMED")["call_id"]
    p["1001"].send(cmd="hangup")
    p["2001"].state("DISCONNECTED")
    _, b_leg = pbx.legs_of(a_call_id)
    assert b_leg["caller_id_number"] == "5550000"


def test_shorter_pattern_and_response(pbx: PBX, tmp_path: Path, phones: list[Phone]) -> None:
    assert _caller_ends(pbx, tmp_path, phones, "9123")["code"] == 503


def test_temporal_route_branches_on_the_matching_rule(pbx: PBX, tmp_path: Path,
                                                      phones: list[Phone]) -> None:
    assert _caller_ends(pbx, tmp_path, phones, "2600")["code"] == 486
    assert _caller_ends(pbx, tmp_path, phones, "2601")["code"] == 503


def test_loop_guard_ends_a_callflow_that_jumps_to_itself(pbx: PBX, tmp_path: Path,
                                                        phones: list[Phone]) -> None:
    ended = _caller_ends(pbx, tmp_path, phones, "2700")
    assert ended["code"] == 480


def test_unknown_number_gets_604_and_metrics(pbx: PBX, tmp_path: Path, phones: list[Phone]) -> None:
    ended = _caller_ends(pbx, tmp_path, phones, "55512345678")
    assert ended["code"] == 604
    cdr = pbx.cdr(str(ended["call_id"]))
    assert cdr["hangup_cause"] == "NO_ROUTE_DESTINATION"
    text = pbx.metrics()
    for name in ("mirliton_calls_active", 'mirliton_call_attempts_total{result="no_route"}',
                 'mirliton_call_attempts_total{result="answered"}',
                 "mirliton_call_setup_seconds_bucket", "mirliton_route_req_seconds_count"):
        assert name in text, name


def test_early_media_then_hold_and_unhold_pass_through(pbx: PBX, tmp_path: Path,
                                                       phones: list[Phone]) -> None:
    p = _phones(pbx, tmp_path, phones, **{
        "1001": {"record": False},
        "2001": {"answer_after": 1.5, "early_media": True, "record": False}})
    a, b = p["1001"], p["2001"]
    a.call("2500", REALM)
    # The callee's 183 with SDP reaches the caller: media before the answer.
    early = a.wait_for(lambda e: e.get("event") == "media" and e.get("active")
                       and e.get("state") == "EARLY", what="early media")
    assert early["state"] == "EARLY"
    a.state("CONFIRMED")
    b.state("CONFIRMED")
    since = len(b.events)
    a.send(cmd="hold")  # re-INVITE with a=sendonly, relayed to the callee's dialog
    b.wait_for(lambda e: e.get("event") == "media" and e.get("status") == "remote_hold",
               what="the callee put on hold", after=since)
    a.wait_for(lambda e: e.get("event") == "media" and e.get("status") == "local_hold",
               what="the caller's hold accepted")
    since = len(b.events)
    a.send(cmd="unhold")
    b.wait_for(lambda e: e.get("event") == "media" and e.get("status") == "active",
               what="the callee back from hold", after=since)
    b.send(cmd="hangup")
    a.state("DISCONNECTED")


def test_answered_first_then_bridged_audio_both_ways(pbx: PBX, tmp_path: Path,
                                                     phones: list[Phone]) -> None:
    p = _phones(pbx, tmp_path, phones, **{"1001": {"tone": TONE_A},
                                          "2002": {"tone": TONE_B, "answer_after": 1.0}})
    a, b = p["1001"], p["2002"]
    a.call("2800", REALM)
    answered = a.state("CONFIRMED")  # the answer action: connected before the callee rings
    ringing = b.incoming()
    assert answered["t"] <= ringing["t"]
    b.state("CONFIRMED")
    # The answer anchored the caller's media in the calls shard: the bridge anchors the
    # callee too and relays between them, with no re-INVITE to the caller.
    time.sleep(3.0)
    assert not [e for e in a.events if e.get("event") == "media" and e["t"] > ringing["t"]]
    a.send(cmd="hangup")
    b.state("DISCONNECTED")
    a_leg, b_leg = pbx.legs_of(answered["call_id"])
    assert a_leg["billing_seconds"] >= b_leg["billing_seconds"]
    a.stop()
    b.stop()
    assert a.recording is not None and b.recording is not None
    heard_by_a, _ = dominant_frequency(a.recording, skip=2.0)
    heard_by_b, _ = dominant_frequency(b.recording)
    assert abs(heard_by_a - TONE_B) < 20, heard_by_a
    assert abs(heard_by_b - TONE_A) < 20, heard_by_b
