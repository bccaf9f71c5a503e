"""Calls through a real node on the embedded defaults (local bus, embedded store): two pjsua2
phones register with digest through the edge, the callflow app routes by the account's
callflows, the calls shards bridge them (media direct between the phones), CDRs land in the
account's month database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.calls.conftest import PBX, Phone, dominant_frequency, start_pbx, stop_pbx, wait_until

pytestmark = pytest.mark.timeout(300)

REALM = "calls.example.com"
TONE_A, TONE_B = 440.0, 1000.0


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    pbx = start_pbx(tmp_path_factory.mktemp("calls"))
    try:
        pbx.provision(REALM, ["1001", "1002", "2001", "2002", "2003", "3001"])
        pbx.add_user("Bob", ["1002"])
        pbx.add_callflow(["1001"], {"module": "device", "data": {"id": pbx.devices["1001"]}})
        pbx.add_callflow(["1002"], {"module": "user", "data": {"id": pbx.users["Bob"],
                                                               "timeout": 20}})
        yield pbx
    finally:
        stop_pbx(pbx)


def test_a_calls_user_b_audio_both_ways_b_hangs_up_cdrs(pbx: PBX, tmp_path: Path,
                                                        phones: list[Phone]) -> None:
    a = Phone(pbx, "1001", tmp_path, tone=TONE_A)
    b = Phone(pbx, "1002", tmp_path, tone=TONE_B, answer_after=1.0)
    phones += [a, b]
    a.registered()
    b.registered()
    a.call("1002", REALM)
    b.incoming()
    a_confirmed = a.state("CONFIRMED")
    b.state("CONFIRMED")
    a_call_id = a_confirmed["call_id"]
    rows = wait_until(lambda: [r for r in pbx.calls() if r["state"] == "answered"] or None,
                      timeout=10, what="the call in `mirliton calls`")
    assert {r["direction"] for r in rows} == {"inbound", "outbound"}
    assert any(r["call_id"] == a_call_id and r["other_leg_call_id"] for r in rows)
    import time

    time.sleep(3.0)  # talk: each phone plays its tone to the other
    b.send(cmd="hangup")
    b.state("DISCONNECTED")
    a_end = a.state("DISCONNECTED")
    assert a_end["code"] in (200, 0), a_end

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

    a.stop()
    b.stop()
    assert a.recording is not None and b.recording is not None
    heard_by_a, share_a = dominant_frequency(a.recording)
    heard_by_b, share_b = dominant_frequency(b.recording)
    assert abs(heard_by_a - TONE_B) < 20, (heard_by_a, share_a)
    assert abs(heard_by_b - TONE_A) < 20, (heard_by_b, share_b)
