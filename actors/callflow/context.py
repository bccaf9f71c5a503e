"""What the actors of the callflow process share: config, bus, store, the callflow cache and
the router of call events to executors."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from actors.callflow.lookup import CallflowCache
from actors.kernel import ActorRef
from bus import Binding, Bus, Consumer, Delivery, Message
from mirliton.config import Config
from store import Store

__all__ = ["CallEventRouter", "CallflowContext"]

log = logging.getLogger("mirliton.callflow")


class CallEventRouter:
    """One consumer on ``callevt`` for the whole process, bound once to the events executors
    wait for (bridge, execute-complete/error, destroy, DTMF, recordings) of every call, each
    handed to its call's
    executor; events of calls with no executor here are dropped. Binding per call, as Kazoo's
    cf_exe does, cost a binding change on the bus twice per call."""

    EVENTS = ("CHANNEL_BRIDGE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_EXECUTE_ERROR",
              "CHANNEL_DESTROY", "DTMF", "RECORD_START", "RECORD_STOP")

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.executors: dict[str, ActorRef] = {}
        self.consumer: Consumer | None = None

    def _deliver(self, msg: Message, delivery: Delivery) -> None:
        from actors.callflow.call import CallEvent

        target = self.executors.get(str(msg.get("Call-ID")))
        if target is not None:
            target.send(CallEvent(msg))

    def start(self) -> None:
        if self.consumer is None:
            self.consumer = self.bus.consume(
                [Binding("callevt", f"call.{event}.*") for event in self.EVENTS], self._deliver)

    def subscribe(self, call_id: str, ref: ActorRef) -> None:
        self.start()
        self.executors[call_id] = ref

    def unsubscribe(self, call_id: str, ref: ActorRef) -> None:
        if self.executors.get(call_id) == ref:
            del self.executors[call_id]


@dataclass
class CallflowContext:
    config: Config
    bus: Bus
    store: Store
    callflows: CallflowCache
    events: CallEventRouter
    executors: ActorRef | None = None
    extra: dict[str, Any] = field(default_factory=dict)
