"""The ``nodes`` role: advertises this node on the ``nodes`` exchange every few seconds and
keeps the peers it hears in ``data_dir/run/nodes.json`` for ``mirliton status``.

A process of its own, as Kazoo runs kz_nodes as its own supervised server: a broker outage
or a crash here restarts the heartbeat, never the roles carrying calls.
"""

from __future__ import annotations

from typing import Any

import mirliton
from bus import connect
from bus.nodes import NodeInfo, NodesService, default_load
from mirliton.roles import RoleProcess, resolve_roles
from mirliton.status import read_node_file

__all__ = ["NodesRole"]


class NodesRole(RoleProcess):
    def init_process(self, args: Any) -> None:
        super().init_process(args)
        cfg = self.config
        self.bus = connect(cfg.bus.url, node=cfg.node.name, data_dir=cfg.data_dir)
        roles = tuple(role for role, _ in resolve_roles(cfg))
        node_file = read_node_file(cfg.run_dir) or {}
        node_pid = node_file.get("pid")  # load figures cover every process of the node
        self.service = NodesService(
            self.bus,
            NodeInfo(cfg.node.name, mirliton.__version__, roles, zone=cfg.node.zone),
            interval=cfg.bus.heartbeat_interval,
            snapshot_path=cfg.run_dir / "nodes.json",
            load=lambda: default_load(node_pid),
        ).start()

    def terminate_process(self, reason: Any) -> None:
        self.service.stop()
        self.bus.close()
        super().terminate_process(reason)
