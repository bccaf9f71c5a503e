"""Live state asked over the bus: registrations (every edge answers ``reg_query`` for the
bindings it holds) and channels (every calls shard answers ``channels_req``, declared in
actors.calls.api, with the account's legs).

Replies are collected for a short ``timeout``, or until as many as there are nodes running the
answering role (from the nodes snapshot): the API merges them (Kazoo's call_collect). When nobody
answers, the API does not hang and does not fail: it returns an empty list with a note saying
so, since "no registrations" and "no registrar running" must not look alike to an operator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.calls.api import channels_req
from bus import Bus, BusError
from bus.api.registration import reg_flush, reg_query
from bus.messages import Message
from bus.nodes import read_snapshot

__all__ = ["LiveAnswer", "LiveQueries", "nodes_running"]

log = logging.getLogger("mirliton.crossbar")


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


def nodes_running(snapshot: Path) -> Callable[[str], int | None]:
    """How many live nodes run a role, from the node's ``run/nodes.json`` (kept by the nodes
    role); None when there is no snapshot to tell."""

    def count(role: str) -> int | None:
        nodes = read_snapshot(snapshot)
        if not nodes:
            return None
        return sum(1 for node in nodes if role in (node.get("roles") or []))

    return count


class LiveQueries:
    """``responders(role)`` tells how many answers to expect (edges for registrations, calls
    nodes for channels): once that many arrived the answer goes out at once, instead of waiting
    for the timeout that covers a silent or missing peer."""

    def __init__(
        self,
        bus: Bus | None,
        *,
        timeout: float = 0.5,
        responders: Callable[[str], int | None] | None = None,
    ) -> None:
        self.bus = bus
        self.timeout = timeout
        self.responders = responders or (lambda _role: None)

    def _collect(self, msg: Message, what: str, role: str) -> tuple[list[Message], str | None]:
        if self.bus is None:
            return [], f"no bus connection: {what} unknown"
        expected = self.responders(role)
        until = (lambda replies: len(replies) >= expected) if expected else None
        try:
            replies = self.bus.collect(msg, timeout=self.timeout, until=until)
        except BusError as exc:
            log.warning("%s query failed: %s", what, exc)
            return [], f"{what} query failed on the bus: {exc}"
        if not replies:
            return [], f"no {what} responder answered within {self.timeout:g} s"
        return replies, None

    def registrations(self, realm: str, username: str | None = None) -> LiveAnswer:
        """Current registrations of ``realm`` (one user's when ``username`` is given)."""
        msg = reg_query.build(realm=realm, username=username)
        replies, note = self._collect(msg, "registrar", "edge")
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

    def channels(self, account_id: str | None) -> LiveAnswer:
        """Live calls of the account, from every calls shard (``channels_req``); every call of
        the system when ``account_id`` is None (the request then names no account)."""
        request = channels_req.build(account_id=account_id) if account_id else channels_req.build()
        replies, note = self._collect(request, "call node", "calls")
        items: list[dict[str, Any]] = []
        seen: set[Any] = set()
        for reply in replies:
            for entry in reply.get("Channels") or []:
                if not isinstance(entry, dict):
                    continue
                item = _snake_keys(entry)
                if account_id and item.get("account_id") not in (None, account_id):
                    continue  # a shard that ignored the filter must not leak other accounts' calls
                uuid = item.get("uuid") or item.get("call_id")
                if uuid in seen:
                    continue
                seen.add(uuid)
                if uuid is not None:
                    item.setdefault("uuid", uuid)
                items.append(item)
        return LiveAnswer(items, len(replies), note)
