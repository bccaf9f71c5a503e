"""Header names, the header container and the typed header values (Via, name-addr, CSeq ...).

Values reach these parsers already unfolded (continuation lines joined by one space), so the
RFC 3261 linear white space LWS/SWS reduces to ``[ \\t]``.

RFC 3261 25.1, the pieces used throughout this module::

    token       =  1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
    SEMI        =  SWS ";" SWS     EQUAL = SWS "=" SWS     SLASH = SWS "/" SWS
    COMMA       =  SWS "," SWS     LAQUOT = SWS "<"        RAQUOT = ">" SWS
    quoted-string  =  SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
    qdtext      =  LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
    quoted-pair =  "\\" (%x00-09 / %x0B-0C / %x0E-7F)
    generic-param  =  token [ EQUAL gen-value ]
    gen-value   =  token / host / quoted-string
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from .errors import SipParseError
from .uri import FAST_URI_PATTERN, URI

__all__ = [
    "TOP_VIA",
    "Headers",
    "Via",
    "NameAddr",
    "StarContact",
    "CSeq",
    "parse_contact",
    "canonical_key",
    "display_name",
    "split_comma_list",
    "parse_params",
    "quote",
    "unquote",
]

_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN_RE = re.compile(rf"[{_TOKEN_CHARS}]+")
_WS = " \t"

# RFC 3261 7.3.3 compact forms plus those registered later (RFC 3265 o/u, RFC 3515 r,
# RFC 3892 b, RFC 4028 x, RFC 4474 y/n, RFC 3841 a/j/d, RFC 3428 ...).
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "y": "identity",
    "n": "identity-info",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}

# How we spell a header we write ourselves (parsed headers keep the peer's spelling).
_DISPLAY_NAMES: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    "identity-info": "Identity-Info",
}

# Headers whose comma-separated values are split into one entry each at parse time, so a proxy
# can pop the top Via or Route with one list operation. Not the authentication headers: their
# commas separate parameters of one value.
COMMA_SPLIT_HEADERS = frozenset(
    {"via", "contact", "route", "record-route", "path", "service-route"}
)

_name_cache: dict[str, str] = {}
_NAME_CACHE_MAX = 2048

# Typed-cache key of the top Via alone (see Message.top_via), kept apart from the list of
# every Via so that reading the top one never parses the others.
TOP_VIA = "via:top"

# Short texts that recur from message to message (hosts, users, header values such as Allow)
# are kept once and shared by every parsed message: a held call keeps several messages, and
# Python gives each parse its own copy of every substring. Bounded: when full the table
# starts afresh (the texts already shared stay valid), so values that never recur cannot
# grow it nor crowd out those that do.
_shared_texts: dict[str, str] = {}
_SHARED_TEXTS_MAX = 8192
_SHARED_TEXT_LENGTH = 128
# The tokens of nearly every Via and URI, shared outright.
_TOKENS: dict[str, str] = {
    token: token for token in ("SIP", "2.0", "UDP", "TCP", "TLS", "SCTP", "WS", "WSS", "sip",
                               "sips", "tel")
}


def _shared_text(text: str) -> str:
    shared = _shared_texts.get(text)
    if shared is not None:
        return shared
    if len(text) <= _SHARED_TEXT_LENGTH:
        if len(_shared_texts) >= _SHARED_TEXTS_MAX:
            _shared_texts.clear()
        _shared_texts[text] = text
    return text


def canonical_key(name: str) -> str:
    """Canonical lookup key of a header name: lower case, compact form expanded.

    ``"v"``, ``"Via"`` and ``"VIA "`` all give ``"via"``. Raises SipParseError when the name is
    not a token.
    """
    key = _name_cache.get(name)
    if key is not None:
        return key
    stripped = name.rstrip(_WS)
    if TOKEN_RE.fullmatch(stripped) is None:
        raise SipParseError(f"header name is not a token: {name[:60]!r}")
    lowered = stripped.lower()
    key = COMPACT_FORMS.get(lowered, lowered)
    if len(_name_cache) < _NAME_CACHE_MAX:
        _name_cache[name] = key
    return key


def display_name(key: str) -> str:
    """Conventional spelling of a canonical key: ``"call-id"`` -> ``"Call-ID"``."""
    spelled = _DISPLAY_NAMES.get(key)
    if spelled is None:
        spelled = "-".join(part[:1].upper() + part[1:] for part in key.split("-"))
    return spelled


# --- quoted strings, comma lists and parameters ---------------------------------------------

# quoted-string body written as an unrolled loop: one regex step per run of plain characters
# instead of one alternation per character (several times faster on long values).
_QUOTED_BODY = r'[^"\\]*+(?:\\[\x00-\x09\x0b\x0c\x0e-\x7f][^"\\]*+)*+'
_QUOTED_RE = re.compile(rf'"({_QUOTED_BODY})"')
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.S)


def unquote(text: str) -> str:
    """Remove the quotes and the quoted-pair escapes of a quoted-string (others pass through)."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        return _QUOTED_PAIR_RE.sub(r"\1", inner) if "\\" in inner else inner
    return text


