"""Real pjsua2 phones for the tests: tests/phones/phone.py in a process of its own, driven by
JSON lines (``Phone``), and what to read from the WAV files its recorder writes.

A thread reads the phone's lines (select() on a buffered pipe misses lines already read into
the buffer); the waits poll with ``gevent.sleep`` so that a test running greenlets in its own
process (the media engine, a SIP UAS) keeps them running meanwhile."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import numpy as np

__all__ = ["PROGRAM", "Phone", "dominant", "dominant_frequency", "read_wav", "spectrum_at",
           "wav_samples"]

PROGRAM = Path(__file__).with_name("phone.py")
REPO = Path(__file__).resolve().parents[2]
POLL = 0.02


class Phone:
    """One phone process; its options are phone.py's flags (``None``/``False``: left out)."""

    def __init__(self, workdir: Path | None = None, *, name: str = "phone",
                 record: Path | None = None, **options: Any) -> None:
        self.name = name
        self.recording = record
        args = [sys.executable, str(PROGRAM),
                "--workdir", str(workdir or tempfile.gettempdir())]
        if record is not None:
            args += ["--record", str(record)]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is not None and value is not False:
                args += [flag, str(value)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        self.events: list[dict[str, Any]] = []
        self._cursor = 0  # where expect() and next_event() go on from
        self._eof = False
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def record(self) -> Path | None:
        return self.recording

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                self.events.append(json.loads(line))
        self._eof = True

    # -- commands ---------------------------------------------------------------------------

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    command = send

    def call(self, number: str, realm: str) -> None:
        self.send(cmd="call", uri=f"sip:{number}@{realm}")

    def stop(self, timeout: float = 15.0) -> None:
        """quit and close stdin: the phone hangs up, unregisters (unless --keep) and exits."""
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
            except (BrokenPipeError, OSError, ValueError):
                pass
        try:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # -- events -----------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0,
                 what: str = "event", after: int = 0) -> dict[str, Any]:
        """The first event (already seen or coming, from index ``after`` on) matching
        ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            while seen < len(self.events):
                event = self.events[seen]
                seen += 1
                if predicate(event):
                    return event
            if self._eof and seen >= len(self.events):
                raise AssertionError(f"{self.name}: phone exited; events {self.events}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name}: no {what} within {timeout}s; got {self.events}")
            gevent.sleep(POLL)

    def next_event(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """The event after the last one taken by next_event() or expect(); None when none
        comes within ``timeout`` or the phone exited."""
        deadline = time.monotonic() + timeout
        while self._cursor >= len(self.events):
            if self._eof or time.monotonic() >= deadline:
                return None
            gevent.sleep(POLL)
        self._cursor += 1
        return dict(self.events[self._cursor - 1])

    def expect(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        """The next event called ``name`` (after those already taken); an error fails."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if event is None:
                raise AssertionError(f"{self.name}: no {name!r}; saw {self.events}")
            if event.get("event") == "error":
                raise AssertionError(f"{self.name}: phone error: {event}")
            if event.get("event") == name:
                return event

    def registration_result(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """The next final registration state (code >= 200)."""
        while True:
            event = self.next_event(timeout)
            if event is None or (event.get("event") == "registration"
                                 and event.get("code", 0) >= 200):
                return event

    def registered(self, timeout: float = 20.0) -> None:
        event = self.wait_for(lambda e: e.get("event") == "registration" and e.get("code", 0) >= 200,
                              timeout, "registration")
        assert event["code"] == 200, self.events

    def state(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait_for(lambda e: e.get("event") == "state" and e.get("state") == name,
                             timeout, f"call state {name}")

    def incoming(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait_for(lambda e: e.get("event") == "incoming", timeout, "incoming call")

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e.get("event") == kind)


# -- audio ------------------------------------------------------------------------------------


def wav_samples(data: bytes) -> tuple[np.ndarray, int] | None:
    """(mono samples, rate) of a WAV, tolerating the unfinished header pjsua's recorder leaves
    when it was not destroyed cleanly (it fixes the RIFF sizes only then): the header fields
    are read and everything after the data chunk's header taken. None when it is no WAV."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    channels = struct.unpack_from("<H", data, 22)[0]
    rate = struct.unpack_from("<I", data, 24)[0]
    width = struct.unpack_from("<H", data, 34)[0] // 8
    start = data.find(b"data", 12) + 8
    raw = data[start:]
    raw = raw[:len(raw) - len(raw) % (width * channels)]
    dtype = {1: np.int8, 2: "<i2", 4: "<i4"}[width]
    samples = np.frombuffer(raw, dtype=dtype)
    if channels > 1:
        samples = samples.reshape(-1, channels)[:, 0]
    return samples, int(rate)


def dominant_frequency(path: Path, skip: float = 0.3) -> tuple[float, float]:
    """(frequency of the strongest FFT bin in Hz, its share of the spectrum's energy) of a
    WAV file, ignoring its first ``skip`` seconds."""
    read = wav_samples(path.read_bytes())
    if read is None:
        return 0.0, 0.0
    samples, rate = read[0].astype(np.float64), read[1]
    samples = samples[int(skip * rate):]
    if len(samples) < rate // 4:
        return 0.0, 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    window = spectrum[max(0, peak - 3):peak + 4].sum()
    total = spectrum.sum() or 1.0
    return peak * rate / len(samples), float(window / total)


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
