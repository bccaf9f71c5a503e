"""The one interface both transports implement, and what they share.

:class:`Bus` publishes and consumes Kazoo messages, and does request/response with the
process's single reply queue (its Server-ID) on the ``targeted`` exchange: a request carries
``Server-ID``, responders publish their reply to ``targeted`` with that routing key and the
request's ``Msg-ID``, and the reply is matched to the waiting request by Msg-ID (or
``Msg-Reply-ID`` when present). Request/response, validation on receive, consumer dispatch
and metrics live here; a transport only moves bytes (``_send``) and feeds deliveries to
:class:`Consumer` objects.

Every consumer has its own inbox and one greenlet that decodes, validates and hands messages
to its callback in order. Transports put raw deliveries there without blocking, so a slow
or blocking callback (one that itself makes a request) never stalls the transport.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
from gevent import Greenlet

from bus import metrics
from bus.errors import BusClosed, BusError, BusValidationError, RequestTimeout
from bus.messages import Message, lookup, new_msg_id, validate_message
from bus.routing import EXCHANGES, ExchangeType

__all__ = [
    "Binding",
    "Bus",
    "Consumer",
    "Delivery",
    "InvalidCallback",
    "MessageCallback",
    "TargetedHandle",
    "decode",
    "encode",
    "is_deferred",
]

log = logging.getLogger("mirliton.bus")


@dataclass(frozen=True)
class Binding:
    """Route messages published on ``exchange`` with a matching routing key to a queue.

    ``routing_key`` is an exact key on direct exchanges, a pattern with ``*``/``#`` on topic
    exchanges, and ignored on fanout exchanges.
    """

    exchange: str
    routing_key: str = "#"


@dataclass(frozen=True)
class Delivery:
    """Where a received message came from."""

    exchange: str
    routing_key: str
    queue: str
    redelivered: bool = False


MessageCallback = Callable[[Message, Delivery], None]
InvalidCallback = Callable[[BusValidationError, bytes, Delivery], None]


def encode(msg: Mapping[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode()


def decode(body: bytes) -> Any:
    return json.loads(body)


def is_deferred(msg: Mapping[str, Any]) -> bool:
    """Kazoo's Defer-Response is a boolean, sometimes sent as the string "true"."""
    value = msg.get("Defer-Response")
    return value is True or value == "true"


