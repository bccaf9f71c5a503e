from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.sdp import (
    Attribute,
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SdpParseError,
    SessionDescription,
    parse_sdp,
    try_parse_sdp,
)

# RFC 4566 section 5 example, CRLF line ends.
RFC4566_EXAMPLE = (
    "v=0\r\n"
    "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\n"
    "s=SDP Seminar\r\n"
    "i=A Seminar on the session description protocol\r\n"
    "u=http://www.example.com/seminars/sdp.pdf\r\n"
    "e=j.doe@example.com (Jane Doe)\r\n"
    "c=IN IP4 224.2.17.12/127\r\n"
    "t=2873397496 2873404696\r\n"
    "a=recvonly\r\n"
    "m=audio 49170 RTP/AVP 0\r\n"
    "m=video 51372 RTP/AVP 99\r\n"
    "a=rtpmap:99 h263-1998/90000\r\n"
)

PHONE_OFFER = (
    "v=0\r\n"
    "o=- 123456 654321 IN IP4 192.0.2.10\r\n"
    "s=Talk\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "b=AS:84\r\n"
    "t=0 0\r\n"
    "a=X-nat:0\r\n"
    "m=audio 4000 RTP/AVP 8 0 101\r\n"
    "c=IN IP4 192.0.2.11\r\n"
    "a=rtcp:4001 IN IP4 192.0.2.11\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)


def test_rfc4566_example_round_trips_byte_for_byte() -> None:
    sdp = parse_sdp(RFC4566_EXAMPLE.encode())
    assert sdp.origin.username == "jdoe"
    assert sdp.origin.session_id == "2890844526"
    assert sdp.origin.session_version == 2890842807
    assert sdp.session_name == "SDP Seminar"
    assert sdp.uri == "http://www.example.com/seminars/sdp.pdf"
    assert sdp.emails == ("j.doe@example.com (Jane Doe)",)
    assert sdp.connection == Connection("224.2.17.12/127")
    assert sdp.connection.host == "224.2.17.12"
    assert sdp.timings[0].start == 2873397496
    assert sdp.session_direction == "recvonly"
    audio, video = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        49170,
        "RTP/AVP",
        ("0",),
    )
    # The static payload 0 is known without an rtpmap line (RFC 3551).
    assert audio.rtpmaps[0] == RtpMap(0, "PCMU", 8000)
    assert video.rtpmaps[99] == RtpMap(99, "h263-1998", 90000)
    assert sdp.media_direction(audio) == "recvonly"  # inherited from session level
    assert str(sdp) == RFC4566_EXAMPLE


def test_phone_offer_typed_access_and_passthrough() -> None:
    sdp = parse_sdp(PHONE_OFFER)
    audio = sdp.media[0]
    assert audio.payload_types == [8, 0, 101]
    assert audio.rtpmaps[101] == RtpMap(101, "telephone-event", 8000)
    assert audio.fmtps == {101: "0-16"}
    assert audio.ptime == 20
    assert audio.rtcp_port == 4001
    assert audio.direction == "sendrecv"
    assert sdp.media_connection(audio) == Connection("192.0.2.11")
    assert sdp.bandwidths[0].bwtype == "AS" and sdp.bandwidths[0].value == 84
    assert Attribute("X-nat", "0") in sdp.attributes
    assert str(sdp) == PHONE_OFFER


def test_lenient_line_endings_and_blank_lines() -> None:
    lf_only = PHONE_OFFER.replace("\r\n", "\n") + "\n\n"
    sdp = parse_sdp(lf_only)
    assert str(sdp) == PHONE_OFFER


def test_channels_in_rtpmap_serialized_back() -> None:
    text = PHONE_OFFER.replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:8 PCMA/8000/2")
    sdp = parse_sdp(text)
    assert sdp.media[0].rtpmaps[8].channels == 2
    assert sdp.media[0].rtpmaps[8].attribute_value() == "8 PCMA/8000/2"


