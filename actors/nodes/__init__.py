"""The nodes app (Kazoo's kz_nodes): this node's heartbeat on the bus and the list of peers."""

from __future__ import annotations

from actors.nodes.role import NodesRole

__all__ = ["NodesRole"]
