"""Acceptance: two nodes (two ``mirliton start`` with their own data dirs and ports) on one
RabbitMQ list each other in ``mirliton status --json`` within 10 s; one stopped leaves the
other's list after its expiry (1.25 x the advertised 5 s)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MIRLITON = [sys.executable, "-m", "mirliton"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MIRLITON, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180
    )


class Node:
    def __init__(self, name: str, base: Path, amqp_url: str) -> None:
        self.name = name
        self.data_dir = base / name
        self.data_dir.mkdir()
        self.config = base / f"{name}.toml"
        self.config.write_text(
            f'[node]\nname = "{name}"\nroles = ["nodes"]\n'
            f'[bus]\nurl = "{amqp_url}"\n'
            f'[http]\nlisten = "127.0.0.1:{_free_port()}"\n'
            f'[ops]\nlisten = "127.0.0.1:{_free_port()}"\n'
            f'[sip]\nlisten = ["udp:127.0.0.1:{_free_port()}"]\n'
        )
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    def start(self) -> None:
        done = _run(
            "start",
            "--config",
            str(self.config),
            "--data-dir",
            str(self.data_dir),
            "--detach",
            env=self.env,
        )
        assert done.returncode == 0, done.stderr + (self.data_dir / "node.out").read_text(
            errors="replace"
        )

    def stop(self) -> None:
        _run("stop", "--config", str(self.config), "--data-dir", str(self.data_dir), env=self.env)

    def listed(self) -> set[str]:
        done = _run(
            "status",
            "--json",
            "--config",
            str(self.config),
            "--data-dir",
            str(self.data_dir),
            env=self.env,
        )
        status: dict[str, Any] = json.loads(done.stdout)
        return {entry["name"] for entry in status.get("nodes", [])}


@pytest.fixture
def nodes(amqp_url: str, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    unique = uuid.uuid4().hex[:6]
    first, second = (
        Node(f"alpha-{unique}", tmp_path, amqp_url),
        Node(f"beta-{unique}", tmp_path, amqp_url),
    )
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def _wait(condition: Any, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.25)
    return None


@pytest.mark.amqp
def test_two_nodes_list_each_other_then_one_leaves(nodes: tuple[Node, Node]) -> None:
    alpha, beta = nodes
    alpha.start()
    beta.start()
    both = {alpha.name, beta.name}
    assert _wait(lambda: alpha.listed() == both and beta.listed() == both, 10) is not None, (
        alpha.listed(),
        beta.listed(),
    )
    beta.stop()
    left_after = _wait(lambda: beta.name not in alpha.listed(), 20)
    assert left_after is not None
    # Expires is 5 s: beta is forgotten 6.25 s after its last heartbeat (checked each second).
    assert left_after <= 1.25 * 5 + 2
    assert alpha.listed() == {alpha.name}


def test_a_node_on_the_local_bus_lists_itself(tmp_path: Path) -> None:
    node = Node(f"solo-{uuid.uuid4().hex[:6]}", tmp_path, "local")
    try:
        node.start()
        assert _wait(lambda: node.listed() == {node.name}, 10) is not None
    finally:
        node.stop()
