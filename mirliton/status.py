"""The node's supervision tree as files under ``data_dir/run``.

Each process supervisor (and each role process, for its in-process tree) writes its own part
as JSON whenever it changes; ``mirliton status`` and ``/status`` put the parts together. Files
rather than queries so that status answers even while a supervisor is busy restarting, and
stays cheap: nothing asks a process anything.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["assemble_tree", "node_status", "pid_alive", "read_node_file", "write_json_atomic",
           "write_tree_node"]


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def write_tree_node(run_dir: str | Path, path: str, data: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / "tree" / f"{path}.json", data)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assemble_tree(run_dir: Path, path: str = "root") -> dict[str, Any] | None:
    """The subtree at ``path``, with live pids checked: a dead pid shows as state 'down'."""
    node = _read(run_dir / "tree" / f"{path}.json")
    if node is None:
        return None
    if not pid_alive(node.get("pid")):
        node["state"] = "down"
    for child in node.get("children", []):
        child_path = f"{path}.{child['id']}"
        if child.get("pid") and not pid_alive(child["pid"]):
            child["state"] = "down"
        if child.get("kind") == "supervisor":
            sub = assemble_tree(run_dir, child_path)
            if sub is not None and sub.get("pid") == child.get("pid"):
                child["strategy"] = sub.get("strategy")
                child["children"] = sub.get("children", [])
        else:
            inner = _read(run_dir / "tree" / f"{child_path}.json")
            if inner is not None and inner.get("pid") == child.get("pid"):
                child["actors"] = inner.get("tree")
    return node


def read_node_file(run_dir: Path) -> dict[str, Any] | None:
    return _read(run_dir / "node.json")


def _all_running(tree: dict[str, Any]) -> bool:
    if tree.get("state") != "running":
        return False
    return all(
        c.get("state") == "running" and (c.get("kind") != "supervisor" or _all_running(c))
        for c in tree.get("children", [])
    )


def node_status(run_dir: Path) -> tuple[int, dict[str, Any]]:
    """(exit code, status): 0 every child running, 1 degraded, 2 not running."""
    node = read_node_file(run_dir)
    if node is None or not pid_alive(node.get("pid")):
        return 2, {"state": "not running", "run_dir": str(run_dir)}
    tree = assemble_tree(run_dir)
    status: dict[str, Any] = dict(node)
    status["tree"] = tree
    nodes_file = _read(run_dir / "nodes.json")
    if nodes_file is not None:
        now = time.time()
        status["nodes"] = [n for n in nodes_file.get("nodes", [])
                           if n.get("expires_at", 0) >= now]
    healthy = tree is not None and _all_running(tree)
    status["state"] = "running" if healthy else "degraded"
    return (0 if healthy else 1), status
