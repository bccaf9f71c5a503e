"""pytest plugin: a CouchDB-API server for the whole test session.

``couchdb_url`` is ``MIRLITON_TEST_COUCHDB_URL`` when set (any real CouchDB 3.x), otherwise a
pouchdb-server started here: installed by tests/services/setup.d/couchdb.sh into
var/test-tools/pouchdb (installed on demand if missing), run in memory on a free loopback port
and killed at the end of the session.

``couchdb_flavor`` says which server it is ("couchdb" or "pouchdb-server", from ``GET /``), so
a test may skip one of pouchdb-server's documented deviations, and only those.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
POUCHDB_PREFIX = REPO_ROOT / "var" / "test-tools" / "pouchdb"
POUCHDB_BIN = POUCHDB_PREFIX / "node_modules" / "pouchdb-server" / "bin" / "pouchdb-server"
INSTALL_SCRIPT = REPO_ROOT / "tests" / "services" / "setup.d" / "couchdb.sh"
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes] | None, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"pouchdb-server exited with {process.returncode}")
        try:
            response = httpx.get(url + "/", timeout=2.0)
            if response.status_code == 200:
                return dict(response.json())
        except httpx.HTTPError as exc:
            last_error = exc
        time.sleep(0.2)
    raise RuntimeError(f"no CouchDB-API server answered at {url} within {timeout}s: {last_error!r}")


def server_flavor(info: dict[str, object]) -> str:
    return "pouchdb-server" if "express-pouchdb" in info else "couchdb"


def start_pouchdb_server(workdir: Path, port: int | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """Start pouchdb-server in memory (on ``port`` or a free one); returns its URL and process.
    The caller stops it."""
    if not POUCHDB_BIN.exists():
        subprocess.run(["bash", str(INSTALL_SCRIPT), str(REPO_ROOT)], check=True)
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed (tests/services/setup.sh installs nodejs)")
    port = port or _free_port()
    env = dict(os.environ)
    # Without this one malformed request kills the server (Node >= 15 dies on unhandled rejections).
    env["NODE_OPTIONS"] = "--unhandled-rejections=warn"
    log = open(workdir / "pouchdb-server.out", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [node, str(POUCHDB_BIN), "--in-memory", "--port", str(port), "--host", "127.0.0.1", "--no-color"],
        cwd=workdir,  # it writes config.json and log.txt into its working directory
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, START_TIMEOUT)
    except BaseException:
        stop_process(process)
        raise
    return url, process


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture(scope="session")
def couchdb_url() -> Iterator[str]:
    given = os.environ.get("MIRLITON_TEST_COUCHDB_URL")
    if given:
        _wait_until_up(given.rstrip("/"), None, START_TIMEOUT)
        yield given.rstrip("/")
        return
    workdir = Path(tempfile.mkdtemp(prefix="mirliton-pouchdb-"))
    url, process = start_pouchdb_server(workdir)
    try:
        yield url
    finally:
        stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def couchdb_flavor(couchdb_url: str) -> str:
    """"couchdb" or "pouchdb-server", as the server says in ``GET /``."""
    from store.couchdb import CouchDBStore

    store = CouchDBStore(couchdb_url)
    try:
        return store.server_flavor
    finally:
        store.close()


@pytest.fixture(scope="module")
def fresh_couchdb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A CouchDB-API server with no database yet, for tests of Kazoo's global layout (the
    first account created is the system account, so ``accounts`` must start empty).

    Without MIRLITON_TEST_COUCHDB_URL: a pouchdb-server of the module's own. With it: that
    server, emptied of every non-system database first (it is a test server).
    """
    given = os.environ.get("MIRLITON_TEST_COUCHDB_URL")
    if given:
        url = given.rstrip("/")
        _wait_until_up(url, None, START_TIMEOUT)
        from store.couchdb import CouchDBStore

        store = CouchDBStore(url)
        try:
            for db in store.list_dbs():
                if not db.startswith("_"):
                    store.delete_db(db, missing_ok=True)
        finally:
            store.close()
        yield url
        return
    workdir = tmp_path_factory.mktemp("pouchdb")
    url, process = start_pouchdb_server(workdir)
    try:
        yield url
    finally:
        stop_process(process)
