"""RFC 3264 offer/answer for audio (PCMU, PCMA, RFC 4733 telephone-event), hold detection and
the SDP rewrite a call leg does when it anchors media.

Negotiation failures are returned as data (:class:`NegotiationFailure`, carrying the SIP status
and Warning code to reply with) rather than raised, because "no common codec" is an ordinary
outcome of a call, not a bug.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from protocols.sdp.session import (
    Attribute,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    Timing,
)

__all__ = [
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "DEFAULT_AUDIO_CODECS",
    "Answer",
    "Codec",
    "LocalMedia",
    "NegotiatedStream",
    "NegotiationFailure",
    "anchor_media",
    "build_answer",
    "build_offer",
    "format_event_ranges",
    "is_on_hold",
    "media_on_hold",
    "parse_event_ranges",
    "process_answer",
    "reverse_direction",
]

_AUDIO_PROFILES = ("RTP/AVP",)  # what our media engine speaks: plain RTP, no SRTP/AVPF
_DEFAULT_TELEPHONE_EVENTS = "0-15"  # RFC 4733 section 7.1.1: value when fmtp is absent
_ICE_ATTRIBUTES = (
    "candidate",
    "remote-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "end-of-candidates",
)


@dataclass(frozen=True, slots=True)
class Codec:
    """A codec we support; ``payload_type`` is what we use in our own offers."""

    encoding: str
    clock_rate: int
    payload_type: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def is_telephone_event(self) -> bool:
        return self.encoding.lower() == "telephone-event"

    def rtpmap(self, payload_type: int | None = None) -> RtpMap:
        pt = self.payload_type if payload_type is None else payload_type
        return RtpMap(pt, self.encoding, self.clock_rate, self.channels)


PCMU = Codec("PCMU", 8000, 0)
PCMA = Codec("PCMA", 8000, 8)
TELEPHONE_EVENT = Codec("telephone-event", 8000, 101, fmtp="0-16")
DEFAULT_AUDIO_CODECS: tuple[Codec, ...] = (PCMU, PCMA, TELEPHONE_EVENT)


@dataclass(frozen=True, slots=True)
class LocalMedia:
    """What our side of a call can do and where it receives media."""

    address: str
    audio_port: int
    codecs: tuple[Codec, ...] = DEFAULT_AUDIO_CODECS
    direction: Direction = "sendrecv"
    ptime: int | None = 20
    username: str = "mirliton"
    session_id: str = "0"
    session_version: int = 0
    session_name: str = "mirliton"
    # Default: keep the offerer's preference order (RFC 3264 6.1 lets the answerer reorder,
    # but honouring the offer avoids needless transcoding on the far side).
    prefer_local_order: bool = False
    # Answer with one voice codec (plus telephone-event) so the far end knows exactly what to
    # send; many gateways misbehave when the answer lists several.
    single_codec: bool = False

    @property
    def addrtype(self) -> str:
        return "IP6" if ":" in self.address else "IP4"


@dataclass(frozen=True, slots=True)
class NegotiatedStream:
    """The outcome of offer/answer for one accepted audio stream, as the media engine needs it."""

    index: int
    remote_address: str
    remote_port: int
    remote_rtcp_port: int
    codec: RtpMap
    telephone_event: RtpMap | None
    telephone_events: str | None
    direction: Direction  # what *we* do on this stream
    ptime: int | None
    remote_hold: bool


@dataclass(frozen=True, slots=True)
class Answer:
    sdp: SessionDescription
    streams: tuple[NegotiatedStream, ...]


@dataclass(frozen=True, slots=True)
class NegotiationFailure:
    """Why offer/answer failed; reply with ``status`` and a ``Warning: <warn_code> ...`` header."""

    reason: str
    status: int = 488
    warn_code: int = 305  # RFC 3261 20.43: 305 Incompatible media format
    details: tuple[str, ...] = field(default=())


# -- helpers ---------------------------------------------------------------------------------


def reverse_direction(direction: Direction) -> Direction:
    """The direction the other side sees: sendonly <-> recvonly."""
    if direction == "sendonly":
        return "recvonly"
    if direction == "recvonly":
        return "sendonly"
    return direction


def _direction_from(can_send: bool, can_receive: bool) -> Direction:
    if can_send and can_receive:
        return "sendrecv"
    if can_send:
        return "sendonly"
    if can_receive:
        return "recvonly"
    return "inactive"


def media_on_hold(sdp: SessionDescription, media: MediaDescription) -> bool:
    """Whether this stream puts us on hold: the sender stops wanting our media.

    RFC 3264 section 8.4: a=sendonly or a=inactive; the RFC 2543 form ``c=0.0.0.0`` is still
    honoured for old phones.
    """
    if media.is_rejected:
        return False
    connection = sdp.media_connection(media)
    if connection is not None and connection.is_hold_address:
        return True
    return sdp.media_direction(media) in ("sendonly", "inactive")


def is_on_hold(sdp: SessionDescription) -> bool:
    """True when every active audio stream of the description is on hold."""
    audio = [m for m in sdp.media if m.media == "audio" and not m.is_rejected]
    return bool(audio) and all(media_on_hold(sdp, m) for m in audio)


def parse_event_ranges(value: str) -> set[int]:
    """RFC 4733 7.1.1 event list: ``events = event-range *("," event-range)``,
    ``event-range = 1*3DIGIT ["-" 1*3DIGIT]``; malformed items are skipped."""
    events: set[int] = set()
    for item in value.replace(" ", "").split(","):
        low, dash, high = item.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            continue
        start, stop = int(low), int(high) if dash else int(low)
        if start <= stop <= 255:
            events.update(range(start, stop + 1))
    return events


def format_event_ranges(events: set[int]) -> str:
    ranges: list[str] = []
    ordered = sorted(events)
    index = 0
    while index < len(ordered):
        start = ordered[index]
        while index + 1 < len(ordered) and ordered[index + 1] == ordered[index] + 1:
            index += 1
        stop = ordered[index]
        ranges.append(str(start) if start == stop else f"{start}-{stop}")
        index += 1
    return ",".join(ranges)


def _codec_attributes(
    payloads: Sequence[tuple[RtpMap, str | None]], ptime: int | None, direction: Direction
) -> tuple[Attribute, ...]:
    attributes: list[Attribute] = []
    for rtpmap, fmtp in payloads:
        attributes.append(Attribute("rtpmap", rtpmap.attribute_value()))
        if fmtp:
            attributes.append(Attribute("fmtp", f"{rtpmap.payload_type} {fmtp}"))
    if ptime is not None:
        attributes.append(Attribute("ptime", str(ptime)))
    attributes.append(Attribute(direction))
    return tuple(attributes)


def _local_origin(local: LocalMedia) -> Origin:
    return Origin(
        username=local.username,
        session_id=local.session_id,
        session_version=local.session_version,
        addrtype=local.addrtype,
        address=local.address,
    )


def _rtcp_port(sdp: SessionDescription, media: MediaDescription) -> int:
    return media.rtcp_port or media.port + 1


# -- offer ------------------------------------------------------------------------------------


def build_offer(local: LocalMedia) -> SessionDescription:
    """An offer with one audio stream listing our codecs in our preference order."""
    payloads = [(codec.rtpmap(), codec.fmtp) for codec in local.codecs]
    audio = MediaDescription(
        media="audio",
        port=local.audio_port,
        proto="RTP/AVP",
        formats=tuple(str(codec.payload_type) for codec in local.codecs),
        attributes=_codec_attributes(payloads, local.ptime, local.direction),
    )
    return SessionDescription(
        origin=_local_origin(local),
        session_name=local.session_name,
        connection=Connection(local.address, addrtype=local.addrtype),
        timings=(Timing(0, 0),),
        media=(audio,),
    )


# -- answer -----------------------------------------------------------------------------------


def _reject(media: MediaDescription) -> MediaDescription:
    """RFC 3264 6: a rejected stream keeps its m= line with port zero and at least one format."""
    return MediaDescription(media=media.media, port=0, proto=media.proto, formats=media.formats)


def _select_payloads(
    offered: MediaDescription, local: LocalMedia
) -> tuple[list[tuple[RtpMap, str | None]], RtpMap | None, str | None]:
    """Common codecs, keyed by the offerer's payload numbers (RFC 3264 6.1: the answer SHOULD
    reuse the offer's payload type for each codec). Returns (voice + event payloads for the
    answer, telephone-event rtpmap, negotiated event list)."""
    offered_maps = offered.rtpmaps
    offered_fmtps = offered.fmtps
    voice: list[tuple[int, RtpMap]] = []  # (local preference rank, rtpmap)
    event: tuple[RtpMap, str] | None = None
    for pt in offered.payload_types:
        offered_map = offered_maps.get(pt)
        if offered_map is None:
            continue  # dynamic type without rtpmap: unusable
        for rank, codec in enumerate(local.codecs):
            if not offered_map.matches(codec.rtpmap()):
                continue
            if codec.is_telephone_event:
                if event is not None:
                    break  # answer one telephone-event payload only
                offered_events = parse_event_ranges(
                    offered_fmtps.get(pt, _DEFAULT_TELEPHONE_EVENTS)
                )
                ours = parse_event_ranges(codec.fmtp or _DEFAULT_TELEPHONE_EVENTS)
                common = offered_events & ours
                if common:
                    event = (offered_map, format_event_ranges(common))
            else:
                voice.append((rank, offered_map))
            break
    if local.prefer_local_order:
        voice.sort(key=lambda item: item[0])
    if local.single_codec:
        voice = voice[:1]
    payloads: list[tuple[RtpMap, str | None]] = [(rtpmap, None) for _, rtpmap in voice]
    if event is not None:
        payloads.append(event)
    return payloads, (event[0] if event else None), (event[1] if event else None)


def build_answer(offer: SessionDescription, local: LocalMedia) -> Answer | NegotiationFailure:
    """Answer an offer with our codecs (RFC 3264 section 6).

    One m= line per offered stream, in the same order. The first audio RTP/AVP stream with a
    voice codec in common is accepted on ``local.audio_port``; every other stream (video,
    SRTP, a second audio stream, no common codec) is rejected with port 0. Direction follows
    RFC 3264 6.1: sendonly is answered recvonly (or inactive), recvonly with sendonly (or
    inactive), inactive with inactive, further restricted by ``local.direction``.
    """
    answered: list[MediaDescription] = []
    streams: list[NegotiatedStream] = []
    details: list[str] = []
    for index, offered in enumerate(offer.media):
        if offered.is_rejected:
            answered.append(_reject(offered))
            continue
        if offered.media != "audio" or offered.proto not in _AUDIO_PROFILES:
            details.append(f"m={offered.media} {offered.proto} not supported")
            answered.append(_reject(offered))
            continue
        if streams:
            details.append("only one audio stream is supported")
            answered.append(_reject(offered))
            continue
        payloads, event_map, events = _select_payloads(offered, local)
        voice = [rtpmap for rtpmap, _ in payloads if rtpmap is not event_map]
        if not voice:
            details.append("no common audio codec")
            answered.append(_reject(offered))
            continue

        connection = offer.media_connection(offered)
        offered_direction = offer.media_direction(offered)
        remote_receives = offered_direction in ("sendrecv", "recvonly") and not (
            connection is not None and connection.is_hold_address
        )
        remote_sends = offered_direction in ("sendrecv", "sendonly")
        direction = _direction_from(
            can_send=remote_receives and local.direction in ("sendrecv", "sendonly"),
            can_receive=remote_sends and local.direction in ("sendrecv", "recvonly"),
        )
        answered.append(
            MediaDescription(
                media="audio",
                port=local.audio_port,
                proto=offered.proto,
                formats=tuple(str(rtpmap.payload_type) for rtpmap, _ in payloads),
                attributes=_codec_attributes(payloads, local.ptime, direction),
            )
        )
        streams.append(
            NegotiatedStream(
                index=index,
                remote_address=connection.host if connection else "",
                remote_port=offered.port,
                remote_rtcp_port=_rtcp_port(offer, offered),
                codec=voice[0],
                telephone_event=event_map,
                telephone_events=events,
                direction=direction,
                ptime=offered.ptime,
                remote_hold=media_on_hold(offer, offered),
            )
        )
    if not streams:
        return NegotiationFailure(
            reason="; ".join(details) or "no media streams offered", details=tuple(details)
        )
    answer = SessionDescription(
        origin=_local_origin(local),
        session_name=local.session_name,
        connection=Connection(local.address, addrtype=local.addrtype),
        timings=(Timing(0, 0),),
        media=tuple(answered),
    )
    return Answer(sdp=answer, streams=tuple(streams))


def process_answer(
    offer: SessionDescription, answer: SessionDescription
) -> tuple[NegotiatedStream, ...] | NegotiationFailure:
    """Offerer side: what was agreed, given the offer we sent and the answer we got.

    RFC 3264 section 6: the answer has exactly as many m= lines as the offer; for each accepted
    stream the first format in the answer that we offered is the one to send.
    """
    if len(answer.media) != len(offer.media):
        return NegotiationFailure(
            reason="answer has a different number of m= lines than the offer",
            status=400,
            warn_code=399,
        )
    streams: list[NegotiatedStream] = []
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=True)):
        if theirs.is_rejected or ours.is_rejected or theirs.media != "audio":
            continue
        our_maps = ours.rtpmaps
        their_maps = theirs.rtpmaps
        codec: RtpMap | None = None
        event: RtpMap | None = None
        for pt in theirs.payload_types:
            rtpmap = their_maps.get(pt) or our_maps.get(pt)
            if rtpmap is None or not any(rtpmap.matches(m) for m in our_maps.values()):
                continue
            if rtpmap.encoding.lower() == "telephone-event":
                event = event or rtpmap
            elif codec is None:
                codec = rtpmap
        if codec is None:
            continue
        connection = answer.media_connection(theirs)
        their_direction = answer.media_direction(theirs)
        our_direction = offer.media_direction(ours)
        remote_receives = their_direction in ("sendrecv", "recvonly") and not (
            connection is not None and connection.is_hold_address
        )
        direction = _direction_from(
            can_send=remote_receives and our_direction in ("sendrecv", "sendonly"),
            can_receive=their_direction in ("sendrecv", "sendonly")
            and our_direction in ("sendrecv", "recvonly"),
        )
        events = None
        if event is not None:
            events = theirs.fmtps.get(event.payload_type, _DEFAULT_TELEPHONE_EVENTS)
        streams.append(
            NegotiatedStream(
                index=index,
                remote_address=connection.host if connection else "",
                remote_port=theirs.port,
                remote_rtcp_port=_rtcp_port(answer, theirs),
                codec=codec,
                telephone_event=event,
                telephone_events=events,
                direction=direction,
                ptime=theirs.ptime,
                remote_hold=media_on_hold(answer, theirs),
            )
        )
    if not streams:
        return NegotiationFailure(reason="answer accepted no audio stream we offered")
    return tuple(streams)


# -- media anchoring --------------------------------------------------------------------------


def anchor_media(
    sdp: SessionDescription,
    address: str,
    ports: Sequence[int],
    *,
    origin_address: str | None = None,
    session_version: int | None = None,
    keep_hold_address: bool = True,
) -> SessionDescription:
    """Rewrite a description so its media flows through us (a call leg anchoring media).

    ``ports[i]`` replaces the port of ``sdp.media[i]`` (rejected streams stay at 0). The
    session-level c= becomes ``address`` and media-level c= lines are dropped, except that an
    RFC 2543 hold address (0.0.0.0) is kept on its stream when ``keep_hold_address`` so the
    hold still reaches the other side. ``a=rtcp`` is rewritten to our port + 1 and ICE
    attributes are removed (the candidates are no longer reachable through us). The o= version
    is bumped (RFC 3264 8: a changed description must carry a higher version), or set to
    ``session_version`` when the caller keeps its own counter for this leg.
    """
    if len(ports) != len(sdp.media):
        raise ValueError(f"{len(sdp.media)} m= lines but {len(ports)} ports")
    addrtype = "IP6" if ":" in address else "IP4"
    rewritten: list[MediaDescription] = []
    for media, port in zip(sdp.media, ports, strict=True):
        if media.is_rejected:
            rewritten.append(media)
            continue
        effective = sdp.media_connection(media)
        connection: Connection | None = None
        if keep_hold_address and effective is not None and effective.is_hold_address:
            connection = Connection("0.0.0.0", addrtype="IP4")
        attributes = tuple(
            Attribute("rtcp", str(port + 1)) if a.name == "rtcp" else a
            for a in media.attributes
            if a.name not in _ICE_ATTRIBUTES
        )
        rewritten.append(replace(media, port=port, connection=connection, attributes=attributes))
    origin = sdp.origin
    new_origin = replace(
        origin,
        session_version=(
            session_version if session_version is not None else origin.session_version + 1
        ),
        address=origin_address if origin_address is not None else origin.address,
        addrtype=("IP6" if ":" in origin_address else "IP4") if origin_address else origin.addrtype,
    )
    session_attributes = tuple(a for a in sdp.attributes if a.name not in _ICE_ATTRIBUTES)
    return replace(
        sdp,
        origin=new_origin,
        connection=Connection(address, addrtype=addrtype),
        attributes=session_attributes,
        media=tuple(rewritten),
    )
