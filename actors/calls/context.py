"""What the actors of one calls shard share: configuration, bus, the SIP runner and address,
the legs by Call-ID, and a light listing of the channels (``mirliton calls``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.calls.media import MediaLibrary
from actors.kernel import ActorRef
from actors.media import MediaEngine
from bus import Bus, BusError
from mirliton.config import Config
from protocols.sip import Response, ServerTransaction
from protocols.sip.transport import TransactionRunner
from store import Store

__all__ = ["ContactCache", "ShardContext"]

log = logging.getLogger("mirliton.calls")


class ContactCache:
    """Where devices are registered, from ``reg_query`` answers, kept ``ttl`` seconds (Kazoo's
    ecallmgr keeps a registrar cache too). A ``reg_success`` for the AOR drops its entry, so a
    phone that registers again (a new contact) is found at once; a phone that unregisters may
    be tried at its old contact for at most ``ttl`` seconds."""

    def __init__(self, ttl: float = 2.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, list[tuple[str, Any]]]] = {}

    def get(self, realm: str, user: str) -> list[tuple[str, Any]] | None:
        entry = self._entries.get((realm.lower(), user.lower()))
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, realm: str, user: str, contacts: list[tuple[str, Any]]) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[(realm.lower(), user.lower())] = (time.monotonic(), contacts)

    def forget(self, realm: str, user: str | None) -> None:
        if user:
            self._entries.pop((realm.lower(), user.lower()), None)
        else:
            for key in [k for k in self._entries if k[0] == realm.lower()]:
                del self._entries[key]


@dataclass
class ShardContext:
    config: Config
    bus: Bus
    shard: int
    runner: TransactionRunner | None = None
    host: str = "127.0.0.1"
    port: int = 0
    control_queue: str = ""
    # Every live leg of this shard by its Call-ID (A-legs: the caller's; B-legs: ours).
    legs: dict[str, ActorRef] = field(default_factory=dict)
    # call_id -> what `mirliton calls` lists, kept up to date by the legs themselves.
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    leg_supervisor: ActorRef | None = None
    contacts: ContactCache = field(default_factory=ContactCache)
    # Starts a leg actor under the leg supervisor (set by the shard's SIP actor).
    start_leg: Callable[[Any], ActorRef | None] | None = None
    # The dialogs up in this shard (actors.calls.journal.DialogJournal), set by the SIP actor.
    journal: Any = None
    # Ends the calls a killed predecessor left up; run once the shard is advertised.
    end_leftovers: Callable[[], None] | None = None
    # Media: the shard's engine (one clock for every anchored leg), where prompts and
    # recordings come from and go to, and the directory recordings are written in.
    media: MediaEngine | None = None
    store: Store | None = None
    library: MediaLibrary | None = None
    recordings: Path | None = None
    # Conference members that other shards' legs reach through this one (member call id ->
    # stream), see ConferenceBridge in actors.calls.conference.
    remote_members: dict[str, Any] = field(default_factory=dict)

    @property
    def node(self) -> str:
        return self.config.node.name

    @property
    def media_server(self) -> str:
        return f"{self.node}/shard{self.shard}"

    @property
    def contact(self) -> str:
        return f"<sip:mirliton@{self.host}:{self.port}>"

    def respond(self, transaction: ServerTransaction, response: Response) -> None:
        runner = self.runner
        if runner is None or transaction.terminated:
            return
        try:
            runner.respond(transaction, response)
        except ValueError as error:
            log.debug("cannot answer %r: %s", transaction, error)

    def publish(self, msg: dict[str, Any], **kwargs: Any) -> bool:
        """Publish a message built (and so validated) by its type's ``build``."""
        kwargs.setdefault("validate", False)
        try:
            self.bus.publish(msg, **kwargs)
            return True
        except BusError as error:
            log.warning("cannot publish %s: %s", msg.get("Event-Name"), error)
            return False
