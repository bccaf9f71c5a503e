"""Process actors on Thespian and their supervisor.

A process actor is one OS process (Thespian ``multiprocTCPBase``, fork start method): the
crash-isolation boundary of a role. Thespian alone does not give OTP semantics — an exception
in ``receiveMessage`` is retried once and then returned as a PoisonMessage while the actor
lives on, and children outlive a killed parent — so this module adds them:

- an unhandled exception in a process actor is logged with its traceback, its reason is
  written to the node's run directory and the process exits for real (``os._exit``); its
  supervisor learns of it through Thespian's ``ChildActorExited`` and reads the reason;
- every process of the node dies with its parent (``PR_SET_PDEATHSIG``, installed at fork
  by ``mirliton.node``), so a killed supervisor or node root leaves no orphan;
- ``ProcessSupervisor`` applies the shared OTP rules (``supervisors.core``) with Thespian
  messages: ordered start (a child's ``init_process`` completes before the next is created),
  reverse-ordered shutdown with per-child timeouts then SIGKILL, restarts and escalation.

Thespian messages are for lifecycle and control only (~335 msgs/s); traffic goes on the bus.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from thespian.actors import (
    Actor as ThespianActor,
)
from thespian.actors import (
    ActorAddress,
    ActorExitRequest,
    ChildActorExited,
    PoisonMessage,
    WakeupMessage,
)

from supervisors.core import (
    ChildSpec,
    Escalate,
    Plan,
    SupervisorCore,
    SupervisorFlags,
    describe_reason,
)
from supervisors.metrics import record_restart

__all__ = [
    "ChildReady",
    "InitChild",
    "ProcessActor",
    "ProcessChild",
    "ProcessSupervisor",
    "StopChild",
    "SupervisorOp",
    "SupervisorOpResult",
    "find_exit_by_path",
    "read_exit_reason",
]

log = logging.getLogger("mirliton.supervisors")

INIT_TIMEOUT = 30.0


@dataclass(frozen=True)
class ProcessChild:
    """``ChildSpec.start`` of a process child: the actor class as ``module:Class`` and its args."""

    cls: str
    args: Any = None


@dataclass(frozen=True)
class InitChild:
    """First message to a new process actor: who it is and what to start."""

    key: str
    args: Any
    path: str  # dotted supervision path, e.g. "root.calls"
    run_dir: str


@dataclass(frozen=True)
class ChildReady:
    key: str
    pid: int


@dataclass(frozen=True)
class StopChild:
    """Graceful stop: stop your own children in reverse order, then exit."""

    reason: Any = "shutdown"


@dataclass(frozen=True)
class SupervisorOp:
    op: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SupervisorOpResult:
    ok: bool
    value: Any = None


def load_class(path: str) -> type:
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not isinstance(cls, type):
        raise TypeError(f"{path} is not a class")
    return cls


def _exit_file(run_dir: str, pid: int) -> Path:
    return Path(run_dir) / "exit" / f"{pid}.json"


def write_exit_reason(run_dir: str, reason: Any, path: str = "") -> None:
    file = _exit_file(run_dir, os.getpid())
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"reason": describe_reason(reason), "path": path}))
    os.replace(tmp, file)


def find_exit_by_path(run_dir: str, path: str) -> str | None:
    """The exit reason a process at supervision ``path`` left, when its pid is not known."""
    for file in (Path(run_dir) / "exit").glob("*.json"):
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if data.get("path") == path:
            file.unlink(missing_ok=True)
            return str(data.get("reason"))
    return None


def read_exit_reason(run_dir: str, pid: int | None) -> str:
    """Why a child process exited: what it wrote before exiting, else 'killed'."""
    if pid is None:
        return "killed"
    path = _exit_file(run_dir, pid)
    try:
        data = json.loads(path.read_text())
        path.unlink(missing_ok=True)
        return str(data["reason"])
    except (OSError, ValueError, KeyError):
        return "killed"


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


class ProcessActor(ThespianActor):
    """Base of every process actor. Subclasses implement ``init_process`` and ``handle``."""

    key: str = ""
    path: str = ""
    run_dir: str = ""

    # --- to override ----------------------------------------------------------------------
    def init_process(self, args: Any) -> None:
        """Start what this process runs. Raising fails the start (reported to the supervisor)."""

    def handle(self, msg: Any, sender: ActorAddress) -> None:
        raise TypeError(f"{type(self).__name__} got an unexpected message {msg!r}")

    def terminate_process(self, reason: Any) -> None:
        """Graceful stop hook (reverse order of what init_process started)."""

    # --- Thespian entry point --------------------------------------------------------------
    def receiveMessage(self, msg: Any, sender: ActorAddress) -> None:  # noqa: N802 - Thespian API
        try:
            if isinstance(msg, InitChild):
                self._init_child(msg, sender)
            elif isinstance(msg, StopChild):
                self.stop_process(msg.reason)
            elif isinstance(msg, ActorExitRequest):
                # Thespian's own shutdown (ActorSystem.shutdown): stop cleanly, it exits us.
                self._terminate_quietly("shutdown")
            elif isinstance(msg, PoisonMessage):
                log.warning("%s: a message could not be delivered: %r", self.path, msg.poisonMessage)
            else:
                self.handle(msg, sender)
        except Exception as exc:  # noqa: BLE001 - any exception is a crash of this process
            self.crash(f"{type(exc).__name__}: {exc}", traceback.format_exc())

    def _init_child(self, msg: InitChild, sender: ActorAddress) -> None:
        self.key, self.path, self.run_dir = msg.key, msg.path, msg.run_dir
        self.parent_address = sender
        from mirliton.logs import reclaim_logging, set_process_context

        reclaim_logging()
        set_process_context(role=msg.path)
        try:
            self.init_process(msg.args)
        except Exception as exc:  # noqa: BLE001
            self.crash(f"init failed: {type(exc).__name__}: {exc}", traceback.format_exc())
        self.on_ready(sender)

    def on_ready(self, sender: ActorAddress) -> None:
        self.send(sender, ChildReady(self.key, os.getpid()))

    def crash(self, reason: str, tb: str = "") -> None:
        """Exit this process for real with ``reason``: the supervisor restarts it."""
        log.error("process actor %s crashed: %s\n%s", self.path or type(self).__name__, reason, tb)
        if self.run_dir:
            write_exit_reason(self.run_dir, reason, self.path)
        _flush_logs()
        os._exit(1)

    def stop_process(self, reason: Any = "shutdown") -> None:
        self._terminate_quietly(reason)
        if self.run_dir:
            write_exit_reason(self.run_dir, reason, self.path)
        _flush_logs()
        os._exit(0)

    def _terminate_quietly(self, reason: Any) -> None:
        try:
            self.terminate_process(reason)
        except Exception:  # noqa: BLE001
            log.error("%s: terminate_process raised", self.path, exc_info=True)


@dataclass
class _Step:
    kind: str  # start | terminate | ready | reply | exit
    key: str = ""
    data: Any = None
    restart: bool = False


@dataclass
class _Awaiting:
    kind: str  # start | terminate
    key: str
    address: ActorAddress
    step: _Step


@dataclass
class _RunningChild:
    address: ActorAddress
    pid: int | None = None


@dataclass
class _State:
    core: SupervisorCore
    name: str
    steps: deque[_Step] = field(default_factory=deque)
    awaiting: _Awaiting | None = None
    addresses: dict[str, _RunningChild] = field(default_factory=dict)
    stopping: bool = False
    initialised: bool = False


class ProcessSupervisor(ProcessActor):
    """A supervisor whose children are process actors.

    Its ``InitChild.args`` are ``(SupervisorFlags, [ChildSpec with ProcessChild start])``.
    """

    def supervision(self, args: Any) -> tuple[SupervisorFlags, list[ChildSpec]]:
        """Flags and child specs. Args are ``(flags, specs)``; a subclass (a role that is a
        group of processes) may build them from its own args instead."""
        flags, specs = args
        return flags, list(specs)

    def init_process(self, args: Any) -> None:
        flags, specs = self.supervision(args)
        if not isinstance(flags, SupervisorFlags):
            raise TypeError("ProcessSupervisor args are (SupervisorFlags, [ChildSpec])")
        for spec in specs:
            if not isinstance(spec.start, ProcessChild):
                raise TypeError(f"child {spec.id!r}: a process supervisor starts ProcessChild")
        self.state = _State(SupervisorCore.create(flags, list(specs)), self.path)
        for key in self.state.core.start_order():
            self.state.steps.append(_Step("start", key))

    def on_ready(self, sender: ActorAddress) -> None:
        # Ready only once every child has started, in order.
        self.state.steps.append(_Step("ready", data=sender))
        self._pump()

    # --- messages --------------------------------------------------------------------------
    def handle(self, msg: Any, sender: ActorAddress) -> None:
        if isinstance(msg, ChildReady):
            self._child_ready(msg, sender)
        elif isinstance(msg, ChildActorExited):
            self._child_exited(msg.childAddress)
        elif isinstance(msg, WakeupMessage):
            self._wakeup(msg.payload)
        elif isinstance(msg, SupervisorOp):
            self._op(msg, sender)
        else:
            raise TypeError(f"supervisor {self.path} got an unexpected message {msg!r}")

    def stop_process(self, reason: Any = "shutdown") -> None:
        st = self.state
        if st.stopping:
            return
        st.stopping = True
        st.steps.clear()
        for key in st.core.shutdown_order():
            st.steps.append(_Step("terminate", key))
        st.steps.append(_Step("exit", data=reason))
        self._pump()

    def terminate_process(self, reason: Any) -> None:
        # Thespian-initiated shutdown: no time to wait for messages, stop children at once.
        for key in self.state.core.shutdown_order():
            child = self.state.addresses.get(key)
            if child is not None and child.pid:
                _kill(child.pid, signal.SIGTERM)

    # --- the step machine ------------------------------------------------------------------
    def _pump(self) -> None:
        st = self.state
        while st.awaiting is None and st.steps:
            step = st.steps.popleft()
            getattr(self, "_do_" + step.kind)(step)
        self._write_tree()

    def _do_start(self, step: _Step) -> None:
        st = self.state
        if not st.core.has_child(step.key):
            return
        child = st.core.child(step.key)
        start: ProcessChild = child.spec.start
        address = self.createActor(start.cls.replace(":", "."))
        args = start.args if not child.args else (start.args, *child.args)
        self.send(address, InitChild(step.key, args, f"{self.path}.{child.spec.id}", self.run_dir))
        st.awaiting = _Awaiting("start", step.key, address, step)
        st.addresses[step.key] = _RunningChild(address)
        self.wakeupAfter(timedelta(seconds=INIT_TIMEOUT), ("init_timeout", step.key, address))

    def _do_terminate(self, step: _Step) -> None:
        st = self.state
        if not st.core.has_child(step.key):
            return
        running = st.addresses.get(step.key)
        if running is None:
            return
        shutdown = st.core.child(step.key).spec.shutdown
        st.awaiting = _Awaiting("terminate", step.key, running.address, step)
        if shutdown == "brutal_kill":
            if running.pid:
                _kill(running.pid, signal.SIGKILL)
        else:
            self.send(running.address, StopChild("shutdown"))
            if shutdown != "infinity":
                self.wakeupAfter(
                    timedelta(seconds=float(shutdown)), ("kill", step.key, running.address)
                )

    def _do_ready(self, step: _Step) -> None:
        self.state.initialised = True
        self.send(step.data, ChildReady(self.key, os.getpid()))

    def _do_reply(self, step: _Step) -> None:
        sender, value_fn = step.data
        self._write_tree()  # whoever reads the tree after the reply sees the change
        try:
            value = value_fn()
            self.send(sender, SupervisorOpResult(True, value))
        except (KeyError, ValueError, TypeError) as err:
            self.send(sender, SupervisorOpResult(False, str(err)))

    def _do_exit(self, step: _Step) -> None:
        reason = step.data
        self._write_tree(state="stopped")
        if isinstance(reason, Escalate):
            self.crash(describe_reason(reason.reason))
        write_exit_reason(self.run_dir, reason, self.path)
        _flush_logs()
        os._exit(0)

    # --- events ----------------------------------------------------------------------------
    def _child_ready(self, msg: ChildReady, sender: ActorAddress) -> None:
        st = self.state
        aw = st.awaiting
        if aw is None or aw.kind != "start" or aw.key != msg.key:
            log.warning("supervisor %s: unexpected ready from %s", self.path, msg.key)
            return
        st.awaiting = None
        st.addresses[msg.key] = _RunningChild(aw.address, msg.pid)
        st.core.set_running(msg.key, str(aw.address))
        if aw.step.restart:
            record_restart(self.path, st.core.child(msg.key).spec.id)
        log.info("supervisor %s: started %s (pid %d)", self.path, msg.key, msg.pid)
        self._pump()

    def _child_exited(self, address: ActorAddress) -> None:
        st = self.state
        key = next((k for k, r in st.addresses.items() if r.address == address), None)
        if key is None:
            return
        running = st.addresses.pop(key)
        reason = read_exit_reason(self.run_dir, running.pid)
        if running.pid:
            _mark_metrics_dead(running.pid)
        aw = st.awaiting
        if aw is not None and aw.address == address:
            st.awaiting = None
            if aw.kind == "terminate":
                if aw.step.data == "terminate_child":
                    if st.core.template is not None or st.core.child(key).spec.restart == "temporary":
                        st.core.remove(key)
                    else:
                        st.core.stopped(key)
                else:
                    st.core.sibling_stopped(key)
            else:  # died while starting
                self._start_failed(aw.step, reason)
            self._pump()
            return
        if st.stopping:
            st.core.sibling_stopped(key)
            self._pump()
            return
        log.error("supervisor %s: child %s (pid %s) exited: %s", self.path, key, running.pid,
                  reason)
        decision = st.core.child_exited(key, reason, time.monotonic())
        self._schedule(decision)
        self._pump()

    def _start_failed(self, step: _Step, reason: str) -> None:
        st = self.state
        log.error("supervisor %s: child %s failed to start: %s", self.path, step.key, reason)
        if not st.initialised:
            # As OTP: a supervisor whose children cannot start fails to start itself.
            self.stop_process_after_failure(f"child {step.key} failed to start: {reason}")
            return
        if isinstance(step.data, tuple) and step.data[0] == "reply":
            st.core.remove(step.key)
            if st.steps and st.steps[0].kind == "reply":
                st.steps.popleft()  # the success reply queued behind this start
            sender = step.data[1]
            self.send(sender, SupervisorOpResult(False, f"start failed: {reason}"))
            return
        escalate = st.core.start_failed(step.key, time.monotonic())
        if escalate is not None:
            self._schedule(escalate)
        else:
            st.steps.appendleft(_Step("start", step.key, restart=True))

    def stop_process_after_failure(self, reason: str) -> None:
        st = self.state
        st.stopping = True
        st.steps.clear()
        for key in st.core.shutdown_order():
            st.steps.append(_Step("terminate", key))
        st.steps.append(_Step("exit", data=Escalate(reason)))

    def _schedule(self, decision: Plan | Escalate | None) -> None:
        st = self.state
        if decision is None:
            return
        if isinstance(decision, Escalate):
            log.error("supervisor %s: restart intensity reached, escalating", self.path)
            st.stopping = True
            st.steps.clear()
            for key in st.core.shutdown_order():
                st.steps.append(_Step("terminate", key))
            st.steps.append(_Step("exit", data=decision))
            return
        for key in decision.terminate:
            st.steps.append(_Step("terminate", key))
        for key in decision.start:
            st.steps.append(_Step("start", key, restart=True))

    def _wakeup(self, payload: Any) -> None:
        kind, key, address = payload
        aw = self.state.awaiting
        if aw is None or aw.address != address:
            return
        running = self.state.addresses.get(key)
        pid = running.pid if running else None
        if kind == "kill" and pid:
            log.warning("supervisor %s: %s did not stop in time, killing pid %d", self.path, key,
                        pid)
            _kill(pid, signal.SIGKILL)
        elif kind == "init_timeout":
            log.error("supervisor %s: %s did not finish init in time", self.path, key)
            self.send(address, ActorExitRequest())

    # --- the API ---------------------------------------------------------------------------
    def _op(self, msg: SupervisorOp, sender: ActorAddress) -> None:
        st = self.state
        core = st.core
        op, args = msg.op, msg.args
        try:
            if op == "which_children":
                self.send(sender, SupervisorOpResult(True, self._children_info(True)))
            elif op == "count_children":
                self.send(sender, SupervisorOpResult(True, core.counts()))
            elif op == "start_child":
                if core.template is not None:
                    state = core.add_dynamic(tuple(args[0]))
                else:
                    state = core.add_child(args[0])
                st.steps.append(_Step("start", state.key, data=("reply", sender)))
                st.steps.append(_Step("reply", data=(sender, lambda k=state.key: k)))
            elif op == "terminate_child":
                key = args[0]
                if not core.has_child(key):
                    raise KeyError(f"no child {key!r}")
                if core.child(key).running:
                    st.steps.append(_Step("terminate", key, data="terminate_child"))
                st.steps.append(_Step("reply", data=(sender, lambda: None)))
            elif op == "restart_child":
                key = args[0]
                if core.child(key).running:
                    raise ValueError(f"child {key!r} is running")
                st.steps.append(_Step("start", key, data=("reply", sender)))
                st.steps.append(_Step("reply", data=(sender, lambda k=key: k)))
            elif op == "delete_child":
                key = args[0]
                if core.child(key).running:
                    raise ValueError(f"child {key!r} is running")
                core.remove(key)
                self.send(sender, SupervisorOpResult(True, None))
            else:
                raise ValueError(f"unknown supervisor operation {op!r}")
        except (KeyError, ValueError, TypeError) as err:
            self.send(sender, SupervisorOpResult(False, str(err)))
            return
        self._pump()

    def _children_info(self, with_address: bool = False) -> list[dict[str, Any]]:
        out = []
        for c in self.state.core.children:
            running = self.state.addresses.get(c.key)
            entry = {
                "id": c.key,
                "kind": "supervisor" if c.spec.type == "supervisor" else "process",
                "pid": running.pid if running and c.running else None,
                "state": "running" if c.running else ("starting" if running else "stopped"),
                "restarts": c.restarts,
                "restart": c.spec.restart,
                "last_exit": describe_reason(c.last_exit) or None,
            }
            if with_address:
                # Thespian addresses travel in replies to SupervisorOp, never in JSON.
                entry["address"] = running.address if running and c.running else None
            out.append(entry)
        return out

    def _write_tree(self, state: str = "running") -> None:
        if not self.run_dir:
            return
        from mirliton.status import write_tree_node

        write_tree_node(self.run_dir, self.path, {
            "id": self.path.rsplit(".", 1)[-1],
            "path": self.path,
            "kind": "supervisor",
            "pid": os.getpid(),
            "strategy": self.state.core.flags.strategy,
            "state": "stopping" if self.state.stopping else state,
            "children": self._children_info(),
        })


def _mark_metrics_dead(pid: int) -> None:
    # Live gauges of a dead process must not be summed any more (prometheus multiprocess).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
