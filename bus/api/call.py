"""Call events (kapi_call) on ``callevt``: routing key ``call.<EVENT-NAME>.<Call-ID>``.

Consumers bind ``call.*.<call-id>`` (everything about one call) or
``call.CHANNEL_DESTROY.*`` (one event for every call).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.messages import FieldType, MessageType, declare
from bus.routing import encode_key_word

__all__ = ["CALL_EVENTS", "call_event", "call_event_routing_key"]

# Kazoo's CALL_EVENTS (kz_types.hrl) plus CHANNEL_PROGRESS (180/183 seen on the leg).
CALL_EVENTS: tuple[str, ...] = (
    "CHANNEL_CREATE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_DESTROY",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_EXECUTE_ERROR",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CHANNEL_TRANSFEREE",
    "CHANNEL_TRANSFEROR",
    "CHANNEL_REPLACED",
    "CHANNEL_INTERCEPTED",
    "CALL_UPDATE",
    "DTMF",
    "DETECTED_TONE",
    "LEG_CREATED",
    "LEG_DESTROYED",
    "RECORD_START",
    "RECORD_STOP",
)

_COMMON_OPTIONAL = (
    "Application-Name",
    "Application-Response",
    "Application-Data",
    "Call-Direction",
    "Caller-ID-Name",
    "Caller-ID-Number",
    "Callee-ID-Name",
    "Callee-ID-Number",
    "From",
    "To",
    "Request",
    "Hangup-Cause",
    "Hangup-Code",
    "Disposition",
    "Billing-Seconds",
    "Duration-Seconds",
    "Ringing-Seconds",
    "Other-Leg-Call-ID",
    "Custom-Channel-Vars",
    "Timestamp",
    "Channel-State",
    "Media-Name",
    "Control-Queue",
    "DTMF-Digit",
    "DTMF-Duration",
    "Terminator",
    "Length",
    "Silence-Terminated",
    "Reason",
    "Media-Transfer-Destination",
    "Media-Stored",
    "Conference-ID",
)
_COMMON_TYPES: dict[str, FieldType] = {
    "Billing-Seconds": int,
    "Duration-Seconds": int,
    "Ringing-Seconds": int,
    "Custom-Channel-Vars": dict,
    "Timestamp": (int, float),
    "DTMF-Duration": int,
    "Length": int,
    "Silence-Terminated": bool,
    "Media-Stored": bool,
}
# Fields some events cannot do without.
_EXTRA_REQUIRED: dict[str, tuple[str, ...]] = {
    "CHANNEL_EXECUTE": ("Application-Name",),
    "CHANNEL_EXECUTE_COMPLETE": ("Application-Name",),
    "CHANNEL_EXECUTE_ERROR": ("Application-Name",),
    "CHANNEL_BRIDGE": ("Other-Leg-Call-ID",),
    "DTMF": ("DTMF-Digit",),
    "RECORD_START": ("Media-Name",),
    "RECORD_STOP": ("Media-Name",),
}


def call_event_routing_key(msg: Mapping[str, Any]) -> str:
    return f"call.{msg['Event-Name']}.{encode_key_word(msg['Call-ID'])}"


call_event: dict[str, MessageType] = {
    event: declare(
        MessageType(
            name=event.lower(),
            category="call_event",
            event=event,
            exchange="callevt",
            routing_key=call_event_routing_key,
            required=("Call-ID", *_EXTRA_REQUIRED.get(event, ())),
            optional=_COMMON_OPTIONAL,
            values={"Call-Direction": ("inbound", "outbound")},
            types=_COMMON_TYPES,
        )
    )
    for event in CALL_EVENTS
}
