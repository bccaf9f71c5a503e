"""CDRs are not lost while the store is down: a real CouchDB-API server (pouchdb-server, a
private one) is frozen with SIGSTOP while a call ends and the cdr process is killed with
``kill -9``; once the server runs again, the restarted cdr process writes both legs' CDRs from
its spool."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.calls.conftest import PBX, Phone, start_pbx, stop_pbx, wait_until
from tests.couchdb_server import start_pouchdb_server, stop_process

pytestmark = pytest.mark.timeout(300)

REALM = "cdr.example.com"


def _spooled(journal: Path) -> set[str]:
    """Call-IDs in the cdr spool journal not yet marked stored."""
    pending: set[str] = set()
    if not journal.exists():
        return pending
    for line in journal.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "cdr" in entry:
            pending.add(entry["cdr"]["Call-ID"])
        elif "done" in entry:
            pending.discard(entry["done"])
    return pending


@pytest.fixture
def frozen_store_pbx(tmp_path: Path) -> Iterator[tuple[PBX, int]]:
    workdir = tmp_path / "pouchdb"
    workdir.mkdir()
    url, server = start_pouchdb_server(workdir)
    pbx = start_pbx(tmp_path / "pbx", store_url=url)
    try:
        pbx.provision(REALM, ["1001", "1002"])
        pbx.add_callflow(["1002"], {"module": "device", "data": {"id": pbx.devices["1002"]}})
        yield pbx, server.pid
    finally:
        try:
            os.kill(server.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        stop_pbx(pbx)
        stop_process(server)


def test_cdrs_survive_a_frozen_store_and_a_killed_cdr_process(
        frozen_store_pbx: tuple[PBX, int], tmp_path: Path, phones: list[Phone]) -> None:
    pbx, store_pid = frozen_store_pbx
    a = Phone(pbx, "1001", tmp_path, record=False)
    b = Phone(pbx, "1002", tmp_path, answer_after=0.3, record=False)
    phones += [a, b]
    a.registered()
    b.registered()
    a.call("1002", REALM)
    call_id = a.state("CONFIRMED")["call_id"]
    b.state("CONFIRMED")
    time.sleep(1.0)

    os.kill(store_pid, signal.SIGSTOP)  # the store stops answering
    try:
        a.send(cmd="hangup")
        b.state("DISCONNECTED")  # calls do not need the store to end
        spool = pbx.node.data_dir / "cdr" / "spool" / "spool.jsonl"
        wait_until(lambda: len(_spooled(spool)) >= 2, timeout=15,
                   what="both legs' CDRs in the cdr spool")
        cdr_pid = int(pbx.node.child("cdr")["pid"])
        os.kill(cdr_pid, signal.SIGKILL)
        wait_until(lambda: pbx.node.child("cdr").get("pid") not in (None, cdr_pid)
                   and pbx.node.child("cdr").get("state") == "running", timeout=60,
                   what="the cdr process restarted")
    finally:
        os.kill(store_pid, signal.SIGCONT)  # the store is back

    a_leg, b_leg = pbx.legs_of(call_id, timeout=60)
    assert a_leg["hangup_cause"] == b_leg["hangup_cause"] == "NORMAL_CLEARING"
    assert a_leg["billing_seconds"] >= 1
    wait_until(lambda: not _spooled(pbx.node.data_dir / "cdr" / "spool" / "spool.jsonl"),
               timeout=30, what="nothing left to store in the spool")
