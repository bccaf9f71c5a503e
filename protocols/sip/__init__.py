"""SIP core, sans-I/O (h11/aioquic style): bytes in, typed objects out; no sockets, no timers.

Message layer: ``parse_message`` (datagrams) and ``StreamParser`` (streams) turn bytes into
:class:`Request` / :class:`Response`; ``bytes(msg)`` turns them back. Errors are
:class:`SipParseError` carrying the status a server should answer. ``validate_request`` gives the
application-layer answer RFC 4475 3.3 names.

Each module adds its public names below, one import line per module.
"""

from __future__ import annotations

from .dialog import (
    AnswerRetransmission,
    Dialog,
    DialogError,
    DialogId,
    Dialogs,
    DialogState,
    next_hop,
)
from .digest import (
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestOutcome,
    DigestServer,
    DigestVerdict,
    answer_challenge,
)
from .errors import REASON_PHRASES, SipParseError
from .headers import CSeq, Headers, NameAddr, StarContact, Via, canonical_key, quote, unquote
from .message import (
    Message,
    Request,
    Response,
    generate_branch,
    generate_call_id,
    generate_tag,
    make_response,
)
from .parser import DEFAULT_LIMITS, Limits, StreamParser, is_keepalive, parse_message
from .transaction import (
    AckReceived,
    CancelReceived,
    ClientTransaction,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TimerConfig,
    TransactionLayer,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
    new_branch,
    new_via,
)
from .uri import URI, escape_user, unescape
from .validate import Rejection, error_response, validate_request, validate_response

__all__ = [
    # errors
    "REASON_PHRASES",
    "SipParseError",
    # headers
    "CSeq",
    "Headers",
    "NameAddr",
    "StarContact",
    "Via",
    "canonical_key",
    "quote",
    "unquote",
    # message
    "Message",
    "Request",
    "Response",
    "generate_branch",
    "generate_call_id",
    "generate_tag",
    "make_response",
    # parser
    "DEFAULT_LIMITS",
    "Limits",
    "StreamParser",
    "is_keepalive",
    "parse_message",
    # uri
    "URI",
    "escape_user",
    "unescape",
    # validate
    "Rejection",
    "error_response",
    "validate_request",
    "validate_response",
    # dialog
    "AnswerRetransmission",
    "Dialog",
    "DialogError",
    "DialogId",
    "DialogState",
    "Dialogs",
    "next_hop",
    # digest
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestOutcome",
    "DigestServer",
    "DigestVerdict",
    "answer_challenge",
    # transaction (the gevent adapters live in protocols.sip.transport, imported explicitly)
    "AckReceived",
    "CancelReceived",
    "ClientTransaction",
    "Outgoing",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "StrayResponse",
    "TimerConfig",
    "TransactionLayer",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportError",
    "new_branch",
    "new_via",
]
