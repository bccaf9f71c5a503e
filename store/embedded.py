"""The embedded backend: every database of a node in one SQLite file, with CouchDB's semantics.

Why one file: the node's OS processes (edge, apps, API) share it, and SQLite's WAL mode lets
them read concurrently while one writes. Every write runs in ``BEGIN IMMEDIATE``, which takes the
file's write lock before reading the current ``_rev``, so of two processes updating one document
from the same revision exactly one wins and the other gets Conflict. A bulk write is one
transaction: a writer killed mid-way leaves either all of the batch or none of it.

Tables:
- ``dbs``: one row per database and its ``update_seq`` (the change sequence, per database);
- ``docs``: the current revision of each document (tombstones included), the whole JSON body
  with ``_id``/``_rev``/attachment stubs, and the sequence of its last change, which is what the
  ``_changes`` feed reads (a document appears once, at its latest change, as in CouchDB);
- ``attachments`` and ``blob_chunks``: attachment metadata and content in 256 KiB chunks, so
  audio streams in and out without being held in memory whole.

Only the current revision of a document is kept (CouchDB after compaction); ``get(rev=...)``
of an older revision answers NotFound.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from store import mango
from store.base import (
    AttachmentData,
    AttachmentReader,
    BulkResult,
    Change,
    ChangesFeed,
    ChangesResult,
    DbInfo,
    FindResult,
    Seq,
    Store,
    check_db_name,
    check_doc_body,
    check_doc_id,
    new_doc_id,
)
from store.errors import (
    BadRequest,
    Conflict,
    DatabaseExists,
    NotFound,
    StoreError,
    StoreUnavailable,
)

__all__ = ["EmbeddedStore"]

STORE_FILE_NAME = "store.sqlite3"
CHUNK_SIZE = 256 * 1024
# How long a writer waits for another process's transaction before giving up.
WRITE_WAIT_TIMEOUT = 30.0
# SQLite's own busy handler sleeps in C, which would stall every greenlet of a gevent process;
# keep it short and wait for another process's write transaction in Python instead (time.sleep
# yields under gevent), up to WRITE_WAIT_TIMEOUT.
BUSY_TIMEOUT_MS = 200
# How often a live changes feed looks at the database's sequence (cross-process, so it polls).
POLL_INTERVAL = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dbs (
    name TEXT PRIMARY KEY,
    update_seq INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS docs (
    db TEXT NOT NULL,
    id TEXT NOT NULL,
    rev TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (db, id)
);
CREATE INDEX IF NOT EXISTS docs_by_seq ON docs (db, seq);
CREATE TABLE IF NOT EXISTS attachments (
    db TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    name TEXT NOT NULL,
    blob_id INTEGER NOT NULL,
    PRIMARY KEY (db, doc_id, name)
);
CREATE TABLE IF NOT EXISTS blobs (
    blob_id INTEGER PRIMARY KEY AUTOINCREMENT,
    length INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_chunks (
    blob_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (blob_id, n)
) WITHOUT ROWID;
"""


# CouchDB keeps _local documents out of _all_docs, _changes, _find and the document count.
_NOT_LOCAL = "NOT (id >= '_local/' AND id < '_local0')"
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_UPSERT_DOC = (
    "INSERT INTO docs (db, id, rev, deleted, seq, body) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (db, id) DO UPDATE SET rev = excluded.rev, deleted = excluded.deleted, "
    "seq = excluded.seq, body = excluded.body"
)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _rev_number(rev: str) -> int:
    try:
        return int(rev.split("-", 1)[0])
    except (ValueError, AttributeError) as exc:
        raise BadRequest(f"invalid rev format: {rev!r}") from exc


_Row = tuple[str, int, str]  # (rev, deleted, body JSON) of a stored document


def _attachment_digest(md5: Any) -> str:
    return "md5-" + base64.b64encode(md5.digest()).decode()


