"""RabbitMQ restarted (stop_app / start_app) under a stream of confirmed publishes."""

from __future__ import annotations

import shutil
import time
import uuid
from typing import Any

import gevent
import gevent.event
import gevent.subprocess
import pytest

from bus import Binding, BusError, PublishNotConfirmed, connect, metrics
from bus.amqp import AmqpBus
from bus.api import call

pytestmark = [pytest.mark.amqp, pytest.mark.slow]


def _rabbitmqctl(*args: str) -> None:
    gevent.subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def _wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.05)
    return True


def test_confirmed_messages_survive_a_broker_restart(amqp_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is needed to restart the broker")
    unique = uuid.uuid4().hex[:8]
    publisher = connect(amqp_url, node="publisher")
    subscriber = connect(amqp_url, node="subscriber")
    assert isinstance(publisher, AmqpBus) and isinstance(subscriber, AmqpBus)
    received: list[int] = []
    subscriber.consume(
        [Binding("callevt", "call.CHANNEL_DESTROY.*")],
        lambda msg, _d: (
            msg["Call-ID"].startswith(unique)
            and received.append(int(msg["Call-ID"].rsplit("-", 1)[1]))
        ),
        queue=f"cdr-{unique}",
        durable=True,
    )
    # A private (exclusive, auto-delete) queue dies with the broker's state; it must be
    # declared again by the reconnection.
    private: list[str] = []
    subscriber.consume(
        [Binding("callevt", f"call.CHANNEL_CREATE.{unique}")],
        lambda msg, _d: private.append(msg["Call-ID"]),
    )
    reconnects_before = metrics.RECONNECTS._value.get()
    confirmed: list[int] = []
    not_confirmed: list[int] = []
    stop = gevent.event.Event()

    def stream() -> None:
        number = 0
        while not stop.is_set():
            message = call.call_event["CHANNEL_DESTROY"].build(
                call_id=f"{unique}-{number}", hangup_cause="NORMAL_CLEARING"
            )
            try:
                publisher.publish(message, confirm=True, timeout=60)
                confirmed.append(number)
            except PublishNotConfirmed:
                not_confirmed.append(number)
            number += 1
            gevent.sleep(0.002)

    streamer = gevent.spawn(stream)
    restarted_at = 0
    try:
        assert _wait_for(lambda: len(confirmed) >= 200, 20)
        _rabbitmqctl("stop_app")
        assert not publisher.connected or _wait_for(lambda: not publisher.connected, 10)
        gevent.sleep(1.0)
    finally:
        _rabbitmqctl("start_app")
    try:
        restarted_at = len(confirmed) + len(not_confirmed)
        assert _wait_for(lambda: publisher.connected and subscriber.connected, 60)
        # The stream goes on over the new connection.
        assert _wait_for(lambda: len(confirmed) >= restarted_at + 200, 30)
    finally:
        stop.set()
        streamer.join(timeout=70)
    assert not_confirmed == []
    # Every confirmed message reached the consumer at least once, the ones confirmed after
    # the restart included: the consumer resumed in this same process.
    assert _wait_for(lambda: set(confirmed) <= set(received), 30), (
        f"missing {sorted(set(confirmed) - set(received))[:20]}"
    )
    assert max(received) >= restarted_at + 199
    # Mandatory + confirm: accepted only once the private queue exists again.
    publisher.publish(
        call.call_event["CHANNEL_CREATE"].build(call_id=unique), confirm=True, timeout=30
    )
    assert _wait_for(lambda: private == [unique], 10)
    assert metrics.RECONNECTS._value.get() >= reconnects_before + 2
    publisher.close()
    subscriber.close()


def test_plain_publishes_are_buffered_while_disconnected(amqp_url: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is needed to restart the broker")
    unique = uuid.uuid4().hex[:8]
    publisher = connect(amqp_url, node="publisher", buffer_limit=5)
    subscriber = connect(amqp_url, node="subscriber")
    assert isinstance(publisher, AmqpBus) and isinstance(subscriber, AmqpBus)
    received: list[str] = []
    subscriber.consume(
        [Binding("callevt", f"call.*.{unique}")],
        lambda msg, _d: received.append(msg["Event-Name"]),
        queue=f"buffered-{unique}",
        durable=True,
    )
    dropped_before = metrics.DROPPED.labels("buffer_full")._value.get()
    try:
        _rabbitmqctl("stop_app")
        assert _wait_for(lambda: not publisher.connected, 10)
        for name in (
            "CHANNEL_CREATE",
            "CHANNEL_PROGRESS",
            "CHANNEL_ANSWER",
            "CHANNEL_BRIDGE",
            "CHANNEL_UNBRIDGE",
            "CHANNEL_HOLD",
            "CHANNEL_DESTROY",
        ):
            fields = {"Other-Leg-Call-ID": "b"} if name == "CHANNEL_BRIDGE" else {}
            publisher.publish(call.call_event[name].build(fields, call_id=unique))
        assert metrics.BUFFERED._value.get() == 5
    finally:
        _rabbitmqctl("start_app")
    assert _wait_for(lambda: publisher.connected and subscriber.connected, 60)
    # The two oldest were dropped (bounded buffer), the rest went out in order.
    assert _wait_for(lambda: len(received) >= 5, 20)
    assert received == [
        "CHANNEL_ANSWER",
        "CHANNEL_BRIDGE",
        "CHANNEL_UNBRIDGE",
        "CHANNEL_HOLD",
        "CHANNEL_DESTROY",
    ]
    assert metrics.DROPPED.labels("buffer_full")._value.get() == dropped_before + 2
    assert metrics.BUFFERED._value.get() == 0
    publisher.close()
    subscriber.close()


def test_a_refused_queue_fails_its_consume_and_nothing_else(amqp_url: str) -> None:
    unique = uuid.uuid4().hex[:8]
    first = connect(amqp_url, node="first")
    second = connect(amqp_url, node="second")
    got: list[str] = []
    first.consume(
        [Binding("callevt", f"call.*.{unique}")],
        lambda msg, _d: got.append(msg["Event-Name"]),
        queue=f"q-{unique}",
        durable=True,
    )
    # The same queue name as a non-durable queue: RabbitMQ refuses (PRECONDITION_FAILED).
    with pytest.raises(BusError) as refused:
        second.consume([Binding("callevt", "#")], lambda m, d: None, queue=f"q-{unique}")
    assert "406" in str(refused.value)
    assert _wait_for(lambda: second.connected, 10)
    # Both connections still work: second publishes, first consumes.
    second.publish(call.call_event["CHANNEL_CREATE"].build(call_id=unique), confirm=True)
    assert _wait_for(lambda: got == ["CHANNEL_CREATE"], 10)
    first.close()
    second.close()


def test_several_brokers_in_the_url(amqp_url: str) -> None:
    """bus.url may list the brokers of a cluster; an unreachable one is skipped."""
    unreachable = amqp_url.replace(":5672", ":1") if ":5672" in amqp_url else None
    if unreachable is None:
        pytest.skip("the test URL names no port to replace")
    bus = connect(f"{unreachable},{amqp_url}", node="cluster", connect_timeout=15)
    try:
        assert isinstance(bus, AmqpBus) and bus.connected
        assert "***" in bus.url or "@" not in bus.url  # passwords never shown
        got: list[str] = []
        unique = uuid.uuid4().hex[:8]
        bus.consume([Binding("callevt", f"call.*.{unique}")], lambda m, d: got.append(m["Call-ID"]))
        bus.publish(call.call_event["CHANNEL_CREATE"].build(call_id=unique), confirm=True)
        assert _wait_for(lambda: got == [unique], 10)
    finally:
        bus.close()
