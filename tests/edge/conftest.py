"""Shared pieces of the edge tests: a real node with the registrar and edge roles, accounts
and devices made with the CLI, and real phones (pjsua2 in a helper process, baresip)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from tests.foundation.nodeutil import REPO, Node, free_port, wait_until

PJSUA_PHONE = Path(__file__).with_name("pjsua_phone.py")
AMQP_URL = os.environ.get("MIRLITON_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@dataclass
class EdgeNode:
    node: Node
    sip_port: int
    realm: str = ""
    account_id: str = ""

    @property
    def edge(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    def provision(self, realm: str, users: dict[str, str]) -> str:
        """An account for ``realm`` and one device per (username, password); its id."""
        account = json.loads(self.node.cli(
            "account", "create", "--name", f"Account {realm}", "--realm", realm,
            "--username", "admin", "--password", "admin-secret", "--json").stdout)
        for username, password in users.items():
            self.add_device(account["account_id"], username, password)
        self.realm, self.account_id = realm, account["account_id"]
        return str(account["account_id"])

    def add_device(self, account_id: str, username: str, password: str) -> dict[str, Any]:
        return dict(json.loads(self.node.cli(
            "device", "create", "--account", account_id, "--name", f"phone {username}",
            "--username", username, "--password", password, "--json").stdout))

    def registrations(self) -> list[dict[str, Any]]:
        proc = self.node.cli("registrations", "--json", check=False)
        if proc.returncode != 0:
            return []
        rows: list[dict[str, Any]] = json.loads(proc.stdout)
        return rows

    def registered_aors(self) -> set[str]:
        return {row["aor"] for row in self.registrations()}


def start_edge_node(base: Path, roles: list[str] | None = None, **env: str) -> EdgeNode:
    port = free_port()
    listen = json.dumps([f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"])
    node_env = {"MIRLITON_SIP__LISTEN": listen, "MIRLITON_NODE__NAME": f"edge-{uuid.uuid4().hex[:8]}"}
    node_env.update(env)
    node = Node(base / "node", roles or ["ops", "registrar", "edge"], node_env)
    node.start()
    return EdgeNode(node, port)


def stop_edge_node(edge: EdgeNode) -> None:
    edge.node.stop()
    edge.node.kill_everything()


# -- phones -------------------------------------------------------------------------------------


class PjsuaPhone:
    """pjsua2 in its own process (tests/edge/pjsua_phone.py), read through its JSON lines."""

    def __init__(self, edge: EdgeNode, user: str, password: str, *, transport: str = "udp",
                 bind: str = "127.0.0.1", hold: float = 60.0, keep: bool = False,
                 realm: str | None = None) -> None:
        args = [sys.executable, str(PJSUA_PHONE), "--registrar", f"127.0.0.1:{edge.sip_port}",
                "--realm", realm or edge.realm, "--user", user, "--password", password,
                "--transport", transport, "--bind", bind, "--hold", str(hold), "--stdin"]
        if keep:
            args.append("--keep")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, cwd=REPO,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        self.events: list[dict[str, Any]] = []
        # A thread reads the phone's lines: select() on a buffered pipe misses lines already
        # read into the buffer.
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read_lines, daemon=True).start()

    def _read_lines(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def next_event(self, timeout: float = 20.0) -> dict[str, Any] | None:
        try:
            event = self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if event is None:
            self._lines.put(None)  # stays at the end for later readers
            return None
        self.events.append(event)
        return dict(event)

    def registration_result(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """The first final registration state (code >= 200)."""
        while True:
            event = self.next_event(timeout)
            if event is None:
                return None
            if event.get("event") == "registration" and event.get("code", 0) >= 200:
                return event

    def stop(self) -> None:
        """Close stdin: the phone unregisters (unless --keep) and exits."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class BaresipPhone:
    """baresip (Debian package) with one account, registering through the edge."""

    def __init__(self, edge: EdgeNode, workdir: Path, user: str, password: str,
                 realm: str | None = None, transport: str = "udp") -> None:
        if shutil.which("baresip") is None:
            pytest.skip("baresip is not installed (tests/services/setup.d/sip-peers.sh)")
        self.dir = workdir / f"baresip-{user}"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config").write_text(
            "poll_method\t\tepoll\n"
            f"sip_listen\t\t127.0.0.1:{free_port()}\n"
            "module_path\t\t/usr/lib/baresip/modules\n"
            "module\t\t\tg711.so\n"
            "module_app\t\taccount.so\n"
            "audio_player\t\taufile,/dev/null\n"
            "audio_source\t\taufile,/dev/null\n"
        )
        outbound = f"sip:127.0.0.1:{edge.sip_port}" + (";transport=tcp" if transport == "tcp" else "")
        (self.dir / "accounts").write_text(
            f'<sip:{user}@{realm or edge.realm}>;auth_pass={password};outbound="{outbound}";regint=600\n'
        )
        self.log = self.dir / "baresip.out"
        self.proc = subprocess.Popen(
            ["baresip", "-4", "-f", str(self.dir)], stdin=subprocess.DEVNULL,
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=self.dir)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- RabbitMQ -----------------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    return done.returncode == 0


@pytest.fixture(scope="module")
def edge_amqp_url() -> Iterator[str]:
    """RabbitMQ at MIRLITON_TEST_AMQP_URL, in a vhost of its own when rabbitmqctl can make one."""
    import socket

    parts = urlsplit(AMQP_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            pass
    except OSError:
        pytest.fail(f"no RabbitMQ at {AMQP_URL}: the test command starts it (tests/services/setup.sh)")
    vhost = f"mirliton-test-edge-{uuid.uuid4().hex[:8]}"
    user = parts.username or "guest"
    if _rabbitmqctl("add_vhost", vhost) and _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*"):
        try:
            yield urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), "", ""))
        finally:
            _rabbitmqctl("delete_vhost", vhost)
    else:
        yield AMQP_URL


__all__ = [
    "BaresipPhone",
    "EdgeNode",
    "PjsuaPhone",
    "start_edge_node",
    "stop_edge_node",
    "wait_until",
]
