"""The per-process document cache: get-through, TTL, explicit and change-feed invalidation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from store import NotFound, Store
from store.cache import DocumentCache


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_get_through_ttl_and_invalidate(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("cache")
    store.create_db(db)
    doc = store.put(db, {"_id": "dev", "name": "one"})
    clock = _Clock()
    cache = DocumentCache(store, ttl=60, clock=clock)

    assert cache.get(db, "dev")["name"] == "one"
    assert (cache.hits, cache.misses) == (0, 1)
    copy = cache.get(db, "dev")
    assert cache.hits == 1
    copy["name"] = "mutated by caller"
    assert cache.get(db, "dev")["name"] == "one"

    store.put(db, {**doc, "name": "two"})
    assert cache.get(db, "dev")["name"] == "one"  # still within the TTL, nobody told the cache
    cache.invalidate(db, "dev")
    assert cache.get(db, "dev")["name"] == "two"

    fresh = store.get(db, "dev")
    store.put(db, {**fresh, "name": "three"})
    clock.now += 61
    assert cache.get(db, "dev")["name"] == "three"  # expired

    with pytest.raises(NotFound):
        cache.get(db, "missing")
    cache.invalidate(db)
    assert (db, "dev") not in cache


def test_change_feed_invalidates(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("cachefeed")
    store.create_db(db)
    doc = store.put(db, {"_id": "cfg", "v": 1})
    cache = DocumentCache(store, ttl=3600)
    cache.follow(db)
    try:
        assert cache.get(db, "cfg")["v"] == 1
        assert (db, "cfg") in cache
        store.put(db, {**doc, "v": 2})  # written behind the cache's back
        deadline = time.monotonic() + 15
        while (db, "cfg") in cache and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (db, "cfg") not in cache
        assert cache.get(db, "cfg")["v"] == 2
    finally:
        cache.stop()


def test_fetch_racing_an_invalidation_is_not_cached(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("cacherace")
    store.create_db(db)
    store.put(db, {"_id": "x", "v": 1})
    cache: DocumentCache

    class InvalidatedDuringRead:
        """Delegates to the real store; an invalidation lands while the read is in flight."""

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def get(self, db_name: str, doc_id: str) -> dict[str, Any]:
            result = store.get(db_name, doc_id)
            cache.invalidate(db_name, doc_id)
            return result

    cache = DocumentCache(InvalidatedDuringRead())  # type: ignore[arg-type]
    assert cache.get(db, "x")["v"] == 1
    assert (db, "x") not in cache


def test_write_events_invalidate_at_once(store: Store, dbname: Callable[[str], str]) -> None:
    from store.events import DocChange, NotifyingStore

    notifying = NotifyingStore(store)
    events: list[DocChange] = []
    cache = DocumentCache(notifying, ttl=3600)
    notifying.add_listener(events.append)
    notifying.add_listener(cache.on_change)

    db = dbname("events")
    notifying.create_db(db)
    doc = notifying.put(db, {"_id": "dev", "pvt_type": "device", "v": 1})
    assert cache.get(db, "dev")["v"] == 1
    doc = notifying.put(db, {**doc, "v": 2})
    assert (db, "dev") not in cache and cache.get(db, "dev")["v"] == 2
    notifying.bulk_docs(db, [{"_id": "u1", "pvt_type": "user"}, {"_id": "dev", "v": "stale, conflicts"}])
    soft = notifying.put(db, {**doc, "pvt_deleted": True})
    notifying.delete(db, "dev", soft["_rev"])
    notifying.delete_db(db)
    assert [(e.action, e.id, e.pvt_type) for e in events] == [
        ("db_created", None, None),
        ("doc_created", "dev", "device"),
        ("doc_edited", "dev", "device"),
        ("doc_created", "u1", "user"),
        ("doc_deleted", "dev", "device"),
        ("doc_deleted", "dev", None),
        ("db_deleted", None, None),
    ]
    assert all(e.rev for e in events if e.id)


def test_media_documents_are_never_cached(store: Store, dbname: Callable[[str], str]) -> None:
    db = dbname("cachemedia")
    store.create_db(db)
    store.put(db, {"_id": "greeting", "pvt_type": "media", "name": "hello"})
    store.put(db, {"_id": "dev", "pvt_type": "device", "name": "phone"})
    cache = DocumentCache(store)
    assert cache.get(db, "greeting")["name"] == "hello"
    assert cache.get(db, "dev")["name"] == "phone"
    assert (db, "greeting") not in cache and (db, "dev") in cache
