"""RFC 4475 torture messages, each with its own explicit expectation (see the README there).

3.1.1 valid: parse, typed values as the RFC describes, re-serialize and re-parse to the same values.
3.1.2 invalid: SipParseError with the status a server would send (requests) or dropped (responses).
3.2 / 3.3 application layer: parse, then validate_request gives the code the RFC names.
3.4 inv2543: RFC 2543 style message handled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocols.sip import (
    URI,
    Request,
    Response,
    SipParseError,
    StarContact,
    StreamParser,
    parse_message,
    validate_request,
    validate_response,
)
from tests.sip.conftest import RFC4475_DIR, snapshot

ALL_FILES = sorted(path.name for path in RFC4475_DIR.glob("*.dat"))


def test_all_49_messages_present() -> None:
    assert len(ALL_FILES) == 49


def _roundtrip(message: Request | Response) -> None:
    again = parse_message(bytes(message))
    assert snapshot(again) == snapshot(message)
    # and serialization is stable from then on
    assert bytes(parse_message(bytes(again))) == bytes(again)


# --- 3.1.1 valid messages -------------------------------------------------------------------


def check_wsinv(msg: Request) -> None:
    assert msg.method == "INVITE"
    assert msg.uri.params == {"unknownparam": None}
    assert msg.to.uri == URI.parse("sip:vivekg@chair-dnrc.example.com")
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert (msg.cseq.num, msg.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert msg.routes[0].uri.lr and msg.routes[0].uri.params["unknown-no-value"] is None
    contact = msg.contact
    assert contact is not None
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert contact.q == 0.33
    assert len(msg.body) == 150
    # unknown headers come back byte-exact, folding included
    assert b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n" in bytes(msg)


def check_intmeth(msg: Request) -> None:
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.cseq.method == msg.method
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.uri.host == "example.com"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.via.branch == "z9hG4bK-.!%66*_+`'~"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert (
        b"extensionHeader-!.%*+_`'~:\xef\xbb\xbf\xe5\xa4\xa7\xe5\x81\x9c\xe9\x9b\xbb\r\n"
        in bytes(msg)
    )


def check_esc01(msg: Request) -> None:
    assert msg.uri.user == "sips%3Auser%40example.com"
    assert msg.uri.user_unescaped == "sips:user@example.com"
    assert msg.to.uri == URI.parse("sip:user@example.com")  # %75se%72 is "user"
    assert msg.from_.uri.user_unescaped == "I have spaces"
    assert msg.content_type == "application/sdp"  # compact "C"
    contact = msg.contact
    assert contact is not None
    assert contact.uri.user_unescaped == "caller"
    assert contact.uri.lr  # ;%6C%72
    assert contact.uri.params["name"] == "v%61lue%25%34%31"


def check_escnull(msg: Request) -> None:
    assert msg.to.uri.user_unescaped == "null-\x00-null"
    assert [c.uri.user_unescaped for c in msg.contacts if not c.is_star] == ["\x00", "\x00\x00"]
    assert msg.headers.get("Content-Length") == "0"  # "L:0"


def check_esc02(msg: Request) -> None:
    assert msg.method == "RE%47IST%45R"
    assert msg.cseq.method == "RE%47IST%45R"
    assert msg.to.display == "%Z%45"
    assert msg.via.branch == "z9hG4bK209%fzsnel234"
    # "C%6Fntact" is not Contact: an unknown header, kept as is
    assert [str(c.uri) for c in msg.contacts if not c.is_star] == [
        "sip:alias1@host1.example.com",
        "sip:alias3@host3.example.com",
    ]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def check_lwsdisp(msg: Request) -> None:
    assert msg.from_.display == "caller"
    assert msg.from_.uri == URI.parse("sip:caller@example.com")


def check_longreq(msg: Request) -> None:
    assert len(msg.vias) == 34
    assert msg.vias[0].host == "sip33.example.com"
    assert msg.vias[-1].received == "192.0.2.5"
    assert msg.to.uri.port == 6000
    assert msg.to.display is not None and msg.to.display.startswith("I have a user name")
    assert (
        "longparamnamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamename"
        in msg.to.uri.params
    )
    assert msg.from_.tag is not None and msg.from_.tag.endswith("424")
    assert msg.content_length == 150 and len(msg.body) == 150


def check_dblreq(msg: Request) -> None:
    # Only the REGISTER: per Content-Length 0 the INVITE after it is excess datagram octets.
    assert msg.method == "REGISTER"
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert msg.body == b""


def check_semiuri(msg: Request) -> None:
    assert msg.uri.user == "user;par=u%40example.net"
    assert msg.uri.host == "example.com"
    assert msg.uri.params == {}
    assert msg.tokens("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def check_transports(msg: Request) -> None:
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def check_mpart01(msg: Request) -> None:
    assert msg.content_type == "multipart/mixed"
    assert msg.content_type_params == {"boundary": "7a9cbec02ceef655"}
    assert len(msg.body) == 553
    assert msg.via.has_rport and msg.via.rport is None
    assert msg.routes[0].uri == URI.parse("sip:127.0.0.1:5080")


def check_unreason(msg: Response) -> None:
    assert msg.status == 200
    assert msg.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(msg.body) == 154


def check_noreason(msg: Response) -> None:
    assert msg.status == 100
    assert msg.reason == ""


VALID: dict[str, Callable[[Any], None]] = {
    "wsinv.dat": check_wsinv,
    "intmeth.dat": check_intmeth,
    "esc01.dat": check_esc01,
    "escnull.dat": check_escnull,
    "esc02.dat": check_esc02,
    "lwsdisp.dat": check_lwsdisp,
    "longreq.dat": check_longreq,
    "dblreq.dat": check_dblreq,
    "semiuri.dat": check_semiuri,
    "transports.dat": check_transports,
    "mpart01.dat": check_mpart01,
    "unreason.dat": check_unreason,
    "noreason.dat": check_noreason,
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_message_parses_and_roundtrips(name: str, rfc4475: Callable[[str], bytes]) -> None:
    message = parse_message(rfc4475(name))
    VALID[name](message)
    _roundtrip(message)


# --- 3.1.2 invalid messages -----------------------------------------------------------------

# file -> (status_hint, culprit header or None for start line / framing, is_response)
INVALID: dict[str, tuple[int, str | None, bool]] = {
    "badinv01.dat": (400, "via", False),  # empty Via elements and params
    "clerr.dat": (400, "content-length", False),  # 9999 octets announced in a datagram
    "ncl.dat": (400, "content-length", False),  # negative
    "scalar02.dat": (400, "cseq", False),  # CSeq beyond 2**31
    "scalarlg.dat": (400, "cseq", True),  # a response: dropped
    "quotbal.dat": (400, "to", False),  # unterminated quoted display name
    "ltgtruri.dat": (400, None, False),  # Request-URI in <>
    "lwsruri.dat": (400, None, False),  # white space inside the Request-URI
    "lwsstart.dat": (400, None, False),  # several SP in the request line
    "trws.dat": (400, None, False),  # trailing SP in the request line
    "escruri.dat": (400, None, False),  # escaped headers in the Request-URI
    "baddate.dat": (400, "date", False),  # "EST" instead of "GMT"
    "regbadct.dat": (400, "contact", False),  # URI with '?' outside <>
    "badaspec.dat": (400, "to", False),  # white space inside <>
    "baddn.dat": (400, None, False),  # this copy also lacks the empty line, see below
    "badvers.dat": (505, None, False),  # SIP/7.0
    "mismatch01.dat": (400, "cseq", False),  # CSeq method != request method
    "mismatch02.dat": (400, "cseq", False),
    "bigcode.dat": (400, None, True),  # status code 4294967301: dropped
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_message_rejected(name: str, rfc4475: Callable[[str], bytes]) -> None:
    status, header, is_response = INVALID[name]
    with pytest.raises(SipParseError) as info:
        parse_message(rfc4475(name))
    error = info.value
    assert isinstance(error, ValueError)
    assert error.status_hint == status
    assert error.header == header
    assert error.is_response is is_response
    if status == 400 and header is not None:
        assert error.reason_phrase.startswith("Bad Request - Malformed ")


def test_baddn_display_names_rejected_once_framed(rfc4475: Callable[[str], bytes]) -> None:
    # The stored baddn.dat has no empty line after l: 0; with it, the unquoted display names
    # containing ',' are what gets the message rejected.
    with pytest.raises(SipParseError) as info:
        parse_message(rfc4475("baddn.dat") + b"\r\n")
    assert info.value.header == "from"
    assert info.value.reason_phrase == "Bad Request - Malformed From"


def test_badvers_reason_phrase(rfc4475: Callable[[str], bytes]) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(rfc4475("badvers.dat"))
    assert info.value.reason_phrase == "Version Not Supported"


def test_clerr_on_a_stream_waits_for_the_missing_octets(rfc4475: Callable[[str], bytes]) -> None:
    parser = StreamParser()
    assert parser.feed(rfc4475("clerr.dat")) == []
    assert parser.buffered == 154  # the body so far, waiting for 9999 octets


# --- 3.2, 3.3 and 3.4: well formed, the application decides ---------------------------------

# file -> (validate_request keyword arguments, expected status or None for "accept")
APPLICATION: dict[str, tuple[dict[str, Any], int | None]] = {
    "badbranch.dat": ({}, 400),  # 3.2: branch is the bare magic cookie
    "insuf.dat": ({}, 400),  # To, From, Call-ID, Max-Forwards missing
    "unkscm.dat": ({}, 416),
    "novelsc.dat": ({}, 416),  # soap.beep
    "unksm2.dat": ({}, 400),  # a registrar needs a SIP AOR in To
    "bext01.dat": ({}, 420),
    "invut.dat": ({}, 415),  # application/unknownformat
    "regaut01.dat": ({"auth_schemes": ["digest"]}, 401),
    "multi01.dat": ({}, 400),  # two To, From, Call-ID, CSeq
    "mcl01.dat": ({"accepted_types": ["text/plain"]}, 400),  # two Content-Length
    "zeromf.dat": ({"forwarding": True}, 483),
    "cparam01.dat": ({}, None),
    "cparam02.dat": ({}, None),
    "regescrt.dat": ({}, None),
    "sdp01.dat": ({"response_types": ["application/sdp"]}, 406),
    "inv2543.dat": ({}, None),  # 3.4
}


@pytest.mark.parametrize("name", sorted(APPLICATION))
def test_application_layer_code(name: str, rfc4475: Callable[[str], bytes]) -> None:
    kwargs, status = APPLICATION[name]
    message = parse_message(rfc4475(name))
    assert isinstance(message, Request)
    rejection = validate_request(message, **kwargs)
    if status is None:
        assert rejection is None
    else:
        assert rejection is not None and rejection.status == status
    _roundtrip(message)


def test_bcast_response_not_forwarded(rfc4475: Callable[[str], bytes]) -> None:
    message = parse_message(rfc4475("bcast.dat"))
    assert isinstance(message, Response)
    assert message.vias[1].host == "255.255.255.255"
    reason = validate_response(message)
    assert reason is not None and "broadcast" in reason
    assert validate_response(message, forwarding=False) is None


def test_badbranch_details(rfc4475: Callable[[str], bytes]) -> None:
    message = parse_message(rfc4475("badbranch.dat"))
    assert message.via.branch == "z9hG4bK"
    assert not message.via.is_rfc3261_branch


def test_bext01_unsupported_lists_the_right_header(rfc4475: Callable[[str], bytes]) -> None:
    message = parse_message(rfc4475("bext01.dat"))
    assert isinstance(message, Request)
    as_uas = validate_request(message)
    assert as_uas is not None
    assert as_uas.headers == (("Unsupported", "nothingSupportsThis, nothingSupportsThisEither"),)
    as_proxy = validate_request(message, forwarding=True)
    assert as_proxy is not None and as_proxy.status == 420
    assert as_proxy.headers == (
        ("Unsupported", "noProxiesSupportThis, norDoAnyProxiesSupportThis"),
    )
    supported = ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert validate_request(message, supported_extensions=supported) is None


def test_invut_rejection_advertises_accept(rfc4475: Callable[[str], bytes]) -> None:
    message = parse_message(rfc4475("invut.dat"))
    assert isinstance(message, Request)
    rejection = validate_request(message)
    assert rejection is not None
    assert ("Accept", "application/sdp") in rejection.headers
    assert validate_request(message, accepted_types=["application/unknownformat"]) is None


def test_zeromf_as_endpoint_is_processed(rfc4475: Callable[[str], bytes]) -> None:
    message = parse_message(rfc4475("zeromf.dat"))
    assert isinstance(message, Request)
    assert message.max_forwards == 0
    assert validate_request(message) is None


def test_regaut01_without_authentication_is_accepted(rfc4475: Callable[[str], bytes]) -> None:
    message = parse_message(rfc4475("regaut01.dat"))
    assert isinstance(message, Request)
    assert validate_request(message) is None
    assert message.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"


def test_sdp01_without_accept_constraint(rfc4475: Callable[[str], bytes]) -> None:
    message = parse_message(rfc4475("sdp01.dat"))
    assert isinstance(message, Request)
    assert validate_request(message) is None
    assert validate_request(message, response_types=["text/nobodyKnowsThis"]) is None


def test_unksm2_schemes(rfc4475: Callable[[str], bytes]) -> None:
    message = parse_message(rfc4475("unksm2.dat"))
    assert (message.to.uri.scheme, message.to.uri.opaque) == ("isbn", "2983792873")
    assert message.from_.uri.scheme == "http"
    contact = message.contact
    assert contact is not None and contact.uri.scheme == "name"


def test_cparam_parameters_land_where_the_brackets_say(rfc4475: Callable[[str], bytes]) -> None:
    outside = parse_message(rfc4475("cparam01.dat")).contact
    inside = parse_message(rfc4475("cparam02.dat")).contact
    assert outside is not None and inside is not None
    assert outside.params == {"unknownparam": None} and outside.uri.params == {}
    assert inside.params == {} and inside.uri.params == {"unknownparam": None}


def test_regescrt_contact_keeps_escaped_header(rfc4475: Callable[[str], bytes]) -> None:
    contact = parse_message(rfc4475("regescrt.dat")).contact
    assert contact is not None
    assert contact.uri.headers == [("Route", "%3Csip:sip.example.com%3E")]
    assert str(contact) == "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"


def test_multi01_typed_access_reads_the_first(rfc4475: Callable[[str], bytes]) -> None:
    message = parse_message(rfc4475("multi01.dat"))
    assert message.cseq.num == 5
    assert message.headers.count("To") == 2


def test_mcl01_body_and_stream_behaviour(rfc4475: Callable[[str], bytes]) -> None:
    data = rfc4475("mcl01.dat")
    message = parse_message(data)
    # framing unknown: over UDP the body is the rest of the datagram
    assert message.body.startswith(b"There's no way")
    with pytest.raises(SipParseError) as info:
        StreamParser().feed(data)
    assert info.value.fatal_for_stream and info.value.header == "content-length"


def test_inv2543_handled(rfc4475: Callable[[str], bytes]) -> None:
    message = parse_message(rfc4475("inv2543.dat"))
    assert isinstance(message, Request)
    assert message.max_forwards is None
    assert message.via.branch is None and not message.via.is_rfc3261_branch
    assert message.from_.tag is None
    assert message.record_routes[0].uri.maddr == "ss1.example.com"
    assert message.to.uri.params == {}  # addr-spec form: ;user=phone is a header parameter
    assert message.to.params == {"user": "phone"}
    assert message.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    assert b"\r\nContent-Length: 105\r\n" in bytes(message)


def test_every_file_has_an_expectation() -> None:
    covered = set(VALID) | set(INVALID) | set(APPLICATION) | {"bcast.dat"}
    assert covered == set(ALL_FILES)


def test_star_contact_type() -> None:
    message = parse_message(
        b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
        b"To: <sip:a@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: c\r\n"
        b"CSeq: 2 REGISTER\r\nContact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n"
    )
    assert message.contacts == [StarContact()]
    assert message.contact is None
