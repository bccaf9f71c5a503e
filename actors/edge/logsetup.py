"""Logging of the edge and registrar processes.

Thespian gives every process it forks a root logger that forwards records to its logging
actor at WARNING and refuses other handlers, so the INFO lines of a role process (a
registration, a lockout, a drop) never reach ``data_dir/log/mirliton.log``. Until the
foundation configures role processes itself, these roles attach the node's handler (format,
level, file) to the ``mirliton`` logger of their own process.

Thespian also installs a new logger manager in the child, so module-level loggers created
before the fork hang from the *old* manager's ``mirliton`` logger: both get the handler.
"""

from __future__ import annotations

import logging
import sys

import structlog

from mirliton.config import Config
from mirliton.logs import _add_context, _ContextFilter, set_process_context

__all__ = ["configure_role_logging"]


def configure_role_logging(cfg: Config) -> None:
    renderer: object
    if cfg.log.format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_context,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    path = cfg.data_dir / "log" / "mirliton.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter)
    handler.addFilter(_ContextFilter())
    for manager in _managers():
        logger = manager.getLogger("mirliton")
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(cfg.log.level)
        logger.propagate = False  # else warnings would be written twice (here and via Thespian)
    set_process_context(node=cfg.node.name)


def _managers() -> list[logging.Manager]:
    found: dict[int, logging.Manager] = {id(logging.Logger.manager): logging.Logger.manager}
    for name, module in list(sys.modules.items()):
        if not name.startswith(("actors", "bus", "store", "protocols", "supervisors", "mirliton")):
            continue
        candidate = getattr(module, "log", None)
        if isinstance(candidate, logging.Logger):
            found.setdefault(id(candidate.manager), candidate.manager)
    return list(found.values())
