"""SIP requests and responses: typed access, mutation, serialization, builders.

Typed values (``msg.vias``, ``msg.from_`` ...) are parsed from the header entries on first use and
cached in ``msg.headers``; a mutation through ``msg.headers`` drops that header's. Typed objects are
snapshots: after changing one (say ``via.params["received"] = ip``), write it back with
``msg.headers.set_first("Via", via)``.

Mandatory headers (Via, From, To, Call-ID, CSeq) raise :class:`SipParseError` (400, naming the
header) when read while absent, so code that reads them need not check for None; optional ones
return None or an empty list.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Self

from .errors import REASON_PHRASES, SipParseError
from .headers import (
    MAGIC_COOKIE,
    TOKEN_RE,
    TOP_VIA,
    CSeq,
    Headers,
    NameAddr,
    StarContact,
    Via,
    parse_params,
    split_comma_list,
)
from .uri import URI

__all__ = [
    "TOP_VIA",
    "Message",
    "Request",
    "Response",
    "make_response",
    "generate_branch",
    "generate_tag",
    "generate_call_id",
    "SIP_VERSION",
]

SIP_VERSION = "SIP/2.0"

# --- value parsers for the typed accessors ---------------------------------------------------

# Call-ID  =  ( "Call-ID" / "i" ) HCOLON callid
# callid   =  word [ "@" word ]
# word     =  1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#             "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]++"
_CALL_ID_RE = re.compile(rf"{_WORD}(?:@{_WORD})?")

# Date = "Date" HCOLON SIP-date ; SIP-date = rfc1123-date (RFC 2616 3.3.1), always "GMT"
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_DIGITS_RE = re.compile(r"[0-9]+")
# media-type = m-type SLASH m-subtype *(SEMI m-parameter)
_MEDIA_TYPE_RE = re.compile(
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)(.*)", re.S
)


def _parse_call_id(value: str) -> str:
    if _CALL_ID_RE.fullmatch(value) is None:
        raise SipParseError(f"malformed Call-ID: {value[:60]!r}", header="call-id")
    return value


def _parse_max_forwards(value: str) -> int:
    # Max-Forwards = "Max-Forwards" HCOLON 1*DIGIT ; 0-255 (RFC 3261 20.22)
    if not (value.isdigit() and value.isascii()) or len(value) > 5 or int(value) > 255:
        raise SipParseError(f"malformed Max-Forwards: {value[:20]!r}", header="max-forwards")
    return int(value)


def _parse_content_length(value: str) -> int:
    # Content-Length = ( "Content-Length" / "l" ) HCOLON 1*DIGIT
    if not (value.isdigit() and value.isascii()) or len(value) > 12:
        raise SipParseError(f"malformed Content-Length: {value[:20]!r}", header="content-length")
    return int(value)


def _parse_delta_seconds(value: str, header: str) -> int:
    # delta-seconds = 1*DIGIT; larger than 2**32-1 is taken as 2**32-1 (RFC 3261 20.19/20.33)
    if _DIGITS_RE.fullmatch(value) is None:
        raise SipParseError(f"malformed {header}: {value[:20]!r}", header=header)
    return int(value) if len(value) < 11 and int(value) <= 0xFFFFFFFF else 0xFFFFFFFF


def _parse_date(value: str) -> str:
    if _DATE_RE.fullmatch(value) is None:
        raise SipParseError(f"malformed Date: {value[:60]!r}", header="date")
    return value


def _parse_media_type(value: str) -> tuple[str, dict[str, str | None]]:
    match = _MEDIA_TYPE_RE.fullmatch(value)
    if match is None:
        raise SipParseError(f"malformed Content-Type: {value[:60]!r}", header="content-type")
    params = parse_params(match.group(3), "content-type") if match.group(3) else {}
    return f"{match.group(1)}/{match.group(2)}".lower(), params


def _name_addr_parser(key: str) -> Callable[[str], NameAddr]:
    # functools.partial is a C-level wrapper: one Python call per value instead of two.
    return partial(NameAddr.parse, header=key)


# Every parser raises SipParseError naming its header.
VALUE_PARSERS: dict[str, Callable[[str], Any]] = {
    "via": Via.parse,
    "from": _name_addr_parser("from"),
    "to": _name_addr_parser("to"),
    "contact": _name_addr_parser("contact"),  # NameAddr.parse turns "*" into a StarContact
    "route": _name_addr_parser("route"),
    "record-route": _name_addr_parser("record-route"),
    "path": _name_addr_parser("path"),
    "service-route": _name_addr_parser("service-route"),
    "cseq": CSeq.parse,
    "call-id": _parse_call_id,
    "max-forwards": _parse_max_forwards,
    "content-length": _parse_content_length,
    "expires": lambda value: _parse_delta_seconds(value, "expires"),
    "min-expires": lambda value: _parse_delta_seconds(value, "min-expires"),
    "date": _parse_date,
    "content-type": _parse_media_type,
}




def _typed(headers: Headers, key: str) -> list[Any]:
    cached = headers._typed.get(key)
    if cached is None:
        parser = VALUE_PARSERS[key]
        cached = [parser(entry[2]) for entry in headers._entries if entry[0] == key]
        headers._typed[key] = cached
    return cached


def _missing(key: str) -> SipParseError:
    from .headers import display_name

    return SipParseError(f"missing {display_name(key)} header", header=key)


def _coerce_headers(headers: Headers | Iterable[tuple[str, str]] | None) -> Headers:
    if headers is None:
        return Headers()
    if isinstance(headers, Headers):
        return headers
    return Headers(headers)


class Message:
    """What requests and responses share: headers, body and the typed header accessors."""

    __slots__ = ("headers", "_body")

    is_request: bool = False

    headers: Headers
    _body: bytes

    def __init__(
        self, headers: Headers | Iterable[tuple[str, str]] | None = None, body: bytes = b""
    ) -> None:
        self.headers = _coerce_headers(headers)
        self._body = b""
        self.body = body

    # -- body ---------------------------------------------------------------------------------
    @property
    def body(self) -> bytes:
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        """Setting the body keeps Content-Length in step."""
        self._body = bytes(value)
        self.headers.replace("Content-Length", str(len(self._body)))

    # -- typed access -------------------------------------------------------------------------
    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first."""
        return _typed(self.headers, "via")

    @property
    def top_via(self) -> Via | None:
        """The top Via, or None when there is none. Only that one is parsed (transactions
        read it for every message; a request that went through proxies has several)."""
        typed = self.headers._typed
        top = typed.get(TOP_VIA)
        if top is not None:
            return top
        vias = typed.get("via")
        if vias is not None:
            return vias[0] if vias else None
        for entry in self.headers._entries:
            if entry[0] == "via":
                top = typed[TOP_VIA] = Via.parse(entry[2])
                return top
        return None

    @property
    def via(self) -> Via:
        """The top Via."""
        top = self.top_via
        if top is None:
            raise _missing("via")
        return top

    @property
    def from_(self) -> NameAddr:
        values = self.headers._typed.get("from") or _typed(self.headers, "from")
        if not values:
            raise _missing("from")
        return values[0]

    @property
    def to(self) -> NameAddr:
        values = self.headers._typed.get("to") or _typed(self.headers, "to")
        if not values:
            raise _missing("to")
        return values[0]

    @property
    def call_id(self) -> str:
        values = self.headers._typed.get("call-id") or _typed(self.headers, "call-id")
        if not values:
            raise _missing("call-id")
        return values[0]

    @property
    def cseq(self) -> CSeq:
        values = self.headers._typed.get("cseq") or _typed(self.headers, "cseq")
        if not values:
            raise _missing("cseq")
        return values[0]

    @property
    def contacts(self) -> list[NameAddr | StarContact]:
        """Every Contact value in order; a ``Contact: *`` is a :class:`StarContact`."""
        return self.headers._typed.get("contact") or _typed(self.headers, "contact")

    @property
    def contact(self) -> NameAddr | None:
        """The first Contact that is not ``*`` (the remote target of a dialog), or None."""
        for value in _typed(self.headers, "contact"):
            if not value.is_star:
                return value
        return None

    @property
    def routes(self) -> list[NameAddr]:
        return _typed(self.headers, "route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return _typed(self.headers, "record-route")

    @property
    def max_forwards(self) -> int | None:
        values = _typed(self.headers, "max-forwards")
        return values[0] if values else None

    @property
    def expires(self) -> int | None:
        values = _typed(self.headers, "expires")
        return values[0] if values else None

    @property
    def content_length(self) -> int | None:
        """The declared Content-Length (the first one), or None."""
        values = _typed(self.headers, "content-length")
        return values[0] if values else None

    @property
    def content_type(self) -> str | None:
        """Media type lower-cased without parameters (``"application/sdp"``), or None."""
        values = _typed(self.headers, "content-type")
        return values[0][0] if values else None

    @property
    def content_type_params(self) -> dict[str, str | None]:
        values = _typed(self.headers, "content-type")
        return dict(values[0][1]) if values else {}

    def tokens(self, name: str) -> list[str]:
        """Comma-separated tokens of a header such as Require, Supported, Allow (as written)."""
        out: list[str] = []
        for value in self.headers.get_all(name):
            if value.strip(" \t"):
                out.extend(split_comma_list(value, name.lower()))
        return out

    @property
    def require(self) -> list[str]:
        return self.tokens("Require")

    @property
    def proxy_require(self) -> list[str]:
        return self.tokens("Proxy-Require")

    @property
    def supported(self) -> list[str]:
        return self.tokens("Supported")

    def validate_headers(self) -> None:
        """Parse every header that has a typed parser, raising SipParseError on the first bad
        one. ``parse_message`` already checks Via, From, To, Contact, Call-ID, CSeq,
        Max-Forwards, Content-Length and Date; this adds Route, Record-Route, Expires,
        Content-Type and the rest of :data:`VALUE_PARSERS`."""
        for key in VALUE_PARSERS:
            for value in _typed(self.headers, key):
                # Via parameters, name-addr URIs and parameters are built lazily: build them.
                if isinstance(value, Via):
                    _ = value.params
                elif isinstance(value, NameAddr):
                    _ = value.uri, value.params

    def copy(self) -> Self:
        """An independent copy (header entries copied, typed values re-parsed on demand)."""
        clone = object.__new__(type(self))
        clone.headers = self.headers.copy()
        clone._body = self._body
        if isinstance(self, Request):
            assert isinstance(clone, Request)
            clone.method = self.method
            clone._uri = None if self._uri is None else self._uri.copy()
            clone._uri_text = self._uri_text
        elif isinstance(self, Response):
            assert isinstance(clone, Response)
            clone.status = self.status
            clone.reason = self.reason
        return clone

    # -- serialization ------------------------------------------------------------------------
    @property
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The message on the wire. Content-Length is added or corrected to match the body."""
        lines = self.headers.lines()
        body = self._body
        length_text = str(len(body))
        entries = self.headers._entries
        for index, entry in enumerate(entries):
            if entry[0] == "content-length":
                if entry[2] != length_text:
                    lines[index] = f"{entry[1]}: {length_text}"
                break
        else:
            lines.append(f"Content-Length: {length_text}")
        lines.insert(0, self.start_line)
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


class Request(Message):
    """A SIP request. ``uri`` is the Request-URI (a :class:`URI`; assign a str or a URI)."""

    __slots__ = ("method", "_uri", "_uri_text")

    is_request = True

    method: str
    _uri: URI | None
    _uri_text: str | None  # a parsed Request-URI, validated, built into _uri on first use

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        if TOKEN_RE.fullmatch(method) is None:
            raise ValueError(f"method is not a token: {method!r}")
        self.method = method
        self.uri = uri
        super().__init__(headers, body)

    @property
    def uri(self) -> URI:
        uri = self._uri
        if uri is None:
            uri = self._uri = URI.parse(self._uri_text)  # type: ignore[arg-type]
        return uri

    @uri.setter
    def uri(self, value: URI | str) -> None:
        self._uri = value if isinstance(value, URI) else URI.parse(value)
        self._uri_text = None

    @property
    def start_line(self) -> str:
        if self._uri is None:  # parsed and never read: the Request-URI exactly as received
            return f"{self.method} {self._uri_text} {SIP_VERSION}"
        return f"{self.method} {self._uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response; ``reason`` defaults to the RFC 3261 phrase of ``status``."""

    __slots__ = ("status", "reason")

    is_request = False

    status: int
    reason: str

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        if not 100 <= status <= 699:
            raise ValueError(f"status out of range: {status}")
        self.status = status
        self.reason = REASON_PHRASES.get(status, "") if reason is None else reason
        if "\r" in self.reason or "\n" in self.reason:
            raise ValueError("reason phrase contains CR or LF")
        super().__init__(headers, body)

    @property
    def method(self) -> str:
        """The method of the request this answers (from CSeq)."""
        return self.cseq.method

    @property
    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# --- builders -------------------------------------------------------------------------------

_COPIED_TO_RESPONSE = ("via", "from", "to", "call-id", "cseq")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
    body: bytes = b"",
) -> Response:
    """A response to ``request`` per RFC 3261 8.2.6: Via (all, in order), From, To, Call-ID and
    CSeq copied; To gets ``to_tag`` unless it already has a tag; a 100 copies Timestamp
    (8.2.6.1). Header values are copied as written."""
    entries = request.headers._entries
    copied: list[tuple[str, str, str, str | None]] = []
    for key in _COPIED_TO_RESPONSE:
        for entry in entries:
            if entry[0] == key:
                if key == "to" and to_tag is not None and status != 100:
                    if _typed(request.headers, "to")[0].tag is None:
                        copied.append((key, entry[1], f"{entry[2]};tag={to_tag}", None))
                        continue
                copied.append(entry)
    if status == 100:
        copied.extend(entry for entry in entries if entry[0] == "timestamp")
    response = Response(status, reason, Headers._from_entries(copied))
    if body:
        response.body = body
    return response


def generate_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 64 random bits."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def generate_tag() -> str:
    """A From/To tag: 48 random bits in hex (RFC 3261 19.3 wants 32 at least)."""
    return secrets.token_hex(6)


def generate_call_id(host: str | None = None) -> str:
    """A Call-ID: 96 random bits, ``@host`` appended when given."""
    token = secrets.token_hex(12)
    return f"{token}@{host}" if host else token
