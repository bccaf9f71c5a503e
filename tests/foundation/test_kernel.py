"""The lightweight actor kernel (actors/kernel.py): mailbox order, selective receive,
call/reply, links, monitors, the registry, typed dispatch, crash logging and spawn failures.

No test relies on how fast something happens: waits are bounded polls on a condition
(``wait_until``), and timeouts are only used where the awaited event can never happen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import pytest

from actors.kernel import (
    KILLED,
    NORMAL,
    SHUTDOWN,
    Actor,
    ActorDead,
    ActorRef,
    CallTimeout,
    Crash,
    Down,
    Exit,
    ReceiveTimeout,
    SpawnError,
    actor_count,
    on,
    register,
    spawn,
    unregister,
    whereis,
)

POLL_LIMIT_S = 10.0


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = POLL_LIMIT_S) -> None:
    """Poll ``condition`` (yielding to other greenlets) until true; fail after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        gevent.sleep(0.001)


@pytest.fixture
def start() -> Iterator[Callable[..., ActorRef]]:
    """spawn() that kills whatever the test left running."""
    started: list[ActorRef] = []

    def start_actor(actor: Actor, **kwargs: Any) -> ActorRef:
        ref = spawn(actor, **kwargs)
        started.append(ref)
        return ref

    yield start_actor
    for ref in started:
        ref.kill()


# --- test actors ---------------------------------------------------------------------------


