"""RTP/RTCP packets: known bytes, round trips (hypothesis), malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.rtp import (
    ReportBlock,
    RtcpBye,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtpError,
    RtpPacket,
    build_rtcp,
    is_rtcp,
    parse_rtcp,
    parse_rtp,
)


def test_known_header_bytes() -> None:
    packet = RtpPacket(payload_type=0, sequence=0x1234, timestamp=0xDEADBEEF, ssrc=0x01020304,
                       payload=b"\xff" * 4, marker=True)
    data = packet.to_bytes()
    assert data == bytes.fromhex("80801234deadbeef01020304ffffffff")
    assert parse_rtp(data) == packet


def test_csrc_extension_and_padding() -> None:
    packet = RtpPacket(8, 65535, 2**32 - 1, 7, b"abc", csrcs=(1, 2, 3),
                       extension=(0xBEDE, b"\x10\x01\x00\x00"), padding=5)
    data = packet.to_bytes()
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[-1] == 5 and len(data) == 12 + 12 + 4 + 4 + 3 + 5
    parsed = parse_rtp(data)
    assert parsed.payload == b"abc" and parsed.csrcs == (1, 2, 3)
    assert parsed.extension == (0xBEDE, b"\x10\x01\x00\x00") and parsed.padding == 5


@given(
    pt=st.integers(0, 127), seq=st.integers(0, 65535), ts=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1), payload=st.binary(max_size=200), marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 2**32 - 1), max_size=15),
    ext=st.none() | st.tuples(st.integers(0, 65535),
                              st.binary(max_size=40).map(lambda b: b + bytes(-len(b) % 4))),
    padding=st.integers(0, 255),
)
def test_rtp_round_trip(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool,
                        csrcs: list[int], ext: tuple[int, bytes] | None, padding: int) -> None:
    packet = RtpPacket(pt, seq, ts, ssrc, payload, marker, tuple(csrcs), ext, padding)
    assert parse_rtp(packet.to_bytes()) == packet


@given(st.binary(max_size=64))
def test_garbage_never_raises_anything_but_rtp_error(data: bytes) -> None:
    try:
        parse_rtp(data)
    except RtpError:
        pass


@pytest.mark.parametrize("data", [
    b"\x80\x00\x00",  # too short
    bytes.fromhex("40000000000000000000000000"),  # version 1
    bytes.fromhex("83000000000000000000000000"),  # 3 CSRCs announced, none there
    bytes.fromhex("a0000000000000000000000000"),  # padding count 0
    bytes.fromhex("9000000000000000000000000000ffff"),  # extension longer than the packet
])
def test_malformed_rtp(data: bytes) -> None:
    with pytest.raises(RtpError):
        parse_rtp(data)


def test_rtcp_compound_round_trip() -> None:
    block = ReportBlock(ssrc=99, fraction_lost=12, cumulative_lost=-3, highest_sequence=70000,
                        jitter=40, last_sr=0x12345678, delay_since_last_sr=655)
    packets = [
        RtcpSenderReport(1, 0xE0000000_80000000, 1600, 10, 1600, (block,)),
        RtcpReceiverReport(2, (block, block)),
        RtcpBye((1, 2), "call ended"),
    ]
    data = build_rtcp(packets)
    assert len(data) % 4 == 0 and is_rtcp(data)
    assert parse_rtcp(data) == packets


def test_rtcp_is_told_from_rtp() -> None:
    assert not is_rtcp(RtpPacket(0, 1, 2, 3, b"x" * 160).to_bytes())
    assert not is_rtcp(RtpPacket(101, 1, 2, 3, b"x" * 4, marker=True).to_bytes())
    assert is_rtcp(RtcpReceiverReport(5).to_bytes())


def test_rtcp_unknown_types_kept_and_truncation_rejected() -> None:
    sdes = bytes.fromhex("81ca0001") + b"\x00\x00\x00\x01"
    parsed = parse_rtcp(RtcpReceiverReport(5).to_bytes() + sdes)
    assert parsed[1].to_bytes() == sdes
    with pytest.raises(RtpError):
        parse_rtcp(RtcpReceiverReport(5, (ReportBlock(1, 0, 0, 0, 0),)).to_bytes()[:-4])
