"""Bus messages the calls shards add to Kazoo's, declared next to their producer and consumer:

- a live listing of every channel they hold (``mirliton calls``); Kazoo answers this per
  account with ``query_account_channels``, this is a node-wide listing for operators;
- conference membership across shards: a conference is mixed in one shard (picked by hashing
  its id over the node's shards); a leg held by another shard asks that one for a member
  stream and relays its phone's RTP to it (Kazoo reaches a conference on another FreeSWITCH by
  a SIP loopback; here the two shards share a node, so a bus request and two RTP ports do).
  Sent to the owning shard's Control-Queue on ``callctl``.
"""

from __future__ import annotations

from bus.messages import MessageType, declare

__all__ = [
    "CHANNELS_ROUTING_KEY",
    "channels_req",
    "channels_resp",
    "conference_member_leave",
    "conference_member_req",
    "conference_member_resp",
]

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

conference_member_req = declare(
    MessageType(
        name="conference_member_req",
        category="conference",
        event="member_req",
        exchange="callctl",
        required=("Conference-ID", "Member-ID", "Media-Host", "Media-Port"),
        optional=("Moderator", "Mute", "Deaf", "Call-ID"),
        types={"Media-Port": int, "Moderator": bool, "Mute": bool, "Deaf": bool},
        description="Open a member stream in the conference this shard mixes, sending to "
                    "Media-Host:Media-Port (the asking leg's relay stream).",
    )
)

conference_member_resp = declare(
    MessageType(
        name="conference_member_resp",
        category="conference",
        event="member_resp",
        exchange="targeted",
        required=("Media-Host", "Media-Port"),
        types={"Media-Port": int},
    )
)

conference_member_leave = declare(
    MessageType(
        name="conference_member_leave",
        category="conference",
        event="member_leave",
        exchange="callctl",
        required=("Conference-ID", "Member-ID"),
    )
)
