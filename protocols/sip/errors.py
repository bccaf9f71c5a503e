"""Errors of the SIP message layer, carried as data.

Like h11's ``RemoteProtocolError``, a :class:`SipParseError` says what was wrong *and* what a
server should answer: ``status_hint`` (400, 413, 414, 505, 513 ...) with a reason phrase that names
the culprit ("Bad Request - Malformed Via"). A server answers requests with that status when it
can (see :func:`protocols.sip.validate.error_response`); a malformed response is simply dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .headers import Headers

__all__ = ["SipParseError", "REASON_PHRASES"]

# RFC 3261 section 21 plus the extension codes the validation helper can produce.
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


class SipParseError(ValueError):
    """A message (or one header of it) does not follow the SIP grammar.

    ``reason``: what failed, for logs. ``header``: canonical lower-case name of the culprit header
    (``"via"``, ``"cseq"``) or None for the start line / framing. ``status_hint``: the status a
    server should send back for a request (400 unless the problem is the version, 505, or a size
    limit, 413/414/513). ``fatal_for_stream``: the byte stream lost framing and the connection must
    be closed (true for framing errors found by :class:`~protocols.sip.parser.StreamParser`).
    ``is_response``: the bad message was a response, so the caller just drops it (None: unknown).
    ``headers``: the raw header block when it could be split, so a server can still copy Via, From,
    To, Call-ID and CSeq into its error response.
    """

    reason: str
    header: str | None
    status_hint: int
    fatal_for_stream: bool
    is_response: bool | None
    headers: Headers | None
    parsed_before: list[Any]

    def __init__(
        self,
        reason: str,
        *,
        header: str | None = None,
        status_hint: int = 400,
        fatal_for_stream: bool = False,
        is_response: bool | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.header = header
        self.status_hint = status_hint
        self.fatal_for_stream = fatal_for_stream
        self.is_response = is_response
        self.headers = headers
        # Set by StreamParser: messages completed in the same feed() before the error.
        self.parsed_before = []

    @property
    def reason_phrase(self) -> str:
        """Reason phrase for the error response, e.g. ``"Bad Request - Malformed Via"``."""
        base = REASON_PHRASES.get(self.status_hint, "Bad Request")
        if self.status_hint == 400 and self.header is not None:
            return f"{base} - Malformed {_display_header_name(self.header)}"
        if self.status_hint == 400:
            return f"{base} - {self.reason}"
        return base

    def __repr__(self) -> str:
        return (
            f"SipParseError({self.reason!r}, header={self.header!r}, "
            f"status_hint={self.status_hint})"
        )


def _display_header_name(canonical: str) -> str:
    # Imported lazily: headers.py imports this module.
    from .headers import display_name

    return display_name(canonical)
