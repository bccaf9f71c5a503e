"""The ``amqp`` transport: RabbitMQ through pika's gevent connection adapter.

One connection per process (the node creates one bus per process) with two channels: one
for consumers and plain publishes, one in confirm mode for publishes that must not be lost.
pika's callbacks run inside the gevent hub, where nothing may block, so they only resolve
``AsyncResult`` objects and push raw deliveries into consumer inboxes; everything that waits
runs in ordinary greenlets.

Kazoo's exchanges are declared at every (re)connection, with one exclusive auto-delete reply
queue per process, named by this process (so the Server-ID survives a reconnection) and bound
to ``targeted``. A lost connection is re-established with exponential backoff, after which
exchanges, queues, bindings and consumers are declared again and the messages buffered
meanwhile (bounded, oldest dropped first and counted) are sent.

``publish(..., confirm=True)`` publishes persistent and *mandatory* on the confirm channel and
returns once the broker acked it. A message the broker returns as unroutable (its consumers
have not re-declared their queues yet after a restart), nacks, or that was in flight when the
connection dropped is published again until the timeout, so a confirmed message reaches a
queue at least once. To survive a broker restart while waiting in a queue, the consumer's
queue must be durable (``consume(..., queue="name", durable=True)``).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import gevent
import gevent.event
import pika
import pika.exceptions
import pika.spec
from pika.adapters.gevent_connection import GeventConnection

from bus import metrics
from bus.errors import BusError, PublishNotConfirmed
from bus.routing import ExchangeType
from bus.transport import Binding, Bus, Consumer

__all__ = ["AmqpBus"]

log = logging.getLogger("mirliton.bus.amqp")

_PLAIN = pika.BasicProperties(content_type="application/json", delivery_mode=1)
_SETUP_TIMEOUT = 10.0
_PREFETCH = 256
# Outcomes of a confirmed publish.
_ACK, _NACK, _RETURNED, _LOST = "ack", "nack", "returned", "lost"


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _CoalescingGeventConnection(GeventConnection):
    """pika's gevent connection, writing a message's frames (method, header, body) as one
    buffer: pika sends each buffered frame with its own send() system call, three per
    message, which dominated the request/response path on a busy machine."""

    def _output_marshaled_frames(self, marshaled_frames: Sequence[bytes]) -> None:
        if len(marshaled_frames) == 1:
            super()._output_marshaled_frames(marshaled_frames)
            return
        data = b"".join(marshaled_frames)
        self.bytes_sent += len(data)
        self.frames_sent += len(marshaled_frames)
        self._adapter_emit_data(data)


class _ConnectionLost(BusError):
    """The connection dropped while a setup step was waiting for the broker."""


class _ConsumerRefused(BusError):
    """The broker refused a consumer's queue (e.g. redeclared with other properties)."""


# Channel-closing replies that mean "this declaration is wrong", not "the broker is away":
# ACCESS_REFUSED, NOT_FOUND, PRECONDITION_FAILED. Not RESOURCE_LOCKED (405): our private
# queues are exclusive and named by us, so after a network cut the broker may still hold them
# for our previous connection until its heartbeat times out; that passes with a retry.
_REFUSALS = (403, 404, 406)


