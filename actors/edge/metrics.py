"""Prometheus series of the edge (scraped through the ops role's /metrics).

Labels stay bounded: methods outside RFC 3261 and its usual extensions count as "other",
responses by class (1xx..6xx), drops by guard name. No per-user or per-call labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = [
    "AUTH_FAILURES",
    "DROPPED",
    "MWI_NOTIFIES",
    "REGISTRATIONS",
    "REQUESTS",
    "RESPONSES",
    "count_request",
    "count_response",
    "flush_counts",
]

REQUESTS = Counter(
    "mirliton_sip_requests", "SIP requests received by the edge, by method.", ["method"]
)
RESPONSES = Counter(
    "mirliton_sip_responses", "SIP responses sent by the edge, by class (1xx..6xx).", ["class"]
)
REGISTRATIONS = Gauge(
    "mirliton_registrations",
    "Registered contacts (bindings) held by the edge processes.",
    multiprocess_mode="livesum",
)
DROPPED = Counter(
    "mirliton_edge_dropped",
    "Requests the edge dropped without an answer, by reason (scanner, ip_domain, flood, "
    "sanity, authn_timeout, overload).",
    ["reason"],
)
AUTH_FAILURES = Counter(
    "mirliton_edge_auth_failures", "Digest authentications that failed (wrong or unknown user)."
)
MWI_NOTIFIES = Counter(
    "mirliton_edge_mwi_notifies",
    "message-summary NOTIFYs the edge sent: unsolicited (to registered contacts) or in the "
    "dialog of a SUBSCRIBE.",
    ["kind"],
)

_KNOWN_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})
_request_children = {m: REQUESTS.labels(method=m) for m in _KNOWN_METHODS | {"other"}}
_response_children = {c: RESPONSES.labels(**{"class": f"{c}xx"}) for c in range(1, 7)}


# Counted here and added to the shared (mmap, locked) series once a second by
# flush_counts: an increment of a multiprocess counter costs tens of microseconds, several
# per SIP request.
_pending_requests: dict[str, int] = dict.fromkeys(_request_children, 0)
_pending_responses: dict[int, int] = dict.fromkeys(_response_children, 0)


def count_request(method: str) -> None:
    _pending_requests[method if method in _KNOWN_METHODS else "other"] += 1


def count_response(status: int) -> None:
    klass = status // 100
    if klass in _pending_responses:
        _pending_responses[klass] += 1


def flush_counts() -> None:
    for method, count in _pending_requests.items():
        if count:
            _pending_requests[method] = 0
            _request_children[method].inc(count)
    for klass, count in _pending_responses.items():
        if count:
            _pending_responses[klass] = 0
            _response_children[klass].inc(count)
