"""The embedded store shared by real OS processes: write conflicts and crash consistency."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store.embedded import EmbeddedStore

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKERS = "tests.store.embedded_workers"


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", WORKERS, *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_processes_updating_one_document(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "sync").mkdir(parents=True)
    store = EmbeddedStore(data_dir)
    store.create_db("race")
    start = store.put("race", {"_id": "counter", "n": 0})

    rounds, increments = 8, 150
    workers = [_spawn("race", str(data_dir), str(w), str(rounds), str(increments)) for w in (0, 1)]
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        outputs.append([json.loads(line) for line in out.splitlines()])

    # Lock-step rounds: both processes read the same revision and both write it.
    # Exactly one wins each round; the other gets Conflict.
    for r in range(rounds):
        a, b = outputs[0][r], outputs[1][r]
        assert a["base"] == b["base"]
        assert sorted([a["ok"], b["ok"]]) == [False, True], f"round {r}: {a} {b}"

    # Free-running: nothing lost, and no two updates were accepted from the same revision.
    free = [lines[-1] for lines in outputs]
    assert [f["successes"] for f in free] == [increments, increments]
    bases = free[0]["bases"] + free[1]["bases"]
    assert len(set(bases)) == len(bases)
    final = store.get("race", "counter")
    assert final["n"] == rounds + 2 * increments
    assert int(final["_rev"].split("-")[0]) == int(start["_rev"].split("-")[0]) + rounds + 2 * increments
    assert store.integrity_check() == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("kill_delays", [(0.0, 0.004, 0.013, 0.031)])
def test_writer_killed_mid_bulk_leaves_a_consistent_database(tmp_path: Path, kill_delays: tuple[float, ...]) -> None:
    data_dir = tmp_path / "data"
    batch_size = 300
    for delay in kill_delays:
        # A fresh writer continues the batches, and is killed a little later each time.
        writer = _spawn("bulk", str(data_dir), str(batch_size))
        assert writer.stdout is not None
        reported: list[int] = []
        try:
            for line in writer.stdout:
                reported.append(json.loads(line)["batch"])
                if len(reported) >= 3:
                    break
            time.sleep(delay)
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
        assert writer.returncode == -signal.SIGKILL
        assert len(reported) == 3

        store = EmbeddedStore(data_dir)
        assert store.integrity_check() == "ok"
        rows = store.all_docs("bulk", include_docs=True)
        per_batch: dict[int, int] = {}
        for row in rows:
            doc = row["doc"]
            assert hashlib.sha256(doc["payload"].encode()).hexdigest() == doc["sha256"], doc["_id"]
            per_batch[doc["batch"]] = per_batch.get(doc["batch"], 0) + 1
            for name, stub in doc.get("_attachments", {}).items():
                data, _ = store.get_attachment("bulk", doc["_id"], name)
                digest = "md5-" + base64.b64encode(hashlib.md5(data).digest()).decode()
                assert (len(data), digest) == (stub["length"], stub["digest"]), doc["_id"]
        # Every batch is all there or absent, and every reported one is there.
        assert set(per_batch.values()) == {batch_size}
        assert set(reported) <= set(per_batch)
        assert sorted(per_batch) == list(range(len(per_batch)))
        # The change feed and counters agree with the documents.
        info = store.db_info("bulk")
        attached = sum(1 for row in rows if row["doc"].get("_attachments"))
        assert info.doc_count == len(rows) and info.update_seq == len(rows) + attached
        assert len(store.changes("bulk").results) == len(rows)
        store.close()

    # And the file takes writes again.
    store = EmbeddedStore(data_dir)
    store.put("bulk", {"_id": "after-crash"})
    assert store.get("bulk", "after-crash")["_rev"].startswith("1-")
    store.close()


@pytest.mark.slow
def test_live_feed_sees_another_processes_writes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = EmbeddedStore(data_dir)
    store.create_db("feed")
    feed = store.follow("feed", since="now", idle_timeout=20.0)
    writer = _spawn("write", str(data_dir), "5")
    seen = []
    for change in feed:
        seen.append(change.id)
        if len(seen) == 5:
            feed.close()
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert seen == [f"from-other-process-{n}" for n in range(5)]
    store.close()
