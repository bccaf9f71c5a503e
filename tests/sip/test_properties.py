"""Property tests of the SIP message layer (hypothesis).

- Messages built from generated parts serialize and parse back to the same typed values, as a
  datagram and as a stream cut into arbitrary chunks.
- On arbitrary bytes, and on valid messages with random damage, the parser raises nothing but
  SipParseError; what it does accept re-serializes into something it accepts again.
"""

from __future__ import annotations

import os
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.sip import (
    URI,
    NameAddr,
    Request,
    Response,
    SipParseError,
    StreamParser,
    Via,
    escape_user,
    parse_message,
    quote,
)
from tests.sip.conftest import RFC4475_DIR, snapshot

# MIRLITON_SIP_FUZZ_SCALE=20 runs twenty times the examples (a deeper search than CI needs).
SCALE = int(os.environ.get("MIRLITON_SIP_FUZZ_SCALE", "1"))

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
LOWER_TOKEN_CHARS = string.ascii_lowercase + string.digits + "-.!*_+`'~"
USER_CHARS = string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/"
PARAM_CHARS = string.ascii_letters + string.digits + "-_.!~*'()[]/:&+$"
HNV_CHARS = string.ascii_letters + string.digits + "-_.!~*'()[]/?:+$"

tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
lower_tokens = st.text(LOWER_TOKEN_CHARS, min_size=1, max_size=10)
# Text without surrogates (not representable on the wire) for display names and values.
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
# CR and LF cannot be carried in a quoted-string at all (quote() turns them into spaces).
line_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30
)

methods = (
    st.sampled_from(
        ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "REFER"]
    )
    | tokens
)

labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
hosts = st.one_of(
    hostnames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
)
ports = st.none() | st.integers(1, 65535)
users = st.one_of(
    st.text(USER_CHARS, min_size=1, max_size=16),
    any_text.filter(bool).map(escape_user),  # exercises %-escapes
)
uri_params = st.dictionaries(
    st.text(string.ascii_lowercase + "-", min_size=1, max_size=8),
    st.none() | st.text(PARAM_CHARS, min_size=1, max_size=10),
    max_size=3,
)
uri_headers = st.lists(
    st.tuples(st.text(HNV_CHARS, min_size=1, max_size=6), st.text(HNV_CHARS, max_size=8)),
    max_size=2,
)


@st.composite
def sip_uris(draw: Any, with_headers: bool = False) -> URI:
    return URI(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=draw(st.none() | users),
        host=draw(hosts),
        port=draw(ports),
        params=draw(uri_params),
        headers=draw(uri_headers) if with_headers else None,
    )


tel_uris = st.from_regex(r"\+[0-9]{3,12}", fullmatch=True).map(lambda n: URI("tel", user=n))

header_param_values = st.one_of(
    st.none(),
    st.text(TOKEN_CHARS, min_size=1, max_size=10),
    line_text.map(quote),
)
header_params = st.dictionaries(lower_tokens, header_param_values, max_size=3)


@st.composite
def name_addrs(draw: Any, with_uri_headers: bool = False) -> NameAddr:
    uri = draw(sip_uris(with_headers=with_uri_headers) | tel_uris)
    params = draw(header_params)
    tag = draw(st.none() | tokens)
    if tag is not None:
        params["tag"] = tag
    return NameAddr(uri, display=draw(st.none() | line_text), params=params)


@st.composite
def vias(draw: Any) -> Via:
    params: dict[str, str | None] = {"branch": "z9hG4bK" + draw(tokens)}
    if draw(st.booleans()):
        params["received"] = draw(st.ip_addresses(v=4).map(str))
    if draw(st.booleans()):
        params["rport"] = draw(st.none() | st.integers(1, 65535).map(str))
    return Via(
        draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"])), draw(hosts), draw(ports), params
    )


unknown_headers = st.lists(
    st.tuples(
        st.text(TOKEN_CHARS, min_size=1, max_size=10).map(lambda name: "X-" + name),
        line_text.map(lambda value: value.strip(" \t")),
    ),
    max_size=4,
)


def _comma_or_lines(name: str, values: list[str], joined: bool) -> list[tuple[str, str]]:
    if joined and values:
        return [(name, ", ".join(values))]
    return [(name, value) for value in values]


@st.composite
def messages(draw: Any) -> tuple[Request | Response, dict[str, Any]]:
    """A message and what it must parse back to."""
    via_list = draw(st.lists(vias(), min_size=1, max_size=4))
    from_ = draw(name_addrs())
    to = draw(name_addrs())
    contacts = draw(st.lists(name_addrs(with_uri_headers=True), max_size=3))
    routes = draw(st.lists(name_addrs(), max_size=3))
    call_id = draw(st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]{1,20}", fullmatch=True))
    extra = draw(unknown_headers)
    body = draw(st.binary(max_size=200))
    joined = draw(st.booleans())
    is_request = draw(st.booleans())
    method = draw(methods)
    headers = (
        _comma_or_lines("Via", [str(v) for v in via_list], joined)
        + [("From", str(from_)), ("To", str(to)), ("Call-ID", call_id)]
        + [("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")]
        + _comma_or_lines("Contact", [str(c) for c in contacts], joined)
        + _comma_or_lines("Route", [str(r) for r in routes], joined)
        + [("Max-Forwards", str(draw(st.integers(0, 255))))]
        + extra
    )
    message: Request | Response
    if is_request:
        message = Request(method, draw(sip_uris()), headers, body)
    else:
        reason = draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20))
        message = Response(draw(st.integers(100, 699)), reason, headers, body)
    expected = {
        "vias": via_list,
        "from": from_,
        "to": to,
        "contacts": contacts,
        "routes": routes,
        "call_id": call_id,
        "extra": extra,
        "body": body,
    }
    return message, expected


