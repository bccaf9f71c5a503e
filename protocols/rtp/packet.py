"""RTP and RTCP packets (RFC 3550 sections 5 and 6): parse and build, no I/O.

RTP: the fixed header, CSRC list, one header extension and padding. RTCP: sender reports,
receiver reports (with their report blocks) and BYE, alone or in a compound packet; other
RTCP types are kept as opaque :class:`RtcpUnknown` so a compound packet still parses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "RTP_VERSION",
    "RtcpBye",
    "RtcpPacket",
    "RtcpReceiverReport",
    "RtcpSenderReport",
    "RtcpUnknown",
    "RtpError",
    "RtpPacket",
    "ReportBlock",
    "build_rtcp",
    "is_rtcp",
    "parse_rtcp",
    "parse_rtp",
]

RTP_VERSION = 2
_RTP_HEADER = struct.Struct("!BBHII")
_RTCP_HEADER = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IIIIII")
_SR_INFO = struct.Struct("!IIIII")
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204


class RtpError(ValueError):
    """A datagram that is not a valid RTP or RTCP packet."""


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet. ``payload`` excludes padding; ``padding`` is how many bytes to pad
    with when built (RFC 3550 5.1: the last padding octet counts the padding)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined id, data; multiple of 4)
    padding: int = 0

    def to_bytes(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range")
        if len(self.csrcs) > 15:
            raise RtpError("at most 15 CSRCs")
        first = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type | (0x80 if self.marker else 0)
        parts = [
            _RTP_HEADER.pack(
                first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        ]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError("header extension length must be a multiple of 4 bytes")
            parts.append(struct.pack("!HH", profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            if not 1 <= self.padding <= 255:
                raise RtpError("padding must be 1..255 bytes")
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)

    __bytes__ = to_bytes


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet; :class:`RtpError` when it is not one."""
    size = len(data)
    if size < 12:
        raise RtpError("shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}")
    offset = 12
    csrc_count = first & 0x0F
    csrcs: tuple[int, ...] = ()
    if csrc_count:
        end = offset + 4 * csrc_count
        if end > size:
            raise RtpError("CSRC list past the end")
        csrcs = struct.unpack_from(f"!{csrc_count}I", data, offset)
        offset = end
    extension = None
    if first & 0x10:
        if offset + 4 > size:
            raise RtpError("extension header past the end")
        profile, words = struct.unpack_from("!HH", data, offset)
        offset += 4
        end = offset + 4 * words
        if end > size:
            raise RtpError("extension past the end")
        extension = (profile, bytes(data[offset:end]))
        offset = end
    end = size
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or offset + padding > size:
            raise RtpError("bad padding length")
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrcs=tuple(csrcs),
        extension=extension,
        padding=padding,
    )


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 4: on a shared port, RTCP packet types 200-204 sit where RTP has marker+PT
    72-76, which no audio profile uses."""
    return len(data) >= 8 and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223


# -- RTCP -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """RFC 3550 6.4.1 report block: reception quality of one source."""

    ssrc: int
    fraction_lost: int  # lost / expected since the last report, in 1/256
    cumulative_lost: int  # signed 24 bit
    highest_sequence: int  # extended highest sequence number received
    jitter: int  # interarrival jitter, timestamp units
    last_sr: int = 0  # middle 32 bits of the last SR's NTP time
    delay_since_last_sr: int = 0  # 1/65536 s

    def to_bytes(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc, ((self.fraction_lost & 0xFF) << 24) | lost, self.highest_sequence,
            self.jitter, self.last_sr, self.delay_since_last_sr,
        )

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, loss, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        cumulative = loss & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        return cls(ssrc, loss >> 24, cumulative, highest, jitter, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class RtcpSenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP time
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + _SR_INFO.pack(
            (self.ntp_timestamp >> 32) & 0xFFFFFFFF, self.ntp_timestamp & 0xFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF, self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        ) + b"".join(r.to_bytes() for r in self.reports)
        return _rtcp_header(RTCP_SR, len(self.reports), body) + body


@dataclass(frozen=True, slots=True)
class RtcpReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(r.to_bytes() for r in self.reports)
        return _rtcp_header(RTCP_RR, len(self.reports), body) + body


@dataclass(frozen=True, slots=True)
class RtcpBye:
    ssrcs: tuple[int, ...]
    reason: str = ""

    def to_bytes(self) -> bytes:
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason:
            text = self.reason.encode()[:255]
            body += bytes([len(text)]) + text
            body += bytes(-len(body) % 4)
        return _rtcp_header(RTCP_BYE, len(self.ssrcs), body) + body


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    packet_type: int
    count: int
    body: bytes = field(repr=False, default=b"")

    def to_bytes(self) -> bytes:
        return _rtcp_header(self.packet_type, self.count, self.body) + self.body


RtcpPacket = RtcpSenderReport | RtcpReceiverReport | RtcpBye | RtcpUnknown


def _rtcp_header(packet_type: int, count: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise RtpError("RTCP body must be a multiple of 4 bytes")
    if count > 31:
        raise RtpError("at most 31 items in one RTCP packet")
    return _RTCP_HEADER.pack((RTP_VERSION << 6) | count, packet_type, len(body) // 4)


def build_rtcp(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    """A compound RTCP packet (RFC 3550 6.1: it should start with an SR or RR)."""
    return b"".join(p.to_bytes() for p in packets)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Every packet of a compound RTCP datagram; :class:`RtpError` on a malformed one."""
    packets: list[RtcpPacket] = []
    offset = 0
    size = len(data)
    if size < 4:
        raise RtpError("shorter than an RTCP header")
    while offset < size:
        if offset + 4 > size:
            raise RtpError("truncated RTCP header")
        first, packet_type, words = _RTCP_HEADER.unpack_from(data, offset)
        if first >> 6 != RTP_VERSION:
            raise RtpError(f"RTCP version {first >> 6}")
        count = first & 0x1F
        end = offset + 4 + 4 * words
        if end > size:
            raise RtpError("RTCP length past the end")
        body_end = end
        if first & 0x20:  # padding, only allowed on the last packet
            pad = data[end - 1]
            if pad == 0 or pad > 4 * words:
                raise RtpError("bad RTCP padding")
            body_end -= pad
        body = bytes(data[offset + 4:body_end])
        packets.append(_parse_one_rtcp(packet_type, count, body))
        offset = end
    return packets


