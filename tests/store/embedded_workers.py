"""Writer processes for the embedded store's multi-process tests (run with ``python -m``).

    python -m tests.store.embedded_workers race DATA_DIR WORKER_ID ROUNDS INCREMENTS
    python -m tests.store.embedded_workers bulk DATA_DIR BATCH_SIZE
    python -m tests.store.embedded_workers write DATA_DIR COUNT

Each prints JSON lines on stdout; the tests read them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from store import Conflict
from store.embedded import EmbeddedStore

DB = "race"
DOC = "counter"


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.002)


def race(data_dir: Path, worker: int, rounds: int, increments: int) -> None:
    """Lock-step rounds (both read one revision, then both write), then free-running increments."""
    store = EmbeddedStore(data_dir)
    other = 1 - worker
    sync = data_dir / "sync"
    for r in range(rounds):
        doc = store.get(DB, DOC)
        (sync / f"read-{r}-{worker}").touch()
        _wait_for(sync / f"read-{r}-{other}")
        try:
            saved = store.put(DB, {**doc, "n": doc["n"] + 1, "last": worker})
            outcome = {"round": r, "ok": True, "base": doc["_rev"], "rev": saved["_rev"]}
        except Conflict:
            outcome = {"round": r, "ok": False, "base": doc["_rev"]}
        print(json.dumps(outcome), flush=True)
        (sync / f"wrote-{r}-{worker}").touch()
        _wait_for(sync / f"wrote-{r}-{other}")
    successes, conflicts, bases = 0, 0, []
    while successes < increments:
        doc = store.get(DB, DOC)
        try:
            store.put(DB, {**doc, "n": doc["n"] + 1, "last": worker})
        except Conflict:
            conflicts += 1
            continue
        successes += 1
        bases.append(doc["_rev"])
    print(json.dumps({"free": True, "successes": successes, "conflicts": conflicts, "bases": bases}), flush=True)
    store.close()


def bulk(data_dir: Path, batch_size: int) -> None:
    """Writes batches forever (until killed); reports each committed batch."""
    store = EmbeddedStore(data_dir)
    store.create_db("bulk", exist_ok=True)
    # Continue after the batches an earlier (killed) writer committed.
    batch = store.db_info("bulk").doc_count // batch_size
    while True:
        docs = []
        for i in range(batch_size):
            payload = os.urandom(200).hex()
            docs.append(
                {
                    "_id": f"b{batch:06d}-{i:04d}",
                    "batch": batch,
                    "payload": payload,
                    "sha256": hashlib.sha256(payload.encode()).hexdigest(),
                }
            )
        results = store.bulk_docs("bulk", docs)
        assert all(r.ok for r in results)
        # And an attachment of its own, big enough to be several chunks mid-write when killed.
        store.put_attachment(
            "bulk", f"b{batch:06d}-0000", "audio.wav", os.urandom(700_000), content_type="audio/x-wav",
            rev=results[0].rev,
        )
        print(json.dumps({"batch": batch}), flush=True)
        batch += 1


def write(data_dir: Path, count: int) -> None:
    """Writes ``count`` documents into db "feed", a little apart."""
    store = EmbeddedStore(data_dir)
    for n in range(count):
        store.put("feed", {"_id": f"from-other-process-{n}", "pid": os.getpid()})
        time.sleep(0.02)
    store.close()


def main(argv: list[str]) -> None:
    mode, data_dir = argv[0], Path(argv[1])
    if mode == "race":
        race(data_dir, int(argv[2]), int(argv[3]), int(argv[4]))
    elif mode == "bulk":
        bulk(data_dir, int(argv[2]))
    elif mode == "write":
        write(data_dir, int(argv[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
