"""The media engine on real UDP sockets on loopback: prompts, tones, DTMF both ways,
collection, recording, latching, bridging and conference mixing."""

from __future__ import annotations

import wave
from pathlib import Path

import gevent
import numpy as np
import pytest

from actors.media import (
    DigitsCollected,
    DtmfReceived,
    MediaEngine,
    MediaEvent,
    MediaTimeout,
    PlaybackFinished,
    PortAllocator,
    PortsExhausted,
    RecordingFinished,
    RecordingStarted,
    RemoteLatched,
    wav_bytes,
)
from protocols.rtp import (
    RINGBACK,
    DtmfReceiver,
    ToneGenerator,
    dtmf_tone,
    seq_delta,
    sine,
    ts_delta,
)
from protocols.sdp import Answer, NegotiationFailure, build_answer, parse_sdp
from tests.media.rtp_peer import RtpPeer, dominant_frequencies, wait_for


class Owner:
    def __init__(self) -> None:
        self.events: list[MediaEvent] = []

    def send(self, event: MediaEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def _connect(engine: MediaEngine, peers: list[RtpPeer], **peer_args) -> tuple:
    owner = Owner()
    stream = engine.open_stream(owner)
    peer = RtpPeer(**peer_args)
    peers.append(peer)
    stream.set_remote(*peer.address, codec=peer.codec, payload_type=peer.payload_type,
                      telephone_event_pt=peer.telephone_event_pt)
    peer.target = stream.local_address
    return stream, peer, owner


def test_prompt_from_wav_reaches_the_phone(engine: MediaEngine, peers: list[RtpPeer]) -> None:
    stream, peer, owner = _connect(engine, peers)
    op = stream.play(wav_bytes(sine(440, 0.6)))
    done = wait_for(lambda: owner.of(PlaybackFinished))
    assert done == [PlaybackFinished(stream.id, op, "play", "done")]
    wait_for(lambda: len(peer.received) >= 30)
    packets = peer.received
    assert len(packets) == 30  # 0.6 s in 20 ms frames, no more
    assert {p.ssrc for p in packets} == {stream.ssrc} and {p.payload_type for p in packets} == {0}
    assert all(seq_delta(b.sequence, a.sequence) == 1 for a, b in zip(packets, packets[1:], strict=False))
    assert all(ts_delta(b.timestamp, a.timestamp) == 160 for a, b in zip(packets, packets[1:], strict=False))
    assert dominant_frequencies(peer.audio()) == [440.0]


def test_negotiated_from_sdp_pcma(engine: MediaEngine, peers: list[RtpPeer]) -> None:
    owner = Owner()
    stream = engine.open_stream(owner)
    peer = RtpPeer(codec="PCMA")
    peers.append(peer)
    offer = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {peer.address[1]} RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\n")
    answer = build_answer(offer, stream.local_media())
    assert not hasattr(answer, "reason")
    assert answer.sdp.media[0].port == stream.local_port  # type: ignore[union-attr]
    stream.set_remote_from(answer.streams[0])  # type: ignore[union-attr]
    assert (stream.codec, stream.payload_type, stream.telephone_event_pt) == ("PCMA", 8, 96)
    peer.target = stream.local_address
    peer.telephone_event_pt = 96
    stream.play(sine(1000, 0.2))
    wait_for(lambda: len(peer.received) >= 10)
    assert {p.payload_type for p in peer.received} == {8}
    assert dominant_frequencies(peer.audio()) == [1000.0]
    stream.collect_dtmf(max_digits=2)
    peer.dial("42")
    assert wait_for(lambda: owner.of(DigitsCollected))[0].digits == "42"


def _offer(port: int, direction: str = "sendrecv", codecs: str = "0 101") -> str:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {codecs}\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            f"a={direction}\r\n")


