"""Where the calls shards of this node are: small advertisement files under
``data_dir/run/calls/`` (Kazoo feeds Kamailio's dispatcher from ecallmgr heartbeats; here the
edge and the shards are processes of one node, so a file per shard is the heartbeat).

Each shard writes ``shard-<n>.json`` (pid, SIP address, Control-Queue) once its listener is
open and removes it when it stops. A shard is healthy while its pid is alive: a shard killed
with ``kill -9`` drops out even though its file is still there, and its restart rewrites the
file with the new address.

The edge's view (:class:`ShardDirectory`) is at most half a second old: a killed shard
stops getting new calls within that time. The edge picks a shard for a new call by
rendezvous hashing on the Call-ID over the healthy
shards: the same Call-ID always lands on the same shard while that shard is up, and a dead
shard only moves its own share of new calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ShardInfo", "ShardDirectory", "advertise", "pick_shard", "read_shards", "withdraw"]


@dataclass(frozen=True, slots=True)
class ShardInfo:
    shard: int
    pid: int
    host: str
    port: int
    control_queue: str
    node: str

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


def _dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "run" / "calls"


def advertise(data_dir: Path | str, info: ShardInfo) -> None:
    directory = _dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"shard-{info.shard}.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({
        "shard": info.shard, "pid": info.pid, "host": info.host, "port": info.port,
        "control_queue": info.control_queue, "node": info.node,
    }))
    tmp.replace(path)


def withdraw(data_dir: Path | str, shard: int, pid: int) -> None:
    path = _dir(data_dir) / f"shard-{shard}.json"
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def read_shards(data_dir: Path | str) -> list[ShardInfo]:
    """The healthy shards, by shard number."""
    found: list[ShardInfo] = []
    directory = _dir(data_dir)
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("shard-*.json")):
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            info = ShardInfo(int(raw["shard"]), int(raw["pid"]), str(raw["host"]), int(raw["port"]),
                             str(raw["control_queue"]), str(raw.get("node", "")))
        except (OSError, ValueError, KeyError):
            continue
        if _alive(info.pid):
            found.append(info)
    return sorted(found, key=lambda s: s.shard)


def pick_shard(shards: list[ShardInfo], call_id: str) -> ShardInfo | None:
    """Rendezvous (highest random weight) hashing of the Call-ID over the shards."""
    best: ShardInfo | None = None
    best_weight = b""
    for shard in shards:
        weight = hashlib.blake2b(f"{shard.shard}:{call_id}".encode(), digest_size=8).digest()
        if best is None or weight > best_weight:
            best, best_weight = shard, weight
    return best


class ShardDirectory:
    """The edge's cached view of the shard files, re-read at most every ``ttl`` seconds."""

    def __init__(self, data_dir: Path | str, ttl: float = 0.5) -> None:
        self.data_dir = Path(data_dir)
        self.ttl = ttl
        self._shards: list[ShardInfo] = []
        self._read_at = 0.0

    def healthy(self, *, fresh: bool = False) -> list[ShardInfo]:
        """The shards whose pid was alive when last looked at, at most ``ttl`` seconds ago
        (``fresh``: 50 ms). Liveness is read with the files, not per message: reading
        /proc for every relayed request was a tenth of the edge's CPU."""
        now = time.monotonic()
        if now - self._read_at >= (0.05 if fresh else self.ttl):
            self._shards = read_shards(self.data_dir)
            self._read_at = now
        return self._shards

    def is_shard_address(self, address: tuple[str, int]) -> bool:
        """Whether a calls shard listens there; an unknown address re-reads the files (a
        restarted shard has a new one)."""
        if any(s.address == address for s in self.healthy()):
            return True
        return any(s.address == address for s in self.healthy(fresh=True))

    def pick(self, call_id: str) -> ShardInfo | None:
        return pick_shard(self.healthy(), call_id)
