"""Outbound calls through carriers (kapi_offnet_resource): offnet_req on ``resources``
``offnet.resource.req`` (answered by stepswitch), offnet_resp on targeted."""

from __future__ import annotations

from bus.messages import MessageType, declare

__all__ = ["offnet_req", "offnet_resp"]

offnet_req = declare(
    MessageType(
        name="offnet_req",
        category="resource",
        event="offnet_req",
        exchange="resources",
        routing_key=lambda msg: "offnet.resource.req",
        required=("Application-Name", "Resource-Type", "To-DID"),
        optional=(
            "Call-ID",
            "Control-Queue",
            "Outbound-Caller-ID-Name",
            "Outbound-Caller-ID-Number",
            "Emergency-Caller-ID-Name",
            "Emergency-Caller-ID-Number",
            "Flags",
            "Hunt-Account-ID",
            "Timeout",
            "Ringback",
            "Media",
            "Format-From-URI",
            "Custom-Channel-Vars",
            "Custom-SIP-Headers",
            "Application-Data",
        ),
        values={"Resource-Type": ("audio", "video", "sms", "originate", "cid")},
        types={"Flags": list, "Timeout": int, "Custom-Channel-Vars": dict},
        description="Place this call (or SMS) through the account's or the system's carriers.",
    )
)

offnet_resp = declare(
    MessageType(
        name="offnet_resp",
        category="resource",
        event="offnet_resp",
        exchange="targeted",
        required=("Response-Message",),
        optional=("Response-Code", "Error-Message", "Call-ID", "Resource-Response"),
        types={"Resource-Response": dict},
    )
)
