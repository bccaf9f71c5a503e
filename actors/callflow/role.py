"""The callflow role process (Kazoo's callflow app)::

    callflow (process)
      executors   ExecutorSupervisor  simple_one_for_one, temporary: one CallflowExecutor per call
      routes      RouteListener       route_req -> park, route_win -> executor
"""

from __future__ import annotations

from typing import Any

from actors.callflow.context import CallEventRouter, CallflowContext
from actors.callflow.lookup import CallflowCache
from actors.callflow.routes import ExecutorSupervisor, RouteListener
from bus import connect
from mirliton.config import Config
from mirliton.roles import RoleProcess
from store import open_store
from supervisors.core import ChildSpec, SupervisorFlags

__all__ = ["CallflowRole"]


class CallflowRole(RoleProcess):
    flags = SupervisorFlags("one_for_one", intensity=5, period=10.0)

    def init_process(self, args: Any) -> None:
        cfg = Config.model_validate(args["config"])
        self.bus = connect(cfg.bus.url, node=cfg.node.name, data_dir=cfg.data_dir)
        self.store = open_store(cfg.store.url, cfg.data_dir)
        self.ctx = CallflowContext(cfg, self.bus, self.store, CallflowCache(self.store),
                                   CallEventRouter(self.bus))
        self.ctx.events.start()
        super().init_process(args)

    def child_specs(self, cfg: Config) -> list[ChildSpec]:
        ctx = self.ctx
        return [
            ChildSpec("executors", lambda: ExecutorSupervisor(ctx), shutdown="infinity",
                      type="supervisor"),
            ChildSpec("routes", lambda: RouteListener(ctx), shutdown=5.0),
        ]

    def terminate_process(self, reason: Any) -> None:
        super().terminate_process(reason)
        try:
            self.bus.close()
        finally:
            self.store.close()
