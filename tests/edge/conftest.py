"""Shared pieces of the edge tests: a real node with the registrar and edge roles, accounts
and devices made with the CLI, and real phones (pjsua2 in a helper process: tests/phones, baresip)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.foundation.nodeutil import Node, free_port, terminate, wait_until
from tests.phones import Phone as PhoneProcess
from tests.rabbitmq import amqp_vhost


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


def provisioned_edge_node(base: Path, realm: str, users: dict[str, str],
                          roles: list[str] | None = None, **env: str) -> Iterator[EdgeNode]:
    """An edge node's fixture: started (``start_edge_node``), provisioned with an account for
    ``realm`` and a device per (username, password) in ``users``, stopped at the end."""
    node = start_edge_node(base, roles, **env)
    try:
        node.provision(realm, users)
        yield node
    finally:
        stop_edge_node(node)


# -- phones -------------------------------------------------------------------------------------


class PjsuaPhone(PhoneProcess):
    """A pjsua2 phone (tests/phones) registering with the edge (not its proxy) for ``hold``
    seconds; ``keep``: it exits without unregistering."""

    def __init__(self, edge: EdgeNode, user: str, password: str, *, transport: str = "udp",
                 bind: str = "127.0.0.1", hold: float = 60.0, keep: bool = False,
                 realm: str | None = None) -> None:
        super().__init__(name=user, registrar=f"127.0.0.1:{edge.sip_port}",
                         realm=realm or edge.realm, user=user, password=password,
                         transport=transport, bind=bind, lifetime=hold, keep=keep,
                         user_agent="pjsua2-mirliton-test")


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
        terminate(self.proc, timeout=5)


# -- RabbitMQ -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge_amqp_url() -> Iterator[str]:
    """RabbitMQ at MIRLITON_TEST_AMQP_URL, in a vhost of its own when rabbitmqctl can make one."""
    with amqp_vhost("edge") as url:
        yield url


__all__ = [
    "BaresipPhone",
    "EdgeNode",
    "PjsuaPhone",
    "provisioned_edge_node",
    "start_edge_node",
    "stop_edge_node",
    "wait_until",
]
