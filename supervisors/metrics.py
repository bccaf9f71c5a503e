"""Supervision metrics. In a node every process writes them to the shared multiprocess
directory (PROMETHEUS_MULTIPROC_DIR) and the ops endpoint aggregates them."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["record_restart", "RESTARTS"]

RESTARTS = Counter(
    "mirliton_supervisor_restarts_total",
    "Children restarted by their supervisor, after a crash or an exit their policy restarts.",
    ["supervisor", "child"],
)


def record_restart(supervisor: str, child: str) -> None:
    RESTARTS.labels(supervisor=supervisor, child=child).inc()
