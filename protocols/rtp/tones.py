"""Tone generation (call progress and DTMF) and 20 ms packetisation, no I/O.

A :class:`ToneSpec` is a list of cadence steps, each a set of frequencies played for
``on_ms`` then silence for ``off_ms``; :class:`ToneGenerator` yields 160-sample frames
(20 ms at 8 kHz) of it, keeping the phase across frames so there are no clicks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "BUSY",
    "CLOCK_RATE",
    "DTMF_FREQUENCIES",
    "FRAME_MS",
    "RINGBACK",
    "SAMPLES_PER_FRAME",
    "ToneGenerator",
    "ToneSpec",
    "ToneStep",
    "dtmf_tone",
    "frames",
    "sine",
]

CLOCK_RATE = 8000
FRAME_MS = 20
SAMPLES_PER_FRAME = CLOCK_RATE * FRAME_MS // 1000  # 160

# Row and column frequencies of the DTMF keypad (ITU-T Q.23).
DTMF_FREQUENCIES: dict[str, tuple[int, int]] = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}


@dataclass(frozen=True, slots=True)
class ToneStep:
    frequencies: tuple[float, ...]
    on_ms: int
    off_ms: int = 0


@dataclass(frozen=True, slots=True)
class ToneSpec:
    """A cadence; ``repeat`` times through the steps (0: until stopped)."""

    steps: tuple[ToneStep, ...]
    repeat: int = 0
    level: int = 8000  # peak amplitude of the sum, 16-bit scale (about -12 dBFS)

    @property
    def cycle_ms(self) -> int:
        return sum(s.on_ms + s.off_ms for s in self.steps)


# North American call progress tones (Kazoo's defaults: %(2000,4000,440,480) and
# %(500,500,480,620)).
RINGBACK = ToneSpec((ToneStep((440.0, 480.0), 2000, 4000),))
BUSY = ToneSpec((ToneStep((480.0, 620.0), 500, 500),))


def dtmf_tone(digits: str, on_ms: int = 100, off_ms: int = 100) -> ToneSpec:
    """In-band DTMF for ``digits`` (when the far end takes no RFC 4733)."""
    steps = tuple(
        ToneStep(tuple(float(f) for f in DTMF_FREQUENCIES[d.upper()]), on_ms, off_ms)
        for d in digits
    )
    return ToneSpec(steps, repeat=1)


def sine(
    frequency: float, seconds: float, *, amplitude: int = 8000, rate: int = CLOCK_RATE
) -> npt.NDArray[np.int16]:
    """A plain sine as int16 samples (test material, beeps)."""
    n = np.arange(int(round(seconds * rate)))
    return (amplitude * np.sin(2 * np.pi * frequency * n / rate)).astype(np.int16)


class ToneGenerator:
    """Frames of a :class:`ToneSpec`; ``next_frame()`` gives None once it is over."""

    def __init__(self, spec: ToneSpec, rate: int = CLOCK_RATE) -> None:
        self.spec = spec
        self.rate = rate
        self._step = 0
        self._position = 0  # samples into the current step
        self._cycles = 0
        self._sample_clock = 0  # absolute sample counter keeps phase continuous
        self.done = not spec.steps

    def next_frame(self, size: int = SAMPLES_PER_FRAME) -> npt.NDArray[np.int16] | None:
        if self.done:
            return None
        out = np.zeros(size, dtype=np.float64)
        filled = 0
        while filled < size and not self.done:
            step = self.spec.steps[self._step]
            on = step.on_ms * self.rate // 1000
            total = on + step.off_ms * self.rate // 1000
            take = min(size - filled, total - self._position)
            if take <= 0:
                self._advance()
                continue
            start = self._position
            tone_end = min(start + take, on)
            if tone_end > start and step.frequencies:
                n = np.arange(self._sample_clock, self._sample_clock + tone_end - start)
                chunk = sum(np.sin(2 * np.pi * f * n / self.rate) for f in step.frequencies)
                out[filled:filled + tone_end - start] = chunk / len(step.frequencies)
            self._position += take
            self._sample_clock += take
            filled += take
            if self._position >= total:
                self._advance()
        return (out * self.spec.level).astype(np.int16)

    def _advance(self) -> None:
        self._position = 0
        self._step += 1
        if self._step >= len(self.spec.steps):
            self._step = 0
            self._cycles += 1
            if self.spec.repeat and self._cycles >= self.spec.repeat:
                self.done = True


def frames(
    pcm: npt.NDArray[np.int16], size: int = SAMPLES_PER_FRAME
) -> Iterator[npt.NDArray[np.int16]]:
    """Split audio into frames of ``size`` samples, the last one padded with silence."""
    for start in range(0, len(pcm), size):
        chunk = pcm[start:start + size]
        if len(chunk) < size:
            chunk = np.concatenate([chunk, np.zeros(size - len(chunk), dtype=np.int16)])
        yield chunk
