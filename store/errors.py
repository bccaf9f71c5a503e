"""Typed store errors. Every backend raises these and nothing else for document-level failures.

Each class carries a stable ``error_id`` (the string the REST API and logs report) and the HTTP
status CouchDB would answer with, so callers can map errors without knowing the backend.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccessDenied",
    "BadRequest",
    "Conflict",
    "DatabaseExists",
    "NotFound",
    "StoreError",
    "StoreUnavailable",
    "ValidationFailed",
]


class StoreError(Exception):
    """Base of every store error."""

    error_id: str = "store_error"
    status: int = 500

    def __init__(self, reason: str = "", *, db: str | None = None, doc_id: str | None = None) -> None:
        self.reason = reason or self.error_id
        self.db = db
        self.doc_id = doc_id
        where = "/".join(part for part in (db, doc_id) if part)
        super().__init__(f"{self.error_id}: {self.reason}" + (f" ({where})" if where else ""))


class NotFound(StoreError):
    """Database, document or attachment missing. ``reason`` is CouchDB's: missing, deleted, no_db_file."""

    error_id = "not_found"
    status = 404


class Conflict(StoreError):
    """Stale or missing ``_rev`` on an existing document (CouchDB's 409)."""

    error_id = "conflict"
    status = 409


class DatabaseExists(Conflict):
    """Creating a database that already exists (CouchDB's 412 file_exists)."""

    error_id = "db_exists"
    status = 412


class BadRequest(StoreError):
    """The request itself is wrong: bad name, bad selector, bad document body."""

    error_id = "bad_request"
    status = 400


class ValidationFailed(BadRequest):
    """A document failed its JSON schema or a uniqueness rule.

    ``errors`` has Kazoo's shape: ``{"sip.username": {"required": {"message": "..."}}}``.
    """

    error_id = "validation_failed"

    def __init__(self, errors: dict[str, dict[str, dict[str, Any]]], reason: str = "") -> None:
        self.errors = errors
        super().__init__(reason or "validation failed: " + ", ".join(sorted(errors)))


class AccessDenied(StoreError):
    """The server refused our credentials (401/403)."""

    error_id = "access_denied"
    status = 403


class StoreUnavailable(StoreError):
    """The backend could not be reached after bounded retries; try again after ``retry_after`` s."""

    error_id = "store_unavailable"
    status = 503

    def __init__(self, reason: str = "", *, retry_after: float = 1.0, attempts: int = 0) -> None:
        self.retry_after = retry_after
        self.attempts = attempts
        super().__init__(reason)
