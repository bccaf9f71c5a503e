"""Presence (kapi_presence) on the ``presence`` exchange: message-waiting indication.

``mwi_update`` says how many voicemail messages wait for ``To`` (``user@realm``). Kazoo's
callflow voicemail publishes it whenever a box changes; omnipresence and Kamailio turn it into
a SIP NOTIFY ``Event: message-summary`` (RFC 3842) to the phones of that AOR. Here the edge
consumes it for the AORs it holds bindings of (bind ``mwi_updates.*.*``, or one realm with
``mwi_updates.<realm>.*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.errors import BusValidationError
from bus.messages import MessageType, declare
from bus.routing import encode_key_word

__all__ = ["MWI_EXCHANGE", "mwi_routing_key", "mwi_update", "split_to"]

MWI_EXCHANGE = "presence"


def split_to(to: str) -> tuple[str, str]:
    """(user, realm) of a ``To`` of ``user@realm`` (a ``sip:`` prefix tolerated)."""
    value = to[4:] if to[:4].lower() == "sip:" else to
    user, sep, realm = value.rpartition("@")
    if not sep or not user or not realm:
        raise BusValidationError("To", "must be user@realm", "mwi_update")
    return user, realm


def mwi_routing_key(user: str, realm: str) -> str:
    """``mwi_updates.<realm>.<user>`` (kapi_presence:mwi_update_routing_key), words encoded:
    realms have dots."""
    return f"mwi_updates.{encode_key_word(realm)}.{encode_key_word(user)}"


def _route(msg: Mapping[str, Any]) -> str:
    user, realm = split_to(str(msg["To"]))
    return mwi_routing_key(user, realm)


def _check(msg: Mapping[str, Any]) -> None:
    split_to(str(msg["To"]))
    for key in ("Messages-New", "Messages-Saved", "Messages-Urgent", "Messages-Urgent-Saved"):
        value = msg.get(key)
        if value is not None and value < 0:
            raise BusValidationError(key, "must not be negative", "mwi_update")


mwi_update = declare(
    MessageType(
        name="mwi_update",
        category="presence",
        event="mwi_update",
        exchange=MWI_EXCHANGE,
        routing_key=_route,
        required=("To", "Messages-New", "Messages-Saved"),
        optional=("Messages-Urgent", "Messages-Urgent-Saved", "Call-ID"),
        types={
            "To": str,
            "Messages-New": int,
            "Messages-Saved": int,
            "Messages-Urgent": int,
            "Messages-Urgent-Saved": int,
        },
        check=_check,
        description="Voicemail messages waiting for To (user@realm): new and saved counts.",
    )
)