class AmqpBus(Bus):
    """The bus on RabbitMQ (see the module docstring). ``url`` may list several brokers of
    one cluster, comma-separated; connections go round them."""

    transport = "amqp"

    def __init__(
        self,
        url: str,
        *,
        node: str,
        buffer_limit: int = 10_000,
        connect_timeout: float = 10.0,
        max_backoff: float = 5.0,
    ) -> None:
        super().__init__(node=node)
        # Several brokers of one cluster, comma-separated: each (re)connection tries the next,
        # so losing one node of the RabbitMQ cluster only costs a reconnection.
        urls = [part.strip() for part in url.split(",") if part.strip()]
        self.url = ",".join(_redact(u) for u in urls)
        self._brokers = [pika.URLParameters(u) for u in urls]
        self._broker_turn = 0
        self._buffer_limit = buffer_limit
        self._max_backoff = max_backoff
        self._consumers: list[Consumer] = []
        self._consumer_tags: dict[int, str] = {}
        self._connection: GeventConnection | None = None
        self._channel: Any = None
        self._confirm_channel: Any = None
        self._generation = 0
        self._ready = gevent.event.Event()
        self._connection_closed = gevent.event.Event()
        self._buffer: deque[tuple[str, str, bytes]] = deque()
        self._confirms: dict[int, gevent.event.AsyncResult] = {}
        self._returned: set[int] = set()
        self._next_tag = 0
        self._last_error: BaseException | None = None
        self._channel_error: BaseException | None = None
        self._runner = gevent.spawn(self._run)
        if not self._ready.wait(connect_timeout):
            error = self._last_error
            self.close()
            raise BusError(f"cannot connect to {self.url} within {connect_timeout}s: {error}")

    def __repr__(self) -> str:
        return f"<AmqpBus {self.url} {self.server_id}>"

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    # --- connection lifecycle -------------------------------------------------------------
    def _run(self) -> None:
        delay = 0.2
        connected_before = False
        while not self._closed:
            try:
                self._connect_and_declare()
            except (Exception, gevent.Timeout) as exc:  # noqa: BLE001 - any failure: retry
                self._last_error = exc
                log.warning("bus: cannot connect to %s: %s (retry in %.1fs)", self.url, exc, delay)
                self._abandon_connection()
                gevent.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._max_backoff)
                continue
            if connected_before:
                metrics.RECONNECTS.inc()
                log.info("bus: reconnected to %s", self.url)
            connected_before = True
            delay = 0.2
            self._connection_closed.wait()
            self._ready.clear()
            self._fail_in_flight()

    def _connect_and_declare(self) -> None:
        self._connection_closed.clear()
        opened: gevent.event.AsyncResult = gevent.event.AsyncResult()

        def on_open_error(_connection: Any, error: BaseException | str) -> None:
            opened.set_exception(
                error if isinstance(error, BaseException) else BusError(str(error))
            )

        parameters = self._brokers[self._broker_turn % len(self._brokers)]
        self._broker_turn += 1
        self._connection = _CoalescingGeventConnection(
            parameters,
            on_open_callback=opened.set,
            on_open_error_callback=on_open_error,
            on_close_callback=self._on_connection_closed,
        )
        connection = opened.get(timeout=_SETUP_TIMEOUT)
        self._generation += 1
        generation = self._generation
        channel = self._wait(lambda done: connection.channel(on_open_callback=done))
        channel.add_on_close_callback(functools.partial(self._on_channel_closed, generation))
        confirm_channel = self._wait(lambda done: connection.channel(on_open_callback=done))
        confirm_channel.add_on_close_callback(
            functools.partial(self._on_channel_closed, generation)
        )
        self._wait(lambda done: confirm_channel.confirm_delivery(self._on_confirm, callback=done))
        confirm_channel.add_on_return_callback(functools.partial(self._on_return, generation))
        self._wait(lambda done: channel.basic_qos(prefetch_count=_PREFETCH, callback=done))
        self._channel = channel
        self._confirm_channel = confirm_channel
        self._next_tag = 0
        for name, kind in list(self._exchanges.items()):
            self._declare_on(channel, name, kind)
        if not any(c.queue == self.server_id for c in self._consumers):
            self._consumers.insert(0, self._reply_consumer())
        index = 0
        # Indexing, not iterating: consumers added while this runs are set up here too.
        while index < len(self._consumers):
            consumer = self._consumers[index]
            try:
                self._setup_consumer(consumer, generation)
            except _ConsumerRefused as refused:
                # Dropped, or every reconnection would fail on it again.
                log.error("bus: consumer %s dropped: %s", consumer.queue, refused)
                self._consumers.remove(consumer)
                consumer.active = False
                raise
            index += 1
        # Nothing below yields, so buffered messages go out before any newer publish.
        while self._buffer:
            exchange, routing_key, body = self._buffer.popleft()
            channel.basic_publish(exchange, routing_key, body, _PLAIN)
        metrics.BUFFERED.set(0)
        self._ready.set()

    def _wait(self, start: Callable[[Callable[..., None]], Any]) -> Any:
        """Start an asynchronous pika operation and wait for its completion callback."""
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        start(lambda *args: result.set(args[0] if args else None))
        self._await(result)
        return result.get()

    def _await(self, result: gevent.event.AsyncResult) -> None:
        gevent.wait([result, self._connection_closed], timeout=_SETUP_TIMEOUT, count=1)
        if result.ready():
            return
        connection = self._connection
        if not self._connection_closed.is_set() and connection is not None and connection.is_open:
            # The broker stayed silent: start over from a clean connection, which declares
            # everything again, rather than go on with a half-made setup.
            log.error("bus: no answer from %s in %ss; reconnecting", self.url, _SETUP_TIMEOUT)
            self._ready.clear()
            connection.close()
        raise _ConnectionLost("connection lost or broker silent during setup")

    def _declare_on(self, channel: Any, name: str, kind: ExchangeType) -> None:
        self._wait(
            lambda done: channel.exchange_declare(
                exchange=name, exchange_type=kind, durable=True, callback=done
            )
        )

    def _setup_consumer(self, consumer: Consumer, generation: int) -> None:
        self._channel_error = None
        try:
            self._declare_and_consume(consumer, generation)
        except _ConnectionLost:
            error = self._channel_error
            if (
                isinstance(error, pika.exceptions.ChannelClosedByBroker)
                and error.reply_code in _REFUSALS
            ):
                raise _ConsumerRefused(
                    f"queue {consumer.queue!r}: {error.reply_code} {error.reply_text}"
                ) from None
            raise

    def _declare_and_consume(self, consumer: Consumer, generation: int) -> None:
        channel = self._channel
        private = not consumer.named
        self._wait(
            lambda done: channel.queue_declare(
                queue=consumer.queue,
                durable=consumer.durable,
                exclusive=private,
                auto_delete=not consumer.durable,
                callback=done,
            )
        )
        bound: set[Binding] = set()
        self._bind_missing(channel, consumer, bound)
        on_message = functools.partial(self._on_message, consumer, generation)
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        tag = channel.basic_consume(
            consumer.queue,
            on_message,
            auto_ack=not consumer.durable,
            callback=lambda *_: result.set(True),
        )
        self._await(result)
        # add_binding/remove_binding calls made while this ran were only recorded (no tag
        # yet): catch up, then publish the tag with no yield in between.
        self._bind_missing(channel, consumer, bound)
        for binding in bound - set(consumer.bindings):
            self._unbind(channel, consumer.queue, binding)
        self._bind_missing(channel, consumer, bound)
        self._consumer_tags[id(consumer)] = tag

    def _bind_missing(self, channel: Any, consumer: Consumer, bound: set[Binding]) -> None:
        index = 0
        while index < len(consumer.bindings):
            binding = consumer.bindings[index]
            if binding not in bound:
                self._bind(channel, consumer.queue, binding)
                bound.add(binding)
            index += 1

    def _bind(self, channel: Any, queue: str, binding: Binding) -> None:
        self._wait(
            lambda done: channel.queue_bind(
                queue, binding.exchange, routing_key=binding.routing_key, callback=done
            )
        )

    def _unbind(self, channel: Any, queue: str, binding: Binding) -> None:
        self._wait(
            lambda done: channel.queue_unbind(
                queue, binding.exchange, routing_key=binding.routing_key, callback=done
            )
        )

    def _abandon_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._confirm_channel = None
        if connection is not None and not (connection.is_closed or connection.is_closing):
            try:
                connection.close()
            except Exception:  # noqa: BLE001
                log.debug("closing a failed connection", exc_info=True)

    # --- pika callbacks (run in the gevent hub: they must never block) -------------------
    def _on_connection_closed(self, _connection: Any, reason: BaseException) -> None:
        if not self._closed:
            log.warning("bus: connection to %s lost: %s", self.url, reason)
        self._ready.clear()
        self._connection_closed.set()

    def _on_channel_closed(self, generation: int, _channel: Any, reason: BaseException) -> None:
        if self._closed or generation != self._generation:
            return
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            # The first broker refusal explains the setup failure; later closes of the other
            # channel (by us, with the connection) do not.
            self._channel_error = self._channel_error or reason
        connection = self._connection
        if connection is not None and connection.is_open:
            # A channel closed by the broker (e.g. a queue declared with other arguments)
            # leaves the connection half-usable: start over from a clean connection.
            log.error("bus: channel closed by broker (%s); reconnecting", reason)
            self._ready.clear()
            connection.close()

    def _on_message(
        self,
        consumer: Consumer,
        generation: int,
        channel: Any,
        method: pika.spec.Basic.Deliver,
        _properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        ack: Callable[[], None] | None = None
        if consumer.durable:
            tag = method.delivery_tag
            ack = functools.partial(self._ack, generation, channel, tag)
        consumer.push(method.exchange, method.routing_key, body, method.redelivered, ack)

    def _ack(self, generation: int, channel: Any, tag: int) -> None:
        # A tag belongs to the channel that delivered it: after a reconnection the broker
        # redelivers the message and the old tag must not be acked on the new channel.
        if generation == self._generation and channel.is_open:
            channel.basic_ack(tag)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        outcome = _ACK if isinstance(method, pika.spec.Basic.Ack) else _NACK
        last = method.delivery_tag
        if method.multiple:
            tags = [tag for tag in self._confirms if tag <= last]
        else:
            tags = [last]
        for tag in tags:
            result = self._confirms.pop(tag, None)
            returned = tag in self._returned
            self._returned.discard(tag)
            if result is not None:
                result.set(_RETURNED if returned else outcome)

    def _on_return(
        self, generation: int, _channel: Any, _method: Any, properties: Any, _body: bytes
    ) -> None:
        # basic.return comes before the ack of the same message (AMQP 0-9-1).
        gen, _, tag = str(properties.message_id or "").partition(":")
        if gen == str(generation) and tag.isdigit():
            self._returned.add(int(tag))

    def _fail_in_flight(self) -> None:
        confirms, self._confirms = self._confirms, {}
        self._returned.clear()
        for result in confirms.values():
            result.set(_LOST)

    # --- the transport interface ---------------------------------------------------------
    def _send(
        self, exchange: str, routing_key: str, body: bytes, confirm: bool, timeout: float
    ) -> None:
        if confirm:
            self._send_confirmed(exchange, routing_key, body, timeout)
            return
        if self._ready.is_set() and not self._buffer:
            try:
                self._channel.basic_publish(exchange, routing_key, body, _PLAIN)
                return
            except (pika.exceptions.AMQPError, AttributeError) as exc:
                log.debug("bus: publish failed, buffering: %s", exc)
        if len(self._buffer) >= self._buffer_limit:
            self._buffer.popleft()
            metrics.DROPPED.labels("buffer_full").inc()
        self._buffer.append((exchange, routing_key, body))
        metrics.BUFFERED.set(len(self._buffer))

    def _send_confirmed(self, exchange: str, routing_key: str, body: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pause = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._ready.wait(remaining):
                raise PublishNotConfirmed(
                    f"{exchange}/{routing_key} not confirmed by {self.url} within {timeout}s"
                )
            self._next_tag += 1
            tag = self._next_tag
            result: gevent.event.AsyncResult = gevent.event.AsyncResult()
            properties = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                message_id=f"{self._generation}:{tag}",
            )
            self._confirms[tag] = result
            try:
                self._confirm_channel.basic_publish(
                    exchange, routing_key, body, properties, mandatory=True
                )
            except (pika.exceptions.AMQPError, AttributeError) as exc:
                # Not sent, so no delivery tag was used.
                self._confirms.pop(tag, None)
                self._next_tag -= 1
                log.debug("bus: confirmed publish failed, retrying: %s", exc)
                gevent.sleep(pause)
                continue
            try:
                outcome = result.get(timeout=max(0.0, deadline - time.monotonic()))
            except gevent.Timeout:
                self._confirms.pop(tag, None)
                raise PublishNotConfirmed(
                    f"{exchange}/{routing_key} not confirmed by {self.url} within {timeout}s"
                ) from None
            if outcome == _ACK:
                return
            # Returned (no queue bound yet), nacked or lost with the connection: again.
            gevent.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _start_consumer(self, consumer: Consumer) -> None:
        self._consumers.append(consumer)
        if self._ready.is_set():
            try:
                self._setup_consumer(consumer, self._generation)
            except _ConsumerRefused as refused:
                if consumer in self._consumers:
                    self._consumers.remove(consumer)
                raise BusError(str(refused)) from None
            except _ConnectionLost:
                # The reconnection declares it (it is in self._consumers).
                log.info("bus: consumer %s will start on reconnection", consumer.queue)

    def _add_binding(self, consumer: Consumer, binding: Binding) -> None:
        # Recorded in consumer.bindings first: a reconnection binds it if this one is lost.
        if self._ready.is_set() and id(consumer) in self._consumer_tags:
            try:
                self._bind(self._channel, consumer.queue, binding)
            except _ConnectionLost:
                log.info("bus: binding %s will be made on reconnection", binding)

    def _remove_binding(self, consumer: Consumer, binding: Binding) -> None:
        if self._ready.is_set() and id(consumer) in self._consumer_tags:
            try:
                self._unbind(self._channel, consumer.queue, binding)
            except _ConnectionLost:
                log.info("bus: %s is unbound by the reconnection", binding)

    def _cancel_consumer(self, consumer: Consumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)
        tag = self._consumer_tags.pop(id(consumer), None)
        if tag is not None and self._ready.is_set():
            try:
                self._channel.basic_cancel(tag)
            except pika.exceptions.AMQPError:
                log.debug("basic_cancel failed", exc_info=True)

    def _declare_exchange(self, name: str, kind: ExchangeType) -> None:
        if self._ready.is_set():
            self._declare_on(self._channel, name, kind)

    def _close(self) -> None:
        for consumer in list(self._consumers):
            consumer.active = False
            consumer._greenlet.kill(block=False)
        self._consumers.clear()
        self._ready.clear()
        connection = self._connection
        if connection is not None and not (connection.is_closed or connection.is_closing):
            connection.close()
            self._connection_closed.wait(2.0)
        self._runner.kill(block=False)
        if self._buffer:
            # Closed while the broker was away: what waited for it is lost, and counted.
            metrics.DROPPED.labels("closed").inc(len(self._buffer))
            self._buffer.clear()
        metrics.BUFFERED.set(0)