def test_sdp_helpers_and_hold(engine: MediaEngine, peers: list[RtpPeer]) -> None:
    owner = Owner()
    stream = engine.open_stream(owner)
    peer = RtpPeer()
    peers.append(peer)
    answer = stream.answer_sdp(_offer(peer.address[1]).encode())
    assert isinstance(answer, Answer) and answer.sdp.media[0].port == stream.local_port
    assert stream.remote == peer.address and stream.sending
    # The far end holds the call (sendonly): we stop sending until it resumes.
    stream.answer_sdp(_offer(peer.address[1], "sendonly"))
    assert not stream.sending
    stream.play(sine(440, 0.2))
    wait_for(lambda: owner.of(PlaybackFinished))
    assert peer.received == []
    stream.answer_sdp(_offer(peer.address[1]))
    stream.play(sine(440, 0.2))
    wait_for(lambda: len(peer.received) >= 10)
    failure = stream.answer_sdp(_offer(peer.address[1], codecs="18"))
    assert isinstance(failure, NegotiationFailure) and failure.status == 488
    assert stream.remote == peer.address  # unchanged
    # The B-leg side: our offer, their answer.
    b_stream = engine.open_stream()
    offer = b_stream.offer_sdp()
    assert offer.media[0].port == b_stream.local_port
    their_answer = _offer(peer.address[1], codecs="0 101")
    assert b_stream.accept_answer_sdp(offer, their_answer) is None
    assert (b_stream.remote, b_stream.codec, b_stream.telephone_event_pt) == (
        peer.address, "PCMU", 101)


def test_terminator_stops_a_looping_prompt(engine: MediaEngine, peers: list[RtpPeer]) -> None:
    stream, peer, owner = _connect(engine, peers)
    op = stream.play(sine(440, 0.2), loops=0, terminators="#*")
    wait_for(lambda: len(peer.received) >= 20)  # looped past its 0.2 s
    peer.dial("#")
    finished = wait_for(lambda: owner.of(PlaybackFinished))
    assert finished == [PlaybackFinished(stream.id, op, "play", "terminator", "#")]
    assert [e.digit for e in owner.of(DtmfReceived)] == ["#"]
    # The digit that stopped the prompt is kept for the menu's collect.
    collect = stream.collect_dtmf(max_digits=1, terminators="")
    assert wait_for(lambda: owner.of(DigitsCollected)) == [
        DigitsCollected(stream.id, collect, "#", "max_digits")]


def test_ringback_tone(engine: MediaEngine, peers: list[RtpPeer]) -> None:
    stream, peer, owner = _connect(engine, peers)
    op = stream.tone(RINGBACK, duration=1.0)
    assert wait_for(lambda: owner.of(PlaybackFinished))[0] == PlaybackFinished(
        stream.id, op, "tone", "done")
    wait_for(lambda: len(peer.received) >= 50)
    assert dominant_frequencies(peer.audio(), 2) == [440.0, 480.0]


def test_send_dtmf_as_rfc4733(engine: MediaEngine, peers: list[RtpPeer]) -> None:
    stream, peer, owner = _connect(engine, peers)
    op = stream.send_dtmf("1#9")
    assert wait_for(lambda: owner.of(PlaybackFinished))[0].op_id == op
    receiver = DtmfReceiver()
    digits = []
    events = [p for p in peer.received if p.payload_type == 101]
    for p in events:
        digits += [d.digit for d in receiver.receive(p.payload, p.timestamp, p.marker, 0.0)]
    assert "".join(digits) == "1#9"
    assert sum(p.marker for p in events) == 3  # one marked start per key press


def test_collect_terminator_max_and_timeout(engine: MediaEngine, peers: list[RtpPeer]) -> None:
    stream, peer, owner = _connect(engine, peers)
    op = stream.collect_dtmf(max_digits=6, terminators="#", timeout=5, inter_digit_timeout=2)
    peer.dial("12#")
    assert wait_for(lambda: owner.of(DigitsCollected)) == [
        DigitsCollected(stream.id, op, "12", "terminator", "#")]
    op = stream.collect_dtmf(max_digits=2, terminators="#")
    peer.dial("789")
    assert wait_for(lambda: len(owner.of(DigitsCollected)) == 2) and owner.of(
        DigitsCollected)[1] == DigitsCollected(stream.id, op, "78", "max_digits")
    assert stream.flush_digits() == "9"  # pressed after the collect was complete
    op = stream.collect_dtmf(max_digits=4, timeout=0.3, inter_digit_timeout=0.3)
    assert wait_for(lambda: len(owner.of(DigitsCollected)) == 3) and owner.of(
        DigitsCollected)[2] == DigitsCollected(stream.id, op, "", "timeout")


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), wav.getframerate()


