"""Kazoo's gen_listener: bindings plus responders, one handler per Event-Category/Event-Name.

Two shapes over the same consumer:

* :class:`Listener` - transport level: responders run on the consumer's greenlet, one
  message at a time; an exception is logged and the listener goes on.
* :class:`ListenerActor` - a lightweight actor (:mod:`actors.kernel`): every received message
  is delivered to its mailbox as a :class:`BusMessage`, so responders run inside the actor
  and an exception is an actor crash that its supervisor sees and restarts (the restarted
  actor binds again in ``init``).

Responders are keyed ``(Event-Category, Event-Name)``; ``"*"`` stands for any value, so
``("call_event", "*")`` takes every call event. With ``targeted=True`` the responders also
get messages sent to this process's Server-ID that answer no pending request (route_win
reaches the app whose route_resp won this way).

    class CallflowRoutes(ListenerActor):
        bindings = (Binding("callmgr", "route.req.*.*"),)
        responders = {("dialplan", "route_req"): "on_route_req",
                      ("dialplan", "route_win"): "on_route_win"}
        targeted = True

        def on_route_req(self, msg, delivery):
            self.bus.reply(msg, route_resp.build(method="park"))

    ref = spawn(CallflowRoutes(bus))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from actors.kernel import Actor, ExitReason, on
from bus.messages import Message
from bus.transport import Binding, Bus, Consumer, Delivery, TargetedHandle

__all__ = ["BusMessage", "Listener", "ListenerActor", "Responder", "find_responder"]

log = logging.getLogger("mirliton.bus.listener")

Responder = Callable[[Message, Delivery], Any]
ResponderKey = tuple[str, str]


def find_responder(responders: Mapping[ResponderKey, Any], msg: Mapping[str, Any]) -> Any:
    """The responder for a message: exact key, then ``(category, "*")``, then ``("*", "*")``."""
    category = msg.get("Event-Category")
    name = msg.get("Event-Name")
    found = responders.get((category, name))  # type: ignore[arg-type]
    if found is None:
        found = responders.get((category, "*"))  # type: ignore[arg-type]
        if found is None:
            found = responders.get(("*", "*"))
    return found


def _exact_keys(responders: Mapping[ResponderKey, Any]) -> list[ResponderKey]:
    return [key for key in responders if "*" not in key]


class Listener:
    """A consumer whose messages go to responders by Event-Category/Event-Name."""

    def __init__(
        self,
        bus: Bus,
        *,
        bindings: Sequence[Binding],
        responders: Mapping[ResponderKey, Responder],
        queue: str | None = None,
        durable: bool = False,
        targeted: bool = False,
    ) -> None:
        self.bus = bus
        self.bindings = tuple(bindings)
        self.responders = dict(responders)
        self.queue = queue
        self.durable = durable
        self.targeted = targeted
        self.consumer: Consumer | None = None
        self._targeted: TargetedHandle | None = None

    def start(self) -> Listener:
        if self.bindings:
            self.consumer = self.bus.consume(
                self.bindings, self.dispatch, queue=self.queue, durable=self.durable
            )
        if self.targeted:
            self._targeted = self.bus.on_targeted(_exact_keys(self.responders), self.dispatch)
        return self

    def add_binding(self, binding: Binding) -> None:
        """Listen to one more routing key (gen_listener:add_binding)."""
        if self.consumer is None:
            self.bindings = (*self.bindings, binding)
            return
        self.consumer.add_binding(binding)

    def remove_binding(self, binding: Binding) -> None:
        if self.consumer is None:
            self.bindings = tuple(b for b in self.bindings if b != binding)
            return
        self.consumer.remove_binding(binding)

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.cancel()
            self.consumer = None
        if self._targeted is not None:
            self._targeted.remove()
            self._targeted = None

    def dispatch(self, msg: Message, delivery: Delivery) -> None:
        responder = find_responder(self.responders, msg)
        if responder is None:
            log.debug("no responder for %s/%s", msg["Event-Category"], msg["Event-Name"])
            return
        responder(msg, delivery)


@dataclass(frozen=True)
class BusMessage:
    """A bus message as it arrives in a :class:`ListenerActor`'s mailbox."""

    message: Message
    delivery: Delivery


class ListenerActor(Actor):
    """gen_listener as a lightweight actor (see the module docstring).

    Declare ``bindings``, ``responders`` (values: a method name or a callable taking
    ``(msg, delivery)``), and optionally ``queue``/``durable``/``targeted`` as class
    attributes, or pass them to the constructor.
    """

    bindings: ClassVar[Sequence[Binding]] = ()
    responders: ClassVar[Mapping[ResponderKey, str | Responder]] = {}
    queue: ClassVar[str | None] = None
    durable: ClassVar[bool] = False
    targeted: ClassVar[bool] = False

    def __init__(
        self,
        bus: Bus,
        *,
        bindings: Sequence[Binding] | None = None,
        responders: Mapping[ResponderKey, str | Responder] | None = None,
        queue: str | None = None,
        durable: bool | None = None,
        targeted: bool | None = None,
    ) -> None:
        self.bus = bus
        self._bindings = tuple(bindings if bindings is not None else type(self).bindings)
        self._responder_specs = dict(
            responders if responders is not None else type(self).responders
        )
        self._queue = queue if queue is not None else type(self).queue
        self._durable = durable if durable is not None else type(self).durable
        self._targeted_flag = targeted if targeted is not None else type(self).targeted
        self._consumer: Consumer | None = None
        self._targeted_handle: TargetedHandle | None = None

    def init(self) -> None:
        self._resolved: dict[ResponderKey, Responder] = {
            key: getattr(self, spec) if isinstance(spec, str) else spec
            for key, spec in self._responder_specs.items()
        }
        if self._bindings:
            self._consumer = self.bus.consume(
                self._bindings, self._to_mailbox, queue=self._queue, durable=self._durable
            )
        if self._targeted_flag:
            self._targeted_handle = self.bus.on_targeted(
                _exact_keys(self._resolved), self._to_mailbox
            )

    def _to_mailbox(self, msg: Message, delivery: Delivery) -> None:
        # Runs on the consumer's greenlet: hand over and return at once.
        if self.ref.is_alive:
            self.ref.send(BusMessage(msg, delivery))
        else:
            # Killed brutally (terminate skipped): stop feeding a dead mailbox.
            self.terminate("killed")

    @on(BusMessage)
    def _on_bus_message(self, incoming: BusMessage) -> None:
        responder = find_responder(self._resolved, incoming.message)
        if responder is None:
            self.handle_unrouted(incoming)
            return
        responder(incoming.message, incoming.delivery)

    def handle_unrouted(self, incoming: BusMessage) -> None:
        """A bound message no responder takes: ignored, as gen_listener does."""
        log.debug(
            "%r: no responder for %s/%s",
            self.ref,
            incoming.message["Event-Category"],
            incoming.message["Event-Name"],
        )

    def reply(self, request: Mapping[str, Any], response: Mapping[str, Any]) -> None:
        self.bus.reply(request, response)

    def add_binding(self, binding: Binding) -> None:
        """Listen to one more routing key (gen_listener:add_binding); call from the actor."""
        if self._consumer is None:
            self._consumer = self.bus.consume(
                [binding], self._to_mailbox, queue=self._queue, durable=self._durable
            )
        else:
            self._consumer.add_binding(binding)

    def remove_binding(self, binding: Binding) -> None:
        if self._consumer is not None:
            self._consumer.remove_binding(binding)

    def terminate(self, reason: ExitReason) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            self._consumer = None
        if self._targeted_handle is not None:
            self._targeted_handle.remove()
            self._targeted_handle = None
