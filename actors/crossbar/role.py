"""The ``crossbar`` role: one process serving the REST API on ``http.listen``.

The process runs an in-process supervisor with one lightweight actor, ``http``, that owns the
store connection, the bus connection and the gevent WSGI server. When it crashes, its
supervisor starts a fresh one (new connections, same port); when the supervisor gives up, the
role process exits and the node restarts it.

The actor also listens to the bus for changes of account documents (``doc_*`` of type
``account``), so that an account disabled or moved through another node's API is seen here
without waiting for the account cache to expire.
"""

from __future__ import annotations

import logging
from typing import Any

from gevent.pywsgi import WSGIServer

from actors.crossbar.app import CrossbarApp, make_app
from actors.crossbar.live import nodes_running
from actors.crossbar.notifier import BusNotifier, follow_changes
from actors.crossbar.server import make_server
from actors.kernel import Actor
from bus import Bus, connect
from mirliton.config import Config, parse_hostport
from mirliton.roles import RoleProcess
from store import Store, open_store
from supervisors.core import ChildSpec

__all__ = ["CrossbarRole", "HttpServer"]

log = logging.getLogger("mirliton.crossbar")


class HttpServer(Actor):
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store: Store | None = None
        self.bus: Bus | None = None
        self.server: WSGIServer | None = None

    def init(self) -> None:
        cfg = self.config
        self.store = open_store(cfg.store.url, cfg.node.data_dir)
        self.bus = connect(cfg.bus.url, node=cfg.node.name, data_dir=cfg.node.data_dir)
        self.app: CrossbarApp = make_app(
            self.store, bus=self.bus, live_responders=nodes_running(cfg.run_dir / "nodes.json")
        )
        follow_changes(self.bus, self.app.service.cache.forget)
        host, port = parse_hostport(cfg.http.listen)
        self.server = make_server(self.app, host, port)
        self.server.start()  # binds now: a port in use fails the start, visibly
        log.info("crossbar API on http://%s:%d/v2", host, port)

    def terminate(self, reason: Any) -> None:
        if self.server is not None:
            self.server.stop(timeout=2)
        if hasattr(self, "app"):
            self.app.service.close()
        notifier = self.app.service.notifier if hasattr(self, "app") else None
        if isinstance(notifier, BusNotifier):
            notifier.close()  # what was written before the stop is still announced
        if self.bus is not None:
            self.bus.close()
        if self.store is not None:
            self.store.close()


class CrossbarRole(RoleProcess):
    def child_specs(self, cfg: Config) -> list[ChildSpec]:
        return [ChildSpec("http", start=lambda: HttpServer(cfg), restart="permanent", shutdown=5.0)]
