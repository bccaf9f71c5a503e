"""Node heartbeats (kz_nodes): nodes in two OS processes see each other, and a silent node
leaves the list once 1.25 x its advertised expiry has passed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent

from bus import Bus
from bus.api.nodes import advertise
from bus.nodes import EXPIRY_FACTOR, NodeInfo, NodeRegistry, NodesService, read_snapshot
from tests.bus.conftest import Peer


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.05)
    return True


def test_two_nodes_list_each_other_and_expire(
    make_bus: Callable[..., Bus],
    spawn_peer: Callable[[dict[str, Any]], Peer],
    unique: str,
    tmp_path: Path,
) -> None:
    interval = 0.5
    n1, n2 = f"n1-{unique}", f"n2-{unique}"
    peer_snapshot = tmp_path / "peer-nodes.json"
    peer = spawn_peer(
        {"role": "node", "node": n2, "interval": interval, "snapshot": str(peer_snapshot)}
    )
    service = NodesService(
        make_bus(n1),
        NodeInfo(n1, "2.0", ("apps",), zone="z0"),
        interval=interval,
        snapshot_path=tmp_path / "nodes.json",
    ).start()

    def names(entries: list[dict[str, Any]]) -> set[str]:
        return {entry["name"] for entry in entries} & {n1, n2}

    assert _wait_for(lambda: names(service.snapshot()) == {n1, n2}, 10)
    assert _wait_for(lambda: names(read_snapshot(peer_snapshot)) == {n1, n2}, 10)
    assert names(read_snapshot(tmp_path / "nodes.json")) == {n1, n2}
    other = next(entry for entry in service.snapshot() if entry["name"] == n2)
    assert other["roles"] == ["calls", "edge"]
    assert other["zone"] == "z1"
    assert other["version"] == "1.0"
    assert other["expires_ms"] == 500
    assert other["processes"] >= 1 and other["used_memory"] > 0
    assert len(other["load_average"]) == 3
    assert other["self"] is False
    me = next(entry for entry in service.snapshot() if entry["name"] == n1)
    assert me["self"] is True and me["roles"] == ["apps"]

    peer.process.kill()
    peer.process.wait()
    stopped = time.monotonic()
    assert _wait_for(lambda: n2 not in names(service.snapshot()), 5)
    gone_after = time.monotonic() - stopped
    # It leaves once 1.25 x Expires passed since its last heartbeat (plus one check interval).
    assert gone_after <= EXPIRY_FACTOR * interval + 1.0
    assert _wait_for(lambda: n2 not in names(read_snapshot(tmp_path / "nodes.json")), 5)
    service.stop()


def test_registry_expiry_is_one_and_a_quarter_times_expires() -> None:
    registry = NodeRegistry()
    message = advertise.build({"Node": "a", "Expires": 4000, "Roles": ["edge"], "Version": "1"})
    registry.update(message, now=100.0)
    assert [r.name for r in registry.nodes(now=104.9)] == ["a"]
    assert [r.name for r in registry.nodes(now=104.99)] == ["a"]
    assert registry.nodes(now=105.01) == []
