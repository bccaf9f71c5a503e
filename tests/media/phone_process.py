"""Drives tests/media/phone.py (pjsua2 in a subprocess) from a gevent test: commands on its
stdin, JSON events from its stdout; and reads what its recorder wrote."""

from __future__ import annotations

import json
import sys
import wave
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import numpy as np
from gevent import subprocess

__all__ = ["PhoneProcess", "dominant", "read_wav", "spectrum_at"]

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return pcm[:: wav.getnchannels()], wav.getframerate()


def dominant(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


def spectrum_at(pcm: np.ndarray, rate: int, frequency: float, width: float = 10.0) -> float:
    """Peak magnitude within +/- ``width`` Hz of ``frequency``, relative to the whole
    spectrum's peak (0..1)."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    band = spectrum[np.abs(freqs - frequency) <= width]
    return float(band.max() / spectrum.max()) if spectrum.max() > 0 else 0.0


class PhoneProcess:
    def __init__(self, record: Path, workdir: Path, *, tone: float = 440.0,
                 tone_seconds: float = 3.0) -> None:
        self.record = record
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "phone.py"), "--record", str(record),
             "--workdir", str(workdir), "--tone", str(tone), "--tone-seconds",
             str(tone_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=REPO, text=True)
        self.events: gevent.queue.Queue[dict[str, Any]] = gevent.queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                event = json.loads(line)
                self.seen.append(event)
                self.events.put(event)

    def command(self, **fields: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(fields) + "\n")
        self.proc.stdin.flush()

    def expect(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        with gevent.Timeout(timeout, AssertionError(f"phone: no {name!r}; saw {self.seen}")):
            while True:
                event = self.events.get()
                if event.get("event") == "error":
                    raise AssertionError(f"phone error: {event}")
                if event.get("event") == name:
                    return event

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command(cmd="quit")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.kill(block=False)