def test_with_direction_replaces_existing_attribute() -> None:
    audio = parse_sdp(PHONE_OFFER).media[0].with_direction("sendonly")
    directions = [a.name for a in audio.attributes if a.name in ("sendrecv", "sendonly")]
    assert directions == ["sendonly"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("o=- 1 1 IN IP4 1.2.3.4\r\n", "v=0"),
        ("v=0\r\ns=x\r\nt=0 0\r\n", "missing o="),
        ("v=0\r\no=- 1 x IN IP4 1.2.3.4\r\ns=x\r\n", "o="),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\nc=IN IP4\r\n", "c="),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\nt=0 0\r\nm=audio x RTP/AVP 0\r\n", "m="),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\nt=0 0\r\nm=audio 4000 RTP/AVP\r\n", "m="),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", "c="),
        (
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus\r\n",
            "rtpmap",
        ),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ngarbage\r\n", "<type>=<value>"),
    ],
)
def test_malformed_descriptions_are_reported_as_data(text: str, reason: str) -> None:
    result = try_parse_sdp(text)
    assert isinstance(result, SdpParseError)
    assert reason in str(result)
    with pytest.raises(SdpParseError):
        parse_sdp(text)


def test_parse_error_carries_line_number() -> None:
    result = try_parse_sdp("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\nc=IN IP4\r\n")
    assert isinstance(result, SdpParseError)
    assert result.line_number == 4
    assert result.line == "c=IN IP4"


def test_rejected_stream_needs_no_connection() -> None:
    sdp = parse_sdp("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 31\r\n")
    assert sdp.media[0].is_rejected


# -- property: whatever we build serializes to something that parses back to it -------------

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_address = st.builds(
    lambda a, b, c, d: f"{a}.{b}.{c}.{d}", *(st.integers(0, 255) for _ in range(4))
)
_attribute = st.builds(
    Attribute,
    _token,
    st.one_of(st.none(), st.text(alphabet="abcdefghij0123456789 /:=-", max_size=20)),
)


@st.composite
def _media(draw: st.DrawFn) -> MediaDescription:
    payloads = draw(st.lists(st.integers(0, 127), min_size=1, max_size=5, unique=True))
    attributes = [Attribute("rtpmap", f"{pt} X{pt}/8000") for pt in payloads if pt >= 96]
    attributes += draw(st.lists(_attribute, max_size=4))
    return MediaDescription(
        media=draw(st.sampled_from(["audio", "video", "application"])),
        port=draw(st.integers(0, 65535)),
        proto=draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF"])),
        formats=tuple(str(pt) for pt in payloads),
        connection=draw(st.one_of(st.none(), st.builds(Connection, _address))),
        attributes=tuple(attributes),
    )


@given(
    origin=st.builds(
        Origin,
        username=_token,
        session_id=st.integers(0, 2**63).map(str),
        session_version=st.integers(0, 2**63),
        address=_address,
    ),
    connection=_address,
    attributes=st.lists(_attribute, max_size=4),
    media=st.lists(_media(), max_size=4),
)
def test_serialize_then_parse_is_identity(
    origin: Origin, connection: str, attributes: list[Attribute], media: list[MediaDescription]
) -> None:
    sdp = SessionDescription(
        origin=origin,
        session_name="-",
        connection=Connection(connection),
        attributes=tuple(attributes),
        media=tuple(media),
    )
    assert parse_sdp(sdp.to_bytes()) == sdp


def test_m_line_with_extra_spaces_and_port_count() -> None:
    sdp = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=x\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
        "m=audio  4000/2 RTP/AVP  0 8\r\n"
    )
    (audio,) = sdp.media
    assert (audio.port, audio.port_count, audio.formats) == (4000, 2, ("0", "8"))
    assert "m=audio 4000/2 RTP/AVP 0 8\r\n" in str(sdp)