class Recorder(Actor):
    """Records every cast; the call "seen" answers what it recorded so far."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.terminated_with: list[Any] = []

    def handle_cast(self, msg: Any) -> None:
        self.seen.append(msg)

    def handle_call(self, request: Any) -> Any:
        if request == "seen":
            return list(self.seen)
        raise ValueError(f"unknown request {request!r}")

    def terminate(self, reason: Any) -> None:
        self.terminated_with.append(reason)


def explode_on_purpose() -> None:
    raise RuntimeError("boom")


class Crasher(Recorder):
    """Cast "crash" raises RuntimeError in explode_on_purpose; cast "quit" exits normally."""

    def handle_cast(self, msg: Any) -> None:
        if msg == "crash":
            explode_on_purpose()
        elif msg == "quit":
            self.stop()
        else:
            super().handle_cast(msg)


class ExitTrapper(Recorder):
    """Traps exits and records every Exit / Down it gets."""

    trap_exits = True

    def __init__(self) -> None:
        super().__init__()
        self.signals: list[Exit | Down] = []

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, Exit | Down):
            self.signals.append(msg)
        else:
            super().handle_info(msg)


class Watcher(Recorder):
    """Does not trap exits; records the Down messages of what it monitors."""

    def __init__(self) -> None:
        super().__init__()
        self.downs: list[Down] = []

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, Down):
            self.downs.append(msg)
        else:
            super().handle_info(msg)


@dataclass(frozen=True)
class Wanted:
    n: int


class SelectiveReceiver(Recorder):
    """On cast "wait": notes "waiting", then receives the first message matching ``match``
    (or "timed out"), then goes on handling the rest of its mailbox normally."""

    def __init__(self, match: Any, timeout: float | None = None) -> None:
        super().__init__()
        self.match = match
        self.timeout = timeout

    def handle_cast(self, msg: Any) -> None:
        if msg != "wait":
            self.seen.append(msg)
            return
        self.seen.append("waiting")
        try:
            got = self.receive(self.match, self.timeout)
        except ReceiveTimeout:
            got = "timed out"
        self.seen.append(("received", got))


# --- mailbox order and selective receive ---------------------------------------------------


def test_messages_are_handled_in_send_order(start: Callable[..., ActorRef]) -> None:
    ref = start(Recorder())
    for n in range(200):
        ref.send(n)
    assert ref.call("seen") == list(range(200))


def test_selective_receive_takes_a_match_out_of_order_and_leaves_the_rest_in_order(
    start: Callable[..., ActorRef],
) -> None:
    ref = start(SelectiveReceiver(Wanted))
    for msg in ("wait", "a", "b", Wanted(1), "c", Wanted(2), "d"):
        ref.send(msg)
    assert ref.call("seen") == [
        "waiting", ("received", Wanted(1)), "a", "b", "c", Wanted(2), "d",
    ]


def test_selective_receive_keeps_waiting_past_messages_that_do_not_match(
    start: Callable[..., ActorRef],
) -> None:
    receiver = SelectiveReceiver(lambda m: isinstance(m, int) and m > 10)
    ref = start(receiver)
    ref.send("wait")
    wait_until(lambda: receiver.seen == ["waiting"], "the actor to enter receive")
    ref.send(1)
    ref.send("x")
    gevent.sleep(0)  # let it scan (and skip) the two non-matching messages
    assert receiver.seen == ["waiting"]
    ref.send(42)
    ref.send(2)
    assert ref.call("seen") == ["waiting", ("received", 42), 1, "x", 2]


def test_selective_receive_timeout_raises_and_leaves_the_queue_intact(
    start: Callable[..., ActorRef],
) -> None:
    ref = start(SelectiveReceiver(Wanted, timeout=0.05))
    for msg in ("wait", "a", "b"):
        ref.send(msg)
    assert ref.call("seen") == ["waiting", ("received", "timed out"), "a", "b"]


def test_selective_receive_by_a_tuple_of_types(start: Callable[..., ActorRef]) -> None:
    ref = start(SelectiveReceiver((Wanted, int)))
    for msg in ("wait", "a", 7, Wanted(1)):
        ref.send(msg)
    assert ref.call("seen") == ["waiting", ("received", 7), "a", Wanted(1)]


def test_uncaught_receive_timeout_is_a_crash(start: Callable[..., ActorRef]) -> None:
    class Impatient(Actor):
        def handle_cast(self, msg: Any) -> None:
            self.receive(Wanted, timeout=0.01)

    ref = start(Impatient())
    ref.send("go")
    reason = ref.join(POLL_LIMIT_S)
    assert isinstance(reason, Crash)
    assert reason.error.startswith("ReceiveTimeout")


# --- call / reply --------------------------------------------------------------------------


def test_call_returns_what_handle_call_returned(start: Callable[..., ActorRef]) -> None:
    ref = start(Recorder())
    ref.send("hello")
    assert ref.call("seen") == ["hello"]


def test_exception_in_handle_call_is_reraised_in_the_caller_and_crashes_the_actor(
    start: Callable[..., ActorRef],
) -> None:
    ref = start(Recorder())
    with pytest.raises(ValueError, match="unknown request 'nope'"):
        ref.call("nope")
    reason = ref.join(POLL_LIMIT_S)
    assert isinstance(reason, Crash)
    assert reason.error == "ValueError: unknown request 'nope'"


class Gated(Actor):
    """The call "slow" blocks until ``gate`` is set, then answers "slow answer"."""

    def __init__(self) -> None:
        self.gate = gevent.event.Event()
        self.answered: list[str] = []

    def handle_call(self, request: Any) -> Any:
        if request == "slow":
            self.gate.wait()
            self.answered.append("slow")
            return "slow answer"
        self.answered.append(request)
        return f"{request} answer"


def test_call_timeout_raises_and_the_late_reply_never_reaches_a_later_request(
    start: Callable[..., ActorRef],
) -> None:
    actor = Gated()
    ref = start(actor)
    with pytest.raises(CallTimeout):
        ref.call("slow", timeout=0.05)  # the gate is closed: no reply can come in time
    later = gevent.spawn(ref.call, "fast", timeout=POLL_LIMIT_S)
    gevent.sleep(0)  # "fast" is now queued behind the blocked "slow"
    actor.gate.set()  # "slow" replies now, to a request nobody waits for any more
    assert later.get(timeout=POLL_LIMIT_S) == "fast answer"
    assert actor.answered == ["slow", "fast"]
    assert ref.is_alive


def test_call_to_a_dead_actor_raises_actor_dead(start: Callable[..., ActorRef]) -> None:
    ref = start(Recorder())
    ref.stop()
    with pytest.raises(ActorDead) as raised:
        ref.call("seen")
    assert raised.value.reason == SHUTDOWN


def test_actor_exiting_while_handling_a_call_raises_actor_dead_in_the_caller(
    start: Callable[..., ActorRef],
) -> None:
    class Quitter(Actor):
        def handle_call(self, request: Any) -> Any:
            self.stop("bored")

    ref = start(Quitter())
    with pytest.raises(ActorDead) as raised:
        ref.call("anything")
    assert raised.value.reason == "bored"


def test_messages_sent_to_a_dead_actor_are_dropped(start: Callable[..., ActorRef]) -> None:
    actor = Recorder()
    ref = start(actor)
    ref.stop()
    ref.send("too late")
    assert actor.seen == []


# --- links ---------------------------------------------------------------------------------


def test_crash_kills_a_linked_non_trapping_actor_with_the_same_reason(
    start: Callable[..., ActorRef],
) -> None:
    crasher = start(Crasher())
    linked = start(Recorder(), link=crasher)
    crasher.send("crash")
    wait_until(lambda: not linked.is_alive, "the linked actor to die")
    assert isinstance(crasher.exit_reason, Crash)
    assert linked.exit_reason == crasher.exit_reason
    assert linked.exit_reason.error == "RuntimeError: boom"


def test_crash_reaches_a_trapping_linked_actor_as_exit_with_the_traceback(
    start: Callable[..., ActorRef],
) -> None:
    crasher = start(Crasher())
    trapper_actor = ExitTrapper()
    trapper = start(trapper_actor, link=crasher)
    crasher.send("crash")
    wait_until(lambda: len(trapper_actor.signals) == 1, "the Exit message")
    exit_msg = trapper_actor.signals[0]
    assert isinstance(exit_msg, Exit)
    assert exit_msg.ref == crasher
    assert isinstance(exit_msg.reason, Crash)
    assert exit_msg.reason.error == "RuntimeError: boom"
    assert "explode_on_purpose" in exit_msg.reason.traceback
    assert "Traceback (most recent call last)" in exit_msg.reason.traceback
    assert trapper.is_alive


def test_crash_propagates_along_a_chain_of_links(start: Callable[..., ActorRef]) -> None:
    crasher = start(Crasher())
    middle = start(Recorder(), link=crasher)
    end = start(Recorder(), link=middle)
    crasher.send("crash")
    wait_until(lambda: not end.is_alive, "the end of the chain to die")
    assert end.exit_reason == crasher.exit_reason


def test_trapping_actor_that_does_not_handle_a_crash_exit_exits_with_it(
    start: Callable[..., ActorRef],
) -> None:
    class TrapsButIgnores(Recorder):
        trap_exits = True

    crasher = start(Crasher())
    trapper = start(TrapsButIgnores(), link=crasher)
    crasher.send("crash")
    wait_until(lambda: not trapper.is_alive, "the trapping actor to exit")
    assert trapper.exit_reason == crasher.exit_reason


@pytest.mark.parametrize("how", ["normal", "shutdown"])
def test_normal_and_shutdown_exits_do_not_kill_linked_actors(
    start: Callable[..., ActorRef], how: str,
) -> None:
    exiting = start(Crasher())
    linked = start(Recorder(), link=exiting)
    trapper_actor = ExitTrapper()
    start(trapper_actor, link=exiting)
    if how == "normal":
        exiting.send("quit")
    else:
        exiting.stop()
    wait_until(lambda: len(trapper_actor.signals) == 1, "the Exit message")
    assert trapper_actor.signals == [Exit(exiting, how)]
    assert linked.is_alive
    assert linked.call("seen") == []


def test_exit_signal_to_a_trapping_actor_names_the_sender(
    start: Callable[..., ActorRef],
) -> None:
    trapper_actor = ExitTrapper()
    trapper = start(trapper_actor)

    class Signaller(Recorder):
        def handle_cast(self, msg: Any) -> None:
            trapper.exit("go away")

    signaller = start(Signaller())
    signaller.send("signal")
    wait_until(lambda: len(trapper_actor.signals) == 1, "the Exit message")
    # erlang:exit(Pid, Reason) reaches a trapping Pid as {'EXIT', From, Reason}.
    assert trapper_actor.signals == [Exit(signaller, "go away")]


def test_exit_signal_kills_a_non_trapping_actor_unless_normal(
    start: Callable[..., ActorRef],
) -> None:
    spared, killed = start(Recorder()), start(Recorder())
    spared.exit(NORMAL)
    killed.exit("go away")
    killed.join(POLL_LIMIT_S)
    assert killed.exit_reason == "go away"
    assert spared.call("seen") == []


def test_send_after_delivers_later_and_cancel_timer_prevents_it(
    start: Callable[..., ActorRef],
) -> None:
    class Scheduler(Recorder):
        def handle_cast(self, msg: Any) -> None:
            if msg == "schedule":
                self.send_after(0.01, "kept")
                self.cancel_timer(self.send_after(0.01, "cancelled"))
                self.send_after(0.02, "last")
            else:
                self.seen.append(msg)

    actor = Scheduler()
    ref = start(actor)
    ref.send("schedule")
    wait_until(lambda: "last" in actor.seen, "the last timer")
    assert actor.seen == ["kept", "last"]


def test_linking_to_a_dead_actor_gives_noproc(start: Callable[..., ActorRef]) -> None:
    dead = start(Recorder())
    dead.stop()

    class LinksOnCast(ExitTrapper):
        def handle_cast(self, msg: Any) -> None:
            self.link(msg)

    trapper_actor = LinksOnCast()
    trapper = start(trapper_actor)
    trapper.send(dead)
    wait_until(lambda: len(trapper_actor.signals) == 1, "the noproc Exit")
    assert trapper_actor.signals == [Exit(dead, "noproc")]


def test_unlinked_actors_do_not_die_together(start: Callable[..., ActorRef]) -> None:
    class UnlinksOnCast(Crasher):
        def handle_cast(self, msg: Any) -> None:
            if isinstance(msg, ActorRef):
                self.unlink(msg)
                self.seen.append("unlinked")
            else:
                super().handle_cast(msg)

    crasher = start(UnlinksOnCast())
    other = start(Recorder(), link=crasher)
    crasher.send(other)
    crasher.send("crash")
    crasher.join(POLL_LIMIT_S)
    assert isinstance(crasher.exit_reason, Crash)
    assert other.is_alive
    assert other.call("seen") == []


# --- monitors ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["normal", "shutdown", "killed", "crash"])
def test_monitor_gets_down_with_the_exit_reason(
    start: Callable[..., ActorRef], how: str,
) -> None:
    target = start(Crasher())
    watcher_actor = Watcher()
    watcher = start(watcher_actor)
    mref = target.monitor(watcher)
    if how == "normal":
        target.send("quit")
    elif how == "shutdown":
        target.stop()
    elif how == "killed":
        target.kill()
    else:
        target.send("crash")
    wait_until(lambda: len(watcher_actor.downs) == 1, "the Down message")
    down = watcher_actor.downs[0]
    assert down.monitor == mref
    assert down.ref == target
    expected: dict[str, Any] = {"normal": NORMAL, "shutdown": SHUTDOWN, "killed": KILLED}
    if how == "crash":
        assert isinstance(down.reason, Crash)
        assert "explode_on_purpose" in down.reason.traceback
    else:
        assert down.reason == expected[how]
    assert watcher.is_alive  # a monitor is not a link


def test_monitoring_a_dead_actor_gives_an_immediate_down_with_its_reason(
    start: Callable[..., ActorRef],
) -> None:
    target = start(Recorder())
    target.stop("gone away")
    watcher_actor = Watcher()
    watcher = start(watcher_actor)
    mref = target.monitor(watcher)
    wait_until(lambda: len(watcher_actor.downs) == 1, "the Down message")
    assert watcher_actor.downs == [Down(mref, target, "gone away")]


def test_demonitor_stops_the_down_message(start: Callable[..., ActorRef]) -> None:
    class Demonitors(Watcher):
        def handle_cast(self, msg: Any) -> None:
            kind, target = msg
            if kind == "watch":
                self.mref = self.monitor(target)
            else:
                self.demonitor(self.mref)
            self.seen.append(kind)

    watched_twice = start(Recorder())
    watched_once = start(Recorder())
    watcher_actor = Demonitors()
    watcher = start(watcher_actor)
    watcher.send(("watch", watched_once))
    watcher.send(("unwatch", watched_once))
    watcher.send(("watch", watched_twice))
    assert watcher.call("seen") == ["watch", "unwatch", "watch"]
    watched_once.stop()
    watched_twice.stop()
    wait_until(lambda: len(watcher_actor.downs) == 1, "the Down of the still-watched actor")
    watcher.call("seen")  # anything queued before this call has been handled
    assert [d.ref for d in watcher_actor.downs] == [watched_twice]


# --- registry ------------------------------------------------------------------------------


def test_registered_name_resolves_and_a_duplicate_is_an_error(
    start: Callable[..., ActorRef],
) -> None:
    ref = start(Recorder(), name="kernel-test-registry-dup")
    assert whereis("kernel-test-registry-dup") == ref
    assert ref.name == "kernel-test-registry-dup"
    live_before = actor_count()
    with pytest.raises(ValueError, match="already registered"):
        start(Recorder(), name="kernel-test-registry-dup")
    other = start(Recorder())
    with pytest.raises(ValueError, match="already registered"):
        register("kernel-test-registry-dup", other)
    assert actor_count() == live_before + 1  # only `other`: the refused spawn left nothing
    assert whereis("kernel-test-registry-dup") == ref


def test_registered_name_is_freed_when_the_actor_exits(start: Callable[..., ActorRef]) -> None:
    first = start(Crasher(), name="kernel-test-registry-exit")
    first.send("crash")
    first.join(POLL_LIMIT_S)
    assert whereis("kernel-test-registry-exit") is None
    second = start(Recorder(), name="kernel-test-registry-exit")
    assert whereis("kernel-test-registry-exit") == second


def test_register_and_unregister(start: Callable[..., ActorRef]) -> None:
    ref = start(Recorder())
    assert ref.name is None
    register("kernel-test-registry-manual", ref)
    assert whereis("kernel-test-registry-manual") == ref
    unregister("kernel-test-registry-manual")
    assert whereis("kernel-test-registry-manual") is None
    assert ref.name is None
    assert whereis("kernel-test-never-registered") is None


# --- typed dispatch ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ring:
    line: int


@dataclass(frozen=True)
class UrgentRing(Ring):
    pass


@dataclass(frozen=True)
class Hangup:
    cause: str


@dataclass(frozen=True)
class Hold:
    on: bool


@dataclass(frozen=True)
class CountEvents:
    pass


class Phone(Actor):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @on(Ring)
    def on_ring(self, msg: Ring) -> None:
        self.events.append(("ring", msg.line))

    @on(Hangup, Hold)
    def on_call_change(self, msg: Hangup | Hold) -> None:
        self.events.append(("change", msg))

    @on(CountEvents)
    def on_count(self, _msg: CountEvents) -> int:
        return len(self.events)

    def handle_cast(self, msg: Any) -> None:
        self.events.append(("untyped", msg))


class DeskPhone(Phone):
    @on(UrgentRing)
    def on_urgent(self, msg: UrgentRing) -> None:
        self.events.append(("urgent", msg.line))


def test_on_dispatches_casts_and_calls_by_type(start: Callable[..., ActorRef]) -> None:
    phone = Phone()
    ref = start(phone)
    for msg in (Ring(1), Hangup("busy"), "text", Hold(True), UrgentRing(2)):
        ref.send(msg)
    assert ref.call(CountEvents()) == 5
    assert phone.events == [
        ("ring", 1), ("change", Hangup("busy")), ("untyped", "text"), ("change", Hold(True)),
        ("ring", 2),  # a subclass of Ring goes to the Ring handler
    ]


def test_on_handlers_are_inherited_and_the_most_specific_type_wins(
    start: Callable[..., ActorRef],
) -> None:
    phone = DeskPhone()
    ref = start(phone)
    ref.send(Ring(1))
    ref.send(UrgentRing(2))
    ref.send(Hangup("normal"))
    assert ref.call(CountEvents()) == 3
    assert phone.events == [("ring", 1), ("urgent", 2), ("change", Hangup("normal"))]


# --- crashes, spawn, counts ----------------------------------------------------------------


def test_crash_is_logged_with_its_traceback_naming_the_actor(
    start: Callable[..., ActorRef], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="mirliton.actors")
    ref = start(Crasher(), name="kernel-test-logged-crash")
    ref.send("crash")
    ref.join(POLL_LIMIT_S)
    records = [r for r in caplog.records if r.name == "mirliton.actors" and r.exc_info]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    message = record.getMessage()
    assert "kernel-test-logged-crash" in message
    assert repr(ref) in message
    assert "explode_on_purpose" in caplog.text  # the formatted traceback


def test_spawn_raises_spawn_error_when_init_raises(start: Callable[..., ActorRef]) -> None:
    class BadInit(Actor):
        def init(self) -> None:
            raise ValueError("bad config")

    live_before = actor_count()
    kind_before = actor_count("BadInit")
    with pytest.raises(SpawnError) as raised:
        start(BadInit(), name="kernel-test-bad-init")
    assert isinstance(raised.value.reason, Crash)
    assert raised.value.reason.error == "ValueError: bad config"
    assert actor_count() == live_before
    assert actor_count("BadInit") == kind_before
    assert whereis("kernel-test-bad-init") is None


def test_init_crash_of_a_spawn_linked_actor_reaches_the_linked_one(
    start: Callable[..., ActorRef],
) -> None:
    class BadInit(Actor):
        def init(self) -> None:
            raise ValueError("bad config")

    trapper_actor = ExitTrapper()
    trapper = start(trapper_actor)
    with pytest.raises(SpawnError):
        start(BadInit(), link=trapper)
    wait_until(lambda: len(trapper_actor.signals) == 1, "the Exit of the failed spawn")
    exit_msg = trapper_actor.signals[0]
    assert isinstance(exit_msg, Exit)
    assert isinstance(exit_msg.reason, Crash)
    assert exit_msg.reason.error == "ValueError: bad config"


def test_spawn_returns_only_after_init_completed(start: Callable[..., ActorRef]) -> None:
    class SlowInit(Recorder):
        def init(self) -> None:
            gevent.sleep(0.02)
            self.seen.append("init done")

    actor = SlowInit()
    start(actor)
    assert actor.seen == ["init done"]


def test_terminate_runs_on_stop_and_crash_but_not_on_kill(start: Callable[..., ActorRef]) -> None:
    stopped, crashed, killed = Crasher(), Crasher(), Crasher()
    stopped_ref, crashed_ref, killed_ref = start(stopped), start(crashed), start(killed)
    assert stopped_ref.stop("maintenance") is True
    crashed_ref.send("crash")
    crashed_ref.join(POLL_LIMIT_S)
    killed_ref.kill()
    assert stopped.terminated_with == ["maintenance"]
    assert len(crashed.terminated_with) == 1 and isinstance(crashed.terminated_with[0], Crash)
    assert killed.terminated_with == []
    assert killed_ref.exit_reason == KILLED


def test_kill_cannot_be_trapped_and_skips_terminate(start: Callable[..., ActorRef]) -> None:
    trapper_actor = ExitTrapper()
    trapper = start(trapper_actor)
    trapper.kill()
    assert trapper.exit_reason == KILLED
    assert trapper_actor.terminated_with == []
    assert trapper_actor.signals == []


def test_spawn_gives_up_on_an_init_that_does_not_finish_in_time(
    start: Callable[..., ActorRef],
) -> None:
    never = gevent.event.Event()

    class HangingInit(Actor):
        def init(self) -> None:
            never.wait()

    live_before = actor_count()
    with pytest.raises(SpawnError) as raised:
        start(HangingInit(), init_timeout=0.05)
    assert raised.value.reason == "init_timeout"
    assert actor_count() == live_before


def test_actor_killed_when_its_stop_timeout_expires_exits_with_killed(
    start: Callable[..., ActorRef],
) -> None:
    release = gevent.event.Event()

    class StuckInTerminate(Recorder):
        def terminate(self, reason: Any) -> None:
            self.terminated_with.append(reason)
            release.wait()

    actor = StuckInTerminate()
    ref = start(actor)
    assert ref.stop(timeout=0.05) is False  # terminate() cannot finish: it was killed
    assert actor.terminated_with == [SHUTDOWN]
    assert not ref.is_alive
    assert ref.exit_reason == KILLED


def test_a_second_stop_does_not_cut_terminate_short(start: Callable[..., ActorRef]) -> None:
    release = gevent.event.Event()
    steps: list[str] = []

    class SlowTerminate(Actor):
        def terminate(self, reason: Any) -> None:
            steps.append("terminate begins")
            release.wait()
            steps.append("terminate ends")

    ref = start(SlowTerminate())
    first_stop = gevent.spawn(ref.stop, SHUTDOWN, POLL_LIMIT_S)
    wait_until(lambda: steps == ["terminate begins"], "terminate() to begin")
    second_stop = gevent.spawn(ref.stop, SHUTDOWN, POLL_LIMIT_S)
    gevent.sleep(0.01)  # let the second stop reach the actor if it is going to
    release.set()
    assert first_stop.get(timeout=POLL_LIMIT_S) is True
    assert second_stop.get(timeout=POLL_LIMIT_S) is True
    assert steps == ["terminate begins", "terminate ends"]
    assert ref.exit_reason == SHUTDOWN


def test_a_linked_crash_during_terminate_does_not_cut_it_short(
    start: Callable[..., ActorRef],
) -> None:
    release = gevent.event.Event()
    steps: list[str] = []

    class SlowTerminate(Actor):
        def terminate(self, reason: Any) -> None:
            steps.append("terminate begins")
            release.wait()
            steps.append("terminate ends")

    crasher = start(Crasher())
    ref = start(SlowTerminate(), link=crasher)
    stopping = gevent.spawn(ref.stop, SHUTDOWN, POLL_LIMIT_S)
    wait_until(lambda: steps == ["terminate begins"], "terminate() to begin")
    crasher.send("crash")
    crasher.join(POLL_LIMIT_S)
    gevent.sleep(0.01)  # let the linked exit reach the exiting actor if it is going to
    release.set()
    assert stopping.get(timeout=POLL_LIMIT_S) is True
    assert steps == ["terminate begins", "terminate ends"]
    assert ref.exit_reason == SHUTDOWN


def test_actor_count_follows_spawns_and_exits(start: Callable[..., ActorRef]) -> None:
    class Counted(Recorder):
        pass

    live_before = actor_count()
    assert actor_count("Counted") == 0
    refs = [start(Counted()) for _ in range(5)]
    assert actor_count("Counted") == 5
    assert actor_count() == live_before + 5
    refs[0].stop()
    refs[1].kill()
    refs[2].send("not a crash")
    assert actor_count("Counted") == 3
    for ref in refs[2:]:
        ref.stop()
    assert actor_count("Counted") == 0
    assert actor_count() == live_before
