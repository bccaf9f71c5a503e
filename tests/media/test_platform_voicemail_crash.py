"""``kill -9`` of the calls shard while a caller leaves a voicemail (issue 9's acceptance): the
partial message is saved whole or cleanly discarded, never a corrupt document.

Through the whole platform (edge, callflow, calls with media, real pjsua2 phones): the caller
reaches the box and talks; the shard holding the call is killed in the middle of the
recording. Its successor hangs the caller up and records the call as lost; the box then holds
no message that is not a complete one (here: none, since the voicemail is written only once
its audio is stored), no document of the box lacks its audio, and the shard left no partial
recording behind. The box still takes the next caller's message.
"""

from __future__ import annotations

import os
import signal
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.calls.conftest import PBX, Phone, wait_until
from tests.media.platform import PLATFORMS, BusTap, dial, platform_pbx

pytestmark = pytest.mark.timeout(600)

CALLER, OWNER = "1001", "1002"
MAILBOX = "3101"


def _setup(pbx: PBX) -> None:
    owner = pbx.add_user("Owner", [OWNER])
    box = pbx.add_doc("vmbox", {"name": "Owner's box", "mailbox": MAILBOX, "owner_id": owner,
                                "pin": "1234"})
    pbx.add_callflow([MAILBOX], {"module": "voicemail", "data": {"id": box, "action": "compose"}})
    pbx.devices["box"] = box


@pytest.fixture(scope="module", params=PLATFORMS)
def pbx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    yield from platform_pbx(request, tmp_path_factory, "vmkill", 47000, [CALLER, OWNER], _setup)


def _box_documents(pbx: PBX) -> list[dict[str, Any]]:
    """Every document of this month's database that is, or was meant to be, a message of the
    box (a message, or the audio a recording stored before its metadata)."""
    from store import NotFound
    from store.kazoo import modb_name

    with pbx.store() as store:
        try:
            rows = store.all_docs(modb_name(pbx.account_id), include_docs=True)
        except NotFound:
            return []
    docs = [r["doc"] for r in rows if r.get("doc")]
    return [d for d in docs if d.get("source_id") == pbx.devices["box"]
            or (d.get("pvt_type") is None and d.get("_attachments"))]


def _shard_pid(pbx: PBX) -> int:
    """The running shard's pid; 0 while it is being restarted."""
    child = pbx.node.child("calls", "shard0")
    return int(child["pid"]) if child.get("pid") and child.get("state") == "running" else 0


def test_kill_9_of_the_shard_during_a_voicemail(pbx: PBX, tap: BusTap, phones: list[Phone],
                                                tmp_path: Path) -> None:
    from store.voicemail import list_messages, message_audio

    caller, mark, greeting = dial(pbx, tap, phones, tmp_path, CALLER, MAILBOX, tone=440.0,
                                  prompt="vm-not_available")
    call_id = str(greeting["Call-ID"])
    tap.event("RECORD_START", after=mark, timeout=90, **{"Call-ID": call_id})
    time.sleep(1.5)  # some audio is on disk, the recording is not finished
    recordings = pbx.node.data_dir / "recordings" / "shard0"
    assert list(recordings.glob("*.wav.part")), "no recording in progress on disk"
    old = _shard_pid(pbx)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: _shard_pid(pbx) not in (0, old), timeout=30, what="the shard restarted")

    caller.state("DISCONNECTED", timeout=60)  # the successor hangs up what it left
    assert pbx.cdr(call_id)["hangup_cause"] == "NORMAL_TEMPORARY_FAILURE"
    wait_until(lambda: not list(recordings.glob("*.part")), timeout=30,
               what="the partial recording dropped")
    with pbx.store() as store:
        for doc in list_messages(store, pbx.account_id, pbx.devices["box"]):
            # A message that exists is whole: its audio is a WAV that reads to the end.
            data, _ = message_audio(store, pbx.account_id, doc["_id"])
            path = tmp_path / f"{doc['_id']}.wav"
            path.write_bytes(data)
            with wave.open(str(path)) as wav:
                assert wav.getnframes() == len(data[44:]) // 2
    for doc in _box_documents(pbx):
        assert doc.get("pvt_type") == "mailbox_message", f"a half-written message: {doc}"

    # The box is fine: the next caller leaves a message (a new tap: the restarted shard has
    # a Control-Queue of its own).
    before = len(_box_documents(pbx))
    tap = BusTap(pbx)
    try:
        caller2, mark, greeting = dial(pbx, tap, phones, tmp_path, CALLER, MAILBOX, tone=440.0,
                                       prompt="vm-not_available")
        call_id = str(greeting["Call-ID"])
        tap.event("RECORD_START", after=mark, timeout=90, **{"Call-ID": call_id})
        time.sleep(2.0)
        caller2.send(cmd="hangup")
        caller2.state("DISCONNECTED", timeout=30)
        stop = tap.event("RECORD_STOP", after=mark, timeout=60, **{"Call-ID": call_id})
    finally:
        tap.stop()
    assert stop["Media-Stored"] is True
    wait_until(lambda: len(_box_documents(pbx)) == before + 1, timeout=30,
               what="the next message saved")
