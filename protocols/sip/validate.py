"""Application-layer checks of well-formed messages (RFC 3261 8.2 and 16.3, RFC 4475 3.3).

``validate_request(msg, ...)`` returns None when the request may be processed, or a
:class:`Rejection` naming the response to send. Checks run in this order and the first failure
wins:

====  ==========================================================================================
code  when
====  ==========================================================================================
400   a header with a typed parser is malformed, including those parse_message leaves for later
      (Route, Record-Route, Expires, Content-Type ...): "Bad Request - Malformed Route".
400   a mandatory header is missing: Via, To, From, Call-ID, CSeq (RFC 4475 insuf). Max-Forwards
      may be absent (RFC 2543 peers, inv2543; a proxy adds 70).
400   a single-valued header appears more than once: To, From, Call-ID, CSeq, Max-Forwards,
      Content-Type, Expires (multi01); several Content-Length values (mcl01).
400   ``Contact: *`` mixed with other contacts, outside REGISTER, or without ``Expires: 0``
      (RFC 3261 10.2.2).
400   the top Via branch is the bare magic cookie ``z9hG4bK`` (RFC 4475 3.2 badbranch).
400   a REGISTER whose To is not a sip/sips URI (an address of record; RFC 4475 unksm2).
483   Max-Forwards is 0 and the element would forward (``forwarding=True``; zeromf).
416   the Request-URI scheme is not in ``uri_schemes`` (unkscm, novelsc).
420   Require (UAS) or Proxy-Require (``forwarding=True``) names extensions not in
      ``supported_extensions``; the Rejection carries ``Unsupported`` (bext01). Not for ACK
      and CANCEL.
415   there is a body and Content-Type is not in ``accepted_types`` or Content-Encoding not in
      ``accepted_encodings``; the Rejection carries Accept / Accept-Encoding (invut).
406   ``response_types`` is given and the request's Accept admits none of them (sdp01).
401   ``auth_schemes`` is given (credentials are required) and no Authorization header uses
      one of them (regaut01 for a registrar that authenticates).
====  ==========================================================================================

cparam01, cparam02, regescrt (REGISTER contact parameter, URI parameter, escaped header) and
inv2543 pass. Syntax errors never get here: ``parse_message`` raises SipParseError for them.

``validate_response(msg)`` returns a reason to drop a response, or None.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from typing import NamedTuple

from .errors import REASON_PHRASES, SipParseError
from .headers import MAGIC_COOKIE, display_name
from .message import Request, Response

__all__ = [
    "Rejection",
    "validate_request",
    "validate_response",
    "error_response",
    "DEFAULT_URI_SCHEMES",
    "DEFAULT_ACCEPTED_TYPES",
]

DEFAULT_URI_SCHEMES = frozenset({"sip", "sips", "tel"})
DEFAULT_ACCEPTED_TYPES = frozenset({"application/sdp"})
_MANDATORY = ("via", "to", "from", "call-id", "cseq")
_SINGLE_VALUED = ("to", "from", "call-id", "cseq", "max-forwards", "content-type", "expires")


class Rejection(NamedTuple):
    """The response a request deserves: status, reason phrase and extra headers to add."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def _reject(status: int, detail: str | None = None, *headers: tuple[str, str]) -> Rejection:
    phrase = REASON_PHRASES.get(status, "")
    return Rejection(status, f"{phrase} - {detail}" if detail else phrase, tuple(headers))


def _media_matches(candidate: str, pattern: str) -> bool:
    if pattern == "*/*":
        return True
    if pattern.endswith("/*"):
        return candidate.split("/", 1)[0] == pattern[:-2]
    return candidate == pattern


def validate_request(
    msg: Request,
    *,
    supported_extensions: Collection[str] = (),
    accepted_types: Collection[str] = DEFAULT_ACCEPTED_TYPES,
    accepted_encodings: Collection[str] = ("identity",),
    uri_schemes: Collection[str] = DEFAULT_URI_SCHEMES,
    response_types: Collection[str] | None = None,
    forwarding: bool = False,
    auth_schemes: Collection[str] | None = None,
) -> Rejection | None:
    """Application-layer checks of a parsed request; see the module docstring for the table.

    ``forwarding``: the element acts as a proxy for this request (Max-Forwards and Proxy-Require
    are checked) rather than as a UAS/registrar (Require is checked). A malformed header met
    while checking (say a bad Expires) gives 400 naming it.
    """
    try:
        return _validate_request(
            msg,
            supported_extensions={ext.lower() for ext in supported_extensions},
            accepted_types={t.lower() for t in accepted_types},
            accepted_encodings={e.lower() for e in accepted_encodings},
            uri_schemes={s.lower() for s in uri_schemes},
            response_types=None if response_types is None else [t.lower() for t in response_types],
            forwarding=forwarding,
            auth_schemes=None if auth_schemes is None else {s.lower() for s in auth_schemes},
        )
    except SipParseError as exc:
        return Rejection(400, exc.reason_phrase)


