"""The calls role (FreeSWITCH + ecallmgr): a group of shard processes.

``calls`` is a :class:`~supervisors.process.ProcessSupervisor` with ``calls.shards`` children
(default 2), each a :class:`CallsShard` process; ``one_for_one``: a shard that dies (even by
``kill -9``) takes only its own calls with it and is restarted, and the edge stops sending it
new calls the moment its pid is gone (:mod:`actors.calls.registry`).

Each shard process runs this tree of lightweight actors (one_for_one)::

    calls/shardN (process)
      sip     ShardSipActor   SIP listener + transactions, Control-Queue, channels listing,
                              dialog journal (ends the calls of a killed predecessor)
      legs    LegSupervisor   simple_one_for_one, temporary: one ALeg / BLeg per call leg
"""

from __future__ import annotations

import logging
from typing import Any

from actors.calls.context import ShardContext
from actors.calls.shard import LegSupervisor, ShardSipActor
from bus import connect
from mirliton.config import Config
from mirliton.roles import RoleProcess
from supervisors.core import ChildSpec, SupervisorFlags
from supervisors.process import ProcessChild, ProcessSupervisor

__all__ = ["CallsGroup", "CallsShard"]

log = logging.getLogger("mirliton.calls")


class CallsShard(RoleProcess):
    flags = SupervisorFlags("one_for_one", intensity=5, period=10.0)

    def init_process(self, args: Any) -> None:
        cfg = Config.model_validate(args["config"])
        self.bus = connect(cfg.bus.url, node=cfg.node.name, data_dir=cfg.data_dir)
        self.ctx = ShardContext(cfg, self.bus, int(args.get("shard", 0)))
        super().init_process(args)

    def child_specs(self, cfg: Config) -> list[ChildSpec]:
        ctx = self.ctx
        # SIP first: the legs stop before it on shutdown, and can still send their BYEs.
        return [
            ChildSpec("sip", lambda: ShardSipActor(ctx), shutdown=5.0),
            ChildSpec("legs", lambda: LegSupervisor(ctx), shutdown="infinity", type="supervisor"),
        ]

    def terminate_process(self, reason: Any) -> None:
        super().terminate_process(reason)
        self.bus.close()


class CallsGroup(ProcessSupervisor):
    """The shards of this node, one process each."""

    def supervision(self, args: Any) -> tuple[SupervisorFlags, list[ChildSpec]]:
        cfg = Config.model_validate(args["config"])
        specs = [
            ChildSpec(f"shard{n}", ProcessChild("actors.calls.role:CallsShard", {**args, "shard": n}),
                      restart="permanent", shutdown=10.0)
            for n in range(cfg.calls.shards)
        ]
        return SupervisorFlags("one_for_one", intensity=10, period=10.0), specs
