"""OTP strategies and restart types with process actors: groups of worker processes under a
process supervisor, inside a real node, killed with SIGKILL or crashed by an exception."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from supervisors import SupervisorError
from supervisors.api import (
    ProcessSupervisorRef,
    count_children,
    delete_child,
    restart_child,
    start_child,
    terminate_child,
    which_children,
)
from tests.foundation.nodeutil import Node, pid_alive, running_node, wait_until

G = "tests.foundation.roles:"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    roles = [G + n for n in ("OneForOneGroup", "OneForAllGroup", "RestForOneGroup",
                             "EscalatingGroup", "DynamicGroup")]
    yield from running_node(tmp_path_factory.mktemp("sup"), roles)


def _pids(node: Node, group: str) -> dict[str, int | None]:
    return {c["id"]: c["pid"] for c in node.child(group).get("children", [])}


def _all_running(node: Node, group: str) -> bool:
    g = node.child(group)
    return g["state"] == "running" and all(
        c["state"] == "running" for c in g.get("children", []))


def _group_ref(node: Node, group: str) -> ProcessSupervisorRef:
    asys = node.actor_system()
    root = asys.createActor("supervisors.process.ProcessSupervisor", globalName="mirliton-root")
    entry = next(c for c in which_children(ProcessSupervisorRef(asys, root, 10))
                 if c["id"] == group)
    return ProcessSupervisorRef(asys, entry["address"], 20)


def _address(ref: ProcessSupervisorRef, child: str) -> Any:
    return next(c["address"] for c in which_children(ref) if c["id"] == child)


def test_groups_are_supervisors_in_the_tree(node: Node) -> None:
    tree = node.tree()
    kinds = {c["id"]: (c["kind"], c.get("strategy")) for c in tree["children"]}
    assert kinds["oneforallgroup"] == ("supervisor", "one_for_all")
    assert kinds["restforonegroup"] == ("supervisor", "rest_for_one")
    assert [c["id"] for c in node.child("oneforonegroup")["children"]] == ["a", "b", "c"]


def test_one_for_one_restarts_only_the_dead_child(node: Node) -> None:
    before = _pids(node, "oneforonegroup")
    os.kill(before["a"], signal.SIGKILL)
    wait_until(lambda: _pids(node, "oneforonegroup")["a"] not in (None, before["a"])
               and _all_running(node, "oneforonegroup"), what="a restarted")
    after = _pids(node, "oneforonegroup")
    assert after["b"] == before["b"] and after["c"] == before["c"]
    assert node.child("oneforonegroup", "a")["restarts"] == 1


def test_transient_restarted_after_crash_not_after_normal_exit(node: Node) -> None:
    ref = _group_ref(node, "oneforonegroup")
    b_pid = _pids(node, "oneforonegroup")["b"]
    ref.system.tell(_address(ref, "b"), "crash")  # an exception: abnormal
    wait_until(lambda: _pids(node, "oneforonegroup")["b"] not in (None, b_pid)
               and node.child("oneforonegroup", "b")["state"] == "running", what="b restarted")
    assert node.child("oneforonegroup", "b")["last_exit"].startswith("RuntimeError")
    b_pid = _pids(node, "oneforonegroup")["b"]
    ref.system.tell(_address(ref, "b"), "exit")  # a normal exit
    wait_until(lambda: node.child("oneforonegroup", "b")["state"] == "stopped", what="b stopped")
    assert not pid_alive(b_pid)
    assert node.child("oneforonegroup", "b")["last_exit"] == "normal"
    # restart_child brings a stopped child back; delete_child refuses a running one.
    restart_child(ref, "b")
    assert node.child("oneforonegroup", "b")["state"] == "running"
    with pytest.raises(SupervisorError):
        delete_child(ref, "b")


def test_temporary_child_is_never_restarted(node: Node) -> None:
    c_pid = _pids(node, "oneforonegroup")["c"]
    os.kill(c_pid, signal.SIGKILL)
    wait_until(lambda: "c" not in _pids(node, "oneforonegroup"), what="c removed")


def test_one_for_all_restarts_every_child(node: Node) -> None:
    before = _pids(node, "oneforallgroup")
    os.kill(before["b"], signal.SIGKILL)

    def all_new() -> bool:
        now = _pids(node, "oneforallgroup")
        return (_all_running(node, "oneforallgroup") and now.get("a") not in (None, before["a"])
                and now.get("b") not in (None, before["b"]))

    wait_until(all_new, what="a and b restarted")
    # c is temporary: stopped with its siblings and not restarted.
    assert "c" not in _pids(node, "oneforallgroup")
    assert not pid_alive(before["c"]) and not pid_alive(before["a"])


def test_rest_for_one_restarts_the_child_and_those_after_it(node: Node) -> None:
    before = _pids(node, "restforonegroup")
    os.kill(before["b"], signal.SIGKILL)

    def restarted() -> bool:
        now = _pids(node, "restforonegroup")
        return (_all_running(node, "restforonegroup") and now["b"] not in (None, before["b"])
                and now["c"] not in (None, before["c"]))

    wait_until(restarted, what="b and c restarted")
    assert _pids(node, "restforonegroup")["a"] == before["a"]


def test_intensity_exceeded_escalates_to_the_parent(node: Node) -> None:
    group_pid = node.child("escalatinggroup")["pid"]
    first = _pids(node, "escalatinggroup")
    os.kill(first["a"], signal.SIGKILL)
    wait_until(lambda: _pids(node, "escalatinggroup").get("a") not in (None, first["a"])
               and _all_running(node, "escalatinggroup"), what="first restart")
    second = _pids(node, "escalatinggroup")
    os.kill(second["a"], signal.SIGKILL)  # a second restart within the period: intensity 1
    wait_until(lambda: node.child("escalatinggroup")["pid"] != group_pid
               and _all_running(node, "escalatinggroup"), timeout=15,
               what="the group restarted by the root")
    assert not pid_alive(group_pid)
    assert node.child("escalatinggroup")["restarts"] == 1
    assert node.child("escalatinggroup")["last_exit"] == "shutdown:reached_max_restart_intensity"
    third = _pids(node, "escalatinggroup")
    assert third["b"] != second["b"] and third["c"] != second["c"]
    assert not pid_alive(second["b"])
    assert "supervisor root.escalatinggroup: restart intensity reached" in node.log_text()


def test_simple_one_for_one_dynamic_children(node: Node) -> None:
    ref = _group_ref(node, "dynamicgroup")
    assert count_children(ref)["active"] == 0
    k1 = start_child(ref, ())
    k2 = start_child(ref, ())
    assert k1 != k2
    assert count_children(ref) == {"specs": 1, "active": 2, "supervisors": 0, "workers": 2}
    pids = _pids(node, "dynamicgroup")
    # transient: a kill (abnormal) restarts it under the same key
    os.kill(pids[k1], signal.SIGKILL)
    wait_until(lambda: _pids(node, "dynamicgroup").get(k1) not in (None, pids[k1])
               and _all_running(node, "dynamicgroup"), what="dynamic child restarted")
    # a normal exit removes it
    ref.system.tell(_address(ref, k2), "exit")
    wait_until(lambda: k2 not in _pids(node, "dynamicgroup"), what="k2 gone")
    terminate_child(ref, k1)
    assert count_children(ref)["active"] == 0
    assert _pids(node, "dynamicgroup") == {}


def test_api_errors(node: Node) -> None:
    ref = _group_ref(node, "restforonegroup")
    with pytest.raises(SupervisorError):
        terminate_child(ref, "nope")
    with pytest.raises(SupervisorError):
        restart_child(ref, "a")  # running
    terminate_child(ref, "a")
    assert node.child("restforonegroup", "a")["state"] == "stopped"
    delete_child(ref, "a")
    assert [c["id"] for c in which_children(ref)] == ["b", "c"]




def test_kill_9_of_a_group_supervisor_leaves_no_orphan(node: Node) -> None:
    group = node.child("oneforallgroup")
    children = [c["pid"] for c in group["children"]]
    os.kill(group["pid"], signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in children), timeout=2,
               what="the group's children to die with it")
    wait_until(lambda: node.child("oneforallgroup")["pid"] != group["pid"]
               and _all_running(node, "oneforallgroup"), timeout=15, what="group restarted")
