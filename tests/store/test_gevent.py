"""In a gevent-patched process (as node processes are), waiting on the store never blocks the hub."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.couchdb
@pytest.mark.slow
def test_live_feeds_and_cache_follower_cooperate_with_gevent(tmp_path: Path, couchdb_url: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.store.gevent_check", str(tmp_path), couchdb_url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for backend in ("embedded", "couchdb"):
        outcome = results[backend]
        # The writer greenlet ran while the follower waited (else nothing would be received),
        # and so did the ticker.
        assert outcome["received"] == ["doc0", "doc1", "doc2"], backend
        assert outcome["ticks"] > 0, backend
        assert outcome["cache_invalidated"], backend
