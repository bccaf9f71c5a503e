"""The ops role: ``/metrics`` for every process of the node, ``/livez``, ``/readyz``, ``/status``.

Metrics come from prometheus_client's multiprocess mode: each process of the node writes its
series to ``data_dir/run/metrics`` and this role aggregates them per scrape. Per-role memory
and CPU are read from /proc for the pids in the supervision tree at scrape time, so they are
true even for a process that cannot report on itself.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric

import mirliton
from mirliton.config import parse_hostport
from mirliton.roles import RoleProcess
from mirliton.status import assemble_tree, node_status, pid_alive

__all__ = ["OpsRole", "make_ops_app"]

log = logging.getLogger("mirliton.ops")

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _walk(tree: dict[str, Any] | None, path: str = "root") -> Iterator[tuple[str, dict[str, Any]]]:
    if not tree:
        return
    yield path, tree
    for child in tree.get("children", []):
        child_path = f"{path}.{child['id']}"
        if child.get("kind") == "supervisor":
            yield from _walk(child, child_path)
        else:
            yield child_path, child


def _proc_figures(pid: int) -> tuple[float, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime
    return cpu, rss_pages * _PAGE


class _NodeCollector:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def collect(self) -> Iterable[Metric]:
        build = GaugeMetricFamily("mirliton_build_info", "Version of the running node.",
                                  labels=["version", "python"])
        build.add_metric([mirliton.__version__, platform.python_version()], 1)
        yield build
        mem = GaugeMetricFamily("mirliton_process_resident_memory_bytes",
                                "Resident memory of each process of the node.", labels=["role"])
        cpu = GaugeMetricFamily("mirliton_process_cpu_seconds",
                                "CPU time used by each process of the node since it started.",
                                labels=["role"])
        up = GaugeMetricFamily("mirliton_process_up",
                               "1 when the process of a role is alive, 0 when it is down.",
                               labels=["role"])
        procs = 0
        tree = assemble_tree(self.run_dir)
        for path, node in _walk(tree):
            pid = node.get("pid")
            alive = pid_alive(pid)
            up.add_metric([path], 1 if alive else 0)
            figures = _proc_figures(pid) if alive and pid else None
            if figures is not None:
                procs += 1
                cpu.add_metric([path], figures[0])
                mem.add_metric([path], figures[1])
        yield mem
        yield cpu
        yield up
        count = GaugeMetricFamily("mirliton_process_actors", "Live process actors of the node.")
        count.add_metric([], procs)
        yield count


def make_ops_app(run_dir: Path, metrics_dir: Path | None) -> Callable[..., Any]:
    registry = CollectorRegistry()
    if metrics_dir is not None:
        multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))
    registry.register(_NodeCollector(run_dir))

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _send(start_response, "405 Method Not Allowed", {"error": "method not allowed"})
        if path == "/metrics":
            body = generate_latest(registry)
            start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])
            return [body]
        if path == "/livez":
            return _send(start_response, "200 OK", {"status": "ok"})
        if path in ("/readyz", "/status"):
            code, status = node_status(run_dir)
            if path == "/readyz":
                ready = code == 0
                return _send(start_response, "200 OK" if ready else "503 Service Unavailable",
                             {"status": "ready" if ready else status.get("state")})
            return _send(start_response, "200 OK", status)
        return _send(start_response, "404 Not Found", {"error": "not found"})

    return app


def _send(start_response: Callable[..., Any], status: str, data: Any) -> list[bytes]:
    body = json.dumps(data, default=str).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


class OpsRole(RoleProcess):
    def init_process(self, args: Any) -> None:
        super().init_process(args)
        host, port = parse_hostport(self.config.ops.listen)
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        app = make_ops_app(Path(self.run_dir), Path(metrics_dir) if metrics_dir else None)
        self.server = WSGIServer((host, port), app, log=None, error_log=log)
        self.server.start()  # binds now: a port in use fails the start, visibly
        log.info("ops endpoints on http://%s:%d", host, port)

    def terminate_process(self, reason: Any) -> None:
        self.server.stop(timeout=2)
        super().terminate_process(reason)