_NEEDS_QUOTED_PAIR = re.compile(r'[\\"\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def quote(text: str) -> str:
    """Make a quoted-string: backslash, double quote and control characters become
    quoted-pairs; CR and LF cannot be represented at all and become spaces."""
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    if _NEEDS_QUOTED_PAIR.search(text):
        text = _NEEDS_QUOTED_PAIR.sub(lambda match: "\\" + match.group(0), text)
    return f'"{text}"'


def split_comma_list(value: str, header: str = "") -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and ``<...>``.

    Elements are stripped; an empty element (``a,,b``) or an unbalanced quote or bracket raises
    SipParseError naming ``header``.
    """
    if '"' not in value and "<" not in value:
        parts = value.split(",")
    else:
        parts = []
        start = 0
        index = 0
        length = len(value)
        while index < length:
            char = value[index]
            if char == '"':
                match = _QUOTED_RE.match(value, index)
                if match is None:
                    raise SipParseError("unbalanced quote", header=header or None)
                index = match.end()
                continue
            if char == "<":
                close = value.find(">", index)
                if close < 0:
                    raise SipParseError("unbalanced '<'", header=header or None)
                index = close + 1
                continue
            if char == ",":
                parts.append(value[start:index])
                start = index + 1
            index += 1
        parts.append(value[start:])
    stripped = [part.strip(_WS) for part in parts]
    if "" in stripped:
        raise SipParseError("empty element in comma-separated list", header=header or None)
    return stripped


# *( SEMI generic-param ), validated in one regex call; extraction by str.split when there is no
# quoted-string (the common case), else by findall with the same sub-pattern.
_PARAM_VALUE = rf"[{_TOKEN_CHARS}:\[\]]++"
_PARAMS_RE = re.compile(
    rf"(?:[ \t]*+;[ \t]*+[{_TOKEN_CHARS}]++(?:[ \t]*+=[ \t]*+(?:{_PARAM_VALUE}|\"{_QUOTED_BODY}\"))?+)*+"
    r"[ \t]*+"
)
_PARAM_ONE_RE = re.compile(
    rf"[ \t]*;[ \t]*([{_TOKEN_CHARS}]+)(?:[ \t]*=[ \t]*({_PARAM_VALUE}|\"{_QUOTED_BODY}\"))?"
)


def parse_params(text: str, header: str | None = None) -> dict[str, str | None]:
    """Parse ``*( SEMI generic-param )``; names lower-cased, quoted values kept with quotes."""
    if not text:
        return {}
    if _PARAMS_RE.fullmatch(text) is None:
        raise SipParseError(f"malformed parameters: {text[:80]!r}", header=header)
    params: dict[str, str | None] = {}
    if '"' not in text:
        for item in text.split(";")[1:]:
            name, sep, value = item.partition("=")
            params[name.strip(_WS).lower()] = value.strip(_WS) if sep else None
        return params
    for name, value in _PARAM_ONE_RE.findall(text):
        params[name.lower()] = value or None
    return params


def _split_plain_params(text: str) -> dict[str, str | None]:
    """Extract ``*( SEMI generic-param )`` already validated by a regex; quoted values allowed."""
    params: dict[str, str | None] = {}
    if '"' in text:
        for name, value in _PARAM_ONE_RE.findall(text):
            params[name.lower()] = value or None
        return params
    if " " in text or "\t" in text:
        for item in text.split(";")[1:]:
            name, sep, value = item.partition("=")
            params[name.strip(_WS).lower()] = value.strip(_WS) if sep else None
        return params
    for item in text[1:].split(";"):  # the usual compact ";a=b;c": no stripping needed
        name, sep, value = item.partition("=")
        params[name.lower()] = value if sep else None
    return params


def _find_param(text: str, marker: str) -> str | None:
    """Value of the parameter ``marker`` (";name=", lower case) in validated parameter text, or
    None when the quick way cannot tell (absent, other spelling, white space or quotes around):
    the caller then builds the dict. The last occurrence wins, as in the dict."""
    start = text.rfind(marker)
    if start < 0 or " " in text or "\t" in text or '"' in text:
        return None
    start += len(marker)
    end = text.find(";", start)
    return text[start:] if end < 0 else text[start:end]


def format_params(params: Mapping[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# --- the header container -------------------------------------------------------------------


class Headers:
    """Ordered header fields of one message.

    Each entry keeps the canonical key, the name as written, the unfolded value and, for an
    entry never modified since parsing and not spelled ``name: value``, its raw line(s) so it
    is re-serialized byte-exact.
    Lookups take any spelling (``"v"``, ``"VIA"``, ``"Via"``). Comma lists of Via, Contact,
    Route, Record-Route, Path and Service-Route are one entry per value.

    Typed values parsed from the entries are cached here; a mutation drops those of the
    header it changed.
    """

    __slots__ = ("_entries", "_typed")

    def __init__(self, items: Iterable[tuple[str, str]] | None = None) -> None:
        # (key, name as written, value, raw line or None)
        self._entries: list[tuple[str, str, str, str | None]] = []
        self._typed: dict[str, Any] = {}
        if items is not None:
            for name, value in items:
                self.add(name, value)

    @classmethod
    def _from_entries(cls, entries: list[tuple[str, str, str, str | None]]) -> Headers:
        headers = cls.__new__(cls)
        headers._entries = entries
        headers._typed = {}
        return headers

    # -- reading ------------------------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first header of that name, or ``default``."""
        key = canonical_key(name)
        for entry in self._entries:
            if entry[0] == key:
                return entry[2]
        return default

    def get_all(self, name: str) -> list[str]:
        """Values of every header of that name, top first."""
        key = canonical_key(name)
        return [entry[2] for entry in self._entries if entry[0] == key]

    def values(self, name: str) -> list[str]:
        """Every comma-separated element of every header of that name (for token lists like
        Require, Supported, Allow, Accept)."""
        out: list[str] = []
        for value in self.get_all(name):
            if value.strip(_WS):
                out.extend(split_comma_list(value, canonical_key(name)))
        return out

    def count(self, name: str) -> int:
        key = canonical_key(name)
        return sum(1 for entry in self._entries if entry[0] == key)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_key(name)
        return any(entry[0] == key for entry in self._entries)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(name as written, value) pairs in order."""
        for entry in self._entries:
            yield entry[1], entry[2]

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """Canonical keys in order (duplicates kept)."""
        return [entry[0] for entry in self._entries]

    def copy(self) -> Headers:
        return Headers._from_entries(list(self._entries))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(e[0], e[2]) for e in self._entries] == [(e[0], e[2]) for e in other._entries]

    def __repr__(self) -> str:
        return f"Headers({[(e[1], e[2]) for e in self._entries]!r})"

    # -- mutation (proxies) -------------------------------------------------------------------
    @staticmethod
    def _entry(name: str, value: object) -> tuple[str, str, str, None]:
        key = canonical_key(name)
        text = str(value)
        if "\r" in text or "\n" in text:
            raise ValueError(f"header value contains CR or LF: {text[:60]!r}")
        return key, name.strip(_WS), text, None

    def add(self, name: str, value: object) -> None:
        """Append a header at the bottom. ``value`` may be a str or a typed value."""
        entry = self._entry(name, value)
        self._entries.append(entry)
        self._forget(entry[0])

    def insert(self, name: str, value: object) -> None:
        """Insert a header above the topmost header of that name (or at the very top): how a
        Via or Record-Route is pushed."""
        entry = self._entry(name, value)
        key = entry[0]
        position = 0
        for index, existing in enumerate(self._entries):
            if existing[0] == key:
                position = index
                break
        self._entries.insert(position, entry)
        self._forget(key)

    def remove(self, name: str) -> int:
        """Remove every header of that name; returns how many were removed."""
        key = canonical_key(name)
        before = len(self._entries)
        self._entries = [entry for entry in self._entries if entry[0] != key]
        self._forget(key)
        return before - len(self._entries)

    def remove_first(self, name: str) -> str | None:
        """Remove the topmost header of that name (the top Via, the top Route) and return its
        value, or None when there is none."""
        key = canonical_key(name)
        for index, entry in enumerate(self._entries):
            if entry[0] == key:
                del self._entries[index]
                self._forget(key)
                return entry[2]
        return None

    def replace(self, name: str, value: object) -> None:
        """Replace every header of that name by one, at the position of the first (or append)."""
        entry = self._entry(name, value)
        key = entry[0]
        new_entries: list[tuple[str, str, str, str | None]] = []
        placed = False
        for existing in self._entries:
            if existing[0] == key:
                if not placed:
                    new_entries.append(entry)
                    placed = True
            else:
                new_entries.append(existing)
        if not placed:
            new_entries.append(entry)
        self._entries = new_entries
        self._forget(key)

    def set_first(self, name: str, value: object) -> None:
        """Replace only the topmost header of that name in place (append when absent): e.g.
        write back the top Via after adding ``received``/``rport``."""
        entry = self._entry(name, value)
        for index, existing in enumerate(self._entries):
            if existing[0] == entry[0]:
                self._entries[index] = entry
                self._forget(entry[0])
                return
        self._entries.append(entry)
        self._forget(entry[0])

    def _forget(self, key: str) -> None:
        """Drop the typed values of one header after it changed; the others stay valid (each
        typed value is parsed from its own header's entries only)."""
        typed = self._typed
        if typed:
            typed.pop(key, None)
            if key == "via":
                typed.pop(TOP_VIA, None)

    # -- serialization ------------------------------------------------------------------------
    def lines(self) -> list[str]:
        """Header lines without CRLF (raw text for untouched parsed entries)."""
        return [
            entry[3] if entry[3] is not None else f"{entry[1]}: {entry[2]}"
            for entry in self._entries
        ]


# --- Via ------------------------------------------------------------------------------------
# via-parm      =  sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol =  protocol-name SLASH protocol-version SLASH transport
# sent-by       =  host [ COLON port ]
# via-params    =  via-ttl / via-maddr / via-received / via-branch / via-extension
# via-ttl       =  "ttl" EQUAL ttl            (ttl = 1*3DIGIT ; 0 to 255)
# via-maddr     =  "maddr" EQUAL host
# via-received  =  "received" EQUAL (IPv4address / IPv6address)
# via-branch    =  "branch" EQUAL token
# response-port =  "rport" [EQUAL 1*DIGIT]    (RFC 3581)
_VIA_HEAD = (
    rf"[ \t]*+([{_TOKEN_CHARS}]++)[ \t]*+/[ \t]*+([{_TOKEN_CHARS}]++)[ \t]*+/[ \t]*+"
    rf"([{_TOKEN_CHARS}]++)[ \t]++(\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9][A-Za-z0-9_.\-]*+)"
    r"(?:[ \t]*+:[ \t]*+([0-9]{1,5}))?+"
)
_VIA_RE = re.compile(_VIA_HEAD)
# The whole via-parm when no parameter value is quoted: one regex call validates everything.
_VIA_PLAIN_RE = re.compile(
    _VIA_HEAD
    + rf"((?:[ \t]*+;[ \t]*+[{_TOKEN_CHARS}]++(?:[ \t]*+=[ \t]*+{_PARAM_VALUE})?+)*+)[ \t]*+"
)
_IPV4_RE = re.compile(
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}"
)
_IPV6_ADDR_RE = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,7}(?::[0-9.]+)?")
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9][A-Za-z0-9_.\-]*+")
_DIGITS_RE = re.compile(r"[0-9]+")

