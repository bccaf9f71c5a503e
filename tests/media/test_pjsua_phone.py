"""pjsua2 as a real phone against the media engine: a small UAS (tests/media/sip_uas.py)
answers its call with an anchored stream; the engine plays a 440 Hz tone the phone's
recorder captures, collects the phone's RFC 4733 digits, and records the 3 s 440 Hz tone
the phone streams."""

from __future__ import annotations

import json
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import numpy as np
import pytest
from gevent import subprocess

from actors.media import DigitsCollected, MediaEngine, PlaybackFinished, RecordingFinished
from protocols.rtp import sine
from tests.media.rtp_peer import dominant_frequencies, wait_for
from tests.media.sip_uas import MediaUas

pytest.importorskip("pjsua2")

HERE = Path(__file__).parent
REPO = HERE.parent.parent


class PhoneProcess:
    def __init__(self, record: Path, workdir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "phone.py"), "--record", str(record),
             "--workdir", str(workdir), "--tone", "440", "--tone-seconds", "3"],
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


@pytest.fixture
def engine() -> Iterator[MediaEngine]:
    eng = MediaEngine("127.0.0.1", 44000, 44999).start()
    yield eng
    eng.stop()


def _wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return pcm[:: wav.getnchannels()], wav.getframerate()


def _dominant(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.slow
def test_pjsua2_phone_hears_prompt_sends_dtmf_and_is_recorded(
    engine: MediaEngine, tmp_path: Path
) -> None:
    uas = MediaUas(engine)
    heard = tmp_path / "phone-heard.wav"
    phone = PhoneProcess(heard, tmp_path)
    try:
        phone.expect("ready")
        phone.command(cmd="call", uri=uas.uri)
        call = uas.wait_call()
        phone.expect("media")
        stream = call.stream

        # 1. A 440 Hz prompt to the phone.
        op = stream.play(sine(440, 2.0))
        finished = wait_for(lambda: call.of(PlaybackFinished), timeout=10)
        assert finished[0].op_id == op and finished[0].reason == "done"

        # 2. The phone dials 1234 (RFC 4733).
        op = stream.collect_dtmf(max_digits=4, terminators="", timeout=10,
                                 inter_digit_timeout=5)
        phone.command(cmd="dtmf", digits="1234")
        collected = wait_for(lambda: call.of(DigitsCollected), timeout=15)[0]
        assert (collected.op_id, collected.digits, collected.reason) == (op, "1234", "max_digits")

        # 3. The phone streams its 3 s 440 Hz WAV; the recording ends on the silence after it.
        recording = tmp_path / "from-phone.wav"
        op = stream.record(recording, time_limit=20, silence_seconds=1.0)
        phone.command(cmd="stream")
        phone.expect("streamed")
        done = wait_for(lambda: call.of(RecordingFinished), timeout=15)[0]
        assert done.op_id == op and done.reason == "silence"
        pcm, rate = _wav(recording)
        assert rate == 8000
        assert abs(len(pcm) / rate - 3.0) <= 0.5
        assert abs(_dominant(pcm, rate) - 440) <= 10

        phone.command(cmd="hangup")
        wait_for(lambda: call.ended, timeout=10)
        phone.command(cmd="quit")
        phone.expect("done")
    finally:
        phone.stop()
        uas.close()
    pcm, rate = _wav(heard)
    assert np.abs(pcm.astype(np.int32)).mean() > 100  # not silence
    assert abs(_dominant(pcm, rate) - 440) <= 10