class Consumer:
    """A queue being consumed in this process, with its bindings and callback.

    Created by :meth:`Bus.consume`; transports feed it with :meth:`push` (never blocks) and
    its greenlet decodes, validates and calls ``callback(msg, delivery)`` one message at a
    time. An invalid message goes to ``on_invalid`` (default: logged) and is counted as
    dropped, never to the callback. A callback exception is logged and the consumer goes on:
    a consumer that must crash with its handler is a :class:`bus.listener.ListenerActor`.
    """

    def __init__(
        self,
        bus: Bus,
        queue: str,
        bindings: Sequence[Binding],
        callback: MessageCallback,
        *,
        named: bool,
        durable: bool,
        on_invalid: InvalidCallback | None,
    ) -> None:
        self.bus = bus
        self.queue = queue
        self.bindings: list[Binding] = list(dict.fromkeys(bindings))
        self.callback = callback
        self.named = named
        self.durable = durable
        self.on_invalid = on_invalid
        self.active = True
        self._inbox: deque[tuple[str, str, bytes, bool, Callable[[], None] | None]] = deque()
        self._wakeup = gevent.event.Event()
        self._greenlet: Greenlet = gevent.spawn(self._run)

    def __repr__(self) -> str:
        return f"<Consumer {self.queue} {len(self.bindings)} bindings>"

    @property
    def backlog(self) -> int:
        return len(self._inbox)

    def push(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        redelivered: bool = False,
        ack: Callable[[], None] | None = None,
    ) -> None:
        """Queue a raw delivery (called by transports; must not block or switch)."""
        self._inbox.append((exchange, routing_key, body, redelivered, ack))
        self._wakeup.set()

    def add_binding(self, binding: Binding) -> None:
        """Bind one more routing key to this consumer's queue (gen_listener:add_binding).

        Per-call interest (``call.*.<call-id>``) belongs here, on a queue the process already
        consumes, rather than in a new queue per call: on RabbitMQ a bind is one round trip,
        a queue declare + bind + consume three.
        """
        if binding in self.bindings:
            return
        self.bus._check_usable()
        if binding.exchange not in self.bus._exchanges and not self.bus._knows_exchange(
            binding.exchange
        ):
            raise BusError(f"exchange {binding.exchange!r} is not declared")
        self.bindings.append(binding)
        self.bus._add_binding(self, binding)

    def remove_binding(self, binding: Binding) -> None:
        """Unbind a routing key from this consumer's queue (gen_listener:rm_binding)."""
        if binding not in self.bindings:
            return
        self.bindings.remove(binding)
        if self.active:
            self.bus._remove_binding(self, binding)

    def cancel(self) -> None:
        """Stop consuming: the transport forgets the queue (an anonymous one is deleted)."""
        if not self.active:
            return
        self.active = False
        self.bus._cancel_consumer(self)
        self._inbox.clear()
        if self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        inbox = self._inbox
        wakeup = self._wakeup
        queue = self.queue
        while True:
            while inbox:
                exchange, routing_key, body, redelivered, ack = inbox.popleft()
                try:
                    self._handle(exchange, routing_key, body, redelivered, queue)
                except Exception:  # noqa: BLE001 - whatever arrives, the consumer lives on
                    log.exception("bus consumer %s: cannot handle a delivery", queue)
                finally:
                    # Acked after the callback so a crash before it means redelivery
                    # (at least once); acked even when the callback raised so a poison
                    # message is not redelivered forever.
                    if ack is not None:
                        try:
                            ack()
                        except Exception:  # noqa: BLE001 - the channel may be gone
                            log.debug("ack on %s failed", queue, exc_info=True)
            if not self.active:
                return  # cancelled from its own callback
            wakeup.clear()
            wakeup.wait()

    def _handle(
        self, exchange: str, routing_key: str, body: bytes, redelivered: bool, queue: str
    ) -> None:
        delivery = Delivery(exchange, routing_key, queue, redelivered)
        try:
            msg = decode(body)
            validate_message(msg)
        except (ValueError, BusValidationError) as exc:
            error = (
                exc
                if isinstance(exc, BusValidationError)
                else BusValidationError("<body>", f"not JSON: {exc}")
            )
            metrics.DROPPED.labels("invalid").inc()
            if self.on_invalid is not None:
                self.on_invalid(error, body, delivery)
            else:
                log.warning("dropped invalid message on %s (%s): %s", queue, routing_key, error)
            return
        metrics.count_consumed(exchange, msg["Event-Name"])
        try:
            self.callback(msg, delivery)
        except gevent.GreenletExit:
            raise
        except Exception:  # noqa: BLE001 - a consumer outlives a failing callback
            log.exception("bus consumer %s: callback failed on %s", queue, routing_key)


class _PendingRequest:
    __slots__ = ("replies", "event")

    def __init__(self) -> None:
        self.replies: list[Message] = []
        self.event = gevent.event.Event()

    def add(self, msg: Message) -> None:
        self.replies.append(msg)
        self.event.set()


class TargetedHandle:
    """Registration of a handler for unsolicited messages on this process's Server-ID."""

    def __init__(self, bus: Bus, keys: tuple[tuple[str, str], ...], handler: MessageCallback):
        self._bus = bus
        self.keys = keys
        self.handler = handler

    def remove(self) -> None:
        for key in self.keys:
            if self._bus._targeted_handlers.get(key) is self.handler:
                del self._bus._targeted_handlers[key]


