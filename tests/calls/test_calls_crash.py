"""Crash isolation of calls, with real phones: ``kill -9`` of the callflow process leaves a
connected call up (and new calls work once it is back); ``kill -9`` of a calls shard ends the
calls it held - its restart hangs them up and records them - and only those.

Both tests run on the embedded defaults and on ``bus=amqp`` + ``store=couchdb``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.calls.conftest import PBX, Phone, backends, start_pbx, stop_pbx, wait_until

pytestmark = pytest.mark.timeout(300)

REALM = "crash.example.com"


@pytest.fixture(scope="module", params=["embedded", "amqp+couchdb"])
def pbx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    pbx = start_pbx(tmp_path_factory.mktemp("crash"), **backends(request))
    try:
        pbx.provision(REALM, ["1001", "1002", "2001", "2002"])
        for user in ("1002", "2002"):
            pbx.add_callflow([user], {"module": "device", "data": {"id": pbx.devices[user]}})
        yield pbx
    finally:
        stop_pbx(pbx)


def _pid(pbx: PBX, *path: str) -> int:
    return int(pbx.node.child(*path)["pid"])


def _restarted(pbx: PBX, path: tuple[str, ...], old_pid: int) -> bool:
    try:
        child = pbx.node.child(*path)
    except StopIteration:
        return False
    return bool(child.get("pid") and child["pid"] != old_pid and child.get("state") == "running")


def _pair(pbx: PBX, tmp_path: Path, phones: list[Phone], caller: str, callee: str) -> tuple[Phone, Phone]:
    a = Phone(pbx, caller, tmp_path, record=False)
    b = Phone(pbx, callee, tmp_path, answer_after=0.3, record=False)
    phones += [a, b]
    a.registered()
    b.registered()
    return a, b


def _state(phone: Phone, name: str, after: int = 0, timeout: float = 20.0) -> dict[str, Any]:
    return phone.wait_for(lambda e: e.get("event") == "state" and e["state"] == name,
                          timeout=timeout, what=f"state {name}", after=after)


def _connect(a: Phone, b: Phone, number: str) -> str:
    """Place a call and wait until both phones are connected; the caller's Call-ID."""
    since_a, since_b = len(a.events), len(b.events)
    a.call(number, REALM)
    confirmed = _state(a, "CONFIRMED", since_a)
    _state(b, "CONFIRMED", since_b)
    return str(confirmed["call_id"])


def _shard_of(pbx: PBX, call_id: str) -> int:
    row: dict[str, Any] = wait_until(
        lambda: next((r for r in pbx.calls() if r["call_id"] == call_id), None),
        timeout=10, what=f"{call_id} in `mirliton calls`")
    return int(row["shard"])


def _disconnected(phone: Phone, call_id: str | None = None) -> bool:
    return any(e.get("event") == "state" and e["state"] == "DISCONNECTED"
               and (call_id is None or e["call_id"] == call_id) for e in phone.events)


def test_kill_callflow_mid_call_keeps_the_call_up(pbx: PBX, tmp_path: Path,
                                                  phones: list[Phone]) -> None:
    a, b = _pair(pbx, tmp_path, phones, "1001", "1002")
    call_id = _connect(a, b, "1002")
    old = _pid(pbx, "callflow")
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: _restarted(pbx, ("callflow",), old), timeout=30,
               what="callflow restarted by its supervisor")
    time.sleep(1.0)
    assert not _disconnected(a) and not _disconnected(b), (a.events, b.events)
    legs = {r["call_id"]: r for r in pbx.calls()}
    assert legs[call_id]["state"] == "answered"

    # New calls work with the restarted callflow.
    c, d = _pair(pbx, tmp_path, phones, "2001", "2002")
    second = _connect(c, d, "2002")
    c.send(cmd="hangup")
    _state(d, "DISCONNECTED")
    # And the first call, older than the callflow process, still ends cleanly.
    a.send(cmd="hangup")
    _state(b, "DISCONNECTED")
    for first_leg in pbx.legs_of(call_id):
        assert first_leg["hangup_cause"] == "NORMAL_CLEARING"
    assert pbx.cdr(second)["hangup_cause"] == "NORMAL_CLEARING"


def test_kill_a_shard_ends_only_its_calls(pbx: PBX, tmp_path: Path, phones: list[Phone]) -> None:
    a1, b1 = _pair(pbx, tmp_path, phones, "1001", "1002")
    a2, b2 = _pair(pbx, tmp_path, phones, "2001", "2002")
    first = _connect(a1, b1, "1002")
    first_shard = _shard_of(pbx, first)
    # Calls land on a shard by a hash of their Call-ID: call until one lands on the other.
    second = ""
    for _ in range(10):
        second = _connect(a2, b2, "2002")
        if _shard_of(pbx, second) != first_shard:
            break
        since = len(b2.events)
        a2.send(cmd="hangup")
        _state(b2, "DISCONNECTED", since)
        time.sleep(0.3)
    else:
        pytest.fail("ten calls in a row hashed onto one shard")

    old = _pid(pbx, "calls", f"shard{first_shard}")
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: _restarted(pbx, ("calls", f"shard{first_shard}"), old), timeout=30,
               what="the shard restarted")
    # The restarted shard hangs up what its predecessor left: both phones of the first call.
    _state(a1, "DISCONNECTED")
    _state(b1, "DISCONNECTED")
    lost = pbx.cdr(first)
    assert lost["hangup_cause"] == "NORMAL_TEMPORARY_FAILURE"
    # The other shard's call is untouched.
    assert not _disconnected(a2, second)
    rows = {r["call_id"]: r for r in pbx.calls()}
    assert second in rows and first not in rows
    since = len(b2.events)
    a2.send(cmd="hangup")
    _state(b2, "DISCONNECTED", since)
    a_leg, b_leg = pbx.legs_of(second)
    assert a_leg["hangup_cause"] == b_leg["hangup_cause"] == "NORMAL_CLEARING"
