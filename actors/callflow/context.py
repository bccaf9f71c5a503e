"""What the actors of the callflow process share: config, bus, store, the callflow cache and
the router of call events to executors."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from actors.callflow.lookup import CallflowCache
from actors.kernel import ActorRef
from bus import Binding, Bus, Consumer, Delivery, Message
from bus.routing import encode_key_word
from mirliton.config import Config
from store import Store

__all__ = ["CallEventRouter", "CallflowContext"]

log = logging.getLogger("mirliton.callflow")


class CallEventRouter:
    """One consumer on ``callevt`` for the whole process, a binding per running call
    (``call.*.<call-id>``), each event handed to that call's executor."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.executors: dict[str, ActorRef] = {}
        self.consumer: Consumer | None = None

    def _binding(self, call_id: str) -> Binding:
        return Binding("callevt", f"call.*.{encode_key_word(call_id)}")

    def subscribe(self, call_id: str, ref: ActorRef) -> None:
        from actors.callflow.call import CallEvent

        def deliver(msg: Message, delivery: Delivery) -> None:
            target = self.executors.get(str(msg.get("Call-ID")))
            if target is not None:
                target.send(CallEvent(msg))

        self.executors[call_id] = ref
        if self.consumer is None:
            self.consumer = self.bus.consume([self._binding(call_id)], deliver)
        else:
            self.consumer.add_binding(self._binding(call_id))

    def unsubscribe(self, call_id: str, ref: ActorRef) -> None:
        if self.executors.get(call_id) == ref:
            del self.executors[call_id]
            if self.consumer is not None:
                try:
                    self.consumer.remove_binding(self._binding(call_id))
                except Exception as error:  # noqa: BLE001 - the bus may be closing
                    log.debug("cannot remove binding: %s", error)


@dataclass
class CallflowContext:
    config: Config
    bus: Bus
    store: Store
    callflows: CallflowCache
    events: CallEventRouter
    executors: ActorRef | None = None
    extra: dict[str, Any] = field(default_factory=dict)
