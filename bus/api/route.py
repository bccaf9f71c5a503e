"""Call routing (kapi_route): route_req on callmgr, route_resp and route_win on targeted.

route_req -> first non-deferred route_resp wins -> route_win to the winner's Server-ID.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.errors import BusValidationError
from bus.messages import MessageType, declare
from bus.routing import encode_key_word

__all__ = ["route_req", "route_req_routing_key", "route_resp", "route_win"]

RESOURCE_TYPES = ("audio", "video", "sms", "mms", "chat", "metaflow")


def _account_id(msg: Mapping[str, Any]) -> str | None:
    account = msg.get("Account-ID")
    if account:
        return str(account)
    ccvs = msg.get("Custom-Channel-Vars") or {}
    account = ccvs.get("Account-ID") if isinstance(ccvs, Mapping) else None
    return str(account) if account else None


def route_req_routing_key(msg: Mapping[str, Any]) -> str:
    """``route.req.<type>.<account_id>`` when the account is known, else
    ``route.req.<type>.<realm>.<user>`` from the Request URI (kapi_route)."""
    resource = encode_key_word(msg.get("Resource-Type") or "audio")
    account = _account_id(msg)
    if account:
        return f"route.req.{resource}.{encode_key_word(account)}"
    request = str(msg["Request"])
    if request.startswith(("sip:", "sips:")):
        request = request.split(":", 1)[1]
    user, sep, realm = request.partition("@")
    if not sep:
        raise BusValidationError("Request", "must be user@realm", "route_req")
    realm = realm.split(";", 1)[0].split(":", 1)[0]
    return f"route.req.{resource}.{encode_key_word(realm)}.{encode_key_word(user)}"


route_req = declare(
    MessageType(
        name="route_req",
        category="dialplan",
        event="route_req",
        exchange="callmgr",
        routing_key=route_req_routing_key,
        required=("Call-ID", "From", "To", "Request"),
        optional=(
            "Call-Direction",
            "Caller-ID-Name",
            "Caller-ID-Number",
            "Custom-Channel-Vars",
            "Custom-SIP-Headers",
            "From-Tag",
            "To-Tag",
            "Orig-IP",
            "Orig-Port",
            "User-Agent",
            "Resource-Type",
            "Media",
            "Switch-Hostname",
            "Switch-Nodename",
            "Body",
            "Fetch-ID",
        ),
        values={
            "Resource-Type": RESOURCE_TYPES,
            "Media": ("process", "proxy", "bypass"),
            "Call-Direction": ("inbound", "outbound"),
        },
        types={
            "Custom-Channel-Vars": dict,
            "Custom-SIP-Headers": dict,
            "From": str,
            "To": str,
            "Request": str,
            "Orig-Port": int,
        },
        description="Who routes this call? Published by call control when a call arrives.",
    )
)

route_resp = declare(
    MessageType(
        name="route_resp",
        category="dialplan",
        event="route_resp",
        exchange="targeted",
        required=("Method",),
        optional=(
            "Routes",
            "Pre-Park",
            "Route-Error-Code",
            "Route-Error-Message",
            "Ringback-Media",
            "Transfer-Media",
            "Custom-Channel-Vars",
            "Plan-Data",
        ),
        values={
            "Method": ("bridge", "park", "error", "sms", "plan", "application"),
            "Pre-Park": ("none", "ring_ready", "answer"),
        },
        types={"Routes": list, "Custom-Channel-Vars": dict, "Route-Error-Code": (str, int)},
        description="An app offers to route the call (callflow always answers park).",
    )
)

route_win = declare(
    MessageType(
        name="route_win",
        category="dialplan",
        event="route_win",
        exchange="targeted",
        required=("Call-ID", "Control-Queue"),
        optional=("Custom-Channel-Vars", "Custom-Application-Vars"),
        types={"Custom-Channel-Vars": dict, "Custom-Application-Vars": dict},
        description="Call control tells the winning app where to send its commands.",
    )
)
