"""SDP (RFC 4566) data model, parser and serializer.

The parser is deliberately lenient about things real phones get wrong (bare LF line ends,
trailing blank lines, lines out of the RFC order, unknown line types) and strict about the
things we need to be able to trust (``v=0`` first, numeric ports and payload types, well-formed
``o=``/``c=``/``m=`` lines).  Everything we do not interpret is kept verbatim and written back
in its original position, so a parse/serialize round trip of a description we do not modify
changes nothing but line ends.

Grammar (RFC 4566 section 9, abridged)::

    session-description = proto-version origin-field session-name-field
                          information-field uri-field email-fields phone-fields
                          connection-field bandwidth-fields time-fields key-field
                          attribute-fields media-descriptions
    proto-version       = %x76 "=" 1*DIGIT CRLF                       ; v=0
    origin-field        = %x6f "=" username SP sess-id SP sess-version SP
                          nettype SP addrtype SP unicast-address CRLF
    connection-field    = [%x63 "=" nettype SP addrtype SP connection-address CRLF]
    time-fields         = 1*( %x74 "=" start-time SP stop-time *(CRLF repeat-fields) CRLF)
                          [zone-adjustments CRLF]
    media-field         = %x6d "=" media SP port ["/" integer] SP proto 1*(SP fmt) CRLF
    attribute           = (att-field ":" att-value) / att-field
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = [
    "Attribute",
    "Bandwidth",
    "Connection",
    "Direction",
    "DIRECTIONS",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SdpParseError",
    "SessionDescription",
    "Timing",
    "parse_sdp",
    "try_parse_sdp",
]

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")

# RFC 3551 table 4: static audio payload types we may meet without an a=rtpmap line.
_STATIC_AUDIO_PAYLOADS: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}


class SdpParseError(ValueError):
    """A session description we cannot make sense of.

    Carries the 1-based line number and the offending line so the caller can log it or put a
    ``Warning:`` header on the 488/400 it sends back.
    """

    def __init__(self, reason: str, line_number: int = 0, line: str = "") -> None:
        super().__init__(f"{reason} (line {line_number}: {line!r})" if line_number else reason)
        self.reason = reason
        self.line_number = line_number
        self.line = line


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``"""

    username: str = "-"
    session_id: str = "0"
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>``; the address keeps any ``/ttl/count``."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @property
    def host(self) -> str:
        """The address without a multicast ``/ttl`` or ``/count`` suffix."""
        return self.address.split("/", 1)[0]

    @property
    def is_hold_address(self) -> bool:
        """RFC 2543 hold: ``c=IN IP4 0.0.0.0`` (RFC 3264 section 8.4 still asks us to honour it)."""
        return self.host in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>``"""

    bwtype: str
    value: int

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.value}"


@dataclass(frozen=True, slots=True)
class Timing:
    """``t=<start-time> <stop-time>`` with the ``r=`` lines that follow it, verbatim."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Attribute:
    """``a=<attribute>`` or ``a=<attribute>:<value>``; ``value`` is None for a property flag."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]``"""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1

    def matches(self, other: RtpMap) -> bool:
        """Same codec, whatever payload number either side gave it (names are case-insensitive)."""
        return (
            self.encoding.lower() == other.encoding.lower()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )

    def attribute_value(self) -> str:
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{suffix}"

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        match = _RTPMAP.fullmatch(value.strip())
        if match is None:
            raise SdpParseError(f"bad rtpmap {value!r}")
        channels = match.group("channels")
        return cls(
            payload_type=int(match.group("pt")),
            encoding=match.group("name"),
            clock_rate=int(match.group("rate")),
            channels=int(channels) if channels else 1,
        )


