"""Role-process logging.

Every process actor takes the node's logging back from Thespian when it starts
(``mirliton.logs.reclaim_logging``, called by ``supervisors.process.ProcessActor``), so a
role has nothing to set up beyond naming its node in the lines it writes.
"""

from __future__ import annotations

from mirliton.config import Config
from mirliton.logs import set_process_context

__all__ = ["configure_role_logging"]


def configure_role_logging(cfg: Config) -> None:
    set_process_context(node=cfg.node.name)