def _validate_request(
    msg: Request,
    *,
    supported_extensions: set[str],
    accepted_types: set[str],
    accepted_encodings: set[str],
    uri_schemes: set[str],
    response_types: list[str] | None,
    forwarding: bool,
    auth_schemes: set[str] | None,
) -> Rejection | None:
    headers = msg.headers
    msg.validate_headers()  # the lazily parsed ones too: SipParseError -> 400 Malformed X
    for key in _MANDATORY:
        if key not in headers:
            return _reject(400, f"Missing {display_name(key)}")
    for key in _SINGLE_VALUED:
        if headers.count(key) > 1:
            return _reject(400, f"Multiple {display_name(key)}")
    lengths = headers.get_all("content-length")
    if len(lengths) > 1:
        return _reject(400, "Multiple Content-Length")
    contacts = msg.contacts
    if any(contact.is_star for contact in contacts):
        if len(contacts) > 1 or msg.method != "REGISTER" or msg.expires != 0:
            return _reject(400, "Malformed Contact *")
    branch = msg.via.branch
    if branch is not None and branch == MAGIC_COOKIE:
        return _reject(400, "Malformed Via branch")
    if msg.method == "REGISTER" and not msg.to.uri.is_sip:
        return _reject(400, "To is not a SIP address of record")
    if forwarding and msg.max_forwards == 0:
        return _reject(483)
    if msg.uri.scheme not in uri_schemes:
        return _reject(416)
    if msg.method not in ("ACK", "CANCEL"):
        required = msg.proxy_require if forwarding else msg.require
        unsupported = [ext for ext in required if ext.lower() not in supported_extensions]
        if unsupported:
            return _reject(420, None, ("Unsupported", ", ".join(unsupported)))
    if msg.body:
        content_type = msg.content_type or "application/sdp"  # RFC 3261 20.15 default
        encodings = [e.lower() for e in msg.tokens("Content-Encoding")]
        if content_type not in accepted_types or any(
            e not in accepted_encodings for e in encodings
        ):
            return _reject(
                415,
                None,
                ("Accept", ", ".join(sorted(accepted_types))),
                ("Accept-Encoding", ", ".join(sorted(accepted_encodings))),
            )
    if response_types is not None and "accept" in headers:
        accepted = [item.split(";", 1)[0].strip().lower() for item in msg.tokens("Accept")]
        if accepted and not any(
            _media_matches(candidate, pattern)
            for candidate in response_types
            for pattern in accepted
        ):
            return _reject(406)
    if auth_schemes is not None:
        offered = [
            value.split(None, 1)[0].lower()
            for value in headers.get_all("authorization") + headers.get_all("proxy-authorization")
            if value.strip()
        ]
        if not any(scheme in auth_schemes for scheme in offered):
            return _reject(401)
    return None


def _is_broadcast_or_multicast(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if address.is_multicast:
        return True
    return isinstance(address, ipaddress.IPv4Address) and (
        address == ipaddress.IPv4Address("255.255.255.255")
    )


def validate_response(msg: Response, *, forwarding: bool = True) -> str | None:
    """A reason to drop a response, or None. Checks the mandatory headers, that single-valued
    ones are single, and, when ``forwarding``, that the next hop (the second Via: its
    ``received``, else its host) is not a broadcast or multicast address (RFC 4475 bcast)."""
    try:
        headers = msg.headers
        for key in _MANDATORY:
            if key not in headers:
                return f"missing {display_name(key)}"
        for key in _SINGLE_VALUED:
            if headers.count(key) > 1:
                return f"multiple {display_name(key)}"
        if forwarding:
            vias = msg.vias
            if len(vias) >= 2:
                next_hop = vias[1]
                target = next_hop.received or next_hop.maddr or next_hop.host
                if _is_broadcast_or_multicast(target) and next_hop.maddr is None:
                    return f"next hop {target} is a broadcast or multicast address"
    except SipParseError as exc:
        return exc.reason
    return None


def error_response(error: SipParseError) -> Response | None:
    """Best-effort response to a request that failed to parse: status and reason from the error,
    Via, From, To, Call-ID and CSeq copied as written when they could be split. None when the
    bad message was a response (drop it) or the headers needed to route an answer are absent."""
    if error.is_response is not False or error.headers is None:
        return None
    headers = error.headers
    copied: list[tuple[str, str]] = []
    for key in _MANDATORY:
        values = headers.get_all(key)
        if key == "via" and not values:
            return None
        copied.extend((display_name(key), value) for value in values)
    try:
        return Response(error.status_hint, error.reason_phrase, copied)
    except ValueError:
        return None
