from __future__ import annotations

import pytest

from protocols.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Answer,
    Connection,
    LocalMedia,
    NegotiationFailure,
    RtpMap,
    anchor_media,
    build_answer,
    build_offer,
    format_event_ranges,
    is_on_hold,
    parse_event_ranges,
    parse_sdp,
    process_answer,
)

LOCAL = LocalMedia(address="203.0.113.5", audio_port=30000, session_id="77", session_version=1)


def offer(
    formats: str = "8 0 101",
    extra: str = "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
    direction: str = "a=sendrecv\r\n",
    address: str = "192.0.2.10",
    more_media: str = "",
) -> str:
    return (
        "v=0\r\n"
        "o=alice 1 1 IN IP4 192.0.2.10\r\n"
        "s=-\r\n"
        f"c=IN IP4 {address}\r\n"
        "t=0 0\r\n"
        f"m=audio 4000 RTP/AVP {formats}\r\n"
        f"{extra}{direction}{more_media}"
    )


def accepted(result: Answer | NegotiationFailure) -> Answer:
    assert isinstance(result, Answer), result
    return result


def test_answer_keeps_offer_order_and_payload_numbers() -> None:
    result = accepted(build_answer(parse_sdp(offer()), LOCAL))
    audio = result.sdp.media[0]
    assert audio.formats == ("8", "0", "101")
    assert audio.port == 30000
    assert audio.fmtps == {101: "0-16"}
    assert audio.direction == "sendrecv"
    assert result.sdp.connection == Connection("203.0.113.5")
    assert result.sdp.origin.session_id == "77"
    stream = result.streams[0]
    assert stream.codec == RtpMap(8, "PCMA", 8000)
    assert stream.telephone_event == RtpMap(101, "telephone-event", 8000)
    assert (stream.remote_address, stream.remote_port, stream.remote_rtcp_port) == (
        "192.0.2.10",
        4000,
        4001,
    )
    # The answer parses back to itself: what we send is valid SDP.
    assert parse_sdp(result.sdp.to_bytes()) == result.sdp


def test_dynamic_telephone_event_number_from_offer_is_reused() -> None:
    text = offer(
        formats="0 96",
        extra="a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n",
    )
    audio = accepted(build_answer(parse_sdp(text), LOCAL)).sdp.media[0]
    assert audio.formats == ("0", "96")
    # Intersection of offered 0-15 and our 0-16.
    assert audio.fmtps == {96: "0-15"}


def test_telephone_event_without_fmtp_defaults_to_0_15() -> None:
    text = offer(formats="0 101", extra="a=rtpmap:101 telephone-event/8000\r\n")
    assert accepted(build_answer(parse_sdp(text), LOCAL)).sdp.media[0].fmtps == {101: "0-15"}


def test_prefer_local_order_and_single_codec() -> None:
    local = LocalMedia(
        address="203.0.113.5", audio_port=30000, prefer_local_order=True, single_codec=True
    )
    audio = accepted(build_answer(parse_sdp(offer()), local)).sdp.media[0]
    assert audio.formats == ("0", "101")


def test_unsupported_codecs_are_dropped() -> None:
    text = offer(formats="18 9 0", extra="a=rtpmap:18 G729/8000\r\n")
    audio = accepted(build_answer(parse_sdp(text), LOCAL)).sdp.media[0]
    assert audio.formats == ("0",)