_live_buses: weakref.WeakSet[Bus] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A bus is one process's connection: the child of a fork must connect its own, and must
    # let go of the parent's sockets so that they die with the parent.
    for bus in list(_live_buses):
        bus._forked = True
        try:
            bus._release_after_fork()
        except Exception:  # noqa: BLE001 - best effort in a fresh child
            log.debug("releasing a forked bus failed", exc_info=True)


os.register_at_fork(after_in_child=_after_fork_in_child)


class Bus(ABC):
    """A process's connection to the message bus. Create it with :func:`bus.connect`."""

    #: "amqp" or "local"
    transport: str = ""

    def __init__(self, *, node: str) -> None:
        self.node = node
        self._forked = False
        self._closed = False
        self._exchanges: dict[str, ExchangeType] = dict(EXCHANGES)
        self._pending: dict[str, _PendingRequest] = {}
        self._targeted_handlers: dict[tuple[str, str], MessageCallback] = {}
        # Unsolicited targeted messages run on their own greenlet, in order: a handler that
        # blocks (or makes a request) must not hold up the replies other requests wait for.
        self._unsolicited: deque[tuple[MessageCallback, Message, Delivery]] = deque()
        self._unsolicited_wakeup = gevent.event.Event()
        self._unsolicited_worker: Greenlet | None = None
        self._queue_ids = itertools.count(1)
        self._server_id = f"mirliton.{node}.{os.getpid()}.{new_msg_id()[:6]}"
        _live_buses.add(self)

    # --- the interface -----------------------------------------------------------------
    @property
    def server_id(self) -> str:
        """This process's reply queue: put in Server-ID, it is where replies come back."""
        return self._server_id

    def publish(
        self,
        msg: Mapping[str, Any],
        *,
        routing_key: str | None = None,
        exchange: str | None = None,
        confirm: bool = False,
        timeout: float = 10.0,
        validate: bool = True,
    ) -> None:
        """Publish a message on its type's exchange with its type's routing key.

        ``routing_key``/``exchange`` name the destination for types that have none
        (replies, call commands) or override it. ``confirm=True`` returns only once the
        broker took the message into at least one queue, retrying across reconnects, and
        raises :class:`PublishNotConfirmed` after ``timeout``; without it a message
        published while the broker is unreachable is buffered (bounded) and sent on
        reconnection. ``validate=False`` skips the contract check (for tests of receivers).
        """
        self._check_usable()
        msg_type = lookup(msg)
        if validate:
            if msg_type is None:
                validate_message(msg)
            else:
                msg_type.validate(msg)
        if exchange is None:
            if msg_type is None:
                raise BusValidationError(
                    "Event-Name", "undeclared message type: pass exchange= and routing_key="
                )
            exchange = msg_type.exchange
        if routing_key is None:
            if msg_type is None:
                raise BusValidationError(
                    "<routing-key>", "undeclared message type: pass routing_key="
                )
            routing_key = msg_type.route(msg)
        if exchange not in self._exchanges and not self._knows_exchange(exchange):
            raise BusError(f"exchange {exchange!r} is not declared")
        if "Node" not in msg:
            msg = {**msg, "Node": self.node}
        self._send(exchange, routing_key, encode(msg), confirm, timeout)
        metrics.count_published(exchange, str(msg.get("Event-Name", "")))

    def reply(
        self,
        request: Mapping[str, Any],
        response: Mapping[str, Any],
        *,
        confirm: bool = False,
    ) -> None:
        """Answer ``request``: ``response`` goes to the requester's Server-ID on ``targeted``
        with the request's Msg-ID, which is how the requester recognises it. The response
        carries this process's Server-ID too (route_win goes there if this route_resp wins)."""
        server_id = request.get("Server-ID")
        if not server_id:
            raise BusValidationError("Server-ID", "the request has no Server-ID to reply to")
        response = {"Server-ID": self._server_id, **response, "Msg-ID": request["Msg-ID"]}
        self.publish(response, exchange="targeted", routing_key=str(server_id), confirm=confirm)

    def consume(
        self,
        bindings: Sequence[Binding],
        callback: MessageCallback,
        *,
        queue: str | None = None,
        durable: bool = False,
        on_invalid: InvalidCallback | None = None,
    ) -> Consumer:
        """Consume messages matching ``bindings``.

        ``queue=None`` gives a private queue (exclusive to this consumer, deleted with it):
        every such consumer gets its own copy. A named queue is shared: the consumers of
        every process using that name take turns (competing consumers, as Kazoo's shared
        listeners). ``durable=True`` (with a named queue) keeps queued messages across a
        broker restart on ``amqp``; ``local`` has no broker to restart.
        """
        self._check_usable()
        for binding in bindings:
            if binding.exchange not in self._exchanges and not self._knows_exchange(
                binding.exchange
            ):
                raise BusError(f"exchange {binding.exchange!r} is not declared")
        named = queue is not None
        if queue is None:
            queue = f"{self._server_id}.q{next(self._queue_ids)}"
        consumer = Consumer(
            self, queue, bindings, callback, named=named, durable=durable, on_invalid=on_invalid
        )
        try:
            self._start_consumer(consumer)
        except BaseException:
            consumer.active = False
            consumer._greenlet.kill(block=False)
            raise
        return consumer

    def declare_exchange(self, name: str, kind: ExchangeType) -> None:
        """Declare an exchange beyond Kazoo's (all of those are declared already)."""
        self._check_usable()
        if kind not in ("direct", "topic", "fanout"):
            raise BusError(f"unknown exchange type {kind!r}")
        known = self._exchanges.get(name)
        if known is not None and known != kind:
            raise BusError(f"exchange {name!r} is a {known} exchange, not {kind}")
        self._declare_exchange(name, kind)
        self._exchanges[name] = kind

    def on_targeted(
        self, events: Iterable[tuple[str, str]], handler: MessageCallback
    ) -> TargetedHandle:
        """Handle messages sent to this process's Server-ID that answer no pending request
        (route_win reaches the app whose route_resp won this way)."""
        keys = tuple(events)
        for key in keys:
            self._targeted_handlers[key] = handler
        return TargetedHandle(self, keys, handler)

    def request(
        self,
        msg: Mapping[str, Any],
        *,
        timeout: float = 5.0,
        routing_key: str | None = None,
        exchange: str | None = None,
    ) -> Message:
        """Publish a request and return its first valid reply.

        A reply with ``Defer-Response: true`` is kept aside and returned only when no other
        reply arrives before ``timeout``; with no reply at all, :class:`RequestTimeout`.
        The request gets a fresh Msg-ID, so a late reply to an earlier request can never be
        taken for this one's.
        """
        msg_id, pending = self._open_request()
        try:
            self._publish_request(msg, msg_id, routing_key, exchange)
            deadline = _now() + timeout
            deferred: Message | None = None
            seen = 0
            while True:
                replies = pending.replies
                while seen < len(replies):
                    reply = replies[seen]
                    seen += 1
                    if not is_deferred(reply):
                        return reply
                    if deferred is None:
                        deferred = reply
                remaining = deadline - _now()
                if remaining <= 0:
                    break
                pending.event.clear()
                pending.event.wait(remaining)
            if deferred is not None:
                return deferred
            metrics.REQUEST_TIMEOUTS.inc()
            raise RequestTimeout(msg_id, timeout, str(msg.get("Event-Name", "")))
        finally:
            del self._pending[msg_id]

    def collect(
        self,
        msg: Mapping[str, Any],
        *,
        timeout: float = 5.0,
        until: Callable[[list[Message]], bool] | None = None,
        routing_key: str | None = None,
        exchange: str | None = None,
    ) -> list[Message]:
        """Publish a request and gather valid replies until ``timeout`` or until
        ``until(replies_so_far)`` is true (Kazoo's call_collect). May return an empty list."""
        msg_id, pending = self._open_request()
        try:
            self._publish_request(msg, msg_id, routing_key, exchange)
            deadline = _now() + timeout
            while True:
                if until is not None and pending.replies and until(list(pending.replies)):
                    break
                remaining = deadline - _now()
                if remaining <= 0:
                    break
                pending.event.clear()
                pending.event.wait(remaining)
            return list(pending.replies)
        finally:
            del self._pending[msg_id]

    def close(self) -> None:
        """Cancel the consumers, flush what can be flushed and disconnect."""
        if self._closed:
            return
        self._closed = True
        if self._unsolicited_worker is not None:
            self._unsolicited_worker.kill(block=False)
        _live_buses.discard(self)
        if not self._forked:
            self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- for transports ----------------------------------------------------------------
    def _check_usable(self) -> None:
        if self._closed:
            raise BusClosed("the bus is closed")
        if self._forked:
            raise BusClosed("this bus belongs to the parent process: connect() after fork")

    def _open_request(self) -> tuple[str, _PendingRequest]:
        self._check_usable()
        msg_id = new_msg_id()
        while msg_id in self._pending:
            msg_id = new_msg_id()
        pending = _PendingRequest()
        self._pending[msg_id] = pending
        return msg_id, pending

    def _publish_request(
        self,
        msg: Mapping[str, Any],
        msg_id: str,
        routing_key: str | None,
        exchange: str | None,
    ) -> None:
        request = {**msg, "Msg-ID": msg_id, "Server-ID": self._server_id}
        self.publish(request, routing_key=routing_key, exchange=exchange)

    def _reply_consumer(self) -> Consumer:
        """The consumer of this process's Server-ID queue; transports start it once."""
        return Consumer(
            self,
            self._server_id,
            (Binding("targeted", self._server_id),),
            self._on_targeted,
            named=False,
            durable=False,
            on_invalid=None,
        )

    def _on_targeted(self, msg: Message, delivery: Delivery) -> None:
        correlation = msg.get("Msg-Reply-ID") or msg.get("Msg-ID")
        pending = self._pending.get(correlation)  # type: ignore[arg-type]
        if pending is not None:
            pending.add(msg)
            return
        handler = self._targeted_handlers.get((msg["Event-Category"], msg["Event-Name"]))
        if handler is not None:
            self._unsolicited.append((handler, msg, delivery))
            self._unsolicited_wakeup.set()
            if self._unsolicited_worker is None:
                self._unsolicited_worker = gevent.spawn(self._run_unsolicited)
            return
        # A reply that came after its request gave up, or nobody here wants it.
        metrics.DROPPED.labels("unmatched_reply").inc()
        log.debug(
            "dropped targeted %s/%s %s", msg["Event-Category"], msg["Event-Name"], correlation
        )

    def _run_unsolicited(self) -> None:
        queue = self._unsolicited
        while True:
            while queue:
                handler, msg, delivery = queue.popleft()
                try:
                    handler(msg, delivery)
                except Exception:  # noqa: BLE001 - like a consumer callback
                    log.exception("targeted handler failed on %s", msg.get("Event-Name"))
            self._unsolicited_wakeup.clear()
            self._unsolicited_wakeup.wait()

    @abstractmethod
    def _send(
        self, exchange: str, routing_key: str, body: bytes, confirm: bool, timeout: float
    ) -> None: ...

    @abstractmethod
    def _start_consumer(self, consumer: Consumer) -> None: ...

    @abstractmethod
    def _cancel_consumer(self, consumer: Consumer) -> None: ...

    @abstractmethod
    def _add_binding(self, consumer: Consumer, binding: Binding) -> None: ...

    @abstractmethod
    def _remove_binding(self, consumer: Consumer, binding: Binding) -> None: ...

    @abstractmethod
    def _declare_exchange(self, name: str, kind: ExchangeType) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    def _knows_exchange(self, name: str) -> bool:
        """Whether another process declared exchange ``name`` (the registry may know)."""
        return False

    def _release_after_fork(self) -> None:  # noqa: B027 - optional hook, nothing by default
        """In the child of a fork: drop inherited resources without touching the parent's."""


def _now() -> float:
    return time.monotonic()
