"""Node heartbeats, Kazoo's kz_nodes: every node advertises itself on the ``nodes`` fanout
exchange every few seconds; a peer that stays silent for 1.25 x its advertised ``Expires``
(milliseconds) leaves the list.

The node runs one :class:`NodesService` (in one of its processes):

    service = NodesService(bus, NodeInfo(name, version, roles, zone), interval=5.0,
                           snapshot_path=data_dir / "nodes.json").start()
    service.snapshot()        # [{"name": ..., "roles": [...], "expires_at": ..., ...}, ...]

``snapshot_path`` keeps the current list in a JSON file, rewritten atomically whenever an
advertise arrives and when a node expires (checked every second, as kz_nodes does), so that
another process - ``mirliton status`` - reads it with :func:`read_snapshot` without joining
the bus. Each entry carries ``expires_at`` (wall clock) for readers that filter themselves.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gevent

from bus.api.nodes import advertise
from bus.messages import Message
from bus.transport import Binding, Bus, Consumer, Delivery

__all__ = [
    "EXPIRY_FACTOR",
    "NodeInfo",
    "NodeRecord",
    "NodeRegistry",
    "NodesService",
    "default_load",
    "read_snapshot",
]

log = logging.getLogger("mirliton.bus.nodes")

EXPIRY_FACTOR = 1.25


@dataclass(frozen=True)
class NodeInfo:
    """What a node says about itself."""

    name: str
    version: str
    roles: tuple[str, ...] = ()
    zone: str = "local"
    started: float = field(default_factory=time.time)


@dataclass
class NodeRecord:
    """A node as last heard from."""

    name: str
    version: str
    roles: list[str]
    zone: str
    started: float
    expires_ms: int
    last_seen: float  # wall-clock time of the last advertise
    processes: int | None = None
    used_memory: int | None = None
    load_average: list[float] | None = None

    @property
    def expires_at(self) -> float:
        return self.last_seen + EXPIRY_FACTOR * self.expires_ms / 1000.0

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["expires_at"] = self.expires_at
        return record


class NodeRegistry:
    """Peers heard on the ``nodes`` exchange, forgetting those silent past their expiry."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeRecord] = {}

    def update(self, msg: Message, now: float | None = None) -> NodeRecord:
        load = msg.get("Load-Average")
        record = NodeRecord(
            name=str(msg["Node"]),
            version=str(msg.get("Version", "")),
            roles=[str(role) for role in msg.get("Roles", [])],
            zone=str(msg.get("Zone", "")),
            started=float(msg.get("Started", 0.0)),
            expires_ms=int(msg["Expires"]),
            last_seen=time.time() if now is None else now,
            processes=msg.get("Processes"),
            used_memory=msg.get("Used-Memory"),
            load_average=[float(x) for x in load] if isinstance(load, list) else None,
        )
        self._nodes[record.name] = record
        return record

    def nodes(self, now: float | None = None) -> list[NodeRecord]:
        """The live nodes, by name; expired ones are forgotten."""
        now = time.time() if now is None else now
        for name in [n for n, r in self._nodes.items() if r.expires_at < now]:
            del self._nodes[name]
        return sorted(self._nodes.values(), key=lambda record: record.name)


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                # The command name may hold spaces and parentheses: split after the last ')'.
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def default_load(root_pid: int | None = None) -> dict[str, Any]:
    """Load figures of the process tree under ``root_pid`` (default: this process):
    process count, resident memory in bytes, and the machine's load average."""
    pids = _process_tree(os.getpid() if root_pid is None else root_pid)
    page = os.sysconf("SC_PAGE_SIZE")
    memory = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                memory += int(statm.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return {
        "Processes": len(pids),
        "Used-Memory": memory,
        "Load-Average": [round(x, 2) for x in os.getloadavg()],
    }


class NodesService:
    """Advertises this node and keeps the list of nodes heard (see the module docstring)."""

    def __init__(
        self,
        bus: Bus,
        info: NodeInfo,
        *,
        interval: float = 5.0,
        snapshot_path: Path | str | None = None,
        load: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.bus = bus
        self.info = info
        self.interval = interval
        self.registry = NodeRegistry()
        self.snapshot_path = Path(snapshot_path) if snapshot_path is not None else None
        self._load = load or default_load
        self._consumer: Consumer | None = None
        self._ticker: gevent.Greenlet | None = None
        self._expiry_checker: gevent.Greenlet | None = None
        self._known: set[str] = set()

    def start(self) -> NodesService:
        self._consumer = self.bus.consume([Binding("nodes", "#")], self._on_advertise)
        self.advertise()
        self._ticker = gevent.spawn(self._tick)
        self._expiry_checker = gevent.spawn(self._check_expiry)
        return self

    def stop(self) -> None:
        for greenlet in (self._ticker, self._expiry_checker):
            if greenlet is not None:
                greenlet.kill(block=False)
        self._ticker = self._expiry_checker = None
        if self._consumer is not None:
            self._consumer.cancel()
            self._consumer = None

    def advertise(self) -> None:
        """Publish this node's advertise now."""
        try:
            figures = self._load()
        except Exception:  # noqa: BLE001 - a heartbeat without figures beats none
            log.warning("node load figures failed", exc_info=True)
            figures = {}
        self.bus.publish(
            advertise.build(
                {
                    "Node": self.info.name,
                    "Expires": int(self.interval * 1000),
                    "Version": self.info.version,
                    "Roles": list(self.info.roles),
                    "Zone": self.info.zone,
                    "Started": self.info.started,
                    **figures,
                }
            )
        )

    def nodes(self) -> list[NodeRecord]:
        return self.registry.nodes()

    def snapshot(self) -> list[dict[str, Any]]:
        """The live nodes as JSON-ready dicts (for ``mirliton status --json``)."""
        return [
            {**record.to_dict(), "self": record.name == self.info.name}
            for record in self.registry.nodes()
        ]

    def _on_advertise(self, msg: Message, _delivery: Delivery) -> None:
        if msg.get("Event-Name") != "advertise":
            return
        self.registry.update(msg)
        self._write_snapshot()

    def _tick(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                self.advertise()
            except Exception:  # noqa: BLE001 - keep beating; the bus reconnects on its own
                log.warning("node advertise failed", exc_info=True)

    def _check_expiry(self) -> None:
        while True:
            gevent.sleep(1.0)
            if {record.name for record in self.registry.nodes()} != self._known:
                self._write_snapshot()

    def _write_snapshot(self) -> None:
        snapshot = self.snapshot()
        self._known = {entry["name"] for entry in snapshot}
        if self.snapshot_path is None:
            return
        temporary = self.snapshot_path.with_name(f".{self.snapshot_path.name}.{os.getpid()}")
        try:
            temporary.write_text(json.dumps({"written_at": time.time(), "nodes": snapshot}))
            os.replace(temporary, self.snapshot_path)
        except OSError:
            log.warning("cannot write %s", self.snapshot_path, exc_info=True)


def read_snapshot(path: Path | str, now: float | None = None) -> list[dict[str, Any]]:
    """The nodes listed in a snapshot file that have not expired (empty if no file)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    now = time.time() if now is None else now
    return [entry for entry in data.get("nodes", []) if entry.get("expires_at", 0) >= now]
