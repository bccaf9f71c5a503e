"""The Store interface every backend implements, and the value types it returns.

Semantics are CouchDB 3.x's, whatever the backend:
- documents carry ``_id`` and ``_rev`` (``N-<32 hex>``); writing an existing document needs its
  current ``_rev``, otherwise Conflict; deleting leaves a tombstone with its own rev that shows in
  the changes feed;
- a database's change feed lists each document once, at the sequence of its latest revision;
  sequences are opaque (integers on the embedded backend, strings on CouchDB): keep and pass them
  back, never compute with them;
- Mango ``find`` sorts only along a declared index (``create_index``), as CouchDB requires.
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from store.errors import BadRequest, NotFound

__all__ = [
    "AttachmentData",
    "AttachmentReader",
    "BulkResult",
    "Change",
    "ChangesFeed",
    "ChangesResult",
    "DbInfo",
    "FindResult",
    "Seq",
    "Store",
    "check_db_name",
    "check_doc_body",
    "check_doc_id",
    "new_doc_id",
]

Seq = int | str
# What put_attachment accepts: the bytes, a binary file object, or an iterable of chunks.
AttachmentData = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes]

# CouchDB's rule for database names (system databases start with "_").
_DB_NAME = re.compile(r"^[a-z][a-z0-9_$()+/-]*$")
_SYSTEM_DBS = {"_users", "_replicator", "_global_changes"}


def check_db_name(name: str) -> str:
    if not isinstance(name, str) or not (_DB_NAME.match(name) or name in _SYSTEM_DBS) or len(name) > 238:
        raise BadRequest(
            "illegal_database_name: only lowercase letters (a-z), digits (0-9) and _ $ ( ) + - / "
            "are allowed, and the name must begin with a letter",
            db=str(name),
        )
    return name


def check_doc_id(doc_id: Any) -> str:
    if not isinstance(doc_id, str) or not doc_id:
        raise BadRequest("document id must be a non-empty string", doc_id=str(doc_id))
    if doc_id.startswith("_") and not doc_id.startswith(("_design/", "_local/")):
        raise BadRequest("only reserved document ids may start with underscore", doc_id=doc_id)
    return doc_id


# The underscore fields CouchDB accepts at the top level of a document body.
_SPECIAL_MEMBERS = {
    "_id", "_rev", "_attachments", "_deleted", "_revisions", "_revs_info", "_conflicts",
    "_deleted_conflicts", "_local_seq",
}


def check_doc_body(doc: Any) -> dict[str, Any]:
    """CouchDB's rule for bodies: a JSON object whose ``_`` fields are only the special ones."""
    if not isinstance(doc, dict):
        raise BadRequest("document must be a JSON object")
    for key in doc:
        if isinstance(key, str) and key.startswith("_") and key not in _SPECIAL_MEMBERS:
            raise BadRequest(f"doc_validation: Bad special document member: {key}", doc_id=str(doc.get("_id", "")))
    return doc


def new_doc_id() -> str:
    """A fresh document id: 32 lowercase hex digits, the form CouchDB's uuids and Kazoo use."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class DbInfo:
    name: str
    doc_count: int
    doc_del_count: int
    update_seq: Seq


@dataclass(frozen=True)
class BulkResult:
    """One document's outcome in ``bulk_docs``: ok with the new rev, or an error id."""

    id: str
    rev: str | None = None
    error: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class FindResult:
    docs: list[dict[str, Any]]
    # Pass back to `find` with the same selector, sort and limit for the next page.
    bookmark: str | None


@dataclass(frozen=True)
class Change:
    seq: Seq
    id: str
    rev: str
    deleted: bool = False
    doc: dict[str, Any] | None = None


@dataclass(frozen=True)
class ChangesResult:
    results: list[Change]
    last_seq: Seq


