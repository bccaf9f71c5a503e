"""Run a real node (``mirliton start --detach``) in a temporary data dir for a test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def terminate(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM to a helper process, SIGKILL when it has not exited within ``timeout`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_using(data_dir: Path) -> list[int]:
    """Pids whose command line names this data dir (every process of the node does)."""
    pids = []
    marker = str(data_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


class Node:
    def __init__(self, data_dir: Path, roles: list[str], env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.ops_port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "MIRLITON_NODE__ROLES": json.dumps(roles),
            "MIRLITON_OPS__LISTEN": f"127.0.0.1:{self.ops_port}",
            "MIRLITON_NODE__NAME": f"test-{data_dir.name}",
            "PYTHONPATH": str(REPO),
        })
        self.env.update(env or {})

    def cli(self, *args: str, check: bool = True, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "mirliton", *args, "--data-dir", str(self.data_dir)],
            env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"mirliton {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}\n{self.log_tail()}")
        return proc

    def start(self) -> Node:
        self.cli("start", "--detach")
        return self

    def stop(self) -> None:
        self.cli("stop", check=False)

    def status(self) -> dict[str, Any]:
        proc = self.cli("status", "--json", check=False)
        data: dict[str, Any] = json.loads(proc.stdout)
        data["_exit_code"] = proc.returncode
        return data

    def tree(self) -> dict[str, Any]:
        """The supervision tree straight from the files (no subprocess: precise timing)."""
        from mirliton.status import assemble_tree

        return assemble_tree(self.data_dir / "run") or {}

    def child(self, *path: str) -> dict[str, Any]:
        node: dict[str, Any] = self.tree()
        for name in path:
            node = next(c for c in node.get("children", []) if c["id"] == name)
        return node

    def main_pid(self) -> int:
        return int(json.loads((self.data_dir / "run" / "node.json").read_text())["pid"])

    def log_text(self) -> str:
        path = self.data_dir / "log" / "mirliton.log"
        return path.read_text() if path.exists() else ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def actor_system(self) -> Any:
        from supervisors.actorsystem import join_actor_system

        info = json.loads((self.data_dir / "run" / "node.json").read_text())
        return join_actor_system(info["admin_port"])

    def kill_everything(self) -> None:
        for pid in processes_using(self.data_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def running_node(tmp_path: Path, roles: list[str], **env: str) -> Iterator[Node]:
    node = Node(tmp_path / "node", roles, env)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        node.kill_everything()