def test_record_time_limit(engine: MediaEngine, peers: list[RtpPeer], tmp_path: Path) -> None:
    stream, peer, owner = _connect(engine, peers, codec="PCMA")
    path = tmp_path / "rec.wav"
    op = stream.record(path, time_limit=1.0)
    assert wait_for(lambda: owner.of(RecordingStarted)) == [RecordingStarted(stream.id, op, path)]
    peer.stream(sine(440, 2.0))
    done = wait_for(lambda: owner.of(RecordingFinished))[0]
    assert (done.reason, done.seconds, done.path) == ("time_limit", 1.0, path)
    pcm, rate = _read_wav(path)
    assert rate == 8000 and len(pcm) == 8000
    assert abs(dominant_frequencies(pcm)[0] - 440) <= 10
    assert not path.with_name("rec.wav.part").exists()


def test_record_stops_on_silence_and_on_terminator(
    engine: MediaEngine, peers: list[RtpPeer], tmp_path: Path
) -> None:
    stream, peer, owner = _connect(engine, peers)
    stream.record(tmp_path / "a.wav", silence_seconds=0.4, silence_threshold=200)
    peer.stream(np.concatenate([sine(440, 0.5), np.zeros(8000 * 3, dtype=np.int16)]))
    done = wait_for(lambda: owner.of(RecordingFinished))[0]
    # The silence that ended it is not kept: about the 0.5 s of tone remain.
    assert done.reason == "silence" and 0.4 <= done.seconds <= 0.8
    peer.close()
    peer2 = RtpPeer()
    peers.append(peer2)
    stream.set_remote(*peer2.address)
    peer2.target = stream.local_address
    stream.record(tmp_path / "b.wav", terminators="#")
    peer2.stream(sine(300, 0.3)).join()
    peer2.dial("#")
    done = wait_for(lambda: len(owner.of(RecordingFinished)) == 2) and owner.of(
        RecordingFinished)[1]
    assert (done.reason, done.digit) == ("terminator", "#")
    pcm, _ = _read_wav(tmp_path / "b.wav")
    assert abs(dominant_frequencies(pcm)[0] - 300) <= 10
    assert owner.of(DigitsCollected) == []


def test_close_keeps_the_recording(engine: MediaEngine, peers: list[RtpPeer],
                                   tmp_path: Path) -> None:
    stream, peer, owner = _connect(engine, peers)
    stream.record(tmp_path / "c.wav")
    stream.play(sine(440, 5))
    peer.stream(sine(440, 0.4)).join()
    stream.close()
    wait_for(lambda: owner.of(RecordingFinished))
    assert [e.reason for e in owner.of(PlaybackFinished)] == ["closed"]
    rec = owner.of(RecordingFinished)[0]
    assert rec.reason == "closed" and rec.seconds > 0.2
    assert (tmp_path / "c.wav").exists() and not (tmp_path / "c.wav.part").exists()


def test_symmetric_rtp_latches_once(engine: MediaEngine, peers: list[RtpPeer]) -> None:
    owner = Owner()
    stream = engine.open_stream(owner)
    stream.set_remote("127.0.0.1", 9)  # what the SDP said; the phone is really elsewhere
    nat, intruder = RtpPeer(), RtpPeer()
    peers += [nat, intruder]
    nat.target = intruder.target = stream.local_address
    nat.stream(sine(440, 0.1)).join()
    assert wait_for(lambda: owner.of(RemoteLatched)) == [RemoteLatched(stream.id, nat.address)]
    intruder.stream(sine(440, 0.1)).join()
    stream.play(sine(440, 0.2))
    wait_for(lambda: owner.of(PlaybackFinished))
    wait_for(lambda: len(nat.received) >= 10)
    assert intruder.received == [] and stream.packets_dropped >= 5
    # A re-INVITE moves the far end; a stray packet of the old one still latches first, but
    # the first packet from the new SDP address takes the stream back.
    moved = RtpPeer()
    peers.append(moved)
    moved.target = stream.local_address
    stream.set_remote(*moved.address)
    nat.stream(sine(440, 0.02)).join()
    moved.stream(sine(440, 0.02)).join()
    wait_for(lambda: len(owner.of(RemoteLatched)) == 3)
    assert [e.address for e in owner.of(RemoteLatched)][1:] == [nat.address, moved.address]
    stream.play(sine(440, 0.1))
    wait_for(lambda: len(moved.received) >= 5)


