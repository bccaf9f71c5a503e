"""Role processes: one OS process per role (edge, registrar, calls, callflow, ...).

A role process is a process actor that runs an in-process supervisor of lightweight actors —
the role's own tree — and exits (so that the node's root supervisor restarts it) when that
tree gives up. Roles are named in ``node.roles``: a built-in name from ``BUILTIN_ROLES`` or a
plug-in as ``module:Class``.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import gevent
import gevent.event
from prometheus_client import Gauge

from actors.kernel import SHUTDOWN, ActorRef, _counts_by_kind, spawn
from mirliton.config import Config
from mirliton.status import write_tree_node
from supervisors.core import ChildSpec, SupervisorFlags
from supervisors.local import Supervisor
from supervisors.process import ProcessActor, ProcessChild

__all__ = ["BUILTIN_ROLES", "RoleProcess", "role_child_spec", "resolve_roles"]

log = logging.getLogger("mirliton.roles")

# name -> "module:Class". Later issues add edge, registrar, calls, callflow, crossbar, ...
BUILTIN_ROLES: dict[str, str] = {
    "ops": "mirliton.ops:OpsRole",
    "nodes": "actors.nodes.role:NodesRole",
    "crossbar": "actors.crossbar.role:CrossbarRole",
    "registrar": "actors.registrar.role:RegistrarRole",
    "edge": "actors.edge.role:EdgeRole",
    "cdr": "actors.cdr.role:CdrRole",
    "callflow": "actors.callflow.role:CallflowRole",
    "calls": "actors.calls.role:CallsGroup",
}

ACTORS = Gauge(
    "mirliton_actors",
    "Live actors by kind: lightweight actor classes, and 'process' for process actors.",
    ["kind"],
    multiprocess_mode="livesum",
)


def resolve_roles(cfg: Config) -> list[tuple[str, str]]:
    """(role id, actor class path) in start order."""
    names = cfg.node.roles or list(BUILTIN_ROLES)
    out: list[tuple[str, str]] = []
    for name in names:
        if name in BUILTIN_ROLES:
            out.append((name, BUILTIN_ROLES[name]))
        elif ":" in name:
            out.append((name.rsplit(":", 1)[1].lower(), name))
        else:
            raise ValueError(f"node.roles: unknown role {name!r} (known: {sorted(BUILTIN_ROLES)})")
    ids = [i for i, _ in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"node.roles: a role is named twice in {names}")
    return out


def role_child_spec(role_id: str, cls_path: str, cfg: Config) -> ChildSpec:
    from supervisors.process import ProcessSupervisor, load_class

    # A role may be a group of processes under its own supervisor (e.g. call shards).
    is_group = issubclass(load_class(cls_path), ProcessSupervisor)
    return ChildSpec(
        id=role_id,
        start=ProcessChild(cls_path, {"config": cfg.model_dump(mode="json")}),
        restart="permanent",
        shutdown="infinity" if is_group else 10.0,
        type="supervisor" if is_group else "worker",
    )


class RoleProcess(ProcessActor):
    """Base of role processes. Override ``child_specs`` (and ``flags``)."""

    flags = SupervisorFlags("one_for_one", intensity=5, period=10.0)

    def child_specs(self, cfg: Config) -> list[ChildSpec]:
        return []

    def init_process(self, args: Any) -> None:
        # Everything loaded so far lives as long as the process: keep the cyclic collector
        # off it, and collect young objects less often (thousands of actors, each a few dozen
        # tracked objects, otherwise make collections dominate actor spawns).
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        self.config = Config.model_validate(args["config"])
        self.stopping = False
        self._tree_dirty = gevent.event.Event()
        self.tree_ref: ActorRef = spawn(Supervisor(
            self.child_specs(self.config), self.flags, name=self.path,
            on_change=lambda _: self._tree_dirty.set(),
        ))
        self._tree_dirty.set()
        gevent.spawn(self._watch_tree)
        gevent.spawn(self._publish_tree)
        gevent.spawn(self._count_actors)

    def terminate_process(self, reason: Any) -> None:
        self.stopping = True
        self.tree_ref.stop(SHUTDOWN, timeout=10.0)

    def _watch_tree(self) -> None:
        reason = self.tree_ref.join()
        if not self.stopping:
            self.crash(f"role supervisor exited: {reason}")

    def _publish_tree(self) -> None:
        import os

        while not self.stopping:
            self._tree_dirty.wait()
            self._tree_dirty.clear()
            sup = self.tree_ref._actor
            if isinstance(sup, Supervisor) and self.tree_ref.is_alive:
                write_tree_node(self.run_dir, self.path, {"pid": os.getpid(), "tree": sup.tree()})
            gevent.sleep(0.05)  # coalesce bursts of changes

    def _count_actors(self) -> None:
        seen: set[str] = set()
        while not self.stopping:
            for kind, n in list(_counts_by_kind.items()):
                ACTORS.labels(kind=kind).set(n)
                seen.add(kind)
            gevent.sleep(1.0)
