"""Bytes to messages: the datagram parser and the stream (TCP/TLS) framer.

Strictness versus speed -- the trade-off. ``parse_message`` is one validating pass, and there is
no separate "fast, lax" parser: the same call is both the strict one and the fast one. It splits
head and body once, decodes the head once (UTF-8 with surrogateescape, so any octet survives a
round trip), splits lines once, and stores every header as (key, name, value, raw line); the
raw line only when ``name: value`` would not give it back byte for byte, and names and recurring
values shared between messages (memory: a held call keeps its messages). Then:

* checked at once, in full: the start line (method token, Request-URI grammar and no URI headers,
  version, status code), framing (CRLF only, Content-Length against the datagram, conflicting
  Content-Lengths), every header name, and the grammar of Via, From, To, Contact, Call-ID, CSeq
  (number below 2**31, method equal to the request's), Max-Forwards (0-255), Content-Length and
  Date. Each of these values is matched by one precompiled regex (possessive quantifiers, so sre
  keeps no backtracking state), which is what makes the pass cheap;
* built at once: the top Via (transactions read it first), From, To, Contact, Call-ID, CSeq,
  Max-Forwards, Content-Length -- reading them is a dict lookup;
* built on first use, already validated: the Request-URI object, the URI and parameter dict
  inside a From/To/Contact, the parameter dict of a Via, the Via objects below the top one;
* checked on first use only: what received, rport, ttl and maddr of a Via must hold (the via-parm
  grammar was checked), and every other header -- Route, Record-Route, Expires, Content-Type,
  Require, unknown ones -- kept as text; a malformed one raises SipParseError (status_hint 400,
  naming the header) when read.

Everything RFC 4475 3.1.2 gets wrong sits in the first group, so this single pass rejects all those
messages. ``Message.validate_headers()`` (called by ``validate_request``) completes the check for
callers that want everything up front -- a registrar, a strict edge. The cost: about 220k CPU
instructions (callgrind) for a typical 1 kB INVITE including typed reads (bench/sip_parse.py).

RFC 3261 7 / 25.1 message framing::

    SIP-message    =  Request / Response
    Request        =  Request-Line *( message-header ) CRLF [ message-body ]
    Request-Line   =  Method SP Request-URI SP SIP-Version CRLF
    Status-Line    =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
    SIP-Version    =  "SIP" "/" 1*DIGIT "." 1*DIGIT
    Status-Code    =  3DIGIT
    Reason-Phrase  =  *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
    message-header =  header-name HCOLON header-value CRLF   (continuation lines start with WSP)
    HCOLON         =  *( SP / HTAB ) ":" SWS

Datagrams (UDP): octets after Content-Length are ignored, a Content-Length larger than the
datagram is an error, no Content-Length means the body runs to the end of the datagram. Streams:
Content-Length is mandatory and any framing error is fatal for the connection.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import SipParseError
from .headers import (
    COMMA_SPLIT_HEADERS,
    TOKEN_RE,
    Headers,
    Via,
    _shared_text,
    _shared_texts,
    canonical_key,
    split_comma_list,
)
from .message import TOP_VIA, VALUE_PARSERS, Message, Request, Response
from .uri import URI

__all__ = ["Limits", "DEFAULT_LIMITS", "parse_message", "StreamParser", "is_keepalive"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits, in octets (characters after decoding for the line limits)."""

    max_start_line: int = 8192  # request line too long: 414; status line: 513
    max_header_line: int = 8192  # one header line, continuation lines included: 513
    max_headers_size: int = 65536  # the whole header section: 513
    max_header_count: int = 256  # 513
    max_body: int = 1 << 20  # 413


DEFAULT_LIMITS = Limits()


# The headers parsed or validated during parse_message (see the module docstring). Via is special:
# the top one is parsed (transactions read it at once), the others only validated and parsed
# when msg.vias is read.
_EAGER: dict[str, Callable[[str], Any]] = {
    key: VALUE_PARSERS[key]
    for key in (
        "via",
        "from",
        "to",
        "contact",
        "call-id",
        "cseq",
        "max-forwards",
        "content-length",
        "date",
    )
}