def _check(parsed: Request | Response, built: Request | Response, expected: dict[str, Any]) -> None:
    if isinstance(built, Request):
        assert isinstance(parsed, Request)
        assert parsed.method == built.method
        assert parsed.uri == built.uri and str(parsed.uri) == str(built.uri)
    else:
        assert isinstance(parsed, Response)
        assert (parsed.status, parsed.reason) == (built.status, built.reason)
    assert parsed.vias == expected["vias"]
    assert parsed.from_ == expected["from"]
    assert parsed.to == expected["to"]
    assert parsed.from_.display == expected["from"].display
    assert parsed.contacts == expected["contacts"]
    assert parsed.routes == expected["routes"]
    assert parsed.call_id == expected["call_id"]
    assert parsed.cseq == built.cseq
    for name, value in expected["extra"]:
        assert value in parsed.headers.get_all(name)
    assert parsed.body == expected["body"]
    assert parsed.content_length == len(expected["body"])


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_roundtrip_datagram(case: tuple[Request | Response, dict[str, Any]]) -> None:
    message, expected = case
    parsed = parse_message(bytes(message))
    _check(parsed, message, expected)
    # and once more through our own serialization of the parsed form
    again = parse_message(bytes(parsed))
    assert snapshot(again) == snapshot(parsed)


@settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.lists(st.integers(1, 60), min_size=1, max_size=40), st.booleans())
def test_roundtrip_stream_in_chunks(
    case: tuple[Request | Response, dict[str, Any]], cuts: list[int], ping: bool
) -> None:
    message, expected = case
    data = bytes(message)
    stream = (b"\r\n\r\n" if ping else b"") + data + data
    parser = StreamParser()
    received: list[Request | Response] = []
    position = 0
    for size in cuts:
        received.extend(parser.feed(stream[position : position + size]))
        position += size
    received.extend(parser.feed(stream[position:]))
    assert len(received) == 2
    for parsed in received:
        _check(parsed, message, expected)
    assert parser.buffered == 0
    assert parser.take_pings() == (1 if ping else 0)


def _accepts_or_rejects_cleanly(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError as error:
        assert 400 <= error.status_hint <= 599
        return
    # Accepted: lazily parsed headers may still be malformed (SipParseError on access), but
    # our own serialization must be accepted again with the same values.
    try:
        before = snapshot(message)
    except SipParseError:
        return
    assert snapshot(parse_message(bytes(message))) == before


@settings(max_examples=400 * SCALE, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes(data: bytes) -> None:
    _accepts_or_rejects_cleanly(data)


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=20))
def test_arbitrary_bytes_on_a_stream(data: bytes, cuts: list[int]) -> None:
    parser = StreamParser()
    position = 0
    try:
        for size in cuts + [len(data)]:
            parser.feed(data[position : position + size])
            position += size
    except SipParseError as error:
        assert error.fatal_for_stream


header_lines = st.one_of(
    st.tuples(
        st.sampled_from(
            [
                "Via",
                "v",
                "From",
                "f",
                "To",
                "t",
                "Call-ID",
                "i",
                "CSeq",
                "Contact",
                "m",
                "Max-Forwards",
                "Content-Length",
                "l",
                "Route",
                "Record-Route",
                "Date",
                "Expires",
            ]
        ),
        st.text(
            st.sampled_from(list(' \t"<>;,=:@/\\%' + string.ascii_letters[:6] + "0123456789")),
            max_size=40,
        ),
    ).map(lambda pair: f"{pair[0]}: {pair[1]}"),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
)


@settings(max_examples=400 * SCALE, deadline=None)
@given(
    st.sampled_from(["INVITE sip:a@example.com SIP/2.0", "SIP/2.0 200 OK"]),
    st.lists(header_lines, max_size=8),
    st.binary(max_size=40),
)
def test_generated_header_soup(start: str, lines: list[str], body: bytes) -> None:
    data = ("\r\n".join([start, *lines]) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
    _accepts_or_rejects_cleanly(data)


VALID_SAMPLES = [
    (RFC4475_DIR / name).read_bytes()
    for name in (
        "wsinv.dat",
        "intmeth.dat",
        "esc01.dat",
        "longreq.dat",
        "mpart01.dat",
        "unreason.dat",
        "semiuri.dat",
        "regescrt.dat",
        "inv2543.dat",
    )
]


@st.composite
def mutated(draw: Any) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        if operation == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[position:position] = draw(
                st.sampled_from(
                    [
                        b" ",
                        b"\r\n",
                        b"\r",
                        b"\n",
                        b";",
                        b",",
                        b'"',
                        b"<",
                        b">",
                        b":",
                        b"%",
                        b"\x00",
                        b"\r\n ",
                        b"\xff",
                    ]
                )
            )
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        else:
            data[position:position] = data[position : position + draw(st.integers(1, 30))]
    return bytes(data)


@settings(max_examples=500 * SCALE, deadline=None)
@given(mutated())
def test_mutated_valid_messages(data: bytes) -> None:
    _accepts_or_rejects_cleanly(data)


@settings(max_examples=200 * SCALE, deadline=None)
@given(line_text)
def test_quote_roundtrip(text: str) -> None:
    na = NameAddr(URI("sip", host="example.com"), display=text)
    parsed = NameAddr.parse(str(na))
    assert parsed.display == text