_RTPMAP = re.compile(r"(?P<pt>\d{1,3})\s+(?P<name>[^/\s]+)/(?P<rate>\d+)(?:/(?P<channels>\d+))?")


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One ``m=`` section: ``m=<media> <port>[/<number of ports>] <proto> <fmt> ...``"""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    information: str | None = None
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()

    # -- attribute access -------------------------------------------------------------------

    def attribute_values(self, name: str) -> list[str]:
        """All values of ``a=name:...`` (flags yield an empty string)."""
        return [a.value or "" for a in self.attributes if a.name == name]

    def attribute(self, name: str) -> str | None:
        values = self.attribute_values(name)
        return values[0] if values else None

    def has_attribute(self, name: str) -> bool:
        return any(a.name == name for a in self.attributes)

    @property
    def direction(self) -> Direction:
        """The media-level direction attribute; callers wanting the session default use
        :meth:`SessionDescription.media_direction`."""
        return self.explicit_direction or "sendrecv"

    @property
    def explicit_direction(self) -> Direction | None:
        for attribute in self.attributes:
            if attribute.name in DIRECTIONS and attribute.value is None:
                return attribute.name
        return None

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """Payload type -> codec, filling in RFC 3551 static types that have no a=rtpmap."""
        result: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            rtpmap = RtpMap.parse(value)
            result[rtpmap.payload_type] = rtpmap
        for fmt in self.formats:
            if fmt.isdigit() and int(fmt) not in result and int(fmt) in _STATIC_AUDIO_PAYLOADS:
                name, rate, channels = _STATIC_AUDIO_PAYLOADS[int(fmt)]
                result[int(fmt)] = RtpMap(int(fmt), name, rate, channels)
        return result

    @property
    def fmtps(self) -> dict[int, str]:
        """Payload type -> format parameters (``a=fmtp:<format> <format specific parameters>``)."""
        result: dict[int, str] = {}
        for value in self.attribute_values("fmtp"):
            pt, _, params = value.strip().partition(" ")
            if pt.isdigit():
                result[int(pt)] = params.strip()
        return result

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        if value is None:
            return None
        try:
            return int(float(value.strip()))
        except ValueError:
            return None

    @property
    def rtcp_port(self) -> int | None:
        """RFC 3605 ``a=rtcp:<port> [<nettype> <addrtype> <connection-address>]``."""
        value = self.attribute("rtcp")
        if value is None:
            return None
        first = value.strip().split(" ", 1)[0]
        return int(first) if first.isdigit() else None

    @property
    def payload_types(self) -> list[int]:
        """The ``m=`` format list as RTP payload numbers, in the offerer's preference order."""
        return [int(f) for f in self.formats if f.isdigit()]

    @property
    def is_rejected(self) -> bool:
        return self.port == 0

    # -- functional updates -----------------------------------------------------------------

    def with_direction(self, direction: Direction) -> MediaDescription:
        """Replace the media-level direction attribute (added after the codec attributes)."""
        kept = tuple(a for a in self.attributes if not (a.name in DIRECTIONS and a.value is None))
        return replace(self, attributes=kept + (Attribute(direction),))

    def without_attributes(self, *names: str) -> MediaDescription:
        return replace(self, attributes=tuple(a for a in self.attributes if a.name not in names))


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP body."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    timings: tuple[Timing, ...] = (Timing(),)
    zone_adjustments: str | None = None
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()

    @property
    def session_direction(self) -> Direction | None:
        for attribute in self.attributes:
            if attribute.name in DIRECTIONS and attribute.value is None:
                return attribute.name
        return None

    def media_direction(self, media: MediaDescription) -> Direction:
        """Direction of one stream: media-level attribute, else session-level, else sendrecv."""
        return media.explicit_direction or self.session_direction or "sendrecv"

    def media_connection(self, media: MediaDescription) -> Connection | None:
        """RFC 4566 5.7: a media-level c= overrides the session-level one."""
        return media.connection or self.connection

    def to_bytes(self) -> bytes:
        return str(self).encode("utf-8")

    def __str__(self) -> str:
        return "".join(line + "\r\n" for line in _serialize_lines(self))

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def _serialize_lines(sdp: SessionDescription) -> Iterator[str]:
    yield f"v={sdp.version}"
    yield f"o={sdp.origin}"
    yield f"s={sdp.session_name or ' '}"  # s= must not be empty; RFC 4566 suggests a space
    if sdp.information is not None:
        yield f"i={sdp.information}"
    if sdp.uri is not None:
        yield f"u={sdp.uri}"
    yield from (f"e={e}" for e in sdp.emails)
    yield from (f"p={p}" for p in sdp.phones)
    if sdp.connection is not None:
        yield f"c={sdp.connection}"
    yield from (f"b={b}" for b in sdp.bandwidths)
    for timing in sdp.timings or (Timing(),):
        yield f"t={timing.start} {timing.stop}"
        yield from (f"r={r}" for r in timing.repeats)
    if sdp.zone_adjustments is not None:
        yield f"z={sdp.zone_adjustments}"
    if sdp.key is not None:
        yield f"k={sdp.key}"
    yield from (f"a={a}" for a in sdp.attributes)
    for media in sdp.media:
        port = (
            f"{media.port}/{media.port_count}" if media.port_count is not None else str(media.port)
        )
        yield " ".join([f"m={media.media}", port, media.proto, *media.formats])
        if media.information is not None:
            yield f"i={media.information}"
        if media.connection is not None:
            yield f"c={media.connection}"
        yield from (f"b={b}" for b in media.bandwidths)
        if media.key is not None:
            yield f"k={media.key}"
        yield from (f"a={a}" for a in media.attributes)


