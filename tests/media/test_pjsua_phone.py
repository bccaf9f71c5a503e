"""pjsua2 as a real phone against the media engine: a small UAS (tests/media/sip_uas.py)
answers its call with an anchored stream; the engine plays a 440 Hz tone the phone's
recorder captures, collects the phone's RFC 4733 digits, and records the 3 s 440 Hz tone
the phone streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actors.media import DigitsCollected, MediaEngine, PlaybackFinished, RecordingFinished
from protocols.rtp import sine
from tests.media.conftest import PhoneProcess
from tests.media.rtp_peer import wait_for
from tests.media.sip_uas import MediaUas
from tests.phones import dominant, read_wav

pytest.importorskip("pjsua2")


@pytest.mark.slow
def test_pjsua2_phone_hears_prompt_sends_dtmf_and_is_recorded(
    engine: MediaEngine, tmp_path: Path
) -> None:
    uas = MediaUas(engine)
    heard = tmp_path / "phone-heard.wav"
    phone = PhoneProcess(heard, tmp_path, tone=440)
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
        # The silence that ends it is left out of the file, so a generous 2 s costs nothing.
        op = stream.record(recording, time_limit=20, silence_seconds=2.0)
        phone.command(cmd="stream")
        phone.expect("streamed")
        done = wait_for(lambda: call.of(RecordingFinished), timeout=15)[0]
        assert done.op_id == op and done.reason == "silence"
        pcm, rate = read_wav(recording)
        assert rate == 8000
        assert abs(len(pcm) / rate - 3.0) <= 0.5
        assert abs(dominant(pcm, rate) - 440) <= 10

        phone.command(cmd="hangup")
        wait_for(lambda: call.ended, timeout=10)
        phone.expect("recorded")
        phone.command(cmd="quit")
        phone.expect("done")
    finally:
        phone.stop()
        uas.close()
    pcm, rate = read_wav(heard)
    assert np.abs(pcm.astype(np.int32)).mean() > 100  # not silence
    assert abs(dominant(pcm, rate) - 440) <= 10
