"""Embedded-only behaviour: where the file lives, and no orphaned attachment blobs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from store import open_store
from store.embedded import EmbeddedStore


def _blob_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM blob_chunks").fetchone()[0])


def test_one_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    store = open_store("embedded", tmp_path)
    assert isinstance(store, EmbeddedStore)
    assert store.path == tmp_path / "store.sqlite3" and store.path.exists()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_failed_bulk_document_leaves_no_blob(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    store.create_db("db")
    results = store.bulk_docs(
        "db",
        [
            {"_id": "ok", "_attachments": {"a": {"content_type": "text/plain", "data": "YQ=="}}},
            # A stub for an attachment that does not exist fails this document only.
            {"_id": "bad", "_attachments": {"x": {"content_type": "text/plain", "data": "eA=="}, "y": {"stub": True}}},
        ],
    )
    assert [r.ok for r in results] == [True, False]
    assert _blob_count(store.path) == 1
    rev = store.get("db", "ok")["_rev"]
    store.delete("db", "ok", rev)
    assert _blob_count(store.path) == 0
    store.close()
