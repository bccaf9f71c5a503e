"""Store benchmark: single-document writes/reads/updates and bulk writes, per backend.

    python bench/store.py [--json] [--ops N] [--bulk-docs N] [--batch N]

The embedded backend always runs (in a temporary directory). CouchDB runs against
MIRLITON_TEST_COUCHDB_URL when set, otherwise against a pouchdb-server started from
var/test-tools (installed by tests/services/setup.d/couchdb.sh) when it is there.
With --json the last line printed is one JSON object of the figures.
Targets (issue 4): embedded >= 2,000 single writes/s and >= 20,000 docs/s in bulk.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from store import Store, open_store  # noqa: E402

TARGETS = {"embedded_writes_per_s": 2000, "embedded_bulk_docs_per_s": 20000}


def device_doc(i: int) -> dict[str, Any]:
    """A Kazoo-like device document of about 350 bytes of JSON."""
    return {
        "_id": uuid.uuid4().hex,
        "name": f"Device {i}",
        "device_type": "sip_device",
        "enabled": True,
        "owner_id": uuid.uuid4().hex,
        "sip": {"username": f"user{i:06d}", "password": uuid.uuid4().hex[:16], "realm": "bench.example.com",
                "invite_format": "contact", "expire_seconds": 300, "method": "password"},
        "media": {"audio": {"codecs": ["PCMU", "PCMA"]}},
        "caller_id": {"internal": {"name": f"Ext {i}", "number": str(1000 + i)}},
        "pvt_type": "device",
        "pvt_created": 63900000000 + i,
        "pvt_modified": 63900000000 + i,
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def timed(count: int, operation: Callable[[int], None]) -> dict[str, float]:
    latencies = []
    started = time.perf_counter()
    cpu_started = time.process_time()
    for i in range(count):
        t0 = time.perf_counter()
        operation(i)
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {
        "per_s": round(count / total, 1),
        # This process's CPU only: on a loaded machine it shows what the code costs.
        "per_cpu_s": round(count / cpu, 1) if cpu > 0 else None,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "ops": count,
    }


def run_backend(store: Store, ops: int, bulk_docs: int, batch: int) -> dict[str, Any]:
    db = f"bench-{uuid.uuid4().hex[:8]}"
    store.create_db(db)
    try:
        docs = [device_doc(i) for i in range(ops)]
        saved: list[dict[str, Any]] = [{}] * ops

        def write(i: int) -> None:
            saved[i] = store.put(db, docs[i])

        def read(i: int) -> None:
            store.get(db, docs[random.randrange(ops)]["_id"])

        def update(i: int) -> None:
            doc = saved[i]
            saved[i] = store.put(db, {**doc, "pvt_modified": doc["pvt_modified"] + 1})

        results: dict[str, Any] = {
            "write": timed(ops, write),
            "read": timed(ops, read),
            "update": timed(ops, update),
        }
        bulk_db = db + "-bulk"
        store.create_db(bulk_db)
        payload = [device_doc(i) for i in range(bulk_docs)]
        started = time.perf_counter()
        cpu_started = time.process_time()
        for start in range(0, bulk_docs, batch):
            outcome = store.bulk_docs(bulk_db, payload[start : start + batch])
            if not all(r.ok for r in outcome):
                raise RuntimeError("bulk write failed")
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        results["bulk"] = {
            "docs_per_s": round(bulk_docs / elapsed, 1),
            "docs_per_cpu_s": round(bulk_docs / cpu, 1) if cpu > 0 else None,
            "docs": bulk_docs,
            "batch": batch,
        }
        store.delete_db(bulk_db)
        return results
    finally:
        store.delete_db(db, missing_ok=True)


def couchdb_target() -> tuple[str | None, Callable[[], None]]:
    """The CouchDB URL to bench and a function that stops what was started for it."""
    url = os.environ.get("MIRLITON_TEST_COUCHDB_URL")
    if url:
        return url.rstrip("/"), lambda: None
    try:
        from tests.couchdb_server import POUCHDB_BIN, start_pouchdb_server, stop_process
    except ImportError:
        return None, lambda: None
    if not POUCHDB_BIN.exists():
        return None, lambda: None
    workdir = Path(tempfile.mkdtemp(prefix="mirliton-bench-pouchdb-"))
    url, process = start_pouchdb_server(workdir)

    def stop() -> None:
        stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)

    return url, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object last")
    parser.add_argument("--ops", type=int, default=2000, help="single-document operations per measurement")
    parser.add_argument("--bulk-docs", type=int, default=20000, help="documents written in bulk")
    parser.add_argument("--batch", type=int, default=1000, help="documents per bulk request")
    args = parser.parse_args()

    figures: dict[str, Any] = {}
    data_dir = Path(tempfile.mkdtemp(prefix="mirliton-bench-store-"))
    try:
        embedded = open_store("embedded", data_dir)
        figures["embedded"] = run_backend(embedded, args.ops, args.bulk_docs, args.batch)
        embedded.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    url, stop = couchdb_target()
    if url:
        try:
            couch = open_store(url, data_dir)
            server = couch.server_info()  # type: ignore[attr-defined]
            figures["couchdb"] = run_backend(couch, args.ops, args.bulk_docs, args.batch)
            figures["couchdb"]["server"] = (
                f"pouchdb-server {server.get('version')}" if "express-pouchdb" in server
                else f"couchdb {server.get('version')}"
            )
            couch.close()
        finally:
            stop()
    else:
        figures["couchdb"] = None

    emb = figures["embedded"]
    figures["targets"] = TARGETS
    figures["targets_met"] = {
        "embedded_writes_per_s": emb["write"]["per_s"] >= TARGETS["embedded_writes_per_s"],
        "embedded_bulk_docs_per_s": emb["bulk"]["docs_per_s"] >= TARGETS["embedded_bulk_docs_per_s"],
    }
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    for backend in ("embedded", "couchdb"):
        result = figures.get(backend)
        if not result:
            print(f"{backend:9s} not run (no MIRLITON_TEST_COUCHDB_URL and no var/test-tools pouchdb-server)")
            continue
        label = backend + (f" ({result['server']})" if "server" in result else "")
        print(label)
        for op in ("write", "read", "update"):
            r = result[op]
            print(f"  {op:7s} {r['per_s']:>10.1f}/s   p50 {r['p50_ms']:.3f} ms   p99 {r['p99_ms']:.3f} ms")
        print(f"  bulk    {result['bulk']['docs_per_s']:>10.1f} docs/s (batches of {result['bulk']['batch']})")
    if args.json:
        print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
