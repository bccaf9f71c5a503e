"""Prometheus metrics of the bus.

Defined with prometheus_client so that the node can aggregate every process with its
multiprocess mode (PROMETHEUS_MULTIPROC_DIR); gauges therefore declare how they combine.
Labels stay bounded: an exchange name and an Event-Name, never a call or a user.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = [
    "BUFFERED",
    "CONSUMED",
    "DROPPED",
    "PUBLISHED",
    "RECONNECTS",
    "REQUEST_TIMEOUTS",
    "count_consumed",
    "count_published",
]

PUBLISHED = Counter(
    "mirliton_bus_published_total",
    "Messages published on the bus, by exchange and Event-Name.",
    ["exchange", "event"],
)
CONSUMED = Counter(
    "mirliton_bus_consumed_total",
    "Valid messages handed to consumers, by exchange and Event-Name.",
    ["exchange", "event"],
)
REQUEST_TIMEOUTS = Counter(
    "mirliton_bus_request_timeouts_total",
    "Requests that got no valid reply before their timeout.",
)
RECONNECTS = Counter(
    "mirliton_bus_reconnects_total",
    "Connections to the broker re-established after a loss.",
)
BUFFERED = Gauge(
    "mirliton_bus_buffered_messages",
    "Outgoing messages held while the broker is unreachable.",
    multiprocess_mode="livesum",
)
DROPPED = Counter(
    "mirliton_bus_dropped_total",
    "Messages dropped, by reason (buffer_full, invalid, unmatched_reply, no_consumer,"
    " peer_gone, peer_backlog, closed).",
    ["reason"],
)

# labels() takes a lock and hashes a tuple each time; a message path calls it per message.
_published_children: dict[tuple[str, str], Counter] = {}
_consumed_children: dict[tuple[str, str], Counter] = {}


def count_published(exchange: str, event: str) -> None:
    key = (exchange, event)
    child = _published_children.get(key)
    if child is None:
        child = _published_children[key] = PUBLISHED.labels(exchange, event)
    child.inc()


def count_consumed(exchange: str, event: str) -> None:
    key = (exchange, event)
    child = _consumed_children.get(key)
    if child is None:
        child = _consumed_children[key] = CONSUMED.labels(exchange, event)
    child.inc()