MAGIC_COOKIE = "z9hG4bK"


class Via:
    """One via-parm: ``SIP/2.0/UDP host:port;branch=...;received=...;rport``.

    ``params`` keeps every parameter in order (names lower-cased; ``None`` for a valueless one
    such as a bare ``rport``). The properties read the well-known ones. A parsed Via builds
    ``params`` on first use, and only then checks what received, rport, ttl and maddr hold
    (SipParseError naming "via" if they are wrong); the via-parm grammar is checked at once.
    """

    __slots__ = ("transport", "host", "port", "protocol", "version", "_params", "_param_text")

    transport: str
    host: str
    port: int | None
    protocol: str
    version: str
    _params: dict[str, str | None] | None
    _param_text: str | None

    def __init__(
        self,
        transport: str = "UDP",
        host: str = "",
        port: int | None = None,
        params: Mapping[str, str | None] | None = None,
        protocol: str = "SIP",
        version: str = "2.0",
    ) -> None:
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self._params = {k.lower(): v for k, v in params.items()} if params else {}
        self._param_text = None
        self.protocol = protocol
        self.version = version

    @property
    def params(self) -> dict[str, str | None]:
        params = self._params
        if params is None:
            params = _split_plain_params(self._param_text or "")
            _check_via_params(params)
            self._params = params
        return params

    @params.setter
    def params(self, value: Mapping[str, str | None]) -> None:
        self._params = {k.lower(): v for k, v in value.items()}

    @classmethod
    def parse(cls, text: str) -> Via:
        via = cls.__new__(cls)
        match = _VIA_PLAIN_RE.fullmatch(text)
        if match is not None:
            protocol, version, transport, host, port, param_text = match.groups()
            if param_text:
                via._params = None
                via._param_text = param_text
            else:
                via._params = {}
                via._param_text = None
        else:
            match = _VIA_RE.match(text)
            if match is None:
                raise SipParseError(f"malformed Via: {text[:80]!r}", header="via")
            protocol, version, transport, host, port = match.groups()
            params = parse_params(text[match.end() :], "via")
            _check_via_params(params)
            via._params = params
            via._param_text = None
        via.protocol = _TOKENS.get(protocol) or protocol
        via.version = _TOKENS.get(version) or version
        via.transport = _TOKENS.get(transport) or transport.upper()
        via.host = _shared_texts.get(host) or _shared_text(host)
        if port is None:
            via.port = None
        else:
            port_number = int(port)
            if port_number > 65535:
                raise SipParseError("Via port out of range", header="via")
            via.port = port_number
        return via

    @staticmethod
    def validate(text: str) -> None:
        """Raise SipParseError unless ``text`` is a valid via-parm (cheaper than parse)."""
        match = _VIA_PLAIN_RE.fullmatch(text)
        if match is None:
            Via.parse(text)  # quoted parameter values or an error: take the full path
            return
        # Only the grammar of a via-parm with generic parameters; what received, rport, ttl and
        # maddr must hold in particular is checked when msg.vias parses them.
        if match.group(5) is not None and int(match.group(5)) > 65535:
            raise SipParseError("Via port out of range", header="via")

    @property
    def branch(self) -> str | None:
        # Transactions read the branch of every message: take it straight from the compact
        # parameter text when possible instead of building the whole dict.
        if self._params is None:
            value = _find_param(self._param_text or "", ";branch=")
            if value is not None:
                return value
        return self.params.get("branch")

    @property
    def is_rfc3261_branch(self) -> bool:
        """The branch carries the RFC 3261 magic cookie and something after it (RFC 4475 3.2
        badbranch has the cookie alone)."""
        branch = self.params.get("branch")
        return branch is not None and branch.startswith(MAGIC_COOKIE) and len(branch) > 7

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        """An ``rport`` parameter is present (with or without a value)."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value else None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return int(value) if value is not None else None

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        head = f"{self.protocol}/{self.version}/{self.transport} {self.sent_by}"
        return head + format_params(self.params) if self.params else head

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return (
            self.protocol.upper() == other.protocol.upper()
            and self.version == other.version
            and self.transport == other.transport
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and self.params == other.params
        )

    __hash__ = None  # type: ignore[assignment]


def _check_via_params(params: dict[str, str | None]) -> None:
    if "branch" in params:
        branch = params["branch"]
        if branch is None or branch[0] == '"':
            raise SipParseError("Via branch must be a token", header="via")
    if "received" in params:
        received = params["received"]
        if received is None or (
            _IPV4_RE.fullmatch(received) is None and _IPV6_ADDR_RE.fullmatch(received) is None
        ):
            raise SipParseError("Via received is not an IP address", header="via")
    if "rport" in params:
        rport = params["rport"]
        if rport is not None and (_DIGITS_RE.fullmatch(rport) is None or int(rport) > 65535):
            raise SipParseError("Via rport is not a port", header="via")
    if "ttl" in params:
        ttl = params["ttl"]
        if ttl is None or _DIGITS_RE.fullmatch(ttl) is None or len(ttl) > 3 or int(ttl) > 255:
            raise SipParseError("Via ttl is not 0-255", header="via")
    if "maddr" in params:
        maddr = params["maddr"]
        if maddr is None or _HOST_RE.fullmatch(maddr) is None:
            raise SipParseError("Via maddr is not a host", header="via")


# --- name-addr / addr-spec (From, To, Contact, Route, Record-Route, ...) --------------------
# name-addr      =  [ display-name ] LAQUOT addr-spec RAQUOT
# addr-spec      =  SIP-URI / SIPS-URI / absoluteURI
# display-name   =  *(token LWS)/ quoted-string
# from-spec      =  ( name-addr / addr-spec ) *( SEMI from-param )
# contact-param  =  (name-addr / addr-spec) *(SEMI contact-params)
# RFC 3261 20: in the addr-spec form the URI may not contain ',' ';' or '?', so everything from the
# first ';' on is header parameters and a '?' is an error (RFC 4475 regbadct).
_TOKEN_DISPLAY_RE = re.compile(rf"[ \t]*+((?:[{_TOKEN_CHARS}]++[ \t]*+)*+)<")


# The common shapes in one regex call: ["display" or tokens] <sip(s) URI without escapes,
# headers or IPv6> *(SEMI generic-param). Anything else takes the general path below.
_NAME_ADDR_FAST_RE = re.compile(
    rf'[ \t]*+(?:"(?P<qdisplay>[^"\\]*+)"[ \t]*+|(?P<tdisplay>(?:[{_TOKEN_CHARS}]++[ \t]*+)*+))'
    rf"<{FAST_URI_PATTERN}>"
    rf"(?P<params>(?:[ \t]*+;[ \t]*+[{_TOKEN_CHARS}]++"
    rf'(?:[ \t]*+=[ \t]*+(?:{_PARAM_VALUE}|"{_QUOTED_BODY}"))?+)*+)[ \t]*+'
)


class NameAddr:
    """``"Display" <uri>;params`` as used by From, To, Contact, Route and Record-Route.

    ``display`` is unquoted and unescaped (None when absent); ``params`` are the header
    parameters (tag, expires, q, lr is a URI param ...), names lower-cased, quoted values kept
    with their quotes.
    """

    __slots__ = ("display", "_uri", "_uri_parts", "_params", "_param_text")

    is_star = False

    display: str | None
    _uri: URI | None
    _uri_parts: tuple[str, str | None, str | None, str, str | None, str] | None
    _params: dict[str, str | None] | None
    _param_text: str | None

    def __init__(
        self,
        uri: URI | str,
        display: str | None = None,
        params: Mapping[str, str | None] | None = None,
    ) -> None:
        self._uri = uri if isinstance(uri, URI) else URI.parse(uri)
        self._uri_parts = None
        self.display = display
        self._params = {k.lower(): v for k, v in params.items()} if params else {}
        self._param_text = None

    # A parsed name-addr is validated whole at once but builds its URI and parameter dict on
    # first use: a proxy reading only the From tag never pays for the From URI.
    @property
    def uri(self) -> URI:
        uri = self._uri
        if uri is None:
            uri = self._uri = URI._from_fast_match(*self._uri_parts)  # type: ignore[misc]
        return uri

    @uri.setter
    def uri(self, value: URI | str) -> None:
        self._uri = value if isinstance(value, URI) else URI.parse(value)

    @property
    def params(self) -> dict[str, str | None]:
        params = self._params
        if params is None:
            params = self._params = _split_plain_params(self._param_text or "")
        return params

    @params.setter
    def params(self, value: Mapping[str, str | None]) -> None:
        self._params = {k.lower(): v for k, v in value.items()}

    @classmethod
    def parse(cls, text: str, header: str | None = None) -> NameAddr:
        match = _NAME_ADDR_FAST_RE.fullmatch(text)
        if match is not None:
            qdisplay, tdisplay, scheme, user, password, host, port, uparams, params = match.groups()
            if port is None or int(port) <= 65535:
                na = cls.__new__(cls)
                na._uri = None
                shared = _shared_texts
                na._uri_parts = (
                    _TOKENS.get(scheme) or scheme,
                    None if user is None else shared.get(user) or _shared_text(user),
                    password,
                    shared.get(host) or _shared_text(host),
                    port,
                    uparams,
                )
                na.display = qdisplay if qdisplay is not None else (tdisplay.rstrip(_WS) or None)
                if params:
                    na._params = None
                    na._param_text = params
                else:
                    na._params = {}
                    na._param_text = None
                return na
        return cls._parse_general(text, header)

    @classmethod
    def _parse_general(cls, text: str, header: str | None) -> NameAddr:
        if text == "*" and header == "contact":
            return StarContact()  # type: ignore[return-value]
        display: str | None = None
        first = text[:1]
        if first == "<":  # the common "<uri>;params": no display name to look at
            lt = 0
        elif first == '"':
            match = _QUOTED_RE.match(text)
            if match is None:
                raise SipParseError("unbalanced quote in display name", header=header)
            inner = match.group(1)
            display = _QUOTED_PAIR_RE.sub(r"\1", inner) if "\\" in inner else inner
            lt = text.find("<", match.end())
            if lt < 0 or text[match.end() : lt].strip(_WS):
                raise SipParseError("quoted display name not followed by <uri>", header=header)
        else:
            lt = text.find("<")
            if lt > 0:
                match = _TOKEN_DISPLAY_RE.match(text)
                if match is not None:
                    display = match.group(1).rstrip(_WS) or None
                elif ";" in text[:lt] and ":" in text[:lt]:
                    # addr-spec whose parameters hold a '<' (a quoted +sip.instance value)
                    lt = -1
                else:
                    raise SipParseError("display name must be tokens or quoted", header=header)
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError("'<' without '>'", header=header)
            uri_text = text[lt + 1 : gt]
            rest = text[gt + 1 :]
            if " " in uri_text or "\t" in uri_text:
                raise SipParseError("white space inside <>", header=header)
        else:
            semi = text.find(";")
            if semi < 0:
                uri_text = text.rstrip(_WS)
                rest = ""
            else:
                uri_text = text[:semi].rstrip(_WS)
                rest = text[semi:]
            if "?" in uri_text or "," in uri_text or " " in uri_text or "\t" in uri_text:
                raise SipParseError(
                    "URI with headers, ',' or spaces must be enclosed in <>", header=header
                )
        na = cls.__new__(cls)
        try:
            na._uri = URI.parse(uri_text)
        except SipParseError as exc:
            raise SipParseError(exc.reason, header=header) from None
        na._uri_parts = None
        na.display = display
        na._params = parse_params(rest, header) if rest else {}
        na._param_text = None
        return na

    @property
    def tag(self) -> str | None:
        # Dialog matching reads From/To tags of every message: see Via.branch.
        if self._params is None:
            value = _find_param(self._param_text or "", ";tag=")
            if value is not None:
                return value
        return self.params.get("tag")

    @tag.setter
    def tag(self, value: str | None) -> None:
        if value is None:
            self.params.pop("tag", None)
        else:
            self.params["tag"] = value

    @property
    def expires(self) -> int | None:
        """Contact ``expires`` parameter, clamped to 2**32-1; None when absent or malformed."""
        value = self.params.get("expires")
        if value is None or _DIGITS_RE.fullmatch(value) is None:
            return None
        return min(int(value), 0xFFFFFFFF) if len(value) < 12 else 0xFFFFFFFF

    @property
    def q(self) -> float | None:
        """Contact ``q`` parameter (0 to 1), None when absent or malformed."""
        value = self.params.get("q")
        if value is None or re.fullmatch(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?", value) is None:
            return None
        return float(value)

    def copy(self) -> NameAddr:
        return NameAddr(self.uri.copy(), self.display, self.params)

    def __str__(self) -> str:
        uri = str(self.uri)
        if self.display is not None:
            head = f"{quote(self.display)} <{uri}>"
        else:
            head = f"<{uri}>"
        return head + format_params(self.params) if self.params else head

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (
            self.uri == other.uri and self.display == other.display and self.params == other.params
        )

    __hash__ = None  # type: ignore[assignment]


class StarContact:
    """The ``Contact: *`` of a REGISTER that removes every binding (RFC 3261 10.2.2)."""

    __slots__ = ()
    is_star = True
    params: dict[str, str | None] = {}

    def __str__(self) -> str:
        return "*"

    def __repr__(self) -> str:
        return "StarContact()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StarContact)

    def __hash__(self) -> int:
        return hash("*")


def parse_contact(text: str) -> NameAddr | StarContact:
    """A Contact value: ``*`` or a name-addr/addr-spec with contact parameters."""
    return NameAddr.parse(text, "contact")


# --- CSeq -----------------------------------------------------------------------------------
# CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method    (RFC 3261 8.1.1.5: less than 2**31)
_CSEQ_RE = re.compile(rf"([0-9]{{1,10}})[ \t]++([{_TOKEN_CHARS}]++)")


class CSeq(NamedTuple):
    num: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        match = _CSEQ_RE.fullmatch(text)
        if match is None:
            raise SipParseError(f"malformed CSeq: {text[:60]!r}", header="cseq")
        number = int(match.group(1))
        if number >= 0x80000000:
            raise SipParseError("CSeq number not below 2**31", header="cseq")
        # tuple.__new__ skips the generated NamedTuple __new__ (a Python-level call)
        return tuple.__new__(cls, (number, match.group(2)))

    def __str__(self) -> str:
        return f"{self.num} {self.method}"