def test_bridge_rewrites_ssrc_sequence_and_passes_dtmf(
    engine: MediaEngine, peers: list[RtpPeer]
) -> None:
    a_stream, a_peer, a_owner = _connect(engine, peers)
    b_stream, b_peer, b_owner = _connect(engine, peers, codec="PCMA", telephone_event_pt=96)
    engine.bridge(a_stream, b_stream)
    a_peer.stream(sine(440, 0.4)).join()
    a_peer.dial("5")
    b_peer.stream(sine(700, 0.4)).join()
    wait_for(lambda: len([p for p in b_peer.received if p.payload_type == 96]) >= 7)
    wait_for(lambda: len(a_peer.received) >= 20)
    to_b = b_peer.received
    assert {p.ssrc for p in to_b} == {b_stream.ssrc}
    assert all(seq_delta(y.sequence, x.sequence) == 1 for x, y in zip(to_b, to_b[1:], strict=False))
    assert {p.payload_type for p in to_b} == {8, 96}  # transcoded to B's codec, B's event PT
    assert dominant_frequencies(b_peer.audio()) == [440.0]
    digits = []
    receiver = DtmfReceiver()
    for p in to_b:
        if p.payload_type == 96:
            digits += [d.digit for d in receiver.receive(p.payload, p.timestamp, p.marker, 0.0)]
    assert digits == ["5"]
    assert [e.digit for e in a_owner.of(DtmfReceived)] == ["5"]  # the leg still hears it
    assert {p.ssrc for p in a_peer.received} == {a_stream.ssrc}
    assert dominant_frequencies(a_peer.audio()) == [700.0]
    stats = a_stream.stats()
    assert stats["packets_received"] >= 27 and stats["packets_lost"] == 0
    assert stats["remote"] == f"{a_peer.address[0]}:{a_peer.address[1]}"
    assert b_stream.stats()["packets_sent"] >= 27 and b_stream.stats()["codec"] == "PCMA"
    # A prompt to one side while bridged replaces what the other side sends, then relay resumes.
    engine.unbridge(a_stream)
    assert a_stream.peer is None and b_stream.peer is None


def test_conference_everyone_hears_the_others(engine: MediaEngine,
                                             peers: list[RtpPeer]) -> None:
    tones = {300.0: None, 700.0: None, 1100.0: None}
    members = []
    room = engine.conference("room-1")
    for freq in tones:
        stream, peer, _ = _connect(engine, peers)
        room.join(stream)
        members.append((freq, stream, peer))
    senders = [peer.stream(sine(freq, 1.5)) for freq, _, peer in members]
    for sender in senders:
        sender.join()
    for freq, _, peer in members:
        heard = peer.audio(peer.received[25:70])  # the middle, while all three talk
        others = sorted(set(tones) - {freq})
        assert all(abs(got - want) <= 10 for got, want in
                   zip(dominant_frequencies(heard, 2), others, strict=True)), freq
        spectrum = np.abs(np.fft.rfft(heard.astype(np.float64)))
        freqs = np.fft.rfftfreq(len(heard), 1 / 8000)
        own = spectrum[np.argmin(np.abs(freqs - freq))]
        assert own < 0.05 * spectrum.max()  # not its own voice


def test_conference_mix_saturates(engine: MediaEngine, peers: list[RtpPeer]) -> None:
    room = engine.conference("loud")
    members = []
    for _ in range(3):
        stream, peer, _ = _connect(engine, peers)
        room.join(stream)
        members.append(peer)
    loud = np.full(8000, 30000, dtype=np.int16)
    members[0].stream(loud)
    members[1].stream(loud).join()
    heard = members[2].audio(members[2].received[10:40])
    # 30000 + 30000 would wrap to a negative value; the mix clips at the top instead.
    assert heard.min() >= 0 and heard.max() >= 32000


