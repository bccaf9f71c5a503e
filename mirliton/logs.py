"""Logging: human-readable lines by default, JSON lines on request (``log.format = "json"``).

Every line carries the node, the role (process) and pid, and — when known — the actor and the
call's Call-ID, taken from the actor kernel's context variables, so a grep on a Call-ID finds
every line of a call across the node's processes. Rendering is structlog's; the producers are
plain ``logging`` loggers, so third-party libraries' lines get the same shape.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import structlog

from actors.kernel import current_actor, current_call_id

__all__ = ["configure_logging", "reclaim_logging", "set_process_context"]

_context: dict[str, Any] = {"node": "-", "role": "node"}
_saved_root: logging.RootLogger | None = None
_saved_manager: logging.Manager | None = None


def set_process_context(**values: Any) -> None:
    """Facts true for every line of this process (node name, role)."""
    _context.update(values)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.node = _context["node"]
        record.role = _context["role"]
        actor = current_actor.get()
        record.actor = repr(actor) if actor is not None else None
        record.call_id = current_call_id.get()
        return True


def _add_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record: logging.LogRecord | None = event.get("_record")
    if record is not None:
        event["node"] = getattr(record, "node", _context["node"])
        event["role"] = getattr(record, "role", _context["role"])
        event["pid"] = record.process
        event["logger"] = record.name
        actor = getattr(record, "actor", None)
        if actor:
            event["actor"] = actor
        call_id = getattr(record, "call_id", None)
        if call_id:
            event["call_id"] = call_id
    return event


def configure_logging(
    fmt: str = "text", level: str = "INFO", log_file: Path | None = None, stderr: bool = True
) -> None:
    renderer: Any
    if fmt == "json":
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
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handlers: list[logging.Handler] = []
    if stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_ContextFilter())
        root.addHandler(handler)
    root.setLevel(level)
    global _saved_root, _saved_manager
    _saved_root, _saved_manager = logging.root, logging.Logger.manager
    # Thespian's own chatter stays at warnings.
    logging.getLogger("thespian").setLevel(logging.WARNING)
    _context["pid"] = os.getpid()


def reclaim_logging() -> None:
    """In a process forked by Thespian: give the node's logging back.

    Thespian replaces ``logging.root`` (with a forwarder that refuses handlers) and the
    logger manager in every new actor process, so loggers made there would forward to
    Thespian's log actor at WARNING and most lines of the roles would be lost. The node's
    root logger, manager and handlers were inherited through fork and still work.
    """
    if _saved_root is None or _saved_manager is None:
        return
    logging.root = _saved_root
    logging.Logger.root = _saved_root
    logging.Logger.manager = _saved_manager
    for logger in _saved_manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.disabled = False
