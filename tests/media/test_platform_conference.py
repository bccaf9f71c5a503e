"""A conference end to end (issue 9's acceptance): three pjsua2 phones, each sending a tone
of its own, dial the conference number of a real node; each hears the other two's tones and
not its own (the shard mixes everyone but the listener).

The test follows the calls on the bus (tests/media/platform.py's BusTap): once
the shard said all three joined, they talk for a few seconds and hang up; the recordings are
then compared by FFT over their whole length, so no assertion depends on timing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.calls.conftest import PBX, Phone
from tests.media.platform import PLATFORMS, BusTap, audio_samples, platform_pbx

pytestmark = pytest.mark.timeout(600)

NUMBER = "5000"
TONES = {"1001": 440.0, "1002": 700.0, "1003": 1100.0}


def _setup(pbx: PBX) -> None:
    room = pbx.add_doc("conference", {"name": "Room", "conference_numbers": ["77"]})
    pbx.add_callflow([NUMBER], {"module": "conference", "data": {"id": room}})


@pytest.fixture(scope="module", params=PLATFORMS)
def pbx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    yield from platform_pbx(request, tmp_path_factory, "conf", 45000, list(TONES), _setup)


def _bands(samples: np.ndarray, rate: int) -> dict[float, float]:
    """Peak spectrum magnitude within 10 Hz of each tone."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return {f: float(spectrum[np.abs(freqs - f) <= 10].max()) for f in TONES.values()}


def test_three_phones_hear_each_other_not_themselves(pbx: PBX, phones: list[Phone],
                                                     tmp_path: Path) -> None:
    tap = BusTap(pbx)
    try:
        mark = len(tap.messages)
        for user, tone in TONES.items():
            phone = Phone(pbx, user, tmp_path, tone=tone)
            phones.append(phone)
            phone.registered()
        for phone in phones:
            phone.call(NUMBER, pbx.realm)
            phone.state("CONFIRMED", timeout=30)
        joined: set[str] = set()
        while len(joined) < len(TONES):
            done = tap.wait(lambda m: m.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE"
                            and m.get("Application-Name") == "conference"
                            and m.get("Call-ID") not in joined, after=mark, timeout=90,
                            what="a conference join")
            assert done.get("Application-Response") == "JOINED", done
            joined.add(str(done["Call-ID"]))
    finally:
        tap.stop()
    time.sleep(4.0)  # everyone in: let them talk
    for phone in phones:
        phone.send(cmd="hangup")
    for phone in phones:
        phone.state("DISCONNECTED", timeout=30)
        phone.stop()
    for phone in phones:
        assert phone.recording is not None
        samples, rate = audio_samples(phone.recording.read_bytes())
        bands = _bands(samples, rate)
        own = TONES[phone.user]
        others = [f for f in TONES.values() if f != own]
        loudest = max(bands[f] for f in others)
        for f in others:
            assert bands[f] > 0.2 * loudest, f"{phone.user} hardly heard {f} Hz: {bands}"
        assert bands[own] < 0.1 * loudest, f"{phone.user} heard its own tone: {bands}"
