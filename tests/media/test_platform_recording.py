"""Call recording end to end: a callflow starts ``record_call`` and then rings a device; the
two pjsua2 phones talk (each sends its own tone) and hang up; the account's month database
then holds a ``call_recording`` document whose WAV has both parties in it (FFT)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.calls.conftest import PBX, Phone, wait_until
from tests.media.platform import PLATFORMS, BusTap, audio_samples, platform_pbx

pytestmark = pytest.mark.timeout(600)

CALLER, CALLEE = "1001", "2001"
NUMBER = "6000"
TONE_CALLER, TONE_CALLEE = 440.0, 1000.0


def _setup(pbx: PBX) -> None:
    pbx.add_callflow([NUMBER], {
        "module": "record_call", "data": {"action": "start", "time_limit": 300},
        "children": {"_": {"module": "device", "data": {"id": pbx.devices[CALLEE]}}}})


@pytest.fixture(scope="module", params=PLATFORMS)
def pbx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    yield from platform_pbx(request, tmp_path_factory, "rec", 46000, [CALLER, CALLEE], _setup)


def _recordings(pbx: PBX, call_id: str) -> list[dict[str, Any]]:
    from store import NotFound
    from store.kazoo import modb_name

    with pbx.store() as store:
        try:
            rows = store.all_docs(modb_name(pbx.account_id), include_docs=True)
        except NotFound:
            return []
    return [r["doc"] for r in rows if r.get("doc", {}).get("pvt_type") == "call_recording"
            and r["doc"].get("call_id") == call_id]


def _level(samples: np.ndarray, rate: int, frequency: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[np.abs(freqs - frequency) <= 10].max() / spectrum.max())


def test_record_call_stores_both_parties(pbx: PBX, phones: list[Phone], tmp_path: Path) -> None:
    from store.kazoo import modb_name

    callee = Phone(pbx, CALLEE, tmp_path, tone=TONE_CALLEE, answer_after=0.5)
    caller = Phone(pbx, CALLER, tmp_path, tone=TONE_CALLER)
    phones.extend([callee, caller])
    callee.registered()
    caller.registered()
    tap = BusTap(pbx)
    try:
        mark = len(tap.messages)
        caller.call(NUMBER, pbx.realm)
        start = tap.command("record_call", after=mark)
        call_id = str(start["Call-ID"])
        callee.state("CONFIRMED", timeout=60)
        caller.state("CONFIRMED", timeout=60)
        tap.event("RECORD_START", after=mark, **{"Call-ID": call_id})
        time.sleep(3.0)  # both phones send their tone meanwhile
        caller.send(cmd="hangup")
        stop = tap.event("RECORD_STOP", after=mark, **{"Call-ID": call_id})
    finally:
        tap.stop()
    assert stop["Media-Stored"] is True and stop["Media-Name"] == start["Media-Name"]
    docs = wait_until(lambda: _recordings(pbx, call_id) or None, timeout=30,
                      what="the call_recording document")
    assert len(docs) == 1
    doc = docs[0]
    name = str(start["Media-Name"])
    assert name in (doc.get("_attachments") or {}), doc
    with pbx.store() as store:
        audio, _ = store.get_attachment(modb_name(pbx.account_id), doc["_id"], name)
    samples, rate = audio_samples(audio)
    assert len(samples) / rate >= 2.0, f"the recording lasts {len(samples) / rate:.2f} s"
    caller_level = _level(samples, rate, TONE_CALLER)
    callee_level = _level(samples, rate, TONE_CALLEE)
    assert caller_level > 0.2 and callee_level > 0.2, (caller_level, callee_level)