def test_port_allocation_even_ports_exhaustion_and_release() -> None:
    ports = PortAllocator("127.0.0.1", 42001, 42008)
    assert ports.capacity == 4
    socks = [ports.bind() for _ in range(4)]
    numbers = [s.getsockname()[1] for s in socks]
    assert sorted(numbers) == [42002, 42004, 42006, 42008]
    with pytest.raises(PortsExhausted):
        ports.bind()
    socks[1].close()
    ports.release(numbers[1])
    again = ports.bind()
    assert again.getsockname()[1] == numbers[1]
    for s in socks + [again]:
        s.close()


def test_metrics_follow_the_streams(engine: MediaEngine, peers: list[RtpPeer]) -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    sent_before = value("mirliton_media_packets_total", direction="sent")
    stream, peer, owner = _connect(engine, peers)
    stream.play(sine(440, 0.2))
    wait_for(lambda: owner.of(PlaybackFinished))
    engine.report_metrics()
    assert value("mirliton_media_streams") == len(engine.streams) >= 1
    assert value("mirliton_media_packets_total", direction="sent") - sent_before == 10
    stream.close()
    engine.report_metrics()  # a closed stream's packets stay counted
    assert value("mirliton_media_packets_total", direction="sent") - sent_before == 10


def test_rtp_timeout_and_discarded_recording(engine: MediaEngine, peers: list[RtpPeer],
                                             tmp_path: Path) -> None:
    owner = Owner()
    stream = engine.open_stream(owner, rtp_timeout=0.3)
    peer = RtpPeer()
    peers.append(peer)
    stream.set_remote(*peer.address)
    peer.target = stream.local_address
    assert wait_for(lambda: owner.of(MediaTimeout)) == [MediaTimeout(stream.id, 0.3)]
    stream.record(tmp_path / "gone.wav")
    peer.stream(sine(440, 0.2)).join()
    stream.stop_record(discard=True)
    done = wait_for(lambda: owner.of(RecordingFinished))[0]
    assert done.discarded and done.reason == "stopped"
    assert list(tmp_path.iterdir()) == []  # neither the recording nor its .part


def test_record_both_directions_of_a_bridge(engine: MediaEngine, peers: list[RtpPeer],
                                            tmp_path: Path) -> None:
    a_stream, a_peer, a_owner = _connect(engine, peers)
    b_stream, b_peer, _ = _connect(engine, peers, codec="PCMA")
    engine.bridge(a_stream, b_stream)
    path = tmp_path / "call.wav"
    a_stream.record(path, both_directions=True, time_limit=1.0)
    senders = [a_peer.stream(sine(300, 1.5)), b_peer.stream(sine(1100, 1.5))]
    done = wait_for(lambda: a_owner.of(RecordingFinished), timeout=10)[0]
    for sender in senders:
        sender.join()
    assert done.reason == "time_limit"
    pcm, _ = _read_wav(path)
    found = dominant_frequencies(pcm[1600:], 2)  # past the jitter buffer's first frames
    assert abs(found[0] - 300) <= 10 and abs(found[1] - 1100) <= 10
    # The relay went on while recording.
    assert dominant_frequencies(b_peer.audio()) == [300.0]


def test_recording_from_a_far_end_with_ptime_30(engine: MediaEngine, peers: list[RtpPeer],
                                                tmp_path: Path) -> None:
    stream, peer, owner = _connect(engine, peers)
    stream.record(tmp_path / "p30.wav", time_limit=1.0)
    peer.stream(sine(440, 1.5), ptime_ms=30)
    assert wait_for(lambda: owner.of(RecordingFinished))[0].reason == "time_limit"
    pcm, _ = _read_wav(tmp_path / "p30.wav")
    assert len(pcm) == 8000 and abs(dominant_frequencies(pcm)[0] - 440) <= 10
    # 30 ms packets fill 20 ms frames without holes once playout started.
    levels = np.abs(pcm[1600:].astype(np.int32)).reshape(-1, 160).mean(axis=1)
    assert (levels > 1000).mean() > 0.95


