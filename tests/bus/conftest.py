"""Fixtures of the bus contract suite: the same tests run on ``local`` and ``amqp``.

``amqp`` runs against the real RabbitMQ at MIRLITON_TEST_AMQP_URL in a vhost of its own
(tests/rabbitmq.py) so that these tests never see other tests' messages; without rabbitmqctl
they use the URL's vhost and unique names.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.subprocess
import pytest

from bus import Bus, connect
from tests.rabbitmq import amqp_vhost

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    with amqp_vhost("bus") as url:
        yield url


@pytest.fixture(params=["local", pytest.param("amqp", marks=pytest.mark.amqp)])
def bus_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return "local"
    return str(request.getfixturevalue("amqp_url"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "node"
    path.mkdir()
    return path


@pytest.fixture
def make_bus(bus_url: str, data_dir: Path) -> Iterator[Callable[..., Bus]]:
    buses: list[Bus] = []

    def make(node: str = "test") -> Bus:
        bus = connect(bus_url, node=node, data_dir=data_dir)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


class Peer:
    """A bus endpoint in a child process (tests/bus/peer.py)."""

    def __init__(self, url: str, data_dir: Path, spec: dict[str, Any]) -> None:
        self.process = gevent.subprocess.Popen(
            [sys.executable, "-m", "tests.bus.peer", url, str(data_dir), json.dumps(spec)],
            cwd=ROOT,
            stdin=gevent.subprocess.PIPE,
            stdout=gevent.subprocess.PIPE,
            text=True,
        )
        first = self.read(timeout=20)
        assert first == {"ready": True}, first

    def read(self, timeout: float = 10) -> dict[str, Any]:
        assert self.process.stdout is not None
        with gevent.Timeout(timeout, AssertionError(f"peer said nothing in {timeout}s")):
            line = self.process.stdout.readline()
        assert line, f"peer exited with {self.process.poll()}"
        return json.loads(line)  # type: ignore[no-any-return]

    def read_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> list[dict[str, Any]]:
        """Lines up to and including the first one matching ``predicate``."""
        lines = []
        while True:
            line = self.read(timeout)
            lines.append(line)
            if predicate(line):
                return lines

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except gevent.subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def spawn_peer(bus_url: str, data_dir: Path) -> Iterator[Callable[[dict[str, Any]], Peer]]:
    peers: list[Peer] = []

    def spawn(spec: dict[str, Any]) -> Peer:
        peer = Peer(bus_url, data_dir, spec)
        peers.append(peer)
        return peer

    yield spawn
    for peer in peers:
        peer.stop()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]
