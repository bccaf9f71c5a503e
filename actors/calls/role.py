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

and one media engine (actors/media: RTP ports of ``media.rtp_port_min..max``, one 20 ms clock)
for the legs that anchor media. Recordings are written under
``data_dir/recordings/shard<N>/`` until stored; a restarted shard drops the partial ones its
killed predecessor left (their calls are gone, their voicemails never saved).
"""

from __future__ import annotations

import logging
from typing import Any

from actors.calls.context import ShardContext
from actors.calls.media import MediaLibrary, clear_leftovers, recordings_dir
from actors.calls.shard import LegSupervisor, ShardSipActor
from actors.media import MediaEngine
from bus import connect
from mirliton.config import Config
from mirliton.roles import RoleProcess
from store import open_store
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
        ctx = self.ctx
        ctx.store = open_store(cfg.store.url, cfg.data_dir)
        ctx.library = MediaLibrary(ctx.store)
        ctx.recordings = recordings_dir(cfg.data_dir, ctx.shard)
        dropped = clear_leftovers(ctx.recordings)
        if dropped:
            log.warning("calls shard %d: dropped %d partial recording(s) of a killed "
                        "predecessor", ctx.shard, dropped)
        ctx.recordings.mkdir(parents=True, exist_ok=True)
        # The process's one media clock: it lives as long as the shard, legs open streams on it.
        ctx.media = MediaEngine.from_config(cfg.media).start()
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
        if self.ctx.media is not None:
            self.ctx.media.stop()
        if self.ctx.store is not None:
            self.ctx.store.close()
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
