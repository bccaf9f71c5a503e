"""Runs in its own process, gevent-patched like every mirliton node process:

    python -m tests.store.gevent_check DATA_DIR [COUCHDB_URL]

For each backend, a greenlet blocks on the live changes feed while another writes, and a third
ticks every 10 ms: the ticks prove the waiting feed never blocks the hub. Then a DocumentCache
follows the database in a greenlet and drops an entry written behind its back.
Prints one JSON object: {backend: {"received": [...], "ticks": n, "cache_invalidated": bool}}.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

from store import Store, open_store  # noqa: E402
from store.cache import DocumentCache  # noqa: E402


def exercise(store: Store) -> dict[str, Any]:
    db = f"gevent-{uuid.uuid4().hex[:8]}"
    store.create_db(db)
    ticks = 0
    received: list[str] = []

    def ticker() -> None:
        nonlocal ticks
        while True:
            gevent.sleep(0.01)
            ticks += 1

    feed = store.follow(db, idle_timeout=10.0)

    def follower() -> None:
        for change in feed:
            received.append(change.id)
            if len(received) == 3:
                feed.close()

    def writer() -> None:
        gevent.sleep(0.3)
        for n in range(3):
            store.put(db, {"_id": f"doc{n}"})
            gevent.sleep(0.05)

    tick = gevent.spawn(ticker)
    gevent.joinall([gevent.spawn(follower), gevent.spawn(writer)], timeout=20)
    ticks_while_following = ticks

    cache = DocumentCache(store, ttl=3600)
    cache.follow(db)
    doc = store.get(db, "doc0")
    cache.get(db, "doc0")
    store.put(db, {**doc, "changed": True})
    deadline = time.monotonic() + 10
    while (db, "doc0") in cache and time.monotonic() < deadline:
        gevent.sleep(0.02)
    invalidated = (db, "doc0") not in cache
    cache.stop()
    tick.kill()
    store.delete_db(db)
    return {"received": sorted(received), "ticks": ticks_while_following, "cache_invalidated": invalidated}


def main() -> None:
    results = {}
    embedded = open_store("embedded", Path(sys.argv[1]))
    results["embedded"] = exercise(embedded)
    embedded.close()
    if len(sys.argv) > 2:
        couch = open_store(sys.argv[2], Path(sys.argv[1]))
        results["couchdb"] = exercise(couch)
        couch.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
