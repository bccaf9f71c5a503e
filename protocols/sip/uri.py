"""SIP, SIPS and tel URIs (RFC 3261 19.1 and 25.1, RFC 3966), and any other absolute URI.

Components are stored as written (still %-escaped) so that ``str(uri)`` gives back the text a peer
sent for the usual forms; comparison (``==``) follows RFC 3261 19.1.4 and unescapes first.
Parameter names are case-insensitive and stored lower-cased.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .errors import SipParseError

__all__ = ["URI", "unescape", "escape_user"]

# --- RFC 3261 25.1 ---------------------------------------------------------------------------
# SIP-URI          =  "sip:" [ userinfo ] hostport uri-parameters [ headers ]
# SIPS-URI         =  "sips:" [ userinfo ] hostport uri-parameters [ headers ]
# userinfo         =  ( user / telephone-subscriber ) [ ":" password ] "@"
# user             =  1*( unreserved / escaped / user-unreserved )
# user-unreserved  =  "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
# password         =  *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
# unreserved       =  alphanum / mark
# mark             =  "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
# escaped          =  "%" HEXDIG HEXDIG
# hostport         =  host [ ":" port ]
# host             =  hostname / IPv4address / IPv6reference
# hostname         =  *( domainlabel "." ) toplabel [ "." ]
# uri-parameters   =  *( ";" uri-parameter)
# other-param      =  pname [ "=" pvalue ]
# pname / pvalue   =  1*paramchar
# paramchar        =  param-unreserved / unreserved / escaped
# param-unreserved =  "[" / "]" / "/" / ":" / "&" / "+" / "$"
# headers          =  "?" header *( "&" header )
# header           =  hname "=" hvalue
# hname            =  1*( hnv-unreserved / unreserved / escaped )
# hvalue           =  *( hnv-unreserved / unreserved / escaped )
# hnv-unreserved   =  "[" / "]" / "/" / "?" / ":" / "+" / "$"
#
# '@' can only appear once, ending the userinfo, so "user;par=u%40x@host" (semiuri) and a user
# holding ';', '?' and ',' (intmeth) split correctly on the first '@'. '%' is allowed in the
# character classes and the escapes are checked once afterwards (_BAD_ESCAPE), which is cheaper
# than an alternation per character.
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER_CHARS = _UNRESERVED + r"&=+$,;?/%"
_PASSWORD_CHARS = _UNRESERVED + r"&=+$,%"
_PARAM_CHARS = _UNRESERVED + r"\[\]/:&+$%"
_HEADER_CHARS = _UNRESERVED + r"\[\]/?:+$%"
# Hostnames are matched loosely (a letter or digit, then letters, digits, '-', '.', '_'; IPv4
# falls under it); IPv6 references are checked by _IPV6_RE. Possessive quantifiers (*+ ++ ?+,
# Python 3.11) everywhere the grammar never needs to give characters back: sre then keeps no
# backtracking state, which makes these matches about 40% cheaper.
_HOSTNAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]*+"
_HOST = rf"\[[0-9A-Fa-f:.]++\]|{_HOSTNAME}"

_SIP_REST_RE = re.compile(
    rf"(?:(?P<user>[{_USER_CHARS}]++)(?::(?P<password>[{_PASSWORD_CHARS}]*+))?+@)?"
    rf"(?P<host>{_HOST})"
    r"(?::(?P<port>[0-9]{1,5}))?+"
    rf"(?P<params>(?:;[{_PARAM_CHARS}]++(?:=[{_PARAM_CHARS}]*+)?+)*+)"
    rf"(?:\?(?P<headers>[{_HEADER_CHARS}=&]*+))?+"
)

# RFC 3966: telephone-subscriber = global-number / local-number; visual separators "-.()";
# parameters ";" pname ["=" pvalue] with pname = 1*( alphanum / "-" ).
_TEL_RE = re.compile(
    r"(?P<number>\+?[0-9A-Fa-f*#().\-]+)"
    rf"(?P<params>(?:;[A-Za-z0-9\-]+(?:=[{_PARAM_CHARS}]+)?)*)"
)

# RFC 3261: absoluteURI = scheme ":" ( hier-part / opaque-part ); scheme = ALPHA *( ALPHA / DIGIT
# / "+" / "-" / "." ); uric = reserved / unreserved / escaped.
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_OPAQUE_RE = re.compile(rf"[{_UNRESERVED};/?:@&=+$,%\[\]]+")

# Building blocks for the one-regex fast paths of headers.py: no '%' (escapes take the checked
# path) and no IPv6 reference.
FAST_URI_PATTERN = (
    r"(?P<scheme>[Ss][Ii][Pp][Ss]?):"
    rf"(?:(?P<user>[{_UNRESERVED}&=+$,;?/]++)(?::(?P<password>[{_UNRESERVED}&=+$,]*+))?+@)?"
    rf"(?P<host>{_HOSTNAME})(?::(?P<port>[0-9]{{1,5}}))?+"
    rf"(?P<uparams>(?:;[{_UNRESERVED}\[\]/:&+$]++(?:=[{_UNRESERVED}\[\]/:&+$]*+)?+)*+)"
)

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_IPV6_RE = re.compile(
    r"\[[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,7}(?::\d{1,3}(?:\.\d{1,3}){3})?\]"
)
_ESCAPE_SEQ = re.compile(r"%([0-9A-Fa-f]{2})")

# RFC 3261 19.1.4: these parameters must match when present in either URI.
_MUST_MATCH_PARAMS = ("user", "ttl", "method", "maddr", "transport")
# RFC 2396 reserved characters keep their escaping significance in comparisons.
_RESERVED = frozenset(";/?:@&=+$,")


def unescape(text: str) -> str:
    """Decode %XX escapes (as UTF-8, invalid bytes kept via surrogateescape)."""
    if "%" not in text:
        return text
    raw = _ESCAPE_SEQ.sub(lambda m: chr(int(m.group(1), 16)), text)
    try:
        return raw.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return raw


def _normalize_escapes(text: str) -> str:
    """Decode escapes of unreserved characters and upper-case the rest, for comparisons."""
    if "%" not in text:
        return text

    def _one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        if char in _RESERVED or not char.isprintable() or char == "%":
            return "%" + match.group(1).upper()
        return char

    return _ESCAPE_SEQ.sub(_one, text)


_USER_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/"
)


def escape_user(text: str) -> str:
    """%-escape a string for use as the user part of a SIP URI."""
    if all(char in _USER_SAFE for char in text):
        return text
    out: list[str] = []
    for char in text:
        if char in _USER_SAFE:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogateescape"))
    return "".join(out)


def _parse_params(text: str) -> dict[str, str | None]:
    # text is ";name=value;flag..." already validated by the URI regex.
    params: dict[str, str | None] = {}
    for item in text[1:].split(";"):
        name, sep, value = item.partition("=")
        # Names compare case-insensitively and escaped unreserved characters equal themselves
        # (19.1.4), so ";%6C%72" is the lr parameter.
        if "%" in name:
            name = _normalize_escapes(name)
        params[name.lower()] = value if sep else None
    return params


class URI:
    """A URI: ``sip``/``sips`` (user, password, host, port, params, headers), ``tel`` (number in
    ``user``, params) or any other scheme (kept whole in ``opaque``).

    All components are as written, %-escapes included; see :func:`unescape`.
    """

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers", "opaque")

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: dict[str, str | None]
    headers: list[tuple[str, str]]
    opaque: str | None

    def __init__(
        self,
        scheme: str = "sip",
        user: str | None = None,
        host: str = "",
        port: int | None = None,
        params: Mapping[str, str | None] | None = None,
        headers: Iterable[tuple[str, str]] | None = None,
        password: str | None = None,
        opaque: str | None = None,
    ) -> None:
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = {k.lower(): v for k, v in params.items()} if params else {}
        self.headers = list(headers) if headers else []
        self.opaque = opaque

    # -- parsing ------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> URI:
        """Parse a URI; raise :class:`SipParseError` (400) when it is malformed."""
        colon = text.find(":")
        if colon <= 0:
            raise SipParseError(f"URI without scheme: {text[:80]!r}")
        scheme = text[:colon].lower()
        rest = text[colon + 1 :]
        uri = cls.__new__(cls)
        uri.scheme = scheme
        uri.user = None
        uri.password = None
        uri.host = ""
        uri.port = None
        uri.params = {}
        uri.headers = []
        uri.opaque = None
        if scheme == "sip" or scheme == "sips":
            match = _SIP_REST_RE.fullmatch(rest)
            if match is None:
                raise SipParseError(f"malformed {scheme} URI: {text[:80]!r}")
            if "%" in rest and _BAD_ESCAPE.search(rest):
                raise SipParseError(f"bad %-escape in URI: {text[:80]!r}")
            user, password, host, port, params, headers = match.groups()
            if host[0] == "[" and _IPV6_RE.fullmatch(host) is None:
                raise SipParseError(f"malformed IPv6 reference in URI: {text[:80]!r}")
            uri.user = user
            uri.password = password
            uri.host = host
            if port is not None:
                port_number = int(port)
                if port_number > 65535:
                    raise SipParseError(f"port out of range in URI: {text[:80]!r}")
                uri.port = port_number
            if params:
                uri.params = _parse_params(params)
            if headers is not None:
                uri.headers = _parse_uri_headers(headers, text)
            return uri
        if scheme == "tel":
            match = _TEL_RE.fullmatch(rest)
            if match is None:
                raise SipParseError(f"malformed tel URI: {text[:80]!r}")
            uri.user = match.group("number")
            if match.group("params"):
                uri.params = _parse_params(match.group("params"))
            return uri
        if _SCHEME_RE.fullmatch(text[:colon]) is None or _OPAQUE_RE.fullmatch(rest) is None:
            raise SipParseError(f"malformed URI: {text[:80]!r}")
        if "%" in rest and _BAD_ESCAPE.search(rest):
            raise SipParseError(f"bad %-escape in URI: {text[:80]!r}")
        uri.opaque = rest
        return uri

    @classmethod
    def _from_fast_match(
        cls,
        scheme: str,
        user: str | None,
        password: str | None,
        host: str,
        port: str | None,
        params: str,
    ) -> URI:
        # Components straight from FAST_URI_PATTERN groups; the caller checked port <= 65535.
        uri = cls.__new__(cls)
        uri.scheme = "sip" if scheme == "sip" else scheme.lower()
        uri.user = user
        uri.password = password
        uri.host = host
        uri.port = None if port is None else int(port)
        uri.params = _parse_params(params) if params else {}
        uri.headers = []
        uri.opaque = None
        return uri

    @staticmethod
    def validate(text: str) -> bool:
        """Check ``text`` as :meth:`parse` would, without building the object; return whether
        a sip/sips URI carries a headers part (``?...``)."""
        colon = text.find(":")
        if colon <= 0:
            raise SipParseError(f"URI without scheme: {text[:80]!r}")
        scheme = text[:colon].lower()
        if scheme != "sip" and scheme != "sips":
            URI.parse(text)
            return False
        rest = text[colon + 1 :]
        match = _SIP_REST_RE.fullmatch(rest)
        if match is None:
            raise SipParseError(f"malformed {scheme} URI: {text[:80]!r}")
        if "%" in rest and _BAD_ESCAPE.search(rest):
            raise SipParseError(f"bad %-escape in URI: {text[:80]!r}")
        host = match.group("host")
        if host[0] == "[" and _IPV6_RE.fullmatch(host) is None:
            raise SipParseError(f"malformed IPv6 reference in URI: {text[:80]!r}")
        port = match.group("port")
        if port is not None and int(port) > 65535:
            raise SipParseError(f"port out of range in URI: {text[:80]!r}")
        headers = match.group("headers")
        if headers:
            _parse_uri_headers(headers, text)
        return headers is not None

    # -- convenience --------------------------------------------------------------------------
    @property
    def is_sip(self) -> bool:
        """True for sip: and sips: URIs."""
        return self.scheme == "sip" or self.scheme == "sips"

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def lr(self) -> bool:
        """Loose-routing flag (RFC 3261 19.1.1)."""
        return "lr" in self.params

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unescape(self.user)

    @property
    def host_port(self) -> str:
        """``host`` or ``host:port`` as written in the URI."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def copy(self) -> URI:
        clone = URI.__new__(URI)
        clone.scheme = self.scheme
        clone.user = self.user
        clone.password = self.password
        clone.host = self.host
        clone.port = self.port
        clone.params = dict(self.params)
        clone.headers = list(self.headers)
        clone.opaque = self.opaque
        return clone

    # -- serialization ------------------------------------------------------------------------
    def __str__(self) -> str:
        scheme = self.scheme
        if self.opaque is not None:
            return f"{scheme}:{self.opaque}"
        parts = [scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if scheme == "tel":
                parts.extend(_format_params(self.params))
                return "".join(parts)
            if self.password is not None:
                parts.append(":")
                parts.append(self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        if self.params:
            parts.extend(_format_params(self.params))
        if self.headers:
            parts.append("?")
            parts.append("&".join(f"{name}={value}" for name, value in self.headers))
        return "".join(parts)

    def __repr__(self) -> str:
        return f"URI({str(self)!r})"

    # -- RFC 3261 19.1.4 comparison -----------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, URI):
            return NotImplemented
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return (
                self.opaque is not None
                and other.opaque is not None
                and _normalize_escapes(self.opaque) == _normalize_escapes(other.opaque)
            )
        if self.scheme == "tel":
            return _tel_number(self.user) == _tel_number(other.user) and _params_equal_all(
                self.params, other.params
            )
        # userinfo is case-sensitive, the rest case-insensitive; escapes of unreserved chars
        # are equivalent to the characters.
        if _opt_normalize(self.user) != _opt_normalize(other.user):
            return False
        if _opt_normalize(self.password) != _opt_normalize(other.password):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        for name in _MUST_MATCH_PARAMS:
            mine = name in self.params
            theirs = name in other.params
            if mine != theirs:
                return False
            if mine and _param_norm(self.params[name]) != _param_norm(other.params[name]):
                return False
        for name, value in self.params.items():
            if name in other.params and _param_norm(value) != _param_norm(other.params[name]):
                return False
        return _headers_norm(self.headers) == _headers_norm(other.headers)

    def __hash__(self) -> int:
        # Only what must be equal for == to hold: equality ignores lone parameters.
        if self.opaque is not None:
            return hash((self.scheme, _normalize_escapes(self.opaque)))
        if self.scheme == "tel":
            return hash((self.scheme, _tel_number(self.user)))
        return hash((self.scheme, _opt_normalize(self.user), self.host.lower(), self.port))


def _format_params(params: Mapping[str, str | None]) -> list[str]:
    return [f";{name}" if value is None else f";{name}={value}" for name, value in params.items()]


def _parse_uri_headers(text: str, uri_text: str) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    if not text:
        return headers
    for item in text.split("&"):
        name, sep, value = item.partition("=")
        if not sep or not name or "=" in value:
            raise SipParseError(f"malformed header in URI: {uri_text[:80]!r}")
        headers.append((name, value))
    return headers


def _opt_normalize(text: str | None) -> str | None:
    return None if text is None else _normalize_escapes(text)


def _param_norm(value: str | None) -> str | None:
    return None if value is None else _normalize_escapes(value).lower()


def _headers_norm(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((_normalize_escapes(n).lower(), _normalize_escapes(v)) for n, v in headers)


def _params_equal_all(left: Mapping[str, str | None], right: Mapping[str, str | None]) -> bool:
    return {k: _param_norm(v) for k, v in left.items()} == {
        k: _param_norm(v) for k, v in right.items()
    }


def _tel_number(number: str | None) -> str:
    # RFC 3966 5: visual separators are ignored in comparisons.
    if number is None:
        return ""
    return number.translate(str.maketrans("", "", "-.()")).lower()