# Header values are shared between messages (a phone sends the same Allow, Supported and
# User-Agent every time, an edge the same Record-Route and X- headers of a device), rather
# than held once per message: that matters for the messages a held call keeps. Not those
# that differ in every message (tags, branches, nonces), which would only churn the table.
_UNIQUE_VALUE_KEYS = frozenset(
    {
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
        "authentication-info",
        "date",
        "timestamp",
        "rseq",
        "rack",
    }
)

_Info = tuple[str, Callable[[str], Any] | None, bool, str, bool]


class _HeaderInfo(dict[str, _Info]):
    """Header name as written -> (canonical key, eager parser or None, comma-split?, the name
    itself, value shared?): one dict lookup per header line; unknown spellings are computed
    (and validated) on first sight. Entries keep the name string stored here, so a thousand
    messages hold one "Via" string, not a thousand."""

    def __missing__(self, name: str) -> _Info:
        if name[:1] == " " or name[:1] == "\t":
            raise _FoldedLine
        key = canonical_key(name)
        info = (key, _EAGER.get(key), key in COMMA_SPLIT_HEADERS, name,
                key not in _UNIQUE_VALUE_KEYS)
        if len(self) < 4096:  # a peer inventing names cannot grow it without bound
            self[name] = info
        return info


_header_info = _HeaderInfo()


class _FoldedLine(Exception):
    """A continuation line met by the fast header loop: parse again with unfolding. Looking for
    folds this way costs nothing on the (usual) unfolded message, unlike scanning for them."""


def _store_typed(typed: dict[str, Any], key: str, value: str, parser: Callable[[str], Any]) -> None:
    if key == "via":
        if TOP_VIA in typed:
            Via.validate(value)
        else:
            typed[TOP_VIA] = Via.parse(value)
        return
    parsed = parser(value)
    values = typed.get(key)
    if values is None:
        typed[key] = [parsed]
    else:
        values.append(parsed)


_COMMON_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.I)
_STATUS_RE = re.compile(r"[1-6][0-9][0-9]")
# Reason-Phrase: anything but the control characters (HTAB allowed).
_BAD_REASON_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_FOLD_RE = re.compile(r"[ \t]*\r\n[ \t]+")


def is_keepalive(datagram: bytes) -> bool:
    """True for a CRLF keep-alive (RFC 5626 3.5.1) or an empty datagram: nothing to parse."""
    return not datagram.strip(b"\r\n")


def _unfold(lines: list[str]) -> list[str]:
    # LWS = [*WSP CRLF] 1*WSP: a line starting with SP/HTAB continues the previous header and
    # the fold is equivalent to one SP. The raw line keeps the fold for byte-exact output.
    out: list[str] = [lines[0]]
    for index in range(1, len(lines)):
        line = lines[index]
        if line and (line[0] == " " or line[0] == "\t"):
            if len(out) == 1:
                raise SipParseError("continuation line right after the start line")
            out[-1] = out[-1] + "\r\n" + line
        else:
            out.append(line)
    return out


def _check_version(version: str, is_response: bool) -> None:
    if version == "SIP/2.0":
        return
    if _VERSION_RE.fullmatch(version) is None:
        raise SipParseError(f"malformed SIP version {version[:20]!r}", is_response=is_response)
    if version.upper() != "SIP/2.0":
        raise SipParseError(
            f"unsupported SIP version {version!r}", status_hint=505, is_response=is_response
        )