_LINE = re.compile(r"(?P<type>[a-z])=(?P<value>.*)")
# media-field = %x6d "=" media SP port ["/" integer] SP proto 1*(SP fmt); split on runs of
# whitespace, since some phones put two spaces between fields.
_PORT = re.compile(r"(?P<port>\d{1,5})(?:/(?P<count>\d{1,5}))?")


class _MediaBuilder:
    """Accumulates the lines of one m= section while parsing."""

    def __init__(
        self, media: str, port: int, port_count: int | None, proto: str, formats: tuple[str, ...]
    ) -> None:
        self.media = media
        self.port = port
        self.port_count = port_count
        self.proto = proto
        self.formats = formats
        self.information: str | None = None
        self.connection: Connection | None = None
        self.bandwidths: list[Bandwidth] = []
        self.key: str | None = None
        self.attributes: list[Attribute] = []

    def build(self) -> MediaDescription:
        return MediaDescription(
            media=self.media,
            port=self.port,
            port_count=self.port_count,
            proto=self.proto,
            formats=self.formats,
            information=self.information,
            connection=self.connection,
            bandwidths=tuple(self.bandwidths),
            key=self.key,
            attributes=tuple(self.attributes),
        )


def _split_lines(data: bytes | str) -> Iterable[tuple[int, str]]:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        # Trailing blank lines (and stray ones in between) are common and harmless.
        if line.strip():
            yield number, line


def _parse_origin(value: str, number: int, line: str) -> Origin:
    parts = value.split()
    if len(parts) != 6 or not parts[2].isdigit():
        raise SdpParseError("malformed o= line", number, line)
    return Origin(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5])