def _parse_one_rtcp(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == RTCP_SR:
        if len(body) < 24 + 24 * count:
            raise RtpError("truncated sender report")
        (ssrc,) = struct.unpack_from("!I", body)
        ntp_hi, ntp_lo, rtp_ts, packets, octets = _SR_INFO.unpack_from(body, 4)
        blocks = tuple(ReportBlock.parse(body, 24 + 24 * i) for i in range(count))
        return RtcpSenderReport(ssrc, (ntp_hi << 32) | ntp_lo, rtp_ts, packets, octets, blocks)
    if packet_type == RTCP_RR:
        if len(body) < 4 + 24 * count:
            raise RtpError("truncated receiver report")
        (ssrc,) = struct.unpack_from("!I", body)
        blocks = tuple(ReportBlock.parse(body, 4 + 24 * i) for i in range(count))
        return RtcpReceiverReport(ssrc, blocks)
    if packet_type == RTCP_BYE:
        if len(body) < 4 * count:
            raise RtpError("truncated BYE")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = ""
        rest = body[4 * count:]
        if rest:
            length = rest[0]
            if 1 + length > len(rest):
                raise RtpError("BYE reason past the end")
            reason = rest[1:1 + length].decode("utf-8", "replace")
        return RtcpBye(tuple(ssrcs), reason)
    return RtcpUnknown(packet_type, count, body)
