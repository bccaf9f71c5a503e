"""The Store contract: every case runs unchanged on the embedded backend and on CouchDB.

Against pouchdb-server a case is skipped only for one of its documented deviations
(tests/store/conftest.py POUCHDB_DEVIATIONS); against a real CouchDB 3.x everything runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from store import BadRequest, Change, Conflict, DatabaseExists, NotFound, Store
from store.kazoo import (
    account_db_name,
    account_id_from_db,
    encode_db_name,
    ensure_saved,
    get_config,
    modb_name,
    new_account_id,
    parse_modb,
    save_to_modb,
    set_config,
    update_doc,
)

REV = re.compile(r"^(\d+)-[0-9a-f]{32}$")


def rev_number(rev: str) -> int:
    match = REV.match(rev)
    assert match, f"not a CouchDB rev: {rev!r}"
    return int(match.group(1))


# -- databases ---------------------------------------------------------------------------------


def test_database_lifecycle(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("life")
    assert not store.db_exists(db)
    assert store.create_db(db) is True
    assert store.db_exists(db)
    with pytest.raises(DatabaseExists) as exc:
        store.create_db(db)
    assert exc.value.error_id == "db_exists"
    assert store.create_db(db, exist_ok=True) is False
    assert db in store.list_dbs(prefix=db[:11])
    info = store.db_info(db)
    assert (info.name, info.doc_count, info.doc_del_count) == (db, 0, 0)
    assert store.delete_db(db) is True
    assert not store.db_exists(db)
    with pytest.raises(NotFound):
        store.delete_db(db)
    assert store.delete_db(db, missing_ok=True) is False
    with pytest.raises(NotFound):
        store.get(db, "anything")
    with pytest.raises(NotFound):
        store.put(db, {"_id": "x"})


def test_illegal_database_names_are_refused(store: Store) -> None:
    for bad in ("Upper", "1starts-with-digit", "has space", "", "dots.are.bad"):
        with pytest.raises(BadRequest) as exc:
            store.create_db(bad)
        assert exc.value.error_id == "bad_request"


def test_list_dbs_by_prefix(store: Store, dbname: Callable[[str], str]) -> None:
    names = [dbname("pfx-a"), dbname("pfx-b"), dbname("other")]
    for name in names:
        store.create_db(name)
    prefix = dbname("pfx")
    assert store.list_dbs(prefix=prefix) == sorted(names[:2])
    assert set(names) <= set(store.list_dbs())


# -- documents and revisions -------------------------------------------------------------------


def test_revisions_and_conflicts(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("revs")
    store.create_db(db)
    first = store.put(db, {"_id": "dev1", "name": "desk phone", "sip": {"username": "alice"}})
    assert first["_id"] == "dev1" and rev_number(first["_rev"]) == 1
    assert store.get(db, "dev1") == first

    with pytest.raises(Conflict) as no_rev:
        store.put(db, {"_id": "dev1", "name": "no rev given"})
    assert no_rev.value.error_id == "conflict" and no_rev.value.status == 409

    second = store.put(db, {**first, "name": "renamed"})
    assert rev_number(second["_rev"]) == 2 and second["_rev"] != first["_rev"]
    with pytest.raises(Conflict):
        store.put(db, {**first, "name": "stale"})
    assert store.get(db, "dev1")["name"] == "renamed"
    assert store.get(db, "dev1", rev=second["_rev"])["name"] == "renamed"

    with pytest.raises(Conflict):
        store.put(db, {"_id": "never-existed", "_rev": "1-" + "0" * 32})
    with pytest.raises(NotFound) as missing:
        store.get(db, "never-existed")
    assert missing.value.error_id == "not_found"

    generated = store.put(db, {"name": "no id"})
    assert re.fullmatch(r"[0-9a-f]{32}", generated["_id"])
    assert store.get(db, generated["_id"])["name"] == "no id"


def test_ids_with_reserved_characters(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("ids")
    store.create_db(db)
    for doc_id in ("a/b", "+14155550100", "with space", "ünïcode", "202611-" + "f" * 32, "a?b&c=d#e"):
        saved = store.put(db, {"_id": doc_id, "v": doc_id})
        assert store.get(db, doc_id)["v"] == doc_id
        assert saved["_id"] == doc_id
    design = store.put(db, {"_id": "_design/things", "language": "javascript", "views": {}})
    assert store.get(db, "_design/things")["_rev"] == design["_rev"]


def test_delete_leaves_a_tombstone(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("tomb")
    store.create_db(db)
    doc = store.put(db, {"_id": "gone", "v": 1})
    doc = store.put(db, {**doc, "v": 2})
    tombstone_rev = store.delete(db, "gone", doc["_rev"])
    assert rev_number(tombstone_rev) == 3
    with pytest.raises(NotFound) as exc:
        store.get(db, "gone")
    assert exc.value.reason == "deleted" or exc.value.reason  # CouchDB says "deleted"

    feed = store.changes(db, since=0)
    (change,) = [c for c in feed.results if c.id == "gone"]
    assert change.deleted and change.rev == tombstone_rev

    (row,) = store.all_docs(db, keys=["gone"])
    assert row["value"] == {"rev": tombstone_rev, "deleted": True}
    assert store.all_docs(db) == []
    assert store.db_info(db).doc_count == 0

    # Writing the id again without a rev revives it on top of the tombstone.
    revived = store.put(db, {"_id": "gone", "v": 3})
    assert rev_number(revived["_rev"]) == 4
    assert store.get(db, "gone")["v"] == 3


def test_delete_by_put_with_deleted_flag(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("flag")
    store.create_db(db)
    doc = store.put(db, {"_id": "x", "v": 1})
    gone = store.put(db, {"_id": "x", "_rev": doc["_rev"], "_deleted": True})
    assert rev_number(gone["_rev"]) == 2
    with pytest.raises(NotFound):
        store.get(db, "x")


def test_delete_with_stale_rev_conflicts(
    store: Store, dbname: Callable[[str], str], skip_on_pouchdb: Callable[[str], None]
) -> None:
    skip_on_pouchdb("wrong_rev_delete")
    db = dbname("delrev")
    store.create_db(db)
    first = store.put(db, {"_id": "d", "v": 1})
    store.put(db, {**first, "v": 2})
    with pytest.raises(Conflict):
        store.delete(db, "d", first["_rev"])
    assert store.get(db, "d")["v"] == 2


def test_bulk_docs_report_each_document(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("bulk")
    store.create_db(db)
    existing = store.put(db, {"_id": "keep", "v": 0})
    stale = store.put(db, {"_id": "stale", "v": 0})
    store.put(db, {**stale, "v": 1})
    results = store.bulk_docs(
        db,
        [
            {"_id": "new1", "v": 1},
            {"_id": "keep", "_rev": existing["_rev"], "v": 1},
            {"_id": "stale", "_rev": stale["_rev"], "v": 99},
            {"_id": "keep", "v": "no rev"},
            {"v": "generated id"},
        ],
    )
    assert [r.ok for r in results] == [True, True, False, False, True]
    assert [r.error for r in results] == [None, None, "conflict", "conflict", None]
    assert results[0].id == "new1" and rev_number(results[0].rev or "") == 1
    assert rev_number(results[1].rev or "") == 2
    assert results[2].id == "stale" and results[2].rev is None
    assert store.get(db, "keep")["v"] == 1
    assert store.get(db, "stale")["v"] == 1
    assert store.get(db, results[4].id)["v"] == "generated id"

    many = store.bulk_docs(db, [{"_id": f"n{i:04d}", "i": i} for i in range(500)])
    assert all(r.ok for r in many)
    assert store.db_info(db).doc_count == 4 + 500


def test_get_many_and_all_docs(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("many")
    store.create_db(db)
    store.bulk_docs(db, [{"_id": f"doc{i}", "i": i} for i in range(6)])
    gone = store.get(db, "doc3")
    store.delete(db, "doc3", gone["_rev"])

    rows = store.all_docs(db, keys=["doc4", "nope", "doc3", "doc0"], include_docs=True)
    assert [row.get("id") for row in rows] == ["doc4", None, "doc3", "doc0"]
    assert rows[0]["doc"]["i"] == 4 and rows[0]["value"]["rev"] == rows[0]["doc"]["_rev"]
    assert rows[1] == {"key": "nope", "error": "not_found"}
    assert rows[2]["value"]["deleted"] is True and rows[2]["doc"] is None
    assert rows[3]["doc"]["i"] == 0

    docs = store.get_many(db, ["doc1", "missing", "doc3", "doc5"])
    assert [d["i"] if d else None for d in docs] == [1, None, None, 5]

    assert [r["id"] for r in store.all_docs(db)] == ["doc0", "doc1", "doc2", "doc4", "doc5"]
    assert [r["id"] for r in store.all_docs(db, start_key="doc1", end_key="doc4")] == ["doc1", "doc2", "doc4"]
    assert [r["id"] for r in store.all_docs(db, limit=2, skip=1)] == ["doc1", "doc2"]
    assert [r["id"] for r in store.all_docs(db, descending=True, limit=2)] == ["doc5", "doc4"]
    assert [r["id"] for r in store.all_docs(db, start_key="doc4", end_key="doc1", descending=True)] == [
        "doc4",
        "doc2",
        "doc1",
    ]
    assert "doc" not in store.all_docs(db, limit=1)[0]


# -- Mango -------------------------------------------------------------------------------------

DEVICES: list[dict[str, Any]] = [
    {"_id": "d01", "pvt_type": "device", "n": 1, "name": "alpha", "sip": {"username": "u1", "realm": "a.example"},
     "owner_id": "o1", "tags": ["desk", "lobby"], "enabled": True},
    {"_id": "d02", "pvt_type": "device", "n": 2, "name": "bravo", "sip": {"username": "u2", "realm": "a.example"},
     "owner_id": "o2", "tags": ["desk"], "enabled": False},
    {"_id": "d03", "pvt_type": "device", "n": 3, "name": "charlie", "sip": {"username": "u3", "realm": "b.example"},
     "tags": [], "enabled": True},
    {"_id": "d04", "pvt_type": "device", "n": 4, "name": "delta", "sip": {"username": "x4", "realm": "b.example"},
     "owner_id": None, "enabled": True},
    {"_id": "u01", "pvt_type": "user", "n": 5, "name": "echo", "first_name": "Eve"},
    {"_id": "u02", "pvt_type": "user", "n": 6, "name": "foxtrot", "first_name": "Frank", "pvt_deleted": True},
]


def _ids(result_docs: list[dict[str, Any]]) -> list[str]:
    return sorted(doc["_id"] for doc in result_docs)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"pvt_type": "device"}, ["d01", "d02", "d03", "d04"]),
        ({"pvt_type": {"$eq": "user"}}, ["u01", "u02"]),
        ({"pvt_type": "device", "enabled": {"$ne": True}}, ["d02"]),
        ({"name": {"$in": ["alpha", "echo", "zulu"]}}, ["d01", "u01"]),
        ({"n": {"$gt": 4}}, ["u01", "u02"]),
        ({"n": {"$gte": 4}}, ["d04", "u01", "u02"]),
        ({"n": {"$lt": 2}}, ["d01"]),
        ({"n": {"$lte": 2}}, ["d01", "d02"]),
        ({"n": {"$gt": 1, "$lt": 4}}, ["d02", "d03"]),
        ({"owner_id": {"$exists": True}}, ["d01", "d02", "d04"]),
        ({"pvt_type": "device", "owner_id": {"$exists": False}}, ["d03"]),
        ({"pvt_deleted": {"$exists": False}, "pvt_type": "user"}, ["u01"]),
        ({"name": {"$regex": "^[a-c]"}}, ["d01", "d02", "d03"]),
        ({"sip.username": {"$regex": "^u"}}, ["d01", "d02", "d03"]),
        ({"sip.realm": "b.example"}, ["d03", "d04"]),
        ({"sip": {"realm": "a.example"}}, ["d01", "d02"]),
        ({"$or": [{"n": 1}, {"first_name": "Frank"}]}, ["d01", "u02"]),
        ({"$and": [{"pvt_type": "device"}, {"sip.realm": "a.example"}, {"n": {"$gt": 1}}]}, ["d02"]),
        ({"pvt_type": "device", "$or": [{"owner_id": "o1"}, {"owner_id": None}]}, ["d01", "d04"]),
        ({"tags": {"$all": ["desk"]}}, ["d01", "d02"]),
        ({"tags": {"$size": 0}}, ["d03"]),
        ({"tags": {"$elemMatch": {"$eq": "lobby"}}}, ["d01"]),
        ({"owner_id": {"$type": "null"}}, ["d04"]),
        ({"pvt_type": "device", "name": {"$nin": ["alpha", "bravo"]}}, ["d03", "d04"]),
        ({"$nor": [{"pvt_type": "device"}]}, ["u01", "u02"]),
        ({"pvt_type": "device", "$not": {"enabled": True}}, ["d02"]),
        ({"n": {"$mod": [2, 0]}}, ["d02", "d04", "u02"]),
    ],
)
def test_mango_selectors(store: Store, dbname: Callable[[str], str], selector: dict[str, Any], expected: list[str]) -> None:
    db = dbname("mango")
    store.create_db(db)
    assert all(r.ok for r in store.bulk_docs(db, DEVICES))
    assert _ids(store.find(db, selector).docs) == expected


def test_mango_bad_selectors_are_refused(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("badsel")
    store.create_db(db)
    for selector in ({"n": {"$bogus": 1}}, {"$or": "not a list"}, {"n": {"$in": 3}}, {"n": {"$regex": "("}}):
        with pytest.raises(BadRequest):
            store.find(db, selector)


def test_mango_fields_and_unlimited_results(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("fields")
    store.create_db(db)
    store.bulk_docs(db, [{"_id": f"c{i:03d}", "pvt_type": "cdr", "n": i, "a": {"b": i, "c": "x"}} for i in range(60)])
    store.put(db, {"_id": "_design/ignored", "language": "javascript", "views": {}})
    everything = store.find(db, {"pvt_type": "cdr"})
    assert len(everything.docs) == 60  # more than CouchDB's default page of 25
    projected = store.find(db, {"n": 7}, fields=["_id", "a.b"])
    assert projected.docs == [{"_id": "c007", "a": {"b": 7}}]
    assert store.find(db, {"_id": {"$gt": "_"}}).docs != [] and all(
        not d["_id"].startswith("_design/") for d in store.find(db, {"_id": {"$gt": ""}}).docs
    )


def test_mango_sort_limit_and_bookmark_paging(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("paging")
    store.create_db(db)
    docs = [{"_id": f"cdr{i:03d}", "pvt_type": "cdr", "ts": (i * 7) % 23, "i": i} for i in range(23)]
    docs.append({"_id": "other", "pvt_type": "user", "ts": 3})
    store.bulk_docs(db, docs)
    index = store.create_index(db, ["pvt_type", "ts"], name="by-type-ts", ddoc="cdr-index")
    assert index == "by-type-ts"
    assert store.create_index(db, ["pvt_type", "ts"], name="by-type-ts", ddoc="cdr-index") == "by-type-ts"

    selector = {"pvt_type": "cdr", "ts": {"$gte": 0}}
    expected = [d["_id"] for d in sorted(docs[:-1], key=lambda d: d["ts"])]

    first = store.find(db, selector, sort=[{"pvt_type": "asc"}, {"ts": "asc"}], limit=5)
    assert [d["_id"] for d in first.docs] == expected[:5]

    def collect(sort: list[Any]) -> list[str]:
        seen: list[str] = []
        bookmark = None
        for _ in range(10):
            page = store.find(db, selector, sort=sort, limit=5, bookmark=bookmark)
            seen += [d["_id"] for d in page.docs]
            if not page.docs:
                break
            assert len(page.docs) <= 5
            bookmark = page.bookmark
        return seen

    assert collect([{"pvt_type": "asc"}, {"ts": "asc"}]) == expected
    assert collect([{"pvt_type": "desc"}, {"ts": "desc"}]) == expected[::-1]
    assert [d["ts"] for d in store.find(db, selector, sort=["pvt_type", "ts"], limit=3).docs] == [0, 1, 2]
    assert [d["_id"] for d in store.find_all(db, selector, sort=["pvt_type", "ts"], page_size=4)] == expected

    with pytest.raises(BadRequest):
        store.find(db, selector, sort=[{"i": "asc"}])  # no index for this sort


# -- changes -----------------------------------------------------------------------------------


def test_changes_since(store: Store, dbname: Callable[[str], str]) -> None:
    # A clustered CouchDB merges the feeds of its shards, so the order of changes to different
    # documents is not part of the contract: compare by id.
    db = dbname("changes")
    store.create_db(db)
    empty = store.changes(db)
    assert empty.results == []
    first = store.put(db, {"_id": "a", "v": 1})
    store.put(db, {"_id": "b", "v": 1})
    everything = store.changes(db, since=0, include_docs=True)
    by_id = {c.id: c for c in everything.results}
    assert sorted(by_id) == ["a", "b"] and len(everything.results) == 2
    assert by_id["a"].rev == first["_rev"] and by_id["a"].doc is not None and by_id["a"].doc["v"] == 1
    mark = everything.last_seq

    store.put(db, {**first, "v": 2})
    store.put(db, {"_id": "c"})
    after = store.changes(db, since=mark, include_docs=True)
    by_id = {c.id: c for c in after.results}
    assert sorted(by_id) == ["a", "c"] and len(after.results) == 2
    assert by_id["a"].doc is not None and by_id["a"].doc["v"] == 2 and not by_id["a"].deleted
    assert rev_number(by_id["a"].rev) == 2
    assert store.changes(db, since=after.last_seq).results == []

    limited = store.changes(db, since=0, limit=2)
    assert len(limited.results) == 2
    rest = store.changes(db, since=limited.last_seq)
    assert sorted(c.id for c in limited.results + rest.results) == ["a", "b", "c"]
    assert store.changes(db, since="now").results == []


def test_live_changes_feed(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("live")
    store.create_db(db)
    store.put(db, {"_id": "before"})
    feed = store.follow(db, since="now", include_docs=True, idle_timeout=20.0)
    received: list[Change] = []
    done = threading.Event()

    def consume() -> None:
        for change in feed:
            received.append(change)
            if len(received) == 3:
                feed.close()
        done.set()

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(0.3)
    a = store.put(db, {"_id": "live-a", "n": 1})
    store.put(db, {"_id": "live-b", "n": 2})
    store.put(db, {"_id": "live-c", "n": 3})
    # Well before the idle timeout: the feed delivers changes as they happen.
    assert done.wait(timeout=15.0)
    reader.join(timeout=5)
    assert sorted(c.id for c in received) == ["live-a", "live-b", "live-c"]
    assert {c.id: c.doc["n"] for c in received if c.doc} == {"live-a": 1, "live-b": 2, "live-c": 3}
    assert not any(c.deleted for c in received)

    # Resuming from a seen sequence replays only what came after it, deletions included.
    store.delete(db, "live-a", a["_rev"])
    store.put(db, {"_id": "after"})
    resumed = store.follow(db, since=received[-1].seq, idle_timeout=1.0)
    assert sorted((c.id, c.deleted) for c in resumed) == [("after", False), ("live-a", True)]

    # With nothing happening, the feed ends after its idle timeout.
    idle = store.follow(db, idle_timeout=0.5)
    assert list(idle) == []


# -- attachments -------------------------------------------------------------------------------


def test_large_attachments_round_trip_byte_exact(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("att")
    store.create_db(db)
    audio = os.urandom(1536 * 1024 + 17)
    chunks = (audio[i : i + 100_000] for i in range(0, len(audio), 100_000))
    rev = store.put_attachment(db, "vm1", "message.wav", chunks, content_type="audio/x-wav")
    assert rev_number(rev) == 1
    doc = store.get(db, "vm1")
    stub = doc["_attachments"]["message.wav"]
    assert stub["stub"] is True and stub["length"] == len(audio) and stub["content_type"] == "audio/x-wav"
    assert stub["digest"].startswith("md5-")

    with store.open_attachment(db, "vm1", "message.wav") as reader:
        assert reader.content_type == "audio/x-wav"
        received = list(reader.iter_chunks(64 * 1024))
    assert len(received) > 1 and all(len(c) <= 64 * 1024 for c in received)
    assert hashlib.sha256(b"".join(received)).digest() == hashlib.sha256(audio).digest()

    # A second attachment from a file object, then a document update that keeps both stubs.
    greeting = os.urandom(1024 * 1024)
    rev = store.put_attachment(db, "vm1", "greeting.mp3", io.BytesIO(greeting), content_type="audio/mpeg", rev=rev)
    doc = store.get(db, "vm1")
    updated = store.put(db, {**doc, "folder": "saved"})
    data, content_type = store.get_attachment(db, "vm1", "greeting.mp3")
    assert data == greeting and content_type == "audio/mpeg"
    assert store.get_attachment(db, "vm1", "message.wav")[0] == audio

    with pytest.raises(Conflict):
        store.put_attachment(db, "vm1", "late.wav", b"x", content_type="audio/x-wav", rev=rev)
    rev = store.delete_attachment(db, "vm1", "message.wav", updated["_rev"])
    with pytest.raises(NotFound):
        store.get_attachment(db, "vm1", "message.wav")
    assert set(store.get(db, "vm1")["_attachments"]) == {"greeting.mp3"}

    # CouchDB semantics: a full update without the stubs drops the attachments.
    bare = {k: v for k, v in store.get(db, "vm1").items() if k != "_attachments"}
    store.put(db, bare)
    with pytest.raises(NotFound):
        store.get_attachment(db, "vm1", "greeting.mp3")
    with pytest.raises(NotFound):
        store.get_attachment(db, "nodoc", "x.wav")


def test_inline_attachment_data(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("inline")
    store.create_db(db)
    store.put(db, {"_id": "m", "_attachments": {"t.txt": {"content_type": "text/plain", "data": "aGVsbG8="}}})
    assert store.get_attachment(db, "m", "t.txt") == (b"hello", "text/plain")


# -- Kazoo naming and helpers ------------------------------------------------------------------


def test_account_database_names_round_trip(store: Store) -> None:
    account_id = new_account_id()
    db = account_db_name(account_id)
    assert db == f"account/{account_id[:2]}/{account_id[2:4]}/{account_id[4:]}"
    encoded = encode_db_name(db)
    assert encoded == f"account%2F{account_id[:2]}%2F{account_id[2:4]}%2F{account_id[4:]}"
    assert account_id_from_db(db) == account_id_from_db(encoded) == account_id_from_db(encoded.lower()) == account_id
    assert account_db_name(encoded) == db

    store.create_db(db)
    store.put(db, {"_id": account_id, "name": "Acme"})
    assert store.get(db, account_id)["name"] == "Acme"
    listed = store.list_dbs(prefix="account/")
    assert db in listed and all(name.startswith("account/") for name in listed)
    assert store.list_dbs(prefix=f"account/{account_id[:2]}/{account_id[2:4]}/") == [db]

    month = modb_name(account_id, 2026, 11)
    assert month == f"{db}-202611" and parse_modb(month) == (account_id, 2026, 11)
    assert parse_modb(encode_db_name(month)) == (account_id, 2026, 11)
    saved = save_to_modb(store, account_id, {"pvt_type": "cdr", "call_id": "abc"}, year=2026, month=11)
    assert store.db_exists(month)
    assert saved["_id"].startswith("202611-")
    assert store.get(month, saved["_id"])["call_id"] == "abc"
    again = save_to_modb(store, account_id, {"pvt_type": "cdr", "call_id": "def"}, year=2026, month=11)
    assert sorted(store.list_dbs(prefix=db)) == [db, month]
    assert account_id_from_db(month) == account_id and store.get(month, again["_id"])["call_id"] == "def"


def test_system_config_defaults(store: Store) -> None:
    category = "test_" + new_account_id()[:12]
    assert get_config(store, category, "max_calls", 20) == 20
    doc = store.get("system_config", category)
    assert doc["default"]["max_calls"] == 20  # the default is written back, as Kazoo does
    set_config(store, category, "max_calls", 50)
    assert get_config(store, category, "max_calls", 20) == 50
    set_config(store, category, "max_calls", 7, node="mirliton@node1")
    assert get_config(store, category, "max_calls", 20, node="mirliton@node1") == 7
    assert get_config(store, category, "max_calls", 20, node="mirliton@node2") == 50
    assert get_config(store, category, ["timers", "t1_ms"], 500) == 500
    assert store.get("system_config", category)["default"]["timers"] == {"t1_ms": 500}
    assert get_config(store, category, "unset") is None
    assert "unset" not in store.get("system_config", category)["default"]


def test_update_doc_retries_on_conflict(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("update")
    store.create_db(db)
    store.put(db, {"_id": "counter", "n": 0})
    calls = 0

    def increment(doc: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            # Someone else writes between our read and our write: the first save conflicts.
            current = store.get(db, "counter")
            store.put(db, {**current, "n": current["n"] + 10})
        doc["n"] += 1
        return doc

    result = update_doc(store, db, "counter", increment)
    assert result["n"] == 11 and calls == 2
    created = update_doc(store, db, "fresh", lambda d: {**d, "n": 1}, create={"n": 0})
    assert created["n"] == 1 and rev_number(created["_rev"]) == 1

    # ensure_saved: last writer wins whatever revision it started from.
    stale = store.get(db, "fresh")
    store.put(db, {**stale, "n": 2})
    forced = ensure_saved(store, db, {**stale, "n": 3})
    assert store.get(db, "fresh")["n"] == 3 and rev_number(forced["_rev"]) == 3
    assert ensure_saved(store, db, {"_id": "brand-new", "n": 1})["n"] == 1


def test_bulk_docs_with_repeated_ids_and_inline_attachments(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("bulkmix")
    store.create_db(db)
    results = store.bulk_docs(
        db,
        [
            {"_id": "dup", "v": 1},
            {"_id": "plain", "v": 1},
            {"_id": "dup", "v": 2},
            {"_id": "att", "_attachments": {"a.txt": {"content_type": "text/plain", "data": "YWJj"}}},
            {"_id": "after", "v": 1},
        ],
    )
    assert [r.ok for r in results] == [True, True, False, True, True]
    assert results[2].error == "conflict"
    assert store.get(db, "dup")["v"] == 1
    assert store.get_attachment(db, "att", "a.txt") == (b"abc", "text/plain")
    # CouchDB does not order the changes of one bulk request (shards write in parallel).
    assert sorted(c.id for c in store.changes(db).results) == ["after", "att", "dup", "plain"]


def test_bodies_follow_couchdb_rules(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("bodies")
    store.create_db(db)
    with pytest.raises(BadRequest):
        store.put(db, {"_id": "x", "_private": 1})
    with pytest.raises(BadRequest):
        store.put(db, {"_id": "_reserved", "v": 1})
    results = store.bulk_docs(db, [{"_id": "fine"}, {"_id": "bad", "_nope": True}])
    assert results[0].ok and not results[1].ok


def test_local_documents_stay_out_of_listings(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("local")
    store.create_db(db)
    store.put(db, {"_id": "visible", "v": 1})
    store.put(db, {"_id": "_local/checkpoint", "seq": 42})
    assert store.get(db, "_local/checkpoint")["seq"] == 42
    assert [r["id"] for r in store.all_docs(db)] == ["visible"]
    assert [c.id for c in store.changes(db).results] == ["visible"]
    assert [d["_id"] for d in store.find(db, {"seq": {"$exists": True}}).docs] == []
    assert store.db_info(db).doc_count == 1
