"""In-band DTMF detection: every key through noise, nothing from plain tones or speech-like
sums, one report per press, repeated keys need a gap."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.rtp import InbandDtmfDetector, ToneGenerator, dtmf_tone, frames, sine


def _audio(digits: str, on_ms: int = 60, off_ms: int = 60) -> np.ndarray:
    gen = ToneGenerator(dtmf_tone(digits, on_ms, off_ms))
    chunks = []
    while (frame := gen.next_frame()) is not None:
        chunks.append(frame)
    return np.concatenate(chunks)


def _detect(pcm: np.ndarray) -> str:
    detector = InbandDtmfDetector()
    return "".join(d for frame in frames(pcm) for d in detector.feed(frame))


@pytest.mark.parametrize("noise", [0, 300, 1000])
def test_every_key_through_noise(noise: int) -> None:
    pcm = _audio("123A456B789C*0#D").astype(np.float64)
    pcm += np.random.default_rng(noise).normal(0, noise, len(pcm))
    assert _detect(np.clip(pcm, -32768, 32767).astype(np.int16)) == "123A456B789C*0#D"


def test_misaligned_and_held_keys() -> None:
    # Tones not on block boundaries, held for 300 ms: one report each.
    pcm = np.concatenate([np.zeros(77, dtype=np.int16), _audio("55", on_ms=300, off_ms=70)])
    assert _detect(pcm) == "55"


def test_no_digit_from_other_sounds() -> None:
    assert _detect(sine(440, 1) + sine(1000, 1)) == ""  # two tones, not a DTMF pair
    assert _detect(sine(697, 1)) == ""  # a row tone alone
    rng = np.random.default_rng(3)
    assert _detect(rng.normal(0, 5000, 8000).astype(np.int16)) == ""  # noise
    assert _detect((_audio("1") // 40).astype(np.int16)) == ""  # too quiet (~ -50 dBFS)
