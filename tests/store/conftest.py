"""Fixtures of the store tests: one ``store`` per backend, unique database names per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store import Store, open_store

# pouchdb-server's measured deviations from CouchDB (../shared/reference/couchdb-testing.md);
# a test may skip on pouchdb-server only for one of these.
POUCHDB_DEVIATIONS = {
    "wrong_rev_delete": "pouchdb-server answers a DELETE with a wrong rev with 404 instead of 409",
}


@pytest.fixture(params=["embedded", pytest.param("couchdb", marks=pytest.mark.couchdb)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "embedded":
        backend = open_store("embedded", tmp_path / "data")
    else:
        backend = open_store(request.getfixturevalue("couchdb_url"), tmp_path / "data")
    created_before = set(backend.list_dbs())
    try:
        yield backend
    finally:
        if backend.kind == "couchdb":
            # The CouchDB server lives for the whole session: drop what this test created.
            for db in set(backend.list_dbs()) - created_before:
                backend.delete_db(db, missing_ok=True)
        backend.close()


@pytest.fixture
def dbname() -> Callable[[str], str]:
    """Unique database names, so tests sharing one CouchDB server never collide."""
    token = uuid.uuid4().hex[:10]

    def make(label: str = "db") -> str:
        return f"t{token}-{label}"

    return make


@pytest.fixture
def skip_on_pouchdb(store: Store) -> Callable[[str], None]:
    def skip(deviation: str) -> None:
        reason = POUCHDB_DEVIATIONS[deviation]
        if store.kind == "couchdb" and getattr(store, "server_flavor", "") == "pouchdb-server":
            pytest.skip(f"pouchdb-server deviation: {reason}")

    return skip
