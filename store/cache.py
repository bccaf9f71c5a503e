"""A per-process cache of documents, keyed by (database, id).

Reads go through it (``get``); entries expire after ``ttl`` seconds and are dropped as soon as
the document changes: a change-feed follower started with ``follow(db)`` sees the change, a
``NotifyingStore`` reports a write of this process (``on_change`` as its listener), or someone
calls ``invalidate(db, id)`` (the bus's document-change events will). A fetch that
raced with an invalidation is not cached, so a stale revision never replaces a fresh one.
Callers get deep copies: mutating a returned document never alters the cache.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from store.base import ChangesFeed, Store
from store.errors import StoreError
from store.events import DocChange

__all__ = ["DocumentCache"]

DEFAULT_TTL = 900.0  # Kazoo's default cache expiry: 15 minutes
# Kazoo never caches these: their attachments change out of band.
UNCACHED_TYPES = frozenset({"media", "private_media", "call_recording", "fax", "mailbox_message"})
DEFAULT_MAX_ENTRIES = 10_000
RESTART_DELAY = 1.0


@dataclass
class _Entry:
    doc: dict[str, Any]
    expires: float


def _spawn(target: Callable[[], None], name: str) -> Any:
    """A greenlet in a gevent-patched process (so it never blocks the hub), else a daemon thread."""
    try:
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            import gevent

            return gevent.spawn(target)
    except ImportError:
        pass
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


class DocumentCache:
    def __init__(
        self,
        store: Store,
        *,
        ttl: float = DEFAULT_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        uncached_types: frozenset[str] = UNCACHED_TYPES,
    ) -> None:
        self.store = store
        self.uncached_types = uncached_types
        self.ttl = ttl
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        # Bumped by every invalidation, so a fetch that overlapped one is not stored.
        self._generation = 0
        self._lock = threading.Lock()
        self._feeds: dict[str, ChangesFeed | None] = {}
        self._stopping = False

    # -- reads -------------------------------------------------------------------------------

    def get(self, db: str, doc_id: str) -> dict[str, Any]:
        """The document, from the cache when fresh; NotFound as the store raises it (not cached)."""
        key = (db, doc_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.expires > self._clock():
                self._entries.move_to_end(key)
                self.hits += 1
                return copy.deepcopy(entry.doc)
            self.misses += 1
            generation = self._generation
        doc = self.store.get(db, doc_id)
        with self._lock:
            if self._generation == generation and doc.get("pvt_type") not in self.uncached_types:
                self._entries[key] = _Entry(copy.deepcopy(doc), self._clock() + self.ttl)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return doc

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.expires > self._clock()

    # -- invalidation ------------------------------------------------------------------------

    def invalidate(self, db: str, doc_id: str | None = None) -> None:
        """Forget one document, or every document of ``db`` when ``doc_id`` is None."""
        with self._lock:
            self._generation += 1
            if doc_id is not None:
                self._entries.pop((db, doc_id), None)
                return
            for key in [key for key in self._entries if key[0] == db]:
                del self._entries[key]

    def on_change(self, change: DocChange) -> None:
        """A ``NotifyingStore`` listener (or a bus consumer of the same events): drop what changed."""
        self.invalidate(change.db, change.id)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    # -- change-feed followers ---------------------------------------------------------------

    def follow(self, db: str) -> None:
        """Invalidate entries of ``db`` from its change feed, in a greenlet or thread, until ``stop``."""
        with self._lock:
            if db in self._feeds:
                return
            self._feeds[db] = None
        ready = threading.Event()
        _spawn(lambda: self._follow_loop(db, ready), name=f"cache-follow-{db}")
        # Return once the feed is positioned, so any write after this call is seen.
        ready.wait(timeout=10.0)

    def _follow_loop(self, db: str, ready: threading.Event) -> None:
        while not self._stopping:
            try:
                feed = self.store.follow(db, since="now")
            except StoreError:
                ready.set()
                time.sleep(RESTART_DELAY)
                continue
            with self._lock:
                if self._stopping:
                    feed.close()
                    return
                self._feeds[db] = feed
            # Whatever changed while no feed was running is unknown: start clean.
            self.invalidate(db)
            ready.set()
            try:
                for change in feed:
                    self.invalidate(db, change.id)
            except StoreError:
                self.invalidate(db)
                time.sleep(RESTART_DELAY)

    def stop(self) -> None:
        """End every follower."""
        self._stopping = True
        with self._lock:
            feeds = [feed for feed in self._feeds.values() if feed is not None]
            self._feeds.clear()
        for feed in feeds:
            feed.close()
