"""The CouchDB driver's own duties: wire names, error mapping, bounded retries, recovery."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from store import AccessDenied, BadRequest, StoreUnavailable
from store.couchdb import SERVER_COUCHDB, SERVER_POUCHDB, CouchDBStore
from tests.couchdb_server import start_pouchdb_server, stop_process

pytestmark = pytest.mark.couchdb


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_names_are_url_encoded_for_couchdb() -> None:
    store = CouchDBStore("http://127.0.0.1:1")
    # What GET / answers decides the wire form; set it as a CouchDB 3.x would answer.
    store._server = {"couchdb": "Welcome", "version": "3.5.0"}
    assert store.server_flavor == SERVER_COUCHDB
    assert store._wire_db("account/ab/cd/0123456789abcdef0123456789ab") == (
        "/account%2Fab%2Fcd%2F0123456789abcdef0123456789ab"
    )
    assert store._wire_db("numbers/+1415") == "/numbers%2F%2B1415"
    assert store._doc_url("db", "a/b c") == "/db/a%2Fb%20c"
    assert store._doc_url("db", "_design/x y") == "/db/_design/x%20y"
    store._server = {"express-pouchdb": "Welcome!", "version": "4.2.0"}
    assert store.server_flavor == SERVER_POUCHDB
    assert store._wire_db("account/ab/cd/0123456789abcdef0123456789ab") == (
        "/account%24ab%24cd%240123456789abcdef0123456789ab"
    )
    with pytest.raises(BadRequest):
        store._wire_db("has$dollar")
    store.close()


def test_credentials_from_the_url_are_used(couchdb_url: str, couchdb_flavor: str) -> None:
    host = couchdb_url.split("://", 1)[1].split("@")[-1]
    # A server in admin-party mode (pouchdb-server as the tests start it) refuses any Basic
    # credentials; a real CouchDB refuses wrong ones. Both are 401 → AccessDenied.
    store = CouchDBStore(f"http://nobody:wrong-password@{host}")
    with pytest.raises(AccessDenied) as exc:
        store.list_dbs()
    assert exc.value.error_id == "access_denied"
    store.close()


def test_http_errors_become_typed_errors(couchdb_url: str) -> None:
    store = CouchDBStore(couchdb_url)
    db = "t-driver-errors"
    store.create_db(db, exist_ok=True)
    try:
        store.create_index(db, ["n"])
        with pytest.raises(BadRequest):
            store.find(db, {"n": {"$gt": 0}}, sort=[{"unindexed": "asc"}])
    finally:
        store.delete_db(db)
        store.close()


def test_unreachable_server_gives_store_unavailable_after_bounded_retries() -> None:
    store = CouchDBStore(f"http://127.0.0.1:{_unused_port()}", max_retries=3, backoff_base=0.01, backoff_max=0.05)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as exc:
        store.db_exists("anything")
    assert exc.value.attempts == 4 and exc.value.retry_after > 0
    assert exc.value.error_id == "store_unavailable"
    assert time.monotonic() - started < 10
    store.close()


@pytest.mark.slow
def test_retries_reach_a_server_that_comes_up(tmp_path: Path) -> None:
    """Connection refused while the server starts: the driver backs off and gets through."""
    port = _unused_port()
    servers: list[subprocess.Popen[bytes]] = []

    def start_later() -> None:
        time.sleep(0.8)
        servers.append(start_pouchdb_server(tmp_path, port)[1])

    starter = threading.Thread(target=start_later)
    store = CouchDBStore(f"http://127.0.0.1:{port}", max_retries=20, backoff_base=0.1, backoff_max=2.0)
    starter.start()
    try:
        started = time.monotonic()
        assert store.db_exists("not-there") is False  # refused at first, answered once it is up
        assert time.monotonic() - started >= 0.5
    finally:
        starter.join()
        store.close()
        for server in servers:
            stop_process(server)