class EmbeddedStore(Store):
    kind = "embedded"

    def __init__(self, data_dir: Path | str, *, file_name: str = STORE_FILE_NAME) -> None:
        self.path = Path(data_dir) / file_name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.poll_interval = POLL_INTERVAL
        self._pid = os.getpid()
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        # Writers of this process queue here (cooperatively under gevent) rather than inside
        # SQLite's busy handler, which sleeps without yielding to other greenlets.
        self._write_lock = threading.RLock()
        self._closed = False
        self._ensure_schema()

    # -- connections -------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Switching to WAL needs the file to itself once; afterwards it is a persistent no-op.
            _wait_while_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            # NORMAL in WAL mode survives a killed process; only an OS crash can lose the last commits.
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}", retry_after=1.0) from exc
        return conn

    def _ensure_schema(self) -> None:
        tables = {"dbs", "docs", "attachments", "blobs", "blob_chunks"}
        with self._connection() as conn:
            present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables <= present:
            return
        # Through the write path: another process may be writing (or creating the schema) now.
        with self._write() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def _after_fork(self) -> None:
        # Connections inherited over fork() belong to the parent; never touch them here.
        self._pid = os.getpid()
        self._idle = []
        self._pool_lock = threading.Lock()
        self._write_lock = threading.RLock()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StoreError("store is closed")
        if os.getpid() != self._pid:
            self._after_fork()
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            # "database is locked" after the busy timeout, disk full, I/O errors: retryable.
            raise StoreUnavailable(f"sqlite: {exc}", retry_after=0.5) from exc
        finally:
            # Back to the pool after errors too (Conflict is routine); never mid-transaction.
            if conn.in_transaction:
                conn.rollback()
            with self._pool_lock:
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock, self._connection() as conn:
            self._begin_immediate(conn)
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @staticmethod
    def _begin_immediate(conn: sqlite3.Connection) -> None:
        """Take the file's write lock, waiting cooperatively while another process holds it."""
        _wait_while_locked(lambda: conn.execute("BEGIN IMMEDIATE"))

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across several SELECTs."""
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.rollback()

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        if os.getpid() == self._pid:
            for conn in idle:
                conn.close()

    # -- databases ---------------------------------------------------------------------------

    @staticmethod
    def _require_db(conn: sqlite3.Connection, db: str) -> None:
        if conn.execute("SELECT 1 FROM dbs WHERE name = ?", (db,)).fetchone() is None:
            raise NotFound("no_db_file", db=db)

    def create_db(self, db: str, *, exist_ok: bool = False) -> bool:
        check_db_name(db)
        with self._write() as conn:
            created = conn.execute(
                "INSERT INTO dbs (name, update_seq, created_at) VALUES (?, 0, ?) ON CONFLICT DO NOTHING",
                (db, time.time()),
            ).rowcount
        if not created and not exist_ok:
            raise DatabaseExists("file_exists", db=db)
        return bool(created)

    def delete_db(self, db: str, *, missing_ok: bool = False) -> bool:
        check_db_name(db)
        with self._write() as conn:
            if not conn.execute("DELETE FROM dbs WHERE name = ?", (db,)).rowcount:
                if missing_ok:
                    return False
                raise NotFound("no_db_file", db=db)
            blob_ids = [row[0] for row in conn.execute("SELECT blob_id FROM attachments WHERE db = ?", (db,))]
            self._drop_blobs(conn, blob_ids)
            conn.execute("DELETE FROM attachments WHERE db = ?", (db,))
            conn.execute("DELETE FROM docs WHERE db = ?", (db,))
        return True

    def db_exists(self, db: str) -> bool:
        check_db_name(db)
        with self._connection() as conn:
            return conn.execute("SELECT 1 FROM dbs WHERE name = ?", (db,)).fetchone() is not None

    def list_dbs(self, prefix: str | None = None) -> list[str]:
        with self._connection() as conn:
            if prefix:
                rows = conn.execute(
                    "SELECT name FROM dbs WHERE name >= ? AND substr(name, 1, ?) = ? ORDER BY name",
                    (prefix, len(prefix), prefix),
                )
            else:
                rows = conn.execute("SELECT name FROM dbs ORDER BY name")
            return [row[0] for row in rows]

    def db_info(self, db: str) -> DbInfo:
        check_db_name(db)
        with self._read() as conn:
            row = conn.execute("SELECT update_seq FROM dbs WHERE name = ?", (db,)).fetchone()
            if row is None:
                raise NotFound("no_db_file", db=db)
            live, deleted = conn.execute(
                "SELECT COALESCE(SUM(deleted = 0), 0), COALESCE(SUM(deleted = 1), 0) FROM docs "
                f"WHERE db = ? AND {_NOT_LOCAL}",
                (db,),
            ).fetchone()
        return DbInfo(name=db, doc_count=live, doc_del_count=deleted, update_seq=row[0])

    # -- documents ---------------------------------------------------------------------------

    def get(self, db: str, doc_id: str, *, rev: str | None = None) -> dict[str, Any]:
        check_db_name(db)
        with self._connection() as conn:
            row = conn.execute("SELECT rev, deleted, body FROM docs WHERE db = ? AND id = ?", (db, doc_id)).fetchone()
            if row is None:
                self._require_db(conn, db)
                raise NotFound("missing", db=db, doc_id=doc_id)
        current_rev, deleted, body = row
        if rev is not None:
            if rev != current_rev:
                raise NotFound("missing", db=db, doc_id=doc_id)
            return json.loads(body)
        if deleted:
            raise NotFound("deleted", db=db, doc_id=doc_id)
        return json.loads(body)

    def put(self, db: str, doc: dict[str, Any]) -> dict[str, Any]:
        check_db_name(db)
        with self._write() as conn:
            self._require_db(conn, db)
            return self._write_doc(conn, db, doc)[0]

    def delete(self, db: str, doc_id: str, rev: str) -> str:
        check_db_name(db)
        with self._write() as conn:
            self._require_db(conn, db)
            row = conn.execute("SELECT rev, deleted FROM docs WHERE db = ? AND id = ?", (db, doc_id)).fetchone()
            if row is None or row[1]:
                raise NotFound("missing" if row is None else "deleted", db=db, doc_id=doc_id)
            saved, _ = self._write_doc(conn, db, {"_id": doc_id, "_rev": rev, "_deleted": True})
        return str(saved["_rev"])

    def bulk_docs(self, db: str, docs: Sequence[dict[str, Any]]) -> list[BulkResult]:
        check_db_name(db)
        results: list[BulkResult] = []
        with self._write() as conn:
            self._require_db(conn, db)
            # One SELECT for the whole batch; later documents of the batch see earlier ones.
            wanted = list({d["_id"] for d in docs if isinstance(d, dict) and isinstance(d.get("_id"), str)})
            current: dict[str, _Row] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" for _ in chunk)
                for doc_id, rev, deleted, body in conn.execute(
                    f"SELECT id, rev, deleted, body FROM docs WHERE db = ? AND id IN ({marks})", (db, *chunk)
                ):
                    current[doc_id] = (rev, deleted, body)
            seq = int(conn.execute("SELECT update_seq FROM dbs WHERE name = ?", (db,)).fetchone()[0])
            # Rows are written together at the end (one executemany), except around a document
            # with attachments, which is written in order inside a savepoint.
            pending: list[tuple[Any, ...]] = []
            for doc in docs:
                has_attachments = isinstance(doc, dict) and bool(doc.get("_attachments"))
                if has_attachments:
                    conn.executemany(_UPSERT_DOC, pending)
                    pending = []
                    # Blobs are written before the document: undo them if the document fails.
                    conn.execute("SAVEPOINT bulk_doc")
                try:
                    doc_id = doc.get("_id") if isinstance(doc, dict) else None
                    row = current.get(doc_id) if isinstance(doc_id, str) else None
                    saved, written = self._write_doc(
                        conn, db, doc, seq=seq + 1, current=row, pending=None if has_attachments else pending
                    )
                except (Conflict, BadRequest) as exc:
                    if has_attachments:
                        conn.execute("ROLLBACK TO bulk_doc")
                        conn.execute("RELEASE bulk_doc")
                    doc_id = doc.get("_id", "") if isinstance(doc, dict) else ""
                    results.append(BulkResult(id=str(doc_id), error=exc.error_id, reason=exc.reason))
                    continue
                if has_attachments:
                    conn.execute("RELEASE bulk_doc")
                seq += 1
                current[saved["_id"]] = written
                results.append(BulkResult(id=saved["_id"], rev=saved["_rev"]))
            conn.executemany(_UPSERT_DOC, pending)
            conn.execute("UPDATE dbs SET update_seq = ? WHERE name = ?", (seq, db))
        return results

    def _write_doc(
        self,
        conn: sqlite3.Connection,
        db: str,
        doc: dict[str, Any],
        stored_attachments: dict[str, Any] | None = None,
        *,
        seq: int | None = None,
        current: _Row | None = None,
        pending: list[tuple[Any, ...]] | None = None,
    ) -> tuple[dict[str, Any], _Row]:
        """Apply CouchDB's revision rules and write one document inside the caller's transaction.

        ``stored_attachments`` are stubs of blobs the caller just wrote for this revision.
        A bulk write passes the document's current row (``current``; None = absent) and the
        sequence to use (``seq``), and moves ``dbs.update_seq`` itself; with ``pending`` the row
        is appended there for the caller to write instead of written now.
        Returns the stored document and its new row.
        """
        body = dict(check_doc_body(doc))
        doc_id = check_doc_id(body.pop("_id", None) or new_doc_id())
        given_rev = body.pop("_rev", None)
        deleted = bool(body.pop("_deleted", False))
        if seq is None:
            row = conn.execute("SELECT rev, deleted, body FROM docs WHERE db = ? AND id = ?", (db, doc_id)).fetchone()
        else:
            row = current
        if row is None:
            if given_rev is not None:
                raise Conflict("Document update conflict", db=db, doc_id=doc_id)
            previous_rev: str | None = None
            old_stubs: dict[str, Any] = {}
        else:
            current_rev, was_deleted, old_body = row
            if given_rev is None and not was_deleted or given_rev is not None and given_rev != current_rev:
                raise Conflict("Document update conflict", db=db, doc_id=doc_id)
            previous_rev = current_rev
            old_stubs = {} if was_deleted or '"_attachments"' not in old_body else json.loads(old_body).get("_attachments", {})
        if given_rev is not None:
            _rev_number(given_rev)
        if stored_attachments:
            old_stubs = {**old_stubs, **stored_attachments}
        new_number = _rev_number(previous_rev) + 1 if previous_rev else 1
        stubs = {} if deleted else self._resolve_attachments(conn, db, doc_id, body, old_stubs, new_number)
        body.pop("_attachments", None)
        if stubs:
            body["_attachments"] = stubs
        if deleted:
            body["_deleted"] = True
        try:
            content = _dumps(body)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"document is not JSON: {exc}", db=db, doc_id=doc_id) from exc
        # Only now that nothing can fail any more are dropped attachments removed.
        if old_stubs or stubs:
            self._drop_attachments(conn, db, doc_id, keep=set(stubs))
        # The rev hash covers the previous rev and the content, so equal edits of different
        # revisions never share a rev.
        digest = hashlib.md5(f"{int(deleted)}|{previous_rev}|".encode(), usedforsecurity=False)
        digest.update(content.encode())
        new_rev = f"{new_number}-{digest.hexdigest()}"
        # Key order as CouchDB returns it: _id and _rev first.
        head = '{"_id":' + _dumps(doc_id) + ',"_rev":"' + new_rev + '"'
        encoded = head + ("}" if content == "{}" else "," + content[1:])
        if seq is None:
            seq = self._bump_seq(conn, db)
        params = (db, doc_id, new_rev, int(deleted), seq, encoded)
        if pending is None:
            conn.execute(_UPSERT_DOC, params)
        else:
            pending.append(params)
        stored = {"_id": doc_id, "_rev": new_rev, **body}
        return stored, (new_rev, int(deleted), encoded)

    @staticmethod
    def _bump_seq(conn: sqlite3.Connection, db: str) -> int:
        row = conn.execute(
            "UPDATE dbs SET update_seq = update_seq + 1 WHERE name = ? RETURNING update_seq", (db,)
        ).fetchone()
        return int(row[0])

    def _resolve_attachments(
        self,
        conn: sqlite3.Connection,
        db: str,
        doc_id: str,
        body: dict[str, Any],
        old_stubs: dict[str, Any],
        revpos: int,
    ) -> dict[str, Any]:
        """The new ``_attachments`` stubs: stubs kept, inline base64 data stored, the rest dropped."""
        given = body.get("_attachments") or {}
        if not isinstance(given, dict):
            raise BadRequest("_attachments must be an object", db=db, doc_id=doc_id)
        stubs: dict[str, Any] = {}
        for name, meta in given.items():
            if not isinstance(meta, dict):
                raise BadRequest(f"attachment {name!r} must be an object", db=db, doc_id=doc_id)
            if meta.get("stub"):
                if name not in old_stubs:
                    raise BadRequest(f"missing_stub: no attachment {name!r} to keep", db=db, doc_id=doc_id)
                stubs[name] = old_stubs[name]
            elif "data" in meta:
                try:
                    raw = base64.b64decode(meta["data"], validate=True)
                except (ValueError, TypeError) as exc:
                    raise BadRequest(f"attachment {name!r}: data is not base64", db=db, doc_id=doc_id) from exc
                content_type = str(meta.get("content_type") or "application/octet-stream")
                stubs[name] = self._store_blob(conn, db, doc_id, name, [raw], content_type, revpos)
            else:
                raise BadRequest(f"attachment {name!r} needs stub or data", db=db, doc_id=doc_id)
        return stubs

    def _store_blob(
        self,
        conn: sqlite3.Connection,
        db: str,
        doc_id: str,
        name: str,
        chunks: Iterator[bytes] | list[bytes],
        content_type: str,
        revpos: int,
    ) -> dict[str, Any]:
        blob_id = int(conn.execute("INSERT INTO blobs (length) VALUES (0) RETURNING blob_id").fetchone()[0])
        md5 = hashlib.md5(usedforsecurity=False)
        length = 0
        for n, chunk in enumerate(chunks):
            md5.update(chunk)
            length += len(chunk)
            conn.execute("INSERT INTO blob_chunks (blob_id, n, data) VALUES (?, ?, ?)", (blob_id, n, bytes(chunk)))
        conn.execute("UPDATE blobs SET length = ? WHERE blob_id = ?", (length, blob_id))
        old = conn.execute(
            "SELECT blob_id FROM attachments WHERE db = ? AND doc_id = ? AND name = ?", (db, doc_id, name)
        ).fetchone()
        if old:
            self._drop_blobs(conn, [old[0]])
        conn.execute(
            "INSERT INTO attachments (db, doc_id, name, blob_id) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (db, doc_id, name) DO UPDATE SET blob_id = excluded.blob_id",
            (db, doc_id, name, blob_id),
        )
        return {
            "content_type": content_type,
            "revpos": revpos,
            "digest": _attachment_digest(md5),
            "length": length,
            "stub": True,
        }

    def _drop_attachments(self, conn: sqlite3.Connection, db: str, doc_id: str, keep: set[str]) -> None:
        rows = conn.execute("SELECT name, blob_id FROM attachments WHERE db = ? AND doc_id = ?", (db, doc_id)).fetchall()
        gone = [(name, blob_id) for name, blob_id in rows if name not in keep]
        if gone:
            self._drop_blobs(conn, [blob_id for _, blob_id in gone])
            conn.executemany(
                "DELETE FROM attachments WHERE db = ? AND doc_id = ? AND name = ?",
                [(db, doc_id, name) for name, _ in gone],
            )

    @staticmethod
    def _drop_blobs(conn: sqlite3.Connection, blob_ids: list[int]) -> None:
        for blob_id in blob_ids:
            conn.execute("DELETE FROM blob_chunks WHERE blob_id = ?", (blob_id,))
            conn.execute("DELETE FROM blobs WHERE blob_id = ?", (blob_id,))

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
        check_db_name(db)
        with self._read() as conn:
            self._require_db(conn, db)
            if keys is not None:
                return self._all_docs_by_keys(conn, db, list(keys), include_docs)
            clauses = ["db = ?", "deleted = 0", _NOT_LOCAL]
            params: list[Any] = [db]
            low, high = (end_key, start_key) if descending else (start_key, end_key)
            if low is not None:
                clauses.append("id >= ?")
                params.append(low)
            if high is not None:
                clauses.append("id <= ?")
                params.append(high)
            sql = (
                f"SELECT id, rev, body FROM docs WHERE {' AND '.join(clauses)} "
                f"ORDER BY id {'DESC' if descending else 'ASC'} LIMIT ? OFFSET ?"
            )
            params += [-1 if limit is None else limit, skip]
            rows = conn.execute(sql, params).fetchall()
        out = []
        for doc_id, rev, body in rows:
            row: dict[str, Any] = {"id": doc_id, "key": doc_id, "value": {"rev": rev}}
            if include_docs:
                row["doc"] = json.loads(body)
            out.append(row)
        return out

    @staticmethod
    def _all_docs_by_keys(
        conn: sqlite3.Connection, db: str, keys: list[str], include_docs: bool
    ) -> list[dict[str, Any]]:
        found: dict[str, tuple[str, int, str]] = {}
        unique = list(dict.fromkeys(key for key in keys if isinstance(key, str)))
        for start in range(0, len(unique), 500):
            batch = unique[start : start + 500]
            marks = ",".join("?" for _ in batch)
            for doc_id, rev, deleted, body in conn.execute(
                f"SELECT id, rev, deleted, body FROM docs WHERE db = ? AND id IN ({marks})", (db, *batch)
            ):
                found[doc_id] = (rev, deleted, body)
        out: list[dict[str, Any]] = []
        for key in keys:
            hit = found.get(key) if isinstance(key, str) else None
            if hit is None:
                out.append({"key": key, "error": "not_found"})
                continue
            rev, deleted, body = hit
            row: dict[str, Any] = {"id": key, "key": key, "value": {"rev": rev}}
            if deleted:
                row["value"]["deleted"] = True
            if include_docs:
                row["doc"] = None if deleted else json.loads(body)
            out.append(row)
        return out

    # -- Mango -------------------------------------------------------------------------------

    def create_index(
        self, db: str, fields: Sequence[str], *, name: str | None = None, ddoc: str | None = None
    ) -> str:
        check_db_name(db)
        field_list = [str(f) for f in fields]
        if not field_list:
            raise BadRequest("an index needs at least one field", db=db)
        digest = hashlib.sha1(_dumps(field_list).encode(), usedforsecurity=False).hexdigest()
        index_name = name or digest
        ddoc_id = "_design/" + (ddoc or digest)
        definition = {
            "map": {"fields": {f: "asc" for f in field_list}, "partial_filter_selector": {}},
            "reduce": "_count",
            "options": {"def": {"fields": field_list}},
        }
        with self._write() as conn:
            self._require_db(conn, db)
            row = conn.execute("SELECT deleted, body FROM docs WHERE db = ? AND id = ?", (db, ddoc_id)).fetchone()
            design: dict[str, Any] = {"_id": ddoc_id, "language": "query", "views": {}}
            if row is not None and not row[0]:
                design = json.loads(row[1])
                if design.get("views", {}).get(index_name) == definition:
                    return index_name
            design.setdefault("views", {})[index_name] = definition
            self._write_doc(conn, db, design)
            # One SQLite expression index per distinct leading field, shared by every database:
            # equality on it (pvt_type, sip.username, ...) then reads the index, not the table.
            lead = field_list[0]
            sql_index = "docs_by_" + hashlib.sha1(lead.encode(), usedforsecurity=False).hexdigest()[:16]
            conn.execute(f"CREATE INDEX IF NOT EXISTS {sql_index} ON docs (db, {mango.sql_json_extract(lead)})")
        return index_name

    def _declared_indexes(self, conn: sqlite3.Connection, db: str) -> list[list[str]]:
        indexes = []
        for (body,) in conn.execute(
            "SELECT body FROM docs WHERE db = ? AND id >= '_design/' AND id < '_design0' AND deleted = 0", (db,)
        ):
            design = json.loads(body)
            if design.get("language") != "query":
                continue
            for view in design.get("views", {}).values():
                fields = view.get("options", {}).get("def", {}).get("fields")
                if fields:
                    indexes.append([f if isinstance(f, str) else next(iter(f)) for f in fields])
        return indexes

    @staticmethod
    def _sort_is_indexed(sort: mango.SortSpec, selector: dict[str, Any], indexes: list[list[str]]) -> bool:
        """CouchDB's rule: some index reads the sort fields in order, after fields fixed by equality."""
        sort_fields = [f for f, _ in sort]
        fixed = {
            key
            for key, cond in selector.items()
            if not key.startswith("$") and (not isinstance(cond, dict) or set(cond) == {"$eq"})
        }
        for fields in indexes:
            for offset in range(len(fields) - len(sort_fields) + 1):
                if fields[offset : offset + len(sort_fields)] == sort_fields and set(fields[:offset]) <= fixed:
                    return True
        return False

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
        check_db_name(db)
        mango.validate_selector(selector)
        spec = mango.normalize_sort(sort)
        if limit is not None and limit < 0 or skip < 0:
            raise BadRequest("limit and skip must not be negative", db=db)
        clauses, params = mango.sql_prefilter(selector)
        where = " AND ".join(
            ["db = ?", "deleted = 0", "NOT (id >= '_design/' AND id < '_design0')", _NOT_LOCAL, *clauses]
        )
        with self._read() as conn:
            self._require_db(conn, db)
            if spec and not self._sort_is_indexed(spec, selector, self._declared_indexes(conn, db)):
                raise BadRequest(
                    "no_usable_index: no index exists for this sort, try indexing by the sort fields", db=db
                )
            # No ORDER BY: it would steer SQLite to the primary key instead of a json index.
            rows = conn.execute(f"SELECT body FROM docs WHERE {where}", (db, *params)).fetchall()
        compiled = mango.compile_selector(selector)
        docs = [doc for doc in (json.loads(body) for (body,) in rows) if mango.evaluate(compiled, doc)]
        sort_paths = [mango.split_field(f) for f, _ in spec]
        if spec:
            # A JSON index holds only documents that have every indexed field.
            docs = [d for d in docs if all(mango.get_field(d, p) is not mango.MISSING for p in sort_paths)]
        descending = bool(spec) and spec[0][1] == "desc"

        def position(doc: dict[str, Any]) -> tuple[Any, ...]:
            return (tuple(mango.collation_key(mango.get_field(doc, p)) for p in sort_paths), doc["_id"])

        docs.sort(key=position, reverse=descending)
        if bookmark:
            after = mango.decode_bookmark(bookmark)
            if not isinstance(after, list) or len(after) != 2 or not isinstance(after[1], str):
                raise BadRequest(f"invalid bookmark {bookmark!r}", db=db)
            mark = (tuple(mango.collation_key(v) for v in after[0]), after[1])
            docs = [d for d in docs if (position(d) < mark if descending else position(d) > mark)]
        docs = docs[skip:]
        if limit is not None:
            docs = docs[:limit]
        next_bookmark = bookmark
        if docs:
            last = docs[-1]
            next_bookmark = mango.encode_bookmark([[mango.get_field(last, p) for p in sort_paths], last["_id"]])
        return FindResult(docs=[mango.project(d, fields) for d in docs], bookmark=next_bookmark or "nil")

    # -- changes -----------------------------------------------------------------------------

    def _resolve_since(self, conn: sqlite3.Connection, db: str, since: Seq) -> int:
        if since == "now":
            row = conn.execute("SELECT update_seq FROM dbs WHERE name = ?", (db,)).fetchone()
            return int(row[0]) if row else 0
        try:
            return int(since)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"invalid since: {since!r}", db=db) from exc

    def changes(
        self, db: str, *, since: Seq = 0, limit: int | None = None, include_docs: bool = False
    ) -> ChangesResult:
        check_db_name(db)
        with self._read() as conn:
            row = conn.execute("SELECT update_seq FROM dbs WHERE name = ?", (db,)).fetchone()
            if row is None:
                raise NotFound("no_db_file", db=db)
            start = self._resolve_since(conn, db, since)
            rows = conn.execute(
                f"SELECT seq, id, rev, deleted, body FROM docs WHERE db = ? AND seq > ? AND {_NOT_LOCAL} "
                "ORDER BY seq LIMIT ?",
                (db, start, -1 if limit is None else limit),
            ).fetchall()
        results = [
            Change(
                seq=seq,
                id=doc_id,
                rev=rev,
                deleted=bool(deleted),
                doc=json.loads(body) if include_docs else None,
            )
            for seq, doc_id, rev, deleted, body in rows
        ]
        if limit is not None and len(results) >= limit:
            last_seq = results[-1].seq if results else start
        else:
            last_seq = max(int(row[0]), start)
        return ChangesResult(results=results, last_seq=last_seq)

    def follow(
        self,
        db: str,
        *,
        since: Seq = "now",
        include_docs: bool = False,
        idle_timeout: float | None = None,
    ) -> ChangesFeed:
        check_db_name(db)
        with self._read() as conn:
            self._require_db(conn, db)
            start = self._resolve_since(conn, db, since)
        return _EmbeddedChangesFeed(self, db, start, include_docs, idle_timeout)

    # -- attachments -------------------------------------------------------------------------

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
        check_db_name(db)
        check_doc_id(doc_id)
        if not name:
            raise BadRequest("attachment name must not be empty", db=db, doc_id=doc_id)
        # Spool first so the write lock is never held while the caller's stream trickles in.
        with tempfile.SpooledTemporaryFile(max_size=8 * CHUNK_SIZE) as spool:
            for chunk in _iter_source(data):
                spool.write(chunk)
            spool.seek(0)
            with self._write() as conn:
                self._require_db(conn, db)
                row = conn.execute("SELECT rev, deleted, body FROM docs WHERE db = ? AND id = ?", (db, doc_id)).fetchone()
                if row is None or row[1]:
                    if rev is not None:
                        raise Conflict("Document update conflict", db=db, doc_id=doc_id)
                    body: dict[str, Any] = {"_id": doc_id}
                    previous = row[0] if row else None
                else:
                    if rev != row[0]:
                        raise Conflict("Document update conflict", db=db, doc_id=doc_id)
                    body = json.loads(row[2])
                    previous = row[0]
                revpos = _rev_number(previous) + 1 if previous else 1
                stub = self._store_blob(
                    conn, db, doc_id, name, iter(lambda: spool.read(CHUNK_SIZE), b""), content_type, revpos
                )
                attachments = dict(body.get("_attachments", {}))
                attachments[name] = stub
                body["_attachments"] = attachments
                body["_rev"] = previous
                if previous is None:
                    body.pop("_rev")
                saved, _ = self._write_doc(conn, db, body, stored_attachments={name: stub})
        return str(saved["_rev"])

    def open_attachment(self, db: str, doc_id: str, name: str) -> AttachmentReader:
        check_db_name(db)
        # A connection of its own holds one read snapshot for the whole stream, so a concurrent
        # update of the attachment cannot tear it.
        conn = self._open()
        try:
            conn.execute("BEGIN")
            row = conn.execute("SELECT deleted, body FROM docs WHERE db = ? AND id = ?", (db, doc_id)).fetchone()
            if row is None or row[0]:
                self._require_db(conn, db)
                raise NotFound("missing" if row is None else "deleted", db=db, doc_id=doc_id)
            stub = json.loads(row[1]).get("_attachments", {}).get(name)
            blob = conn.execute(
                "SELECT blob_id FROM attachments WHERE db = ? AND doc_id = ? AND name = ?", (db, doc_id, name)
            ).fetchone()
            if stub is None or blob is None:
                raise NotFound("missing attachment", db=db, doc_id=f"{doc_id}/{name}")
        except BaseException:
            conn.close()
            raise
        return _EmbeddedAttachmentReader(conn, int(blob[0]), stub)

    def delete_attachment(self, db: str, doc_id: str, name: str, rev: str) -> str:
        check_db_name(db)
        with self._write() as conn:
            self._require_db(conn, db)
            row = conn.execute("SELECT rev, deleted, body FROM docs WHERE db = ? AND id = ?", (db, doc_id)).fetchone()
            if row is None or row[1]:
                raise NotFound("missing" if row is None else "deleted", db=db, doc_id=doc_id)
            if rev != row[0]:
                raise Conflict("Document update conflict", db=db, doc_id=doc_id)
            body = json.loads(row[2])
            attachments = dict(body.get("_attachments", {}))
            if name not in attachments:
                raise NotFound("missing attachment", db=db, doc_id=f"{doc_id}/{name}")
            del attachments[name]
            body["_attachments"] = attachments
            saved, _ = self._write_doc(conn, db, body)
        return str(saved["_rev"])

    # -- maintenance -------------------------------------------------------------------------

    def integrity_check(self) -> str:
        """SQLite's own consistency check of the file: "ok" when sound."""
        with self._connection() as conn:
            return "\n".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))