def test_no_common_codec_is_a_488_failure() -> None:
    text = offer(
        formats="18 101", extra="a=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    result = build_answer(parse_sdp(text), LOCAL)
    assert isinstance(result, NegotiationFailure)
    assert result.status == 488
    assert result.warn_code == 305
    assert "no common audio codec" in result.reason


def test_video_and_second_audio_rejected_with_port_zero() -> None:
    more = "m=video 5000 RTP/AVP 31\r\nm=audio 6000 RTP/AVP 0\r\n"
    result = accepted(build_answer(parse_sdp(offer(more_media=more)), LOCAL))
    audio, video, audio2 = result.sdp.media
    assert audio.port == 30000
    assert (video.media, video.port, video.formats) == ("video", 0, ("31",))
    assert audio2.port == 0
    assert len(result.streams) == 1


def test_srtp_profile_rejected() -> None:
    text = offer().replace("RTP/AVP", "RTP/SAVP")
    result = build_answer(parse_sdp(text), LOCAL)
    assert isinstance(result, NegotiationFailure)


@pytest.mark.parametrize(
    ("offered", "local_direction", "expected"),
    [
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendonly", "sendrecv", "recvonly"),
        ("recvonly", "sendrecv", "sendonly"),
        ("inactive", "sendrecv", "inactive"),
        ("sendrecv", "sendonly", "sendonly"),
        ("sendonly", "sendonly", "inactive"),
        ("recvonly", "recvonly", "inactive"),
    ],
)
def test_direction_rules(offered: str, local_direction: str, expected: str) -> None:
    local = LocalMedia(address="203.0.113.5", audio_port=30000, direction=local_direction)  # type: ignore[arg-type]
    text = offer(direction=f"a={offered}\r\n")
    result = accepted(build_answer(parse_sdp(text), local))
    assert result.sdp.media[0].direction == expected
    assert result.streams[0].direction == expected


def test_hold_detection_sendonly_and_rfc2543_address() -> None:
    assert not is_on_hold(parse_sdp(offer()))
    assert is_on_hold(parse_sdp(offer(direction="a=sendonly\r\n")))
    assert is_on_hold(parse_sdp(offer(direction="a=inactive\r\n")))
    old_style = parse_sdp(offer(address="0.0.0.0"))
    assert is_on_hold(old_style)
    # c=0.0.0.0 means "do not send to me": we answer recvonly.
    result = accepted(build_answer(old_style, LOCAL))
    assert result.sdp.media[0].direction == "recvonly"
    assert result.streams[0].remote_hold


def test_offer_then_process_answer_round_trip() -> None:
    our_offer = build_offer(LOCAL)
    assert our_offer.media[0].formats == ("0", "8", "101")
    assert our_offer.media[0].fmtps == {101: "0-16"}
    far_end = LocalMedia(address="198.51.100.7", audio_port=40000, codecs=(PCMA, TELEPHONE_EVENT))
    answer = accepted(build_answer(parse_sdp(our_offer.to_bytes()), far_end))
    streams = process_answer(our_offer, answer.sdp)
    assert not isinstance(streams, NegotiationFailure)
    (stream,) = streams
    assert stream.codec == RtpMap(8, "PCMA", 8000)
    assert stream.telephone_event is not None and stream.telephone_event.payload_type == 101
    assert stream.telephone_events == "0-16"
    assert (stream.remote_address, stream.remote_port) == ("198.51.100.7", 40000)
    assert stream.direction == "sendrecv"


def test_process_answer_with_wrong_media_count() -> None:
    our_offer = build_offer(LOCAL)
    bogus = parse_sdp(offer(more_media="m=video 0 RTP/AVP 31\r\n"))
    result = process_answer(our_offer, bogus)
    assert isinstance(result, NegotiationFailure)


def test_process_answer_rejecting_everything() -> None:
    our_offer = build_offer(LOCAL)
    answer_text = "v=0\r\no=b 1 1 IN IP4 198.51.100.7\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n"
    assert isinstance(process_answer(our_offer, parse_sdp(answer_text)), NegotiationFailure)


def test_anchor_media_rewrites_connection_ports_and_version() -> None:
    original = parse_sdp(
        offer(
            extra=(
                "a=rtpmap:101 telephone-event/8000\r\na=rtcp:4001 IN IP4 192.0.2.10\r\n"
                "a=candidate:1 1 UDP 2130706431 192.0.2.10 4000 typ host\r\na=ice-ufrag:abcd\r\n"
            ),
            more_media="m=video 0 RTP/AVP 31\r\n",
        )
    )
    anchored = anchor_media(original, "203.0.113.5", [31000, 31002])
    assert anchored.connection == Connection("203.0.113.5")
    audio, video = anchored.media
    assert audio.port == 31000
    assert audio.connection is None
    assert audio.rtcp_port == 31001
    assert not audio.has_attribute("candidate") and not audio.has_attribute("ice-ufrag")
    assert audio.formats == original.media[0].formats  # codecs untouched
    assert video.port == 0  # rejected stays rejected
    assert anchored.origin.session_version == original.origin.session_version + 1
    assert anchored.origin.session_id == original.origin.session_id
    assert parse_sdp(anchored.to_bytes()) == anchored


def test_anchor_media_keeps_rfc2543_hold_and_explicit_version() -> None:
    held = parse_sdp(offer(address="0.0.0.0"))
    anchored = anchor_media(
        held, "203.0.113.5", [31000], session_version=9, origin_address="203.0.113.5"
    )
    assert is_on_hold(anchored)
    assert anchored.media[0].connection == Connection("0.0.0.0")
    assert anchored.origin.session_version == 9
    assert anchored.origin.address == "203.0.113.5"
    with pytest.raises(ValueError):
        anchor_media(held, "203.0.113.5", [1, 2])


def test_event_ranges() -> None:
    assert parse_event_ranges("0-15,66,70-71") == set(range(16)) | {66, 70, 71}
    assert parse_event_ranges("bogus,3") == {3}
    assert format_event_ranges(set(range(17)) | {32}) == "0-16,32"
    assert PCMU.rtpmap().attribute_value() == "0 PCMU/8000"
