"""HTTP metrics of the API. ``route`` is the route template (``/v2/accounts/{account_id}/devices``),
never the raw path, so the label set stays bounded whatever ids clients send; requests that
match no route count under ``route="unmatched"``. In a node, prometheus_client's multiprocess
mode writes these to the node's metrics directory and the ops role aggregates them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["REQUESTS", "REQUEST_DURATION", "UNMATCHED_ROUTE", "observe"]

UNMATCHED_ROUTE = "unmatched"

REQUESTS = Counter(
    "mirliton_http_requests_total",
    "HTTP requests answered by the REST API, by route template, method and status code.",
    ["route", "method", "code"],
)
REQUEST_DURATION = Histogram(
    "mirliton_http_request_duration_seconds",
    "Time to answer an HTTP request of the REST API, by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def observe(route: str | None, method: str, code: int, seconds: float) -> None:
    template = route or UNMATCHED_ROUTE
    REQUESTS.labels(template, method, str(code)).inc()
    REQUEST_DURATION.labels(template, method).observe(seconds)
