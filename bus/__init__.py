"""The message bus: Kazoo's JSON message contract over RabbitMQ (``amqp``) or, on a single
node with no broker, over Unix sockets between the node's processes (``local``).

    bus = connect(config.bus.url, node=config.node.name, data_dir=config.node.data_dir)
    bus.publish(route_req.build(call_id=..., ...))
    reply = bus.request(authn_req.build(...), timeout=2.0)
    consumer = bus.consume([Binding("callevt", "call.*.abc")], on_event)

Listeners with responders (Kazoo's gen_listener) are in :mod:`bus.listener`, node heartbeats
(kz_nodes) in :mod:`bus.nodes`, message types in :mod:`bus.api`.
"""

from __future__ import annotations

from pathlib import Path

from bus import api
from bus.errors import (
    BusClosed,
    BusError,
    BusValidationError,
    PublishNotConfirmed,
    RequestTimeout,
)
from bus.messages import Message, MessageType, lookup, message_type, validate_message
from bus.routing import EXCHANGES
from bus.transport import Binding, Bus, Consumer, Delivery

__all__ = [
    "EXCHANGES",
    "Binding",
    "Bus",
    "BusClosed",
    "BusError",
    "BusValidationError",
    "Consumer",
    "Delivery",
    "Message",
    "MessageType",
    "PublishNotConfirmed",
    "RequestTimeout",
    "api",
    "connect",
    "lookup",
    "message_type",
    "validate_message",
]


def connect(
    url: str,
    *,
    node: str,
    data_dir: Path | str | None = None,
    connect_timeout: float = 10.0,
    buffer_limit: int = 10_000,
) -> Bus:
    """Connect this process to the bus named by the config value ``bus.url``.

    ``local`` needs ``data_dir`` (the node's, shared by its processes); ``amqp://...`` waits
    up to ``connect_timeout`` for the broker and raises :class:`BusError` if it is
    unreachable. Call it in each process, after any fork.
    """
    if url == "local" or url.startswith("local:"):
        if data_dir is None:
            raise BusError("the local bus needs the node's data_dir")
        from bus.local import LocalBus

        return LocalBus(node=node, data_dir=data_dir)
    if url.startswith(("amqp://", "amqps://")):
        from bus.amqp import AmqpBus

        return AmqpBus(url, node=node, connect_timeout=connect_timeout, buffer_limit=buffer_limit)
    raise BusError(f"unknown bus url {url!r}: expected 'local' or 'amqp://user:pass@host/vhost'")
