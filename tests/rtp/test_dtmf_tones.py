"""RFC 4733 send/receive and the tone generator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.rtp import (
    BUSY,
    RINGBACK,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    ToneGenerator,
    dtmf_tone,
    frames,
    sine,
)


def _dominant(pcm: np.ndarray, top: int = 1) -> list[float]:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    return sorted(float(freqs[i]) for i in np.argsort(spectrum)[-top:])


def test_sender_packets_follow_rfc4733() -> None:
    packets = DtmfSender("5", 8000, duration_ms=100).packets()
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
    assert {p.timestamp for p in packets} == {8000}
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.event for e in events} == {5} and {e.volume for e in events} == {10}


def test_payload_bytes() -> None:
    assert TelephoneEvent(11, True, 10, 800).to_bytes() == bytes.fromhex("0b8a0320")


@given(st.text(alphabet="0123456789*#ABCD", min_size=1, max_size=12), st.booleans(),
       st.randoms(use_true_random=False))
def test_receiver_gives_each_press_once(digits: str, shuffle: bool, rng) -> None:
    receiver = DtmfReceiver()
    got: list[str] = []
    now = 0.0
    for index, digit in enumerate(digits):
        packets = DtmfSender(digit, (index * 4000) & 0xFFFFFFFF).packets()
        # Retransmitted end packets and (optionally) reordering within one event.
        packets = packets + packets[-2:]
        if shuffle:
            body = packets[1:]
            rng.shuffle(body)
            packets = packets[:1] + body
        for p in packets:
            now += 0.02
            got += [d.digit for d in receiver.receive(p.payload, p.timestamp, p.marker, now)]
    got += [d.digit for d in receiver.poll(now + 1)]
    assert "".join(got) == digits


def test_lost_end_packets_end_by_next_event_or_timeout() -> None:
    receiver = DtmfReceiver(timeout=0.5)
    first = [p for p in DtmfSender("1", 0).packets() if not TelephoneEvent.parse(p.payload).end]
    for p in first:
        assert receiver.receive(p.payload, p.timestamp, p.marker, 0.1) == []
    second = DtmfSender("2", 1600).packets()
    out = receiver.receive(second[0].payload, second[0].timestamp, True, 0.2)
    assert [(d.digit, d.ended) for d in out] == [("1", False)]
    assert receiver.poll(0.3) == []
    assert [(d.digit, d.ended) for d in receiver.poll(0.8)] == [("2", False)]
    # The end packets of "2" arriving after the timeout do not give it again.
    for p in second[1:]:
        assert receiver.receive(p.payload, p.timestamp, p.marker, 0.9) == []


def test_bad_digit() -> None:
    with pytest.raises(ValueError):
        DtmfSender("x", 0)


def test_ringback_cadence_and_frequencies() -> None:
    gen = ToneGenerator(RINGBACK)
    audio = np.concatenate([gen.next_frame() for _ in range(300)])  # 6 s: one cycle
    on, off = audio[:16000], audio[16000:48000]
    assert np.abs(off).max() == 0 and np.abs(on).max() > 4000
    assert _dominant(on, 2) == [440.0, 480.0]


def test_busy_cadence() -> None:
    gen = ToneGenerator(BUSY)
    audio = np.concatenate([gen.next_frame() for _ in range(75)])
    assert np.abs(audio[4000:8000]).max() == 0 and np.abs(audio[8000:12000]).max() > 0
    assert _dominant(audio[:4000], 2) == [480.0, 620.0]


def test_dtmf_tone_ends() -> None:
    gen = ToneGenerator(dtmf_tone("5"))
    chunks = []
    while (frame := gen.next_frame()) is not None:
        chunks.append(frame)
    audio = np.concatenate(chunks)
    assert len(audio) == 1600
    assert _dominant(audio[:800], 2) == [770.0, 1340.0] or _dominant(audio[:800], 2) == [
        770.0, 1330.0]


def test_frames_pad_the_last_one() -> None:
    parts = list(frames(sine(440, 0.05)))
    assert [len(p) for p in parts] == [160, 160, 160]
    assert not parts[-1][80:].any()
