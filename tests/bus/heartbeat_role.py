"""A role plug-in (``node.roles = ["tests.bus.heartbeat_role:HeartbeatRole"]``) that runs
the bus node heartbeat in a real node, the way the node itself is meant to: connect to
``bus.url`` and keep ``run/nodes.json`` for ``mirliton status --json``.

MIRLITON_TEST_HEARTBEAT (seconds) sets the advertise interval, default 5.
"""

from __future__ import annotations

import os
from typing import Any

from bus import connect
from bus.nodes import NodeInfo, NodesService
from mirliton.roles import RoleProcess


class HeartbeatRole(RoleProcess):
    def init_process(self, args: Any) -> None:
        super().init_process(args)
        cfg = self.config
        self.bus = connect(cfg.bus.url, node=cfg.node.name, data_dir=cfg.data_dir)
        self.nodes = NodesService(
            self.bus,
            NodeInfo(cfg.node.name, "test", tuple(cfg.node.roles), zone=cfg.node.zone),
            interval=float(os.environ.get("MIRLITON_TEST_HEARTBEAT", "5")),
            snapshot_path=cfg.run_dir / "nodes.json",
        ).start()

    def terminate_process(self, reason: Any) -> None:
        self.nodes.stop()
        self.bus.close()
        super().terminate_process(reason)
