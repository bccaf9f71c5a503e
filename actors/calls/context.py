"""What the actors of one calls shard share: configuration, bus, the SIP runner and address,
the legs by Call-ID, and a light listing of the channels (``mirliton calls``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.kernel import ActorRef
from bus import Bus, BusError
from mirliton.config import Config
from protocols.sip import Response, ServerTransaction
from protocols.sip.transport import TransactionRunner

__all__ = ["ShardContext"]

log = logging.getLogger("mirliton.calls")


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
    # Starts a leg actor under the leg supervisor (set by the shard's SIP actor).
    start_leg: Callable[[Any], ActorRef | None] | None = None
    # The dialogs up in this shard (actors.calls.journal.DialogJournal), set by the SIP actor.
    journal: Any = None
    # Ends the calls a killed predecessor left up; run once the shard is advertised.
    end_leftovers: Callable[[], None] | None = None

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
        try:
            self.bus.publish(msg, **kwargs)
            return True
        except BusError as error:
            log.warning("cannot publish %s: %s", msg.get("Event-Name"), error)
            return False
