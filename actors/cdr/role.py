"""The cdr role process (Kazoo's cdr app)::

    cdr (process)
      writer     CdrWriter   spool -> account month database, retried with backoff
      listener   CdrListener CHANNEL_DESTROY (shared durable queue "cdr") -> spool

The listener consumes ``call.CHANNEL_DESTROY.*`` from one named, durable queue shared by
every cdr process of the cluster (competing consumers: each leg is recorded once).
"""

from __future__ import annotations

from typing import Any

from actors.cdr.writer import CdrSpool, CdrWriter, Wake
from actors.kernel import ActorRef, whereis
from bus import Binding, Delivery, Message, connect
from bus.listener import ListenerActor
from mirliton.config import Config
from mirliton.roles import RoleProcess
from store import open_store
from supervisors.core import ChildSpec, SupervisorFlags

__all__ = ["CdrListener", "CdrRole"]

WRITER_NAME = "cdr.writer"


class _NamedWriter(CdrWriter):
    def init(self) -> None:
        from actors.kernel import register

        register(WRITER_NAME, self.ref)
        super().init()


class CdrListener(ListenerActor):
    bindings = (Binding("callevt", "call.CHANNEL_DESTROY.*"),)
    responders = {("call_event", "CHANNEL_DESTROY"): "on_destroy"}
    queue = "cdr"
    durable = True

    def __init__(self, bus: Any, spool: CdrSpool) -> None:
        super().__init__(bus)
        self.spool = spool

    def on_destroy(self, msg: Message, delivery: Delivery) -> None:
        self.spool.put(dict(msg))
        writer: ActorRef | None = whereis(WRITER_NAME)
        if writer is not None:
            writer.send(Wake())


class CdrRole(RoleProcess):
    flags = SupervisorFlags("one_for_one", intensity=5, period=10.0)

    def init_process(self, args: Any) -> None:
        cfg = Config.model_validate(args["config"])
        self.bus = connect(cfg.bus.url, node=cfg.node.name, data_dir=cfg.data_dir)
        self.store = open_store(cfg.store.url, cfg.data_dir)
        self.spool = CdrSpool(cfg.data_dir / "cdr" / "spool")
        super().init_process(args)

    def child_specs(self, cfg: Config) -> list[ChildSpec]:
        return [
            ChildSpec("writer", lambda: _NamedWriter(self.store, self.spool), shutdown=5.0),
            ChildSpec("listener", lambda: CdrListener(self.bus, self.spool), shutdown=5.0),
        ]

    def terminate_process(self, reason: Any) -> None:
        super().terminate_process(reason)
        try:
            self.bus.close()
        finally:
            self.spool.close()
            self.store.close()