def _parse_connection(value: str, number: int, line: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpParseError("malformed c= line", number, line)
    return Connection(nettype=parts[0], addrtype=parts[1], address=parts[2])


def _parse_bandwidth(value: str, number: int, line: str) -> Bandwidth:
    bwtype, sep, amount = value.partition(":")
    if not sep or not amount.strip().isdigit():
        raise SdpParseError("malformed b= line", number, line)
    return Bandwidth(bwtype.strip(), int(amount.strip()))


def _parse_attribute(value: str) -> Attribute:
    name, sep, attribute_value = value.partition(":")
    return Attribute(name, attribute_value if sep else None)


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; raises :class:`SdpParseError` (a ValueError) on a malformed one."""
    lines = list(_split_lines(data))
    if not lines:
        raise SdpParseError("empty session description")
    first_number, first_line = lines[0]
    if first_line.strip() != "v=0":
        raise SdpParseError("session description must start with v=0", first_number, first_line)

    origin: Origin | None = None
    session_name: str | None = None
    information: str | None = None
    uri: str | None = None
    emails: list[str] = []
    phones: list[str] = []
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = []
    timings: list[Timing] = []
    zone_adjustments: str | None = None
    key: str | None = None
    attributes: list[Attribute] = []
    media: list[MediaDescription] = []
    current: _MediaBuilder | None = None

    for number, line in lines[1:]:
        match = _LINE.fullmatch(line)
        if match is None:
            raise SdpParseError("not a <type>=<value> line", number, line)
        kind, value = match.group("type"), match.group("value")
        if kind == "m":
            fields = value.split()
            port_match = _PORT.fullmatch(fields[1]) if len(fields) >= 4 else None
            if port_match is None:
                raise SdpParseError("malformed m= line", number, line)
            if current is not None:
                media.append(current.build())
            count = port_match.group("count")
            current = _MediaBuilder(
                fields[0],
                int(port_match.group("port")),
                int(count) if count else None,
                fields[2],
                tuple(fields[3:]),
            )
            if current.port > 65535:
                raise SdpParseError("port out of range", number, line)
        elif current is not None:
            # Media-level section: only i, c, b, k, a are allowed; anything else is tolerated
            # by ignoring it (some gateways repeat t= here).
            if kind == "i":
                current.information = value
            elif kind == "c":
                current.connection = _parse_connection(value, number, line)
            elif kind == "b":
                current.bandwidths.append(_parse_bandwidth(value, number, line))
            elif kind == "k":
                current.key = value
            elif kind == "a":
                current.attributes.append(_parse_attribute(value))
        elif kind == "o":
            origin = _parse_origin(value, number, line)
        elif kind == "s":
            session_name = value
        elif kind == "i":
            information = value
        elif kind == "u":
            uri = value
        elif kind == "e":
            emails.append(value)
        elif kind == "p":
            phones.append(value)
        elif kind == "c":
            connection = _parse_connection(value, number, line)
        elif kind == "b":
            bandwidths.append(_parse_bandwidth(value, number, line))
        elif kind == "t":
            parts = value.split()
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise SdpParseError("malformed t= line", number, line)
            timings.append(Timing(int(parts[0]), int(parts[1])))
        elif kind == "r":
            if not timings:
                raise SdpParseError("r= without t=", number, line)
            last = timings[-1]
            timings[-1] = replace(last, repeats=last.repeats + (value,))
        elif kind == "z":
            zone_adjustments = value
        elif kind == "k":
            key = value
        elif kind == "a":
            attributes.append(_parse_attribute(value))
        elif kind == "v":
            raise SdpParseError("second v= line", number, line)
        # Unknown session-level types are ignored, per RFC 4566 section 5 ("parsers SHOULD
        # ignore" unknown types).
    if current is not None:
        media.append(current.build())

    if origin is None:
        raise SdpParseError("missing o= line")
    if session_name is None:
        # Required by the RFC, but plenty of phones omit it; the default keeps us working.
        session_name = "-"
    for item in media:
        if item.connection is None and connection is None and item.port != 0:
            raise SdpParseError(f"no c= line for m={item.media} and no session-level c=")
        for value in item.attribute_values("rtpmap"):
            RtpMap.parse(value)  # validate now so later accessors cannot raise

    return SessionDescription(
        version=0,
        origin=origin,
        session_name=session_name,
        information=information,
        uri=uri,
        emails=tuple(emails),
        phones=tuple(phones),
        connection=connection,
        bandwidths=tuple(bandwidths),
        timings=tuple(timings) or (Timing(),),
        zone_adjustments=zone_adjustments,
        key=key,
        attributes=tuple(attributes),
        media=tuple(media),
    )


def try_parse_sdp(data: bytes | str) -> SessionDescription | SdpParseError:
    """Errors-as-data variant of :func:`parse_sdp` for callers that branch on the result."""
    try:
        return parse_sdp(data)
    except SdpParseError as error:
        return error
