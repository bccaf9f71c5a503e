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


def test_writers_wait_for_a_long_foreign_transaction(tmp_path: Path) -> None:
    """Another process holding the write lock for longer than SQLite's busy timeout: the
    store waits (cooperatively, in Python) and then writes, instead of failing."""
    import threading
    import time

    store = EmbeddedStore(tmp_path)
    store.create_db("db")
    foreign = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    foreign.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release_later() -> None:
        time.sleep(1.0)
        foreign.execute("COMMIT")
        released.set()

    threading.Thread(target=release_later).start()
    second = EmbeddedStore(tmp_path)  # opening needs no write lock once the schema exists
    saved = second.put("db", {"_id": "waited"})
    assert released.is_set()
    assert store.get("db", "waited")["_rev"] == saved["_rev"]
    foreign.close()
    second.close()
    store.close()


def test_unencodable_document_in_bulk_keeps_the_previous_revision_whole(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    store.create_db("db")
    rev = store.put_attachment("db", "m", "a.wav", b"audio", content_type="audio/x-wav")
    results = store.bulk_docs("db", [{"_id": "m", "_rev": rev, "bad": {1, 2}}, {"_id": "other"}])
    assert [r.ok for r in results] == [False, True] and results[0].error == "bad_request"
    assert store.get_attachment("db", "m", "a.wav") == (b"audio", "audio/x-wav")
    store.close()
