"""What only the ``local`` transport has to get right: processes of one node that die
(SIGKILL), restart, or fork, with no broker to notice for them."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.subprocess
import pytest

from bus import Binding, BusClosed, connect
from bus.api import call
from bus.local import LocalBus
from tests.bus.conftest import Peer


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.01)


def _event(name: str, call_id: str) -> dict[str, Any]:
    return call.call_event[name].build(call_id=call_id)


@pytest.fixture
def local_bus(data_dir: Path) -> Any:
    bus = connect("local", node="test", data_dir=data_dir)
    assert isinstance(bus, LocalBus)
    yield bus
    bus.close()


def test_a_sigkilled_consumer_is_forgotten_and_its_restart_takes_over(
    local_bus: LocalBus, data_dir: Path, unique: str
) -> None:
    spec = {
        "role": "subscribe",
        "bindings": [["callevt", f"call.*.{unique}"]],
        "queue": f"q-{unique}",
    }
    first = Peer("local", data_dir, spec)
    first_pid = first.process.pid
    local_bus.publish(_event("CHANNEL_CREATE", unique))
    assert first.read()["msg"]["Event-Name"] == "CHANNEL_CREATE"
    assert any(owner.startswith(f"{first_pid}.") for owner in local_bus._registry.owners())
    os.kill(first_pid, signal.SIGKILL)
    first.process.wait()
    # The next publish finds the socket gone and drops the dead process's bindings.
    local_bus.publish(_event("CHANNEL_ANSWER", unique))
    _wait_for(lambda: not any(o.startswith(f"{first_pid}.") for o in local_bus._registry.owners()))
    # Its restart (a new process, same named queue) gets the traffic.
    second = Peer("local", data_dir, spec)
    try:
        local_bus.publish(_event("CHANNEL_DESTROY", unique))
        assert second.read()["msg"]["Event-Name"] == "CHANNEL_DESTROY"
    finally:
        second.stop()


def test_a_starting_process_sweeps_bindings_of_dead_ones(data_dir: Path, unique: str) -> None:
    spec = {"role": "subscribe", "bindings": [["callevt", f"call.*.{unique}"]]}
    peer = Peer("local", data_dir, spec)
    os.kill(peer.process.pid, signal.SIGKILL)
    peer.process.wait()
    bus = connect("local", node="late", data_dir=data_dir)
    try:
        assert isinstance(bus, LocalBus)
        assert not any(o.startswith(f"{peer.process.pid}.") for o in bus._registry.owners())
    finally:
        bus.close()


def _forked_child(data_dir: str, unique: str, parent_bus: LocalBus, result: Any) -> None:
    gevent.reinit()  # the test process is not monkey-patched; a node's fork does this itself
    try:
        parent_bus.publish(_event("CHANNEL_CREATE", unique))
        result.put("the parent's bus worked in the child")
        return
    except BusClosed:
        pass
    own = connect("local", node="child", data_dir=data_dir)
    own.publish(_event("CHANNEL_ANSWER", unique), confirm=True)
    own.close()
    result.put("ok")


def test_after_fork_the_child_connects_its_own_bus(
    local_bus: LocalBus, data_dir: Path, unique: str
) -> None:
    got: list[str] = []
    local_bus.consume(
        [Binding("callevt", f"call.*.{unique}")], lambda m, d: got.append(m["Event-Name"])
    )
    context = multiprocessing.get_context("fork")
    result = context.SimpleQueue()
    child = context.Process(target=_forked_child, args=(str(data_dir), unique, local_bus, result))
    child.start()
    child.join(20)
    assert child.exitcode == 0
    assert result.get() == "ok"
    _wait_for(lambda: got == ["CHANNEL_ANSWER"])
    # The parent's own address still answers after the child (which held a copy) exited.
    local_bus.publish(_event("CHANNEL_DESTROY", unique))
    _wait_for(lambda: got == ["CHANNEL_ANSWER", "CHANNEL_DESTROY"])


def test_a_foreign_user_cannot_connect(local_bus: LocalBus) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another user")
    probe = (
        "import socket, sys\n"
        "sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "sock.connect('\\0' + sys.argv[1])\n"
        "sock.settimeout(5)\n"
        "sys.exit(0 if sock.recv(1) == b'' else 2)\n"  # refused: closed at once, EOF
    )
    address = local_bus._address(local_bus._owner).lstrip("\0")
    # The system interpreter: the probe needs only the standard library, and user "nobody"
    # may not be allowed into the project's virtualenv.
    python = next(
        (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None
    )
    if python is None:
        pytest.skip("no system python3 for the unprivileged probe")
    done = gevent.subprocess.run(
        [python, "-c", probe, address], user=65534, cwd="/", capture_output=True, timeout=20
    )
    assert done.returncode == 0, done.stderr


def test_routing_follows_binding_churn_incrementally_and_after_pruning(
    data_dir: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bus import local

    monkeypatch.setattr(local._Registry, "JOURNAL_KEEP", 10)
    monkeypatch.setattr(local._Registry, "PRUNE_EVERY", 5)
    publisher = connect("local", node="pub", data_dir=data_dir)
    calls = connect("local", node="calls", data_dir=data_dir)
    assert isinstance(publisher, LocalBus)
    full_reloads: list[int] = []
    snapshot = publisher._registry.snapshot

    def counting_snapshot() -> Any:
        full_reloads.append(1)
        return snapshot()

    monkeypatch.setattr(publisher._registry, "snapshot", counting_snapshot)
    try:
        got: list[str] = []
        consumer = calls.consume([], lambda m, d: got.append(m["Call-ID"]))
        consumer.add_binding(Binding("callevt", f"call.*.{unique}-0"))
        publisher.publish(_event("CHANNEL_CREATE", f"{unique}-0"))
        _wait_for(lambda: got == [f"{unique}-0"])
        # A few changes: applied from the journal.
        reloads_before = len(full_reloads)
        consumer.add_binding(Binding("callevt", f"call.*.{unique}-1"))
        publisher.publish(_event("CHANNEL_CREATE", f"{unique}-1"))
        _wait_for(lambda: got[-1:] == [f"{unique}-1"])
        assert len(full_reloads) == reloads_before
        # Many changes while the publisher looks away: its journal position was pruned.
        for n in range(2, 40):
            consumer.add_binding(Binding("callevt", f"call.*.{unique}-{n}"))
        for n in range(0, 30):
            consumer.remove_binding(Binding("callevt", f"call.*.{unique}-{n}"))
        got.clear()
        for n in range(40):
            publisher.publish(_event("CHANNEL_ANSWER", f"{unique}-{n}"))
        _wait_for(lambda: len(got) == 10)
        gevent.sleep(0.1)
        assert got == [f"{unique}-{n}" for n in range(30, 40)]
        assert len(full_reloads) == reloads_before + 1
    finally:
        calls.close()
        publisher.close()


def test_a_stopped_process_does_not_stall_publishers(
    local_bus: LocalBus, data_dir: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bus import local, metrics

    monkeypatch.setattr(local, "_MAX_PENDING_FRAMES", 200)
    monkeypatch.setattr(local, "_BACKPRESSURE_WAIT", 0.3)
    peer = Peer(
        "local", data_dir, {"role": "subscribe", "bindings": [["callevt", f"call.*.{unique}"]]}
    )
    dropped = metrics.DROPPED.labels("peer_backlog")
    before = dropped._value.get()
    try:
        os.kill(peer.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        # Far more than the socket buffer and the backlog hold.
        for _ in range(20_000):
            local_bus.publish(_event("CHANNEL_CREATE", unique))
        assert time.monotonic() - started < 10
        assert dropped._value.get() > before
        os.kill(peer.process.pid, signal.SIGCONT)
        # It catches up with what was queued, then gets new messages again.
        local_bus.publish(_event("CHANNEL_DESTROY", unique), confirm=True, timeout=10)
        lines = peer.read_until(lambda line: line["msg"]["Event-Name"] == "CHANNEL_DESTROY", 30)
        assert len(lines) < 20_001
    finally:
        os.kill(peer.process.pid, signal.SIGCONT)
        peer.stop()


@pytest.mark.parametrize(
    "garbage",
    [
        bytes.fromhex("00000008") + b"\xff" * 8,  # a header that is not UTF-8
        b"\\x00\\x00",  # a length prefix of 1.5 GB
    ],
)
def test_a_broken_connection_to_a_live_process_is_not_its_death(
    local_bus: LocalBus, data_dir: Path, unique: str, garbage: bytes
) -> None:
    peer = Peer(
        "local", data_dir, {"role": "subscribe", "bindings": [["callevt", f"call.*.{unique}"]]}
    )
    try:
        local_bus.publish(_event("CHANNEL_CREATE", unique), confirm=True)
        assert peer.read()["msg"]["Event-Name"] == "CHANNEL_CREATE"
        # A malformed frame makes the receiver drop our connection...
        owner = next(
            o for o in local_bus._registry.owners() if o.startswith(f"{peer.process.pid}.")
        )
        connection = local_bus._peers[owner]
        assert connection._sock is not None
        connection._sock.sendall(garbage)
        gevent.sleep(0.3)
        # ...which the next write finds broken; yet the receiver's bindings stay, and the
        # (confirmed, so retried) message reaches it over a new connection.
        local_bus.publish(_event("CHANNEL_ANSWER", unique), confirm=True)
        assert peer.read()["msg"]["Event-Name"] == "CHANNEL_ANSWER"
        assert local_bus._peers[owner] is not connection
        assert owner in local_bus._registry.owners()
    finally:
        peer.stop()
