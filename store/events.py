"""Document-change events from the write path, as Kazoo's data layer publishes them.

Kazoo does not follow CouchDB's ``_changes`` to invalidate caches: every write through its data
layer flushes the local cache entry and publishes ``doc_created`` / ``doc_edited`` /
``doc_deleted`` (and ``db_created`` / ``db_deleted``) on the bus. ``NotifyingStore`` wraps any
Store and calls its listeners after each successful write, so a node can do the same: a local
DocumentCache invalidates at once, and a bus publisher forwards the event to other nodes.

created/edited/deleted is decided as Kazoo does, from the document as it was sent: no ``_rev``
→ created; ``_deleted`` or ``pvt_deleted`` → deleted; otherwise edited.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from store.base import (
    AttachmentData,
    AttachmentReader,
    BulkResult,
    ChangesFeed,
    ChangesResult,
    DbInfo,
    FindResult,
    Seq,
    Store,
)

__all__ = ["DocChange", "NotifyingStore"]

log = logging.getLogger("mirliton.store")

DOC_CREATED = "doc_created"
DOC_EDITED = "doc_edited"
DOC_DELETED = "doc_deleted"
DB_CREATED = "db_created"
DB_DELETED = "db_deleted"


@dataclass(frozen=True)
class DocChange:
    action: str  # doc_created, doc_edited, doc_deleted, db_created, db_deleted
    db: str
    id: str | None = None
    rev: str | None = None
    pvt_type: str | None = None


Listener = Callable[[DocChange], None]


def _doc_action(doc: dict[str, Any]) -> str:
    if doc.get("_deleted") or doc.get("pvt_deleted"):
        return DOC_DELETED
    return DOC_EDITED if doc.get("_rev") else DOC_CREATED


class NotifyingStore(Store):
    """A Store that tells its listeners about every successful write made through it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.kind = inner.kind
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _emit(self, change: DocChange) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(change)
            except Exception:
                # A listener's failure must never turn a successful write into an error.
                log.exception("store change listener failed on %s", change)

    # -- writes, observed --------------------------------------------------------------------

    def create_db(self, db: str, *, exist_ok: bool = False) -> bool:
        created = self.inner.create_db(db, exist_ok=exist_ok)
        if created:
            self._emit(DocChange(DB_CREATED, db))
        return created

    def delete_db(self, db: str, *, missing_ok: bool = False) -> bool:
        deleted = self.inner.delete_db(db, missing_ok=missing_ok)
        if deleted:
            self._emit(DocChange(DB_DELETED, db))
        return deleted

    def put(self, db: str, doc: dict[str, Any]) -> dict[str, Any]:
        saved = self.inner.put(db, doc)
        self._emit(DocChange(_doc_action(doc), db, saved["_id"], saved["_rev"], doc.get("pvt_type")))
        return saved

    def delete(self, db: str, doc_id: str, rev: str) -> str:
        new_rev = self.inner.delete(db, doc_id, rev)
        self._emit(DocChange(DOC_DELETED, db, doc_id, new_rev))
        return new_rev

    def bulk_docs(self, db: str, docs: Sequence[dict[str, Any]]) -> list[BulkResult]:
        results = self.inner.bulk_docs(db, docs)
        for doc, result in zip(docs, results, strict=True):
            if result.ok and isinstance(doc, dict):
                self._emit(DocChange(_doc_action(doc), db, result.id, result.rev, doc.get("pvt_type")))
        return results

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
        new_rev = self.inner.put_attachment(db, doc_id, name, data, content_type=content_type, rev=rev)
        self._emit(DocChange(DOC_EDITED if rev else DOC_CREATED, db, doc_id, new_rev))
        return new_rev

    def delete_attachment(self, db: str, doc_id: str, name: str, rev: str) -> str:
        new_rev = self.inner.delete_attachment(db, doc_id, name, rev)
        self._emit(DocChange(DOC_EDITED, db, doc_id, new_rev))
        return new_rev

    def create_index(
        self, db: str, fields: Sequence[str], *, name: str | None = None, ddoc: str | None = None
    ) -> str:
        # Design documents are not announced, as in Kazoo.
        return self.inner.create_index(db, fields, name=name, ddoc=ddoc)

    # -- reads, passed through ---------------------------------------------------------------

    def db_exists(self, db: str) -> bool:
        return self.inner.db_exists(db)

    def list_dbs(self, prefix: str | None = None) -> list[str]:
        return self.inner.list_dbs(prefix)

    def db_info(self, db: str) -> DbInfo:
        return self.inner.db_info(db)

    def get(self, db: str, doc_id: str, *, rev: str | None = None) -> dict[str, Any]:
        return self.inner.get(db, doc_id, rev=rev)

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
        return self.inner.all_docs(
            db,
            keys=keys,
            include_docs=include_docs,
            start_key=start_key,
            end_key=end_key,
            limit=limit,
            skip=skip,
            descending=descending,
        )

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
        return self.inner.find(db, selector, fields=fields, sort=sort, limit=limit, skip=skip, bookmark=bookmark)

    def find_all(
        self,
        db: str,
        selector: dict[str, Any],
        *,
        sort: Sequence[str | dict[str, str]] | None = None,
        page_size: int = 500,
    ) -> Iterator[dict[str, Any]]:
        return self.inner.find_all(db, selector, sort=sort, page_size=page_size)

    def changes(
        self, db: str, *, since: Seq = 0, limit: int | None = None, include_docs: bool = False
    ) -> ChangesResult:
        return self.inner.changes(db, since=since, limit=limit, include_docs=include_docs)

    def follow(
        self,
        db: str,
        *,
        since: Seq = "now",
        include_docs: bool = False,
        idle_timeout: float | None = None,
    ) -> ChangesFeed:
        return self.inner.follow(db, since=since, include_docs=include_docs, idle_timeout=idle_timeout)

    def open_attachment(self, db: str, doc_id: str, name: str) -> AttachmentReader:
        return self.inner.open_attachment(db, doc_id, name)

    def close(self) -> None:
        self.inner.close()
