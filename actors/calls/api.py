"""Bus messages the calls shards add to Kazoo's: a live listing of every channel they hold
(``mirliton calls``). Kazoo answers this per account with ``query_account_channels``; a
node-wide listing for operators is declared here, next to its producer and consumer."""

from __future__ import annotations

from bus.messages import MessageType, declare

__all__ = ["CHANNELS_ROUTING_KEY", "channels_req", "channels_resp"]

CHANNELS_ROUTING_KEY = "channels.list"

channels_req = declare(
    MessageType(
        name="channels_req",
        category="call_event",
        event="channels_req",
        exchange="callmgr",
        routing_key=lambda msg: CHANNELS_ROUTING_KEY,
        optional=("Account-ID",),
        description="Every channel (call leg) held by the calls shards that hear it.",
    )
)

channels_resp = declare(
    MessageType(
        name="channels_resp",
        category="call_event",
        event="channels_resp",
        exchange="targeted",
        required=("Channels",),
        types={"Channels": list},
    )
)