def _parse_head(
    head: bytes, limits: Limits, *, stream: bool, folded: bool = False
) -> tuple[Message, int | None]:
    """Parse start line and headers; return the message (no body yet) and its Content-Length
    (None when absent, or in datagram mode when several disagree)."""
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    line_count = len(lines) - 1
    # Every CR and LF must belong to a CRLF: a bare one could smuggle a header line through a
    # proxy that re-serializes the raw value.
    if text.count("\n") != line_count or text.count("\r") != line_count:
        raise SipParseError("bare CR or LF in the header section")
    if line_count > limits.max_header_count:
        raise SipParseError("too many header lines", status_hint=513)
    if folded:
        lines = _unfold(lines)
    start_line = lines[0]
    is_response = start_line.startswith("SIP/") or start_line[:4].upper() == "SIP/"
    if len(start_line) > limits.max_start_line:
        raise SipParseError(
            "start line too long", status_hint=513 if is_response else 414, is_response=is_response
        )

    message: Message
    if is_response:
        version, _, rest = start_line.partition(" ")
        if version != "SIP/2.0":
            _check_version(version, True)
        code, _, reason = rest.partition(" ")
        if _STATUS_RE.fullmatch(code) is None:
            raise SipParseError(f"malformed status code {code[:20]!r}", is_response=True)
        if _BAD_REASON_RE.search(reason):
            raise SipParseError("control character in reason phrase", is_response=True)
        response = Response.__new__(Response)
        response.status = int(code)
        response.reason = reason
        message = response
    else:
        parts = start_line.split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise SipParseError(
                "request line is not 'Method SP Request-URI SP SIP-Version'", is_response=False
            )
        method, uri_text, version = parts
        if version != "SIP/2.0":
            _check_version(version, False)
        if method not in _COMMON_METHODS and TOKEN_RE.fullmatch(method) is None:
            raise SipParseError(f"method is not a token: {method[:40]!r}", is_response=False)
        try:
            has_headers = URI.validate(uri_text)
        except SipParseError as exc:
            raise SipParseError(f"bad Request-URI: {exc.reason}", is_response=False) from None
        # RFC 3261 19.1.1 table: headers are not allowed in a Request-URI (RFC 4475 escruri).
        if has_headers:
            raise SipParseError("headers in the Request-URI", is_response=False)
        request = Request.__new__(Request)
        request.method = method
        request._uri = None
        request._uri_text = uri_text
        message = request

    entries: list[tuple[str, str, str, str | None]] = []
    typed: dict[str, Any] = {}
    check_line_length = len(text) > limits.max_header_line
    header_info = _header_info
    shared_texts = _shared_texts
    try:
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                if line[:1] == " " or line[:1] == "\t":
                    raise _FoldedLine
                raise SipParseError(f"header line without ':': {line[:60]!r}")
            key, parser, splittable, name, shared = header_info[name]
            if check_line_length and len(line) > limits.max_header_line:
                raise SipParseError("header line too long", header=key, status_hint=513)
            raw_length = len(value)
            if folded and "\r\n" in value:
                value = _FOLD_RE.sub(" ", value)
            value = value.strip(" \t")
            if splittable and "," in value:
                for element in split_comma_list(value, key):
                    entries.append((key, name, element, None))
                    if parser is not None:
                        _store_typed(typed, key, element, parser)
                continue
            if shared:
                value = shared_texts.get(value) or _shared_text(value)
            # The raw line is kept only when "name: value" would not give it back byte for
            # byte (no space or several after the colon, trailing blanks, folds): most lines
            # are spelled that way, and a second copy of each would double what a kept
            # message holds.
            if raw_length == len(value) + 1 and line[len(name) + 1] == " ":
                entries.append((key, name, value, None))
            else:
                entries.append((key, name, value, line))
            if parser is not None:
                # _store_typed inlined: this runs for most header lines
                if key == "via":
                    if TOP_VIA in typed:
                        Via.validate(value)
                    else:
                        typed[TOP_VIA] = Via.parse(value)
                else:
                    parsed = parser(value)
                    values = typed.get(key)
                    if values is None:
                        typed[key] = [parsed]
                    else:
                        values.append(parsed)

        headers = Headers.__new__(Headers)
        headers._entries = entries
        headers._typed = typed
        message.headers = headers
        if not is_response:
            method = message.method
            for cseq in typed.get("cseq", ()):
                if cseq.method != method:
                    raise SipParseError("CSeq method does not match the request", header="cseq")
        lengths = typed.get("content-length")
        content_length: int | None = None
        if lengths is not None:
            content_length = lengths[0]
            if len(lengths) > 1 and any(length != content_length for length in lengths):
                if stream:
                    raise SipParseError(
                        "conflicting Content-Length values", header="content-length"
                    )
                content_length = None  # datagram: framing unknown, the body is the rest of it
    except _FoldedLine:
        return _parse_head(head, limits, stream=stream, folded=True)
    except SipParseError as exc:
        if not folded and ("\r\n " in text or "\r\n\t" in text):
            # a header was judged before its continuation line was seen
            return _parse_head(head, limits, stream=stream, folded=True)
        exc.is_response = is_response
        if exc.headers is None and entries:
            exc.headers = Headers._from_entries(entries)
        raise
    return message, content_length


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one SIP message from a datagram (see the module docstring for the framing).

    Raises :class:`SipParseError`; never anything else for any input bytes.
    """
    if type(data) is not bytes:  # bytearray, memoryview: one copy, then slices are bytes
        data = bytes(data)
    start = 0
    while data.startswith(b"\r\n", start):  # RFC 3261 7.5: CRLFs before the start line
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0 or end - start > limits.max_headers_size:
        is_response = data[start : start + 4].upper() == b"SIP/"
        if end < 0 and len(data) - start <= limits.max_headers_size:
            raise SipParseError("no empty line ends the header section", is_response=is_response)
        raise SipParseError("header section too large", status_hint=513, is_response=is_response)
    message, content_length = _parse_head(data[start:end], limits, stream=False)
    body_start = end + 4
    if content_length is None:
        body = data[body_start:]
    else:
        if body_start + content_length > len(data):
            raise SipParseError(
                "Content-Length larger than the datagram",
                header="content-length",
                is_response=not message.is_request,
                headers=message.headers,
            )
        body = data[body_start : body_start + content_length]
    if len(body) > limits.max_body:
        raise SipParseError("body too large", status_hint=413, is_response=not message.is_request)
    message._body = body
    return message  # type: ignore[return-value]


class StreamParser:
    """Frames messages out of a byte stream (TCP, TLS, one per connection).

    ``feed(data)`` returns the messages completed by those bytes. CRLF keep-alives between
    messages are skipped; each double CRLF counts as a ping (``take_pings()``; RFC 5626 wants a
    CRLF pong). A SipParseError from ``feed`` is fatal: framing is lost, close the connection
    (the error carries ``fatal_for_stream=True`` and ``parsed_before``, the messages completed
    earlier in that same call); later calls raise it again.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._scan_from = 0
        self._pending: tuple[Message, int] | None = None
        self._error: SipParseError | None = None
        self._crlf_run = 0
        self._pings = 0

    @property
    def buffered(self) -> int:
        """Octets received but not yet part of a complete message."""
        return len(self._buffer)

    def take_pings(self) -> int:
        """Number of double-CRLF pings seen since the last call."""
        pings, self._pings = self._pings, 0
        return pings

    def feed(self, data: bytes) -> list[Request | Response]:
        if self._error is not None:
            raise self._error
        self._buffer += data
        completed: list[Request | Response] = []
        try:
            while True:
                message = self._next()
                if message is None:
                    return completed
                completed.append(message)  # type: ignore[arg-type]
        except SipParseError as exc:
            exc.fatal_for_stream = True
            exc.parsed_before = completed
            self._error = exc
            self._buffer.clear()
            raise

    def _next(self) -> Message | None:
        buffer = self._buffer
        limits = self.limits
        if self._pending is None:
            skipped = 0
            while buffer.startswith(b"\r\n", skipped):
                skipped += 2
            if skipped:
                del buffer[:skipped]
                self._crlf_run += skipped // 2
                self._pings += self._crlf_run // 2
                self._crlf_run %= 2
                self._scan_from = 0
            if not buffer or buffer == b"\r":
                return None
            self._crlf_run = 0
            end = buffer.find(b"\r\n\r\n", max(0, self._scan_from - 3))
            if end < 0:
                self._scan_from = len(buffer)
                if len(buffer) > limits.max_headers_size:
                    raise SipParseError("header section too large", status_hint=513)
                return None
            if end > limits.max_headers_size:
                raise SipParseError("header section too large", status_hint=513)
            message, content_length = _parse_head(bytes(buffer[:end]), limits, stream=True)
            if content_length is None:
                raise SipParseError(
                    "no Content-Length on a stream",
                    header="content-length",
                    is_response=not message.is_request,
                    headers=message.headers,
                )
            if content_length > limits.max_body:
                raise SipParseError(
                    "body too large", status_hint=413, is_response=not message.is_request
                )
            del buffer[: end + 4]
            self._scan_from = 0
            self._pending = (message, content_length)
        message, content_length = self._pending
        if len(buffer) < content_length:
            return None
        message._body = bytes(buffer[:content_length])
        del buffer[:content_length]
        self._pending = None
        return message