def test_buffered_digits_beyond_a_collect_stay_for_the_next(engine: MediaEngine,
                                                             peers: list[RtpPeer]) -> None:
    stream, peer, owner = _connect(engine, peers)
    peer.dial("123")
    wait_for(lambda: len(owner.of(DtmfReceived)) == 3)
    first = stream.collect_dtmf(max_digits=1, terminators="")
    second = stream.collect_dtmf(max_digits=2, terminators="")
    assert wait_for(lambda: len(owner.of(DigitsCollected)) == 2) and owner.of(
        DigitsCollected) == [DigitsCollected(stream.id, first, "1", "max_digits"),
                             DigitsCollected(stream.id, second, "23", "max_digits")]


def test_a_conference_left_empty_can_be_joined_again(engine: MediaEngine,
                                                     peers: list[RtpPeer]) -> None:
    room = engine.conference("again")
    first, _, _ = _connect(engine, peers)
    room.join(first)
    room.leave(first)
    a, a_peer, _ = _connect(engine, peers)
    b, b_peer, _ = _connect(engine, peers)
    room.join(a)
    room.join(b)
    assert engine.conference("again") is room
    a_peer.stream(sine(500, 0.6)).join()
    wait_for(lambda: len(b_peer.received) >= 25)
    assert abs(dominant_frequencies(b_peer.audio(b_peer.received[5:30]))[0] - 500) <= 10


def test_inband_dtmf_from_a_far_end_without_rfc4733(engine: MediaEngine,
                                                    peers: list[RtpPeer]) -> None:
    stream, peer, owner = _connect(engine, peers, codec="PCMA")
    stream.detect_inband_dtmf()
    op = stream.collect_dtmf(max_digits=5, terminators="#", timeout=10)
    gen = ToneGenerator(dtmf_tone("42#", on_ms=100, off_ms=80))
    chunks = []
    while (frame := gen.next_frame()) is not None:
        chunks.append(frame)
    peer.stream(np.concatenate(chunks + [np.zeros(1600, dtype=np.int16)])).join()
    assert wait_for(lambda: owner.of(DigitsCollected)) == [
        DigitsCollected(stream.id, op, "42", "terminator", "#")]
    assert [e.digit for e in owner.of(DtmfReceived)] == ["4", "2", "#"]


def test_rtcp_reports_both_ways(peers: list[RtpPeer]) -> None:
    from gevent import socket as gsocket

    from protocols.rtp import (
        ReportBlock,
        RtcpBye,
        RtcpReceiverReport,
        RtcpSenderReport,
        build_rtcp,
        parse_rtcp,
    )

    engine = MediaEngine("127.0.0.1", 43200, 43299, rtcp_interval=0.2).start()
    try:
        stream = engine.open_stream()
        peer = RtpPeer()
        peers.append(peer)
        rtcp = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
        rtcp.bind(("127.0.0.1", 0))
        stream.set_remote(*peer.address, rtcp_port=rtcp.getsockname()[1])
        peer.target = stream.local_address
        peer.stream(sine(440, 0.6)).join()
        stream.play(sine(440, 0.2))
        reports: list = []
        with gevent.Timeout(5):
            while not any(isinstance(p, RtcpSenderReport) for p in reports):
                reports += parse_rtcp(rtcp.recv(2048))
        sender_report = next(p for p in reports if isinstance(p, RtcpSenderReport))
        assert sender_report.ssrc == stream.ssrc and sender_report.packet_count >= 1
        (block,) = sender_report.reports
        assert block.ssrc == peer.ssrc and block.cumulative_lost == 0
        assert block.highest_sequence & 0xFFFF == peer.seq
        # The far end's report on us, echoing our SR: the stream learns the round trip.
        lsr = (sender_report.ntp_timestamp >> 16) & 0xFFFFFFFF
        rtcp.sendto(build_rtcp([RtcpReceiverReport(peer.ssrc, (
            ReportBlock(stream.ssrc, 64, 3, 1000, 40, lsr, 0),))]),
            (stream.local_address[0], stream.local_port + 1))
        wait_for(lambda: stream.round_trip_ms is not None)
        assert 0 <= stream.stats()["round_trip_ms"] < 5000
        assert stream.stats()["remote_fraction_lost"] == 0.25
        stream.close()  # says goodbye
        with gevent.Timeout(5):
            while True:
                if any(isinstance(p, RtcpBye) and p.ssrcs == (stream.ssrc,)
                       for p in parse_rtcp(rtcp.recv(2048))):
                    break
        rtcp.close()
    finally:
        engine.stop()
