"""In-band DTMF detection (ITU-T Q.24 style), no I/O: for far ends that send key presses as
audio tones rather than RFC 4733 events (some gateways and old phones).

Each 20 ms block (160 samples at 8 kHz) is correlated with the eight DTMF frequencies (a DFT
at exactly those frequencies, one matrix product). A block holds a digit when one row and
one column frequency stand out: together they carry most of the block's energy (a pure
two-tone signal, not speech or music), each clearly dominates the other frequencies of its
group, their levels are within the allowed twist, and the signal is loud enough. A digit is
reported once it held for two blocks (40 ms, Q.24's minimum), and again only after two blocks
without it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from protocols.rtp.tones import CLOCK_RATE, SAMPLES_PER_FRAME

__all__ = ["InbandDtmfDetector"]

_ROWS = (697.0, 770.0, 852.0, 941.0)
_COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYS = ("123A", "456B", "789C", "*0#D")


class InbandDtmfDetector:
    def __init__(
        self,
        *,
        block: int = SAMPLES_PER_FRAME,
        rate: int = CLOCK_RATE,
        min_level: float = 300.0,  # RMS on the 16-bit scale (about -40 dBFS)
        purity: float = 0.7,  # share of the block's energy in the two tones
        dominance: float = 4.0,  # each tone over the next strongest of its group
        max_twist: float = 10.0,  # power ratio between the two tones (10 dB)
    ) -> None:
        n = np.arange(block)
        freqs = np.array(_ROWS + _COLUMNS)
        self._basis = np.exp(-2j * np.pi * np.outer(freqs, n) / rate)
        self.block = block
        self.min_power = min_level * min_level
        self.purity = purity
        self.dominance = dominance
        self.max_twist = max_twist
        self._candidate: str | None = None
        self._held = 0
        self._reported: str | None = None
        self._absent = 0

    def classify(self, pcm: npt.NDArray[np.int16]) -> str | None:
        """The digit one block holds, or None."""
        x = pcm.astype(np.float64)
        energy = float(np.dot(x, x))
        if energy / len(x) < self.min_power:
            return None
        powers = np.abs(self._basis[:, : len(x)] @ x) ** 2
        rows, cols = powers[:4], powers[4:]
        r, c = int(np.argmax(rows)), int(np.argmax(cols))
        row_power, col_power = rows[r], cols[c]
        # A pure sine of amplitude A gives |X|^2 = (A N / 2)^2 for an energy of N A^2 / 2.
        if (row_power + col_power) * 2 / (len(x) * energy) < self.purity:
            return None
        if np.partition(rows, -2)[-2] * self.dominance > row_power:
            return None
        if np.partition(cols, -2)[-2] * self.dominance > col_power:
            return None
        twist = row_power / col_power if col_power else np.inf
        if not 1 / self.max_twist <= twist <= self.max_twist:
            return None
        return _KEYS[r][c]

    def feed(self, pcm: npt.NDArray[np.int16]) -> list[str]:
        """Digits that start in this block (zero or one)."""
        digit = self.classify(pcm)
        if digit is not None and digit == self._candidate:
            self._held += 1
        else:
            self._candidate = digit
            self._held = 1 if digit is not None else 0
        if digit is None or digit != self._reported:
            self._absent += 1
            if self._absent >= 2:
                self._reported = None
        else:
            self._absent = 0
        if digit is not None and self._held >= 2 and self._reported is None:
            self._reported = digit
            self._absent = 0
            return [digit]
        return []
