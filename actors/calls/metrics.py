"""Prometheus series of the calls shards (scraped through the ops role's /metrics).

No per-call labels: ``result`` of an attempt is one of answered, failed, cancelled,
no_route, error.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["CALLS_ACTIVE", "CALL_ATTEMPTS", "CALL_SETUP_SECONDS", "ROUTE_REQ_SECONDS"]

CALLS_ACTIVE = Gauge(
    "mirliton_calls_active",
    "Call legs (A and B) alive in the calls shards.",
    multiprocess_mode="livesum",
)
CALL_ATTEMPTS = Counter(
    "mirliton_call_attempts",
    "Inbound call attempts (A-legs) by result: answered, failed, cancelled, no_route, error.",
    ["result"],
)
CALL_SETUP_SECONDS = Histogram(
    "mirliton_call_setup_seconds",
    "From the INVITE reaching a shard to its A-leg being answered.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ROUTE_REQ_SECONDS = Histogram(
    "mirliton_route_req_seconds",
    "From route_req published to the winning route_resp (or the timeout).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3),
)
