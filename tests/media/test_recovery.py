"""A process killed (kill -9) in the middle of a recording leaves a .part file, never a
corrupt WAV at the recording's name; recover_partial_recordings completes it or removes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np

from actors.media import recover_partial_recordings
from tests.media.rtp_peer import dominant_frequencies

REPO = Path(__file__).resolve().parent.parent.parent

# A shard stand-in: an engine recording what a peer streams, until it is killed. Patched by
# gevent as every process of a node is (the engine's sockets must not be gevent's then).
CHILD = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import sys
    import gevent
    from actors.media import MediaEngine
    from protocols.rtp import sine
    from tests.media.rtp_peer import RtpPeer

    engine = MediaEngine("127.0.0.1", 48000, 48100).start()
    stream = engine.open_stream()
    peer = RtpPeer()
    stream.set_remote(*peer.address)
    peer.target = stream.local_address
    stream.record(sys.argv[1])
    peer.stream(sine(440, 60.0))
    gevent.sleep(2.0)
    print("recording", flush=True)
    gevent.sleep(60)
""")


def test_kill_during_recording_then_recover(tmp_path: Path) -> None:
    target = tmp_path / "vm" / "message.wav"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "recording"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    part = target.with_name("message.wav.part")
    assert part.exists() and not target.exists()  # nothing half-written at the real name
    recovered = recover_partial_recordings(tmp_path)
    assert recovered == [target] and not part.exists()
    with wave.open(str(target)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        frames = wav.getnframes()
        pcm = np.frombuffer(wav.readframes(frames), dtype="<i2")
    assert len(pcm) == frames and frames >= 8000  # at least a second reached the disk
    assert abs(dominant_frequencies(pcm)[0] - 440) <= 10


def test_recover_drops_too_short_and_foreign_parts(tmp_path: Path) -> None:
    short = tmp_path / "short.wav.part"
    with wave.open(str(short), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(bytes(800))  # 50 ms
    (tmp_path / "junk.wav.part").write_bytes(b"not a wav")
    (tmp_path / "empty.wav.part").write_bytes(b"")
    assert recover_partial_recordings(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
