"""Real phones through the engine: two pjsua2 phones bridged (each hears the other's tone,
RFC 4733 digits pass from one to the other), three in a conference (each hears the other
two, not itself). Each phone is a process of its own (tests/phones/phone.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actors.media import DtmfReceived, MediaEngine
from tests.media.conftest import PhoneProcess
from tests.media.rtp_peer import wait_for
from tests.media.sip_uas import MediaUas, UasCall
from tests.phones import dominant, read_wav, spectrum_at

pytest.importorskip("pjsua2")


def _connect(uas: MediaUas, phones: list[PhoneProcess]) -> list[UasCall]:
    calls = []
    for phone in phones:
        phone.expect("ready")
        phone.command(cmd="call", uri=uas.uri)
        calls.append(uas.wait_call())
        phone.expect("media")
    return calls


def _stream(phones: list[PhoneProcess]) -> None:
    """Every phone plays its tone once, at the same time."""
    for phone in phones:
        phone.command(cmd="stream")
    for phone in phones:
        phone.expect("streamed")


def _finish(phones: list[PhoneProcess], calls: list[UasCall]) -> None:
    for phone in phones:
        phone.command(cmd="hangup")
    wait_for(lambda: all(call.ended for call in calls), timeout=10)
    for phone in phones:
        phone.expect("recorded")
        phone.command(cmd="quit")
        phone.expect("done")


@pytest.mark.slow
def test_two_phones_bridged_hear_each_other_and_pass_dtmf(
    engine: MediaEngine, tmp_path: Path
) -> None:
    uas = MediaUas(engine)
    tones = (440.0, 700.0)
    phones = [PhoneProcess(tmp_path / f"heard-{int(t)}.wav", tmp_path, tone=t) for t in tones]
    try:
        a, b = _connect(uas, phones)
        engine.bridge(a.stream, b.stream)
        _stream(phones)
        phones[0].command(cmd="dtmf", digits="5#")
        got = [phones[1].expect("dtmf")["digit"], phones[1].expect("dtmf")["digit"]]
        assert got == ["5", "#"]
        # The A-leg's owner still sees the digits it relays (Kazoo's DTMF call events).
        wait_for(lambda: len(a.of(DtmfReceived)) == 2)
        _finish(phones, [a, b])
    finally:
        for phone in phones:
            phone.stop()
        uas.close()
    for index, phone in enumerate(phones):
        pcm, rate = read_wav(phone.record)
        other = tones[1 - index]
        assert np.abs(pcm.astype(np.int32)).mean() > 100
        assert abs(dominant(pcm, rate) - other) <= 10, (index, dominant(pcm, rate))
        assert spectrum_at(pcm, rate, tones[index]) < 0.05  # no echo of its own tone


@pytest.mark.slow
def test_three_phones_in_a_conference_hear_the_others_not_themselves(
    engine: MediaEngine, tmp_path: Path
) -> None:
    uas = MediaUas(engine)
    tones = (440.0, 700.0, 1000.0)
    phones = [PhoneProcess(tmp_path / f"heard-{int(t)}.wav", tmp_path, tone=t) for t in tones]
    try:
        calls = _connect(uas, phones)
        room = engine.conference("3000")
        for call in calls:
            room.join(call.stream)
        _stream(phones)
        _finish(phones, calls)
    finally:
        for phone in phones:
            phone.stop()
        uas.close()
    for index, phone in enumerate(phones):
        pcm, rate = read_wav(phone.record)
        others = [t for i, t in enumerate(tones) if i != index]
        for frequency in others:
            assert spectrum_at(pcm, rate, frequency) > 0.3, (tones[index], frequency)
        assert spectrum_at(pcm, rate, tones[index]) < 0.05, tones[index]
