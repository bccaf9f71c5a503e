"""Errors raised by the bus. Every one is a :class:`BusError`."""

from __future__ import annotations

__all__ = [
    "BusClosed",
    "BusError",
    "BusValidationError",
    "PublishNotConfirmed",
    "RequestTimeout",
]


class BusError(Exception):
    """Base of every bus error."""


class BusValidationError(BusError, ValueError):
    """A message breaks its declared contract. ``field`` names the offending key."""

    def __init__(self, field: str, problem: str, message_type: str | None = None) -> None:
        where = f"{message_type}: " if message_type else ""
        super().__init__(f"{where}{field}: {problem}")
        self.field = field
        self.problem = problem
        self.message_type = message_type


class RequestTimeout(BusError, TimeoutError):
    """No (valid) reply arrived before the request's timeout."""

    def __init__(self, msg_id: str, timeout: float, event: str = "") -> None:
        super().__init__(f"no reply to {event or 'request'} {msg_id} within {timeout}s")
        self.msg_id = msg_id
        self.timeout = timeout


class PublishNotConfirmed(BusError):
    """A ``confirm=True`` publish was not accepted into any queue before its timeout."""


class BusClosed(BusError):
    """The bus was closed (or belongs to the parent of a forked process)."""
