"""Node boot: the node's root process.

``mirliton start`` runs this in the foreground (or detached). It prepares the data directory,
makes every process it forks die with its parent (no orphans, even after ``kill -9``), starts
the Thespian actor system and the root ``ProcessSupervisor`` with one process actor per role,
and itself watches the root supervisor, restarting it if it dies. SIGTERM / Ctrl-C stop the
tree gracefully, in reverse start order.

Import this module only after ``mirliton.cli.prepare_environment`` ran: prometheus_client chooses its
multiprocess storage when imported.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from thespian.actors import ActorSystem

import mirliton
from mirliton.config import Config
from mirliton.logs import configure_logging, set_process_context
from mirliton.roles import resolve_roles, role_child_spec
from mirliton.status import pid_alive, read_node_file, write_json_atomic
from supervisors.actorsystem import keep_admin_attached, thespian_on_loopback
from supervisors.core import SupervisorFlags
from supervisors.process import (
    ChildReady,
    InitChild,
    StopChild,
    find_exit_by_path,
    read_exit_reason,
)

__all__ = ["NodeAlreadyRunning", "run_node", "stop_node"]

assert "PROMETHEUS_MULTIPROC_DIR" in os.environ, "call mirliton.cli.prepare_environment first"

log = logging.getLogger("mirliton.node")

PR_SET_PDEATHSIG = 1
ROOT_INTENSITY = (5, 30.0)
START_TIMEOUT = 120.0
ROOT_GLOBAL_NAME = "mirliton-root"  # root supervisor restarts allowed per period before giving up


class NodeAlreadyRunning(RuntimeError):
    pass


_fork_parent = 0


def _before_fork() -> None:
    global _fork_parent
    _fork_parent = os.getpid()


def _after_fork_in_child() -> None:
    # Die with the parent: Thespian leaves children running when their parent is killed.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != _fork_parent:  # the parent died before prctl took effect
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


class Node:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.run_dir = cfg.run_dir
        self.stop_requested = gevent.event.Event()
        self.root_pid: int | None = None
        self.root_restarts = 0
        self._root_restart_times: list[float] = []
        self.info: dict[str, Any] = {}

    # --- start ----------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        existing = read_node_file(self.run_dir)
        if existing and pid_alive(existing.get("pid")) and existing.get("pid") != os.getpid():
            raise NodeAlreadyRunning(
                f"a node is already running from {cfg.data_dir} (pid {existing['pid']})")
        for sub in ("tree", "exit"):
            _wipe(self.run_dir / sub)
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        keep_admin_attached()
        thespian_on_loopback()
        self.roles = resolve_roles(cfg)
        self.admin_port = _free_port()
        self.info = {
            "node": cfg.node.name,
            "pid": os.getpid(),
            "version": mirliton.__version__,
            "roles": [r for r, _ in self.roles],
            "data_dir": str(cfg.data_dir),
            "started": time.time(),
            "ops_listen": cfg.ops.listen,
            "admin_port": self.admin_port,
            "root_restarts": 0,
            "ready": False,
        }
        write_json_atomic(self.run_dir / "node.json", self.info)
        (cfg.data_dir / "mirliton.pid").write_text(f"{os.getpid()}\n")
        self.asys = ActorSystem(
            "multiprocTCPBase",
            {"Process Startup Method": "fork", "Admin Port": self.admin_port},
        )
        self._start_root()
        self.info["ready"] = True
        write_json_atomic(self.run_dir / "node.json", self.info)
        log.info("node %s ready: roles %s", cfg.node.name, ", ".join(self.info["roles"]))

    def _start_root(self) -> None:
        cfg = self.cfg
        flags = SupervisorFlags("one_for_one", cfg.supervision.intensity, cfg.supervision.period)
        specs = [role_child_spec(rid, path, cfg) for rid, path in self.roles]
        # A global name lets operators' tools reach the root through the node's admin port.
        self.root = self.asys.createActor("supervisors.process.ProcessSupervisor",
                                          globalName=ROOT_GLOBAL_NAME)
        self.asys.tell(self.root, InitChild("root", (flags, specs), "root", str(self.run_dir)))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            reply = self.asys.listen(0.2)
            if isinstance(reply, ChildReady):
                self.root_pid = reply.pid
                return
            failure = find_exit_by_path(str(self.run_dir), "root")
            if failure is not None:
                raise RuntimeError(f"the root supervisor did not start: {failure}")
        raise RuntimeError(f"the root supervisor did not start within {START_TIMEOUT}s")

    # --- run ------------------------------------------------------------------------------
    def watch(self) -> int:
        """Until a stop is requested: restart the root supervisor if it dies. Returns exit code."""
        while not self.stop_requested.wait(0.1):
            if self.root_pid and not pid_alive(self.root_pid):
                reason = read_exit_reason(str(self.run_dir), self.root_pid)
                log.error("root supervisor (pid %d) exited: %s", self.root_pid, reason)
                now = time.monotonic()
                self._root_restart_times = [t for t in self._root_restart_times
                                            if t > now - ROOT_INTENSITY[1]] + [now]
                if len(self._root_restart_times) > ROOT_INTENSITY[0]:
                    log.error("root supervisor keeps failing; the node stops")
                    self.shutdown()
                    return 1
                self.root_restarts += 1
                self.info["root_restarts"] = self.root_restarts
                try:
                    self._start_root()
                except Exception:  # noqa: BLE001
                    log.error("root supervisor restart failed", exc_info=True)
                    continue
                write_json_atomic(self.run_dir / "node.json", self.info)
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        log.info("node %s stopping", self.cfg.node.name)
        if self.root_pid and pid_alive(self.root_pid):
            self.asys.tell(self.root, StopChild("shutdown"))
            deadline = time.monotonic() + 60
            while pid_alive(self.root_pid) and time.monotonic() < deadline:
                gevent.sleep(0.05)
        try:
            self.asys.shutdown()
        except Exception:  # noqa: BLE001
            log.warning("actor system shutdown failed", exc_info=True)
        for path in (self.run_dir / "node.json", self.cfg.data_dir / "mirliton.pid"):
            path.unlink(missing_ok=True)
        log.info("node %s stopped", self.cfg.node.name)


def run_node(cfg: Config) -> int:
    """Run a node in this process until SIGTERM / SIGINT. Returns the exit code."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    existing = read_node_file(cfg.run_dir)
    if existing and pid_alive(existing.get("pid")) and existing.get("pid") != os.getpid():
        raise NodeAlreadyRunning(
            f"a node is already running from {cfg.data_dir} (pid {existing['pid']})")
    _wipe(metrics_dir)  # stale series of a previous run
    configure_logging(cfg.log.format, cfg.log.level, cfg.data_dir / "log" / "mirliton.log",
                      stderr=sys.stderr.isatty() or os.environ.get("MIRLITON_LOG_STDERR") == "1")
    set_process_context(node=cfg.node.name, role="node")
    node = Node(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, node.stop_requested.set)
    try:
        node.start()
    except Exception:
        log.error("node failed to start", exc_info=True)
        node.shutdown()
        raise
    return node.watch()


def stop_node(run_dir: Path, data_dir: Path, timeout: float = 60.0) -> bool:
    """SIGTERM the node started from data_dir and wait for it. False when none was running."""
    info = read_node_file(run_dir)
    pid = info.get("pid") if info else None
    if pid is None:
        pidfile = data_dir / "mirliton.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().strip() or 0)
    if not pid or not pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)  # its children die with it (PR_SET_PDEATHSIG)
    return True
