"""Live state asked over the bus: registrations (the registrar answers ``reg_query``) and
channels (the call nodes answer ``query_account_channels_req``).

Replies are collected for a short ``timeout``: every registrar / call node of the cluster
answers with what it holds, and the API merges them (Kazoo's call_collect). When nobody
answers, the API does not hang and does not fail: it returns an empty list with a note saying
so, since "no registrations" and "no registrar running" must not look alike to an operator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bus import Bus, BusError
from bus.api.registration import reg_flush, reg_query
from bus.messages import Message

__all__ = [
    "CHANNELS_EVENT",
    "CHANNELS_ROUTING_KEY",
    "LiveAnswer",
    "LiveQueries",
]

log = logging.getLogger("mirliton.crossbar")

# Kazoo's kapi_call query_account_channels_req (not declared in bus.api yet: published with
# an explicit exchange and routing key; the call nodes answer on the requester's Server-ID
# with {"Channels": [...]}).
CHANNELS_CATEGORY = "call_event"
CHANNELS_EVENT = "query_account_channels_req"
CHANNELS_ROUTING_KEY = "call.query_account_channels"


@dataclass
class LiveAnswer:
    items: list[dict[str, Any]] = field(default_factory=list)
    responders: int = 0
    note: str | None = None


def _snake(key: str) -> str:
    return key.replace("-", "_").lower()


def _snake_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_snake(k): _snake_keys(v) for k, v in value.items()}
    return value


class LiveQueries:
    def __init__(self, bus: Bus | None, *, timeout: float = 0.5) -> None:
        self.bus = bus
        self.timeout = timeout

    def _collect(
        self, msg: Message, what: str, *, exchange: str | None = None, routing_key: str | None = None
    ) -> tuple[list[Message], str | None]:
        if self.bus is None:
            return [], f"no bus connection: {what} unknown"
        try:
            replies = self.bus.collect(msg, timeout=self.timeout, exchange=exchange, routing_key=routing_key)
        except BusError as exc:
            log.warning("%s query failed: %s", what, exc)
            return [], f"{what} query failed on the bus: {exc}"
        if not replies:
            return [], f"no {what} responder answered within {self.timeout:g} s"
        return replies, None

    def registrations(self, realm: str, username: str | None = None) -> LiveAnswer:
        """Current registrations of ``realm`` (one user's when ``username`` is given)."""
        msg = reg_query.build(realm=realm, username=username)
        replies, note = self._collect(msg, "registrar")
        items: list[dict[str, Any]] = []
        seen: set[tuple[Any, ...]] = set()
        for reply in replies:
            for entry in reply.get("Fields") or []:
                if not isinstance(entry, dict):
                    continue
                item = _snake_keys(entry)
                key = (item.get("username"), item.get("contact"), item.get("call_id"))
                if key in seen:
                    continue
                seen.add(key)
                items.append(item)
        return LiveAnswer(items, len(replies), note)

    def flush_registration(self, realm: str, username: str | None) -> None:
        """Ask every registrar to drop a registration (fire and forget, as Kazoo)."""
        if self.bus is None:
            return
        try:
            self.bus.publish(reg_flush.build(realm=realm, username=username))
        except BusError:
            log.warning("could not publish reg_flush for %s", realm, exc_info=True)

    def channels(self, account_id: str) -> LiveAnswer:
        msg: Message = {
            "Event-Category": CHANNELS_CATEGORY,
            "Event-Name": CHANNELS_EVENT,
            "App-Name": "crossbar",
            "App-Version": "0.1.0",
            "Account-ID": account_id,
            "Active-Only": False,
        }
        replies, note = self._collect(
            msg, "call node", exchange="callevt", routing_key=CHANNELS_ROUTING_KEY
        )
        items: list[dict[str, Any]] = []
        seen: set[Any] = set()
        for reply in replies:
            channels = reply.get("Channels") or []
            if isinstance(channels, dict):
                channels = list(channels.values())
            for entry in channels:
                if not isinstance(entry, dict):
                    continue
                item = _snake_keys(entry)
                uuid = item.get("uuid") or item.get("call_id")
                if uuid in seen:
                    continue
                seen.add(uuid)
                if uuid is not None:
                    item.setdefault("uuid", uuid)
                items.append(item)
        return LiveAnswer(items, len(replies), note)
