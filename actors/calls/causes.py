"""SIP status codes and Kazoo's (FreeSWITCH's Q.850) hangup causes, both ways.

A failed B-leg reports its SIP code (``Hangup-Code: sip:486``) and the cause FreeSWITCH would
name (``USER_BUSY``), so a callflow can branch on either; a ``hangup`` or ``respond`` command
naming a cause is answered with the SIP code FreeSWITCH sends for it.
"""

from __future__ import annotations

__all__ = ["CAUSE_TO_SIP", "SIP_TO_CAUSE", "cause_for_status", "status_for_cause"]

SIP_TO_CAUSE: dict[int, str] = {
    400: "NORMAL_TEMPORARY_FAILURE",
    401: "CALL_REJECTED",
    402: "CALL_REJECTED",
    403: "CALL_REJECTED",
    404: "UNALLOCATED_NUMBER",
    405: "SERVICE_UNAVAILABLE",
    407: "CALL_REJECTED",
    408: "RECOVERY_ON_TIMER_EXPIRE",
    410: "NUMBER_CHANGED",
    413: "INTERWORKING",
    414: "INTERWORKING",
    415: "SERVICE_NOT_IMPLEMENTED",
    420: "INTERWORKING",
    480: "NO_USER_RESPONSE",
    481: "NORMAL_TEMPORARY_FAILURE",
    482: "EXCHANGE_ROUTING_ERROR",
    483: "EXCHANGE_ROUTING_ERROR",
    484: "INVALID_NUMBER_FORMAT",
    485: "NO_ROUTE_DESTINATION",
    486: "USER_BUSY",
    487: "ORIGINATOR_CANCEL",
    488: "INCOMPATIBLE_DESTINATION",
    500: "NORMAL_TEMPORARY_FAILURE",
    501: "SERVICE_NOT_IMPLEMENTED",
    502: "NETWORK_OUT_OF_ORDER",
    503: "NORMAL_TEMPORARY_FAILURE",
    504: "RECOVERY_ON_TIMER_EXPIRE",
    505: "INTERWORKING",
    600: "USER_BUSY",
    603: "CALL_REJECTED",
    604: "NO_ROUTE_DESTINATION",
    606: "INCOMPATIBLE_DESTINATION",
}

CAUSE_TO_SIP: dict[str, int] = {
    "NORMAL_CLEARING": 480,
    "USER_BUSY": 486,
    "NO_USER_RESPONSE": 480,
    "NO_ANSWER": 480,
    "USER_NOT_REGISTERED": 480,
    "SUBSCRIBER_ABSENT": 480,
    "ORIGINATOR_CANCEL": 487,
    "CALL_REJECTED": 603,
    "UNALLOCATED_NUMBER": 404,
    "NO_ROUTE_DESTINATION": 404,
    "INVALID_NUMBER_FORMAT": 484,
    "NUMBER_CHANGED": 410,
    "NORMAL_TEMPORARY_FAILURE": 503,
    "RECOVERY_ON_TIMER_EXPIRE": 408,
    "INCOMPATIBLE_DESTINATION": 488,
    "SERVICE_UNAVAILABLE": 503,
    "NETWORK_OUT_OF_ORDER": 502,
}


def cause_for_status(status: int) -> str:
    """The hangup cause of a final SIP status (2xx: NORMAL_CLEARING)."""
    if status < 300:
        return "NORMAL_CLEARING"
    return SIP_TO_CAUSE.get(status, "NORMAL_TEMPORARY_FAILURE" if status < 600 else "CALL_REJECTED")


def status_for_cause(cause: str | None, default: int = 480) -> int:
    return CAUSE_TO_SIP.get((cause or "").upper(), default)
