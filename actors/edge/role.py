"""The edge role process (Kazoo's Kamailio): one OS process owning the node's SIP port.

Its tree of lightweight actors, started in this order (one_for_one)::

    edge (process)
      binding_writer   BindingWriter          write-through of bindings, group commit
      registrations    RegistrationSupervisor simple_one_for_one: one RegistrationActor per AOR,
                                              restored from the store at start
      bus              EdgeBusListener        reg_query, reg_flush, listing, cache invalidation
      sip              CallDispatchingSipActor UDP/TCP listeners, guards, transactions, auth,
                                              calls relayed to the calls shards (dispatch.py)

The SIP listeners open last, once the registrations are restored: a phone that reaches a
restarted edge finds its binding already there.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from actors.edge.context import EdgeContext
from actors.edge.dispatch import CallDispatchingSipActor
from actors.edge.listener import EdgeBusListener
from actors.edge.persistence import BindingWriter
from actors.edge.registrations import RegistrationSupervisor
from bus import connect
from mirliton.config import Config
from mirliton.roles import RoleProcess
from store import open_store
from supervisors.core import ChildSpec, SupervisorFlags

__all__ = ["EdgeRole"]

log = logging.getLogger("mirliton.edge")

GC_THRESHOLDS = (50_000, 20, 100)


class EdgeRole(RoleProcess):
    flags = SupervisorFlags("one_for_one", intensity=5, period=10.0)

    def init_process(self, args: Any) -> None:
        cfg = Config.model_validate(args["config"])
        self.bus = connect(cfg.bus.url, node=cfg.node.name, data_dir=cfg.data_dir)
        self.store = open_store(cfg.store.url, cfg.data_dir)
        self.ctx = EdgeContext.create(cfg, self.bus, self.store)
        super().init_process(args)
        # Tens of thousands of live SIP transactions (Timer J keeps each 32 s) make full
        # garbage collections long enough to overflow the UDP socket; collect less often,
        # and never scan what was allocated at start.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    def child_specs(self, cfg: Config) -> list[ChildSpec]:
        ctx = self.ctx
        return [
            ChildSpec("binding_writer", lambda: BindingWriter(ctx.store), shutdown=10.0),
            ChildSpec("registrations", lambda: RegistrationSupervisor(ctx), shutdown="infinity",
                      type="supervisor"),
            ChildSpec("bus", lambda: EdgeBusListener(ctx), shutdown=5.0),
            ChildSpec("sip", lambda: CallDispatchingSipActor(ctx), shutdown=5.0),
        ]

    def terminate_process(self, reason: Any) -> None:
        super().terminate_process(reason)
        try:
            self.bus.close()
        finally:
            self.store.close()
