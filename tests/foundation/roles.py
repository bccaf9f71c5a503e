"""Roles used by the node tests: plain worker processes, a worker with a lightweight child
that crashes on request, and groups of workers under each process-level strategy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from actors.kernel import Actor
from mirliton.config import Config
from mirliton.roles import RoleProcess
from supervisors.core import ChildSpec, SupervisorFlags
from supervisors.process import ProcessChild, ProcessSupervisor


class Worker(RoleProcess):
    """A process actor that answers 'pid', crashes on 'crash', exits normally on 'exit'."""

    def handle(self, msg: Any, sender: Any) -> None:
        if msg == "pid":
            self.send(sender, os.getpid())
        elif msg == "crash":
            raise RuntimeError("crash requested by the test")
        elif msg == "exit":
            self.stop_process("normal")
        else:
            super().handle(msg, sender)


class CrashOnRequest(Actor):
    """Crashes when the file ``crash-<pid>`` appears in the node's data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.trigger = data_dir / f"crash-{os.getpid()}"

    def init(self) -> None:
        self.send_after(0.02, "poll")

    def handle_cast(self, msg: Any) -> None:
        if self.trigger.exists():
            self.trigger.unlink()
            raise ValueError("lightweight crash requested by the test")
        self.send_after(0.02, "poll")


class WorkerWithActors(Worker):
    def child_specs(self, cfg: Config) -> list[ChildSpec]:
        return [ChildSpec("crasher", lambda: CrashOnRequest(cfg.data_dir))]


def _group(strategy: str, restarts: dict[str, str] | None = None, intensity: int = 10,
           period: float = 10.0) -> type[ProcessSupervisor]:
    restarts = restarts or {}

    class Group(ProcessSupervisor):
        def supervision(self, args: Any) -> tuple[SupervisorFlags, list[ChildSpec]]:
            worker = ProcessChild("tests.foundation.roles:Worker", args)
            if strategy == "simple_one_for_one":
                return SupervisorFlags(strategy, intensity, period), [
                    ChildSpec("dyn", worker, restart=restarts.get("dyn", "temporary"),
                              shutdown=5.0)]
            return SupervisorFlags(strategy, intensity, period), [  # type: ignore[arg-type]
                ChildSpec(name, worker, restart=restarts.get(name, "permanent"),  # type: ignore[arg-type]
                          shutdown=5.0)
                for name in ("a", "b", "c")
            ]

    return Group


OneForOneGroup = _group("one_for_one", {"b": "transient", "c": "temporary"})
OneForAllGroup = _group("one_for_all", {"c": "temporary"})
RestForOneGroup = _group("rest_for_one")
EscalatingGroup = _group("one_for_one", intensity=1, period=30.0)
DynamicGroup = _group("simple_one_for_one", {"dyn": "transient"})

for _cls, _name in ((OneForOneGroup, "OneForOneGroup"), (OneForAllGroup, "OneForAllGroup"),
                    (RestForOneGroup, "RestForOneGroup"), (EscalatingGroup, "EscalatingGroup"),
                    (DynamicGroup, "DynamicGroup")):
    _cls.__name__ = _cls.__qualname__ = _name

