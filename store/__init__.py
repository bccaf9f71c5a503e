"""The document store: CouchDB semantics on CouchDB itself or on an embedded SQLite file.

``open_store(cfg.store.url, cfg.node.data_dir)`` is the one way to get a Store; everything else
(Kazoo naming, schemas, cache, accounts) lives in the submodules ``store.kazoo``,
``store.schemas``, ``store.cache`` and ``store.accounts``.
"""

from __future__ import annotations

from pathlib import Path

from store.base import (
    AttachmentReader,
    BulkResult,
    Change,
    ChangesFeed,
    ChangesResult,
    DbInfo,
    FindResult,
    Seq,
    Store,
    new_doc_id,
)
from store.errors import (
    AccessDenied,
    BadRequest,
    Conflict,
    DatabaseExists,
    NotFound,
    StoreError,
    StoreUnavailable,
    ValidationFailed,
)

__all__ = [
    "AccessDenied",
    "AttachmentReader",
    "BadRequest",
    "BulkResult",
    "Change",
    "ChangesFeed",
    "ChangesResult",
    "Conflict",
    "DatabaseExists",
    "DbInfo",
    "FindResult",
    "NotFound",
    "Seq",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "ValidationFailed",
    "new_doc_id",
    "open_store",
]


def open_store(url: str, data_dir: Path | str) -> Store:
    """The backend named by the ``store.url`` setting.

    ``embedded`` → SQLite in ``data_dir/store.sqlite3``; ``http(s)://user:pass@host:port`` → CouchDB.
    """
    if url == "embedded":
        from store.embedded import EmbeddedStore

        return EmbeddedStore(Path(data_dir))
    if url.startswith(("http://", "https://")):
        from store.couchdb import CouchDBStore

        return CouchDBStore(url)
    raise BadRequest(f"unknown store.url {url!r}: use 'embedded' or http(s)://user:pass@host:port")