class ChangesFeed(ABC):
    """A live feed: iterating blocks until changes arrive, yielding them in sequence order.

    Iteration ends when ``close()`` is called or, if ``idle_timeout`` was given, when that many
    seconds pass without a change. ``last_seq`` is where to resume. Waiting uses sockets or
    ``time.sleep``, so it yields to other greenlets in a gevent-patched process.
    """

    last_seq: Seq

    @abstractmethod
    def __iter__(self) -> Iterator[Change]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> ChangesFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AttachmentReader(ABC):
    """An open attachment, read in chunks so several MB of audio never sit in memory at once."""

    content_type: str
    length: int
    digest: str

    @abstractmethod
    def iter_chunks(self, chunk_size: int = 65536) -> Iterator[bytes]: ...

    @abstractmethod
    def close(self) -> None: ...

    def read(self) -> bytes:
        try:
            return b"".join(self.iter_chunks())
        finally:
            self.close()

    def __enter__(self) -> AttachmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(ABC):
    """A CouchDB-semantics document store. Backends: ``embedded`` (SQLite) and ``couchdb`` (HTTP)."""

    #: "embedded" or "couchdb"
    kind: str

    # -- databases ---------------------------------------------------------------------------

    @abstractmethod
    def create_db(self, db: str, *, exist_ok: bool = False) -> bool:
        """Create ``db``; True if created, False if it existed and ``exist_ok`` (else DatabaseExists)."""

    @abstractmethod
    def delete_db(self, db: str, *, missing_ok: bool = False) -> bool:
        """Delete ``db`` and everything in it; NotFound unless ``missing_ok``."""

    @abstractmethod
    def db_exists(self, db: str) -> bool: ...

    @abstractmethod
    def list_dbs(self, prefix: str | None = None) -> list[str]:
        """Database names in ascending order, only those starting with ``prefix`` if given."""

    @abstractmethod
    def db_info(self, db: str) -> DbInfo: ...

    # -- documents ---------------------------------------------------------------------------

    @abstractmethod
    def get(self, db: str, doc_id: str, *, rev: str | None = None) -> dict[str, Any]:
        """The document (with ``_id``, ``_rev`` and attachment stubs); NotFound if absent or deleted."""

    @abstractmethod
    def put(self, db: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Create or update; returns a copy of ``doc`` with ``_id`` (generated if absent) and the new ``_rev``.

        Conflict when the document exists and ``_rev`` is missing or not the current one.
        A body with ``_deleted: true`` deletes. Attachments not listed as stubs are dropped.
        """

    @abstractmethod
    def delete(self, db: str, doc_id: str, rev: str) -> str:
        """Delete (leave a tombstone); returns the tombstone's rev. Conflict on a stale rev."""

    @abstractmethod
    def bulk_docs(self, db: str, docs: Sequence[dict[str, Any]]) -> list[BulkResult]:
        """Write many documents; each gets its own result (ok with rev, or conflict), in order."""

    @abstractmethod
    def all_docs(
        self,
        db: str,
        *,
        keys: Sequence[str] | None = None,
        include_docs: bool = False,
        start_key: str | None = None,
        end_key: str | None = None,
        limit: int | None = None,
        skip: int = 0,
        descending: bool = False,
    ) -> list[dict[str, Any]]:
        """``_all_docs`` rows. With ``keys``: one row per key, in order; a missing id gives
        ``{"key": k, "error": "not_found"}``, a deleted one ``value.deleted`` and ``doc: None``."""

    def get_many(self, db: str, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """The documents for ``ids`` in order; None where missing or deleted."""
        rows = self.all_docs(db, keys=list(ids), include_docs=True)
        return [row.get("doc") if "error" not in row else None for row in rows]

    # -- Mango -------------------------------------------------------------------------------

    @abstractmethod
    def create_index(
        self, db: str, fields: Sequence[str], *, name: str | None = None, ddoc: str | None = None
    ) -> str:
        """Declare a JSON index over ``fields`` (dotted paths); returns its name. Idempotent."""

    @abstractmethod
    def find(
        self,
        db: str,
        selector: dict[str, Any],
        *,
        fields: Sequence[str] | None = None,
        sort: Sequence[str | dict[str, str]] | None = None,
        limit: int | None = None,
        skip: int = 0,
        bookmark: str | None = None,
    ) -> FindResult:
        """Documents matching the Mango ``selector``. ``limit=None`` returns every match;
        with a limit, pass the result's ``bookmark`` back for the next page (same selector/sort)."""

    # -- changes -----------------------------------------------------------------------------

    @abstractmethod
    def changes(
        self, db: str, *, since: Seq = 0, limit: int | None = None, include_docs: bool = False
    ) -> ChangesResult:
        """Changes after ``since`` (0 = from the start, "now" = nothing before this call)."""

    @abstractmethod
    def follow(
        self,
        db: str,
        *,
        since: Seq = "now",
        include_docs: bool = False,
        idle_timeout: float | None = None,
    ) -> ChangesFeed:
        """A live feed of changes after ``since``; see ChangesFeed."""

    # -- attachments -------------------------------------------------------------------------

    @abstractmethod
    def put_attachment(
        self,
        db: str,
        doc_id: str,
        name: str,
        data: AttachmentData,
        *,
        content_type: str,
        rev: str | None = None,
    ) -> str:
        """Store an attachment (streamed from ``data``); returns the document's new rev.
        ``rev`` is the document's current rev; omit it only to create a new document."""

    @abstractmethod
    def open_attachment(self, db: str, doc_id: str, name: str) -> AttachmentReader:
        """Open an attachment for chunked reading; NotFound if the doc or attachment is absent."""

    def get_attachment(self, db: str, doc_id: str, name: str) -> tuple[bytes, str]:
        """The whole attachment and its content type."""
        reader = self.open_attachment(db, doc_id, name)
        content_type = reader.content_type
        return reader.read(), content_type

    @abstractmethod
    def delete_attachment(self, db: str, doc_id: str, name: str, rev: str) -> str:
        """Remove an attachment; returns the document's new rev."""

    # -- lifecycle ---------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared helpers ----------------------------------------------------------------------

    def find_all(
        self,
        db: str,
        selector: dict[str, Any],
        *,
        sort: Sequence[str | dict[str, str]] | None = None,
        page_size: int = 500,
    ) -> Iterator[dict[str, Any]]:
        """Every match, fetched page by page with bookmarks."""
        bookmark: str | None = None
        while True:
            page = self.find(db, selector, sort=sort, limit=page_size, bookmark=bookmark)
            yield from page.docs
            if len(page.docs) < page_size or not page.bookmark:
                return
            bookmark = page.bookmark

    def open_or_none(self, db: str, doc_id: str) -> dict[str, Any] | None:
        try:
            return self.get(db, doc_id)
        except NotFound:
            return None