def _wait_while_locked(operation: Callable[[], object]) -> None:
    """Run ``operation``, retrying with short cooperative sleeps while the file is locked."""
    deadline = time.monotonic() + WRITE_WAIT_TIMEOUT
    pause = 0.001
    while True:
        try:
            operation()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise StoreUnavailable(
                    f"sqlite: locked by another process for {WRITE_WAIT_TIMEOUT:.0f}s", retry_after=1.0
                ) from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def _iter_source(data: AttachmentData) -> Iterator[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data)
        return
    read = getattr(data, "read", None)
    if callable(read):
        while chunk := read(CHUNK_SIZE):
            yield chunk
        return
    for chunk in data:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise BadRequest("attachment chunks must be bytes")
        yield bytes(chunk)


class _EmbeddedAttachmentReader(AttachmentReader):
    def __init__(self, conn: sqlite3.Connection, blob_id: int, stub: dict[str, Any]) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._blob_id = blob_id
        self.content_type = str(stub.get("content_type", "application/octet-stream"))
        self.length = int(stub.get("length", 0))
        self.digest = str(stub.get("digest", ""))

    def iter_chunks(self, chunk_size: int = 65536) -> Iterator[bytes]:
        n = 0
        while self._conn is not None:
            row = self._conn.execute(
                "SELECT data FROM blob_chunks WHERE blob_id = ? AND n = ?", (self._blob_id, n)
            ).fetchone()
            if row is None:
                break
            stored: bytes = row[0]
            for offset in range(0, len(stored), chunk_size):
                yield stored[offset : offset + chunk_size]
            n += 1
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _EmbeddedChangesFeed(ChangesFeed):
    """Polls the database's sequence; other processes' writes show up within ``poll_interval``."""

    def __init__(
        self, store: EmbeddedStore, db: str, since: int, include_docs: bool, idle_timeout: float | None
    ) -> None:
        self._store = store
        self._db = db
        self.last_seq = since
        self._include_docs = include_docs
        self._idle_timeout = idle_timeout
        self._closed = False

    def __iter__(self) -> Iterator[Change]:
        idle_since = time.monotonic()
        # A closed store ends its feeds quietly (node shutdown), like close() does.
        while not self._closed and not self._store._closed:
            batch = self._store.changes(self._db, since=self.last_seq, limit=500, include_docs=self._include_docs)
            for change in batch.results:
                if self._closed:
                    return
                self.last_seq = change.seq
                yield change
            if batch.results:
                idle_since = time.monotonic()
                continue
            if self._idle_timeout is not None and time.monotonic() - idle_since >= self._idle_timeout:
                return
            time.sleep(self._store.poll_interval)

    def close(self) -> None:
        self._closed = True
