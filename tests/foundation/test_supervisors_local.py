"""The supervisor of lightweight actors (supervisors/local.py on supervisors/core.py):
strategies, restart types, intensity/period and escalation, ordered start, reverse-ordered
shutdown with timeouts and brutal kill, and the API functions.

Children record their lifecycle in a shared ``Journal``: each init notes the child's ref, so
"restarted" means "a new ref for that child id" and "kept" means "the same ref, still alive".
A supervisor handles its mailbox in order, so after a crashed child's ``join()`` any API call
to the supervisor (``which_children``) returns only once the supervisor has acted on that exit.
Other waits are bounded polls; no test depends on how fast anything runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from actors.kernel import (
    KILLED,
    SHUTDOWN,
    Actor,
    ActorDead,
    ActorRef,
    Crash,
    SpawnError,
    spawn,
)
from supervisors import (
    ChildSpec,
    Supervisor,
    SupervisorError,
    SupervisorFlags,
    count_children,
    delete_child,
    restart_child,
    start_child,
    terminate_child,
    which_children,
)

POLL_LIMIT_S = 10.0
MAX_INTENSITY_REASON = ("shutdown", "reached_max_restart_intensity")


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = POLL_LIMIT_S) -> None:
    """Poll ``condition`` (yielding to other greenlets) until true; fail after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        gevent.sleep(0.001)


@dataclass
class Journal:
    """What the test children did, in order: ("init start"|"init"|"terminate"|"terminated", id)."""

    events: list[tuple[str, str]] = field(default_factory=list)
    refs: dict[str, ActorRef] = field(default_factory=dict)  # latest ref per child id
    terminate_reasons: dict[str, list[Any]] = field(default_factory=dict)
    fail_init: set[str] = field(default_factory=set)  # ids whose next inits raise
    # Workers made with terminate_waits_for_release block in terminate() until this is set.
    release: gevent.event.Event = field(default_factory=gevent.event.Event)

    def inits(self, child_id: str) -> int:
        return self.events.count(("init", child_id))

    def events_since(self, mark: int) -> list[tuple[str, str]]:
        return self.events[mark:]


def explode_in_worker() -> None:
    raise RuntimeError("worker boom")


class Worker(Actor):
    """Cast "crash" raises (in explode_in_worker); cast "quit" exits normally."""

    def __init__(self, journal: Journal, child_id: str, *, init_sleep_s: float = 0.0,
                 terminate_sleep_s: float = 0.0, terminate_waits_for_release: bool = False,
                 ) -> None:
        self.journal = journal
        self.child_id = child_id
        self.init_sleep_s = init_sleep_s
        self.terminate_sleep_s = terminate_sleep_s
        self.terminate_waits_for_release = terminate_waits_for_release

    def init(self) -> None:
        self.journal.events.append(("init start", self.child_id))
        if self.init_sleep_s:
            gevent.sleep(self.init_sleep_s)  # yields: other greenlets may run meanwhile
        if self.child_id in self.journal.fail_init:
            raise ValueError(f"{self.child_id} cannot start")
        self.journal.refs[self.child_id] = self.ref
        self.journal.events.append(("init", self.child_id))

    def handle_cast(self, msg: Any) -> None:
        if msg == "crash":
            explode_in_worker()
        elif msg == "quit":
            self.stop()

    def handle_call(self, request: Any) -> Any:
        return (self.child_id, request)

    def terminate(self, reason: Any) -> None:
        self.journal.events.append(("terminate", self.child_id))
        self.journal.terminate_reasons.setdefault(self.child_id, []).append(reason)
        if self.terminate_sleep_s:
            gevent.sleep(self.terminate_sleep_s)
        if self.terminate_waits_for_release:
            self.journal.release.wait()
        self.journal.events.append(("terminated", self.child_id))


def worker_spec(journal: Journal, child_id: str, restart: str = "permanent",
                shutdown: Any = 5.0, **worker_options: Any) -> ChildSpec:
    return ChildSpec(
        child_id,
        lambda: Worker(journal, child_id, **worker_options),
        restart=restart,  # type: ignore[arg-type]
        shutdown=shutdown,
    )


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def supervise() -> Iterator[Callable[..., ActorRef]]:
    """Spawn a Supervisor; whatever the test left running is stopped afterwards."""
    started: list[ActorRef] = []

    def start_supervisor(specs: list[ChildSpec], flags: SupervisorFlags | None = None,
                         name: str = "test-sup", **options: Any) -> ActorRef:
        ref = spawn(Supervisor(specs, flags, name=name, **options))
        started.append(ref)
        return ref

    yield start_supervisor
    for ref in started:
        ref.stop(timeout=POLL_LIMIT_S)


def crash_child(sup: ActorRef, journal: Journal, child_id: str) -> ActorRef:
    """Crash the child's current incarnation; return once the supervisor has handled it."""
    old = journal.refs[child_id]
    old.send("crash")
    old.join(POLL_LIMIT_S)
    assert isinstance(old.exit_reason, Crash)
    which_children(sup)  # queued behind the Exit: answered after the supervisor acted on it
    return old


def children_by_id(sup: ActorRef) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in which_children(sup)}


def flags(strategy: str, intensity: int = 10, period: float = 60.0) -> SupervisorFlags:
    return SupervisorFlags(strategy, intensity, period)  # type: ignore[arg-type]


# --- strategies ----------------------------------------------------------------------------


def test_one_for_one_restarts_only_the_crashed_child(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, i) for i in ("a", "b", "c")],
                    flags("one_for_one"), name="test-sup-one-for-one")
    before = dict(journal.refs)
    old_b = crash_child(sup, journal, "b")
    assert old_b == before["b"]
    assert journal.refs["b"] != old_b and journal.refs["b"].is_alive
    assert journal.refs["a"] == before["a"] and journal.refs["a"].is_alive
    assert journal.refs["c"] == before["c"] and journal.refs["c"].is_alive
    children = children_by_id(sup)
    assert [children[i]["restarts"] for i in ("a", "b", "c")] == [0, 1, 0]
    assert children["b"]["last_exit"] == "crash: RuntimeError: worker boom"
    assert REGISTRY.get_sample_value(
        "mirliton_supervisor_restarts_total",
        {"supervisor": "test-sup-one-for-one", "child": "b"},
    ) == 1.0


def test_one_for_all_restarts_every_child_stopping_siblings_in_reverse_order(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, i) for i in ("a", "b", "c")], flags("one_for_all"))
    before = dict(journal.refs)
    mark = len(journal.events)
    crash_child(sup, journal, "b")
    for child_id in ("a", "b", "c"):
        assert journal.refs[child_id] != before[child_id]
        assert journal.refs[child_id].is_alive
        assert not before[child_id].is_alive
    assert before["a"].exit_reason == SHUTDOWN and before["c"].exit_reason == SHUTDOWN
    assert [e for e in journal.events_since(mark) if e[0] in ("terminate", "init")] == [
        ("terminate", "b"),  # the crash itself
        ("terminate", "c"), ("terminate", "a"),  # siblings, reverse start order
        ("init", "a"), ("init", "b"), ("init", "c"),  # all again, in start order
    ]
    assert [c["restarts"] for c in which_children(sup)] == [1, 1, 1]


def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, i) for i in ("a", "b", "c", "d")],
                    flags("rest_for_one"))
    before = dict(journal.refs)
    mark = len(journal.events)
    crash_child(sup, journal, "b")
    assert journal.refs["a"] == before["a"] and before["a"].is_alive
    for child_id in ("b", "c", "d"):
        assert journal.refs[child_id] != before[child_id]
        assert journal.refs[child_id].is_alive
    assert [e for e in journal.events_since(mark) if e[0] in ("terminate", "init")] == [
        ("terminate", "b"), ("terminate", "d"), ("terminate", "c"),
        ("init", "b"), ("init", "c"), ("init", "d"),
    ]


def test_simple_one_for_one_restarts_only_the_crashed_dynamic_child_with_its_args(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    template = ChildSpec("leg", lambda call_id: Worker(journal, call_id))
    sup = supervise([template], flags("simple_one_for_one"))
    assert which_children(sup) == []
    refs = {call_id: start_child(sup, (call_id,)) for call_id in ("call-1", "call-2", "call-3")}
    assert refs == {call_id: journal.refs[call_id] for call_id in refs}
    crash_child(sup, journal, "call-2")
    assert journal.refs["call-2"] != refs["call-2"] and journal.refs["call-2"].is_alive
    assert journal.refs["call-2"].call("who") == ("call-2", "who")  # same start args
    assert journal.refs["call-1"] == refs["call-1"] and refs["call-1"].is_alive
    assert journal.refs["call-3"] == refs["call-3"] and refs["call-3"].is_alive
    children = which_children(sup)
    assert len(children) == 3
    assert sorted(c["restarts"] for c in children) == [0, 0, 1]
    assert count_children(sup) == {"specs": 1, "active": 3, "supervisors": 0, "workers": 3}


# --- restart types -------------------------------------------------------------------------


def end_child(ref: ActorRef, how: str) -> None:
    if how == "crash":
        ref.send("crash")
    elif how == "normal":
        ref.send("quit")
    else:
        ref.stop(SHUTDOWN)
    ref.join(POLL_LIMIT_S)


@pytest.mark.parametrize(
    ("restart", "how", "restarted"),
    [
        ("permanent", "crash", True),
        ("permanent", "normal", True),
        ("permanent", "shutdown", True),
        ("transient", "crash", True),
        ("transient", "normal", False),
        ("transient", "shutdown", False),
        ("temporary", "crash", False),
        ("temporary", "normal", False),
    ],
)
def test_restart_type_decides_whether_an_exited_child_comes_back(
    supervise: Callable[..., ActorRef], journal: Journal, restart: str, how: str,
    restarted: bool,
) -> None:
    sup = supervise([worker_spec(journal, "other"), worker_spec(journal, "w", restart)],
                    flags("one_for_one"))
    old = journal.refs["w"]
    end_child(old, how)
    children = children_by_id(sup)  # answered after the supervisor handled the exit
    assert journal.refs["other"].is_alive
    if restarted:
        assert journal.refs["w"] != old and journal.refs["w"].is_alive
        assert children["w"]["state"] == "running"
        assert children["w"]["restarts"] == 1
    else:
        assert journal.refs["w"] == old and journal.inits("w") == 1
        if restart == "temporary":
            assert "w" not in children  # a temporary child is forgotten once it exits
        else:
            assert children["w"]["state"] == "stopped"
            assert children["w"]["restarts"] == 0


@pytest.mark.parametrize("restart", ["temporary", "transient"])
def test_simple_one_for_one_forgets_non_permanent_children_that_exit_normally(
    supervise: Callable[..., ActorRef], journal: Journal, restart: str,
) -> None:
    template = ChildSpec("leg", lambda call_id: Worker(journal, call_id),
                         restart=restart)  # type: ignore[arg-type]
    sup = supervise([template], flags("simple_one_for_one"))
    ref = start_child(sup, ("call-9",))
    end_child(ref, "normal")
    assert which_children(sup) == []
    assert journal.inits("call-9") == 1


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
def test_temporary_sibling_stopped_by_a_restart_plan_is_not_restarted(
    supervise: Callable[..., ActorRef], journal: Journal, strategy: str,
) -> None:
    sup = supervise(
        [
            worker_spec(journal, "a"),
            worker_spec(journal, "crashing"),
            worker_spec(journal, "temp", "temporary"),
            worker_spec(journal, "trans", "transient"),
        ],
        flags(strategy),
    )
    before = dict(journal.refs)
    crash_child(sup, journal, "crashing")
    assert not before["temp"].is_alive
    assert before["temp"].exit_reason == SHUTDOWN
    assert journal.terminate_reasons["temp"] == [SHUTDOWN]
    assert journal.inits("temp") == 1
    assert journal.refs["trans"] != before["trans"]  # a transient sibling is restarted
    assert journal.refs["trans"].is_alive
    children = children_by_id(sup)
    assert list(children) == ["a", "crashing", "trans"]
    assert all(c["state"] == "running" for c in children.values())


@dataclass
class SupervisionModel:
    """The OTP rules for one supervisor, as expected: which children run after an exit."""

    strategy: str
    order: list[str]  # child ids present, in start order
    restart: dict[str, str]
    running: set[str]

    def exit(self, child_id: str, abnormal: bool) -> tuple[set[str], set[str]]:
        """Apply an exit; return (ids that must come back with new refs, ids removed)."""
        self.running.discard(child_id)
        if self.restart[child_id] == "temporary":
            self.order.remove(child_id)
            return set(), {child_id}
        if self.restart[child_id] == "transient" and not abnormal:
            return set(), set()
        if self.strategy == "one_for_one":
            affected = [child_id]
        elif self.strategy == "one_for_all":
            affected = list(self.order)
        else:
            affected = self.order[self.order.index(child_id):]
        removed = {i for i in affected if i != child_id and self.restart[i] == "temporary"}
        for i in removed:
            self.order.remove(i)
            self.running.discard(i)
        restarted = {i for i in affected if i not in removed}
        self.running |= restarted
        return restarted, removed


@settings(max_examples=60, deadline=None)
@given(
    strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
    restart_types=st.lists(st.sampled_from(["permanent", "transient", "temporary"]),
                           min_size=1, max_size=5),
    exits=st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=8),
)
def test_any_sequence_of_exits_follows_the_otp_rules(
    strategy: str, restart_types: list[str], exits: list[tuple[int, bool]],
) -> None:
    journal = Journal()
    ids = [f"c{n}" for n in range(len(restart_types))]
    model = SupervisionModel(strategy, list(ids), dict(zip(ids, restart_types, strict=True)),
                             set(ids))
    sup = spawn(Supervisor(
        [worker_spec(journal, i, r) for i, r in zip(ids, restart_types, strict=True)],
        flags(strategy, intensity=100),
    ))
    try:
        for index, abnormal in exits:
            child_id = ids[index % len(ids)]
            if child_id not in model.running:
                continue
            before = dict(journal.refs)
            end_child(journal.refs[child_id], "crash" if abnormal else "normal")
            children = children_by_id(sup)  # answered after the exit was handled
            restarted, removed = model.exit(child_id, abnormal)
            assert list(children) == model.order
            for i in model.order:
                assert (children[i]["state"] == "running") == (i in model.running), i
                assert journal.refs[i].is_alive == (i in model.running), i
                if i in restarted:
                    assert journal.refs[i] != before[i], f"{i} should have a new ref"
                elif i in model.running:
                    assert journal.refs[i] == before[i], f"{i} should keep its ref"
            for i in removed:
                assert not journal.refs[i].is_alive
    finally:
        sup.stop(timeout=POLL_LIMIT_S)


# --- intensity / period and escalation -----------------------------------------------------


def test_exceeding_intensity_stops_all_children_and_exits_with_max_restart_reason(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, i) for i in ("a", "b", "c")],
                    flags("one_for_one", intensity=2, period=60.0))
    crash_child(sup, journal, "b")
    crash_child(sup, journal, "b")
    assert sup.is_alive and journal.inits("b") == 3
    mark = len(journal.events)
    survivors = dict(journal.refs)
    survivors["b"].send("crash")  # the third restart within the period is one too many
    assert sup.join(POLL_LIMIT_S) == MAX_INTENSITY_REASON
    assert all(not ref.is_alive for ref in survivors.values())
    assert survivors["a"].exit_reason == SHUTDOWN and survivors["c"].exit_reason == SHUTDOWN
    assert [e for e in journal.events_since(mark) if e[0] in ("terminate", "init")] == [
        ("terminate", "b"), ("terminate", "c"), ("terminate", "a"),
    ]


def test_zero_intensity_escalates_on_the_first_crash(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, "only")], flags("one_for_one", intensity=0))
    journal.refs["only"].send("crash")
    assert sup.join(POLL_LIMIT_S) == MAX_INTENSITY_REASON
    assert journal.inits("only") == 1


def test_restarts_spread_wider_than_the_period_do_not_escalate(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    period_s = 0.05
    sup = supervise([worker_spec(journal, "w")],
                    flags("one_for_one", intensity=1, period=period_s))
    for _ in range(4):
        crash_child(sup, journal, "w")
        gevent.sleep(period_s * 3)  # the previous restart falls out of the window
    assert sup.is_alive
    assert journal.inits("w") == 5


def test_failing_restarts_count_against_intensity_and_escalate(
    supervise: Callable[..., ActorRef], journal: Journal, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="mirliton.supervisors")
    sup = supervise([worker_spec(journal, "w")], flags("one_for_one", intensity=3),
                    name="test-sup-failing-restarts")
    journal.fail_init.add("w")
    journal.refs["w"].send("crash")
    assert sup.join(POLL_LIMIT_S) == MAX_INTENSITY_REASON
    # crash (1 restart) + failed starts (each retried while within intensity): 3 attempts
    assert journal.events.count(("init start", "w")) == 1 + 3
    assert any("restart of w failed" in r.getMessage() for r in caplog.records)


def test_nested_supervisor_escalation_is_restarted_by_its_parent(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    inner_instances: list[Supervisor] = []

    def make_inner() -> Supervisor:
        inner = Supervisor([worker_spec(journal, "leaf")],
                           flags("one_for_one", intensity=1), name="test-sup-inner")
        inner_instances.append(inner)
        return inner

    outer = supervise(
        [
            ChildSpec("inner", make_inner, type="supervisor"),
            worker_spec(journal, "sibling"),
        ],
        flags("one_for_one", intensity=5),
        name="test-sup-outer",
    )
    first_inner = inner_instances[0].ref
    sibling = journal.refs["sibling"]
    crash_child(first_inner, journal, "leaf")  # within the inner's intensity: restarted
    assert journal.inits("leaf") == 2 and first_inner.is_alive
    journal.refs["leaf"].send("crash")  # exceeds it: the inner supervisor gives up
    assert first_inner.join(POLL_LIMIT_S) == MAX_INTENSITY_REASON
    wait_until(lambda: len(inner_instances) == 2, "the outer supervisor to restart the inner one")
    children = children_by_id(outer)
    assert children["inner"]["restarts"] == 1
    assert children["inner"]["state"] == "running"
    assert children["inner"]["last_exit"] == "shutdown:reached_max_restart_intensity"
    assert inner_instances[1].ref.is_alive
    assert journal.inits("leaf") == 3 and journal.refs["leaf"].is_alive
    assert journal.refs["sibling"] == sibling and sibling.is_alive
    assert outer.is_alive
    assert count_children(outer) == {"specs": 2, "active": 2, "supervisors": 1, "workers": 1}


def test_nested_escalation_repeated_beyond_the_parents_intensity_stops_the_parent(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    inner_refs: list[Supervisor] = []

    def make_inner() -> Supervisor:
        inner = Supervisor([worker_spec(journal, "leaf")], flags("one_for_one", intensity=0))
        inner_refs.append(inner)
        return inner

    outer = supervise([ChildSpec("inner", make_inner, type="supervisor")],
                      flags("one_for_one", intensity=1))
    journal.refs["leaf"].send("crash")
    wait_until(lambda: len(inner_refs) == 2, "the first restart of the inner supervisor")
    journal.refs["leaf"].send("crash")
    assert outer.join(POLL_LIMIT_S) == MAX_INTENSITY_REASON
    assert not any(inner.ref.is_alive for inner in inner_refs)
    assert not journal.refs["leaf"].is_alive


# --- ordered start, reverse-ordered shutdown, shutdown timeouts ----------------------------


def test_children_start_in_order_each_init_completing_before_the_next_begins(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    supervise([worker_spec(journal, i, init_sleep_s=0.01) for i in ("a", "b", "c")])
    assert journal.events == [
        ("init start", "a"), ("init", "a"),
        ("init start", "b"), ("init", "b"),
        ("init start", "c"), ("init", "c"),
    ]


def test_supervisor_stop_terminates_children_in_reverse_start_order(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, i, terminate_sleep_s=0.005) for i in ("a", "b", "c")])
    refs = dict(journal.refs)
    mark = len(journal.events)
    assert sup.stop(SHUTDOWN, timeout=POLL_LIMIT_S) is True
    assert journal.events_since(mark) == [
        ("terminate", "c"), ("terminated", "c"),
        ("terminate", "b"), ("terminated", "b"),
        ("terminate", "a"), ("terminated", "a"),
    ]
    assert all(ref.exit_reason == SHUTDOWN for ref in refs.values())


def test_child_failing_to_start_fails_the_supervisor_and_stops_the_started_ones(
    journal: Journal,
) -> None:
    journal.fail_init.add("c")
    with pytest.raises(SpawnError):
        spawn(Supervisor([worker_spec(journal, i) for i in ("a", "b", "c")]))
    assert [e for e in journal.events if e[0] in ("init", "terminate")] == [
        ("init", "a"), ("init", "b"), ("terminate", "b"), ("terminate", "a"),
    ]
    assert not journal.refs["a"].is_alive and not journal.refs["b"].is_alive


def test_child_whose_terminate_outlasts_its_shutdown_timeout_is_killed(
    supervise: Callable[..., ActorRef], journal: Journal, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mirliton.supervisors")
    sup = supervise([
        worker_spec(journal, "prompt", shutdown=POLL_LIMIT_S),
        worker_spec(journal, "stuck", shutdown=0.05, terminate_sleep_s=3600.0),
    ])
    stuck = journal.refs["stuck"]
    terminate_child(sup, "stuck")
    assert ("terminate", "stuck") in journal.events
    assert ("terminated", "stuck") not in journal.events  # its terminate() never finished
    assert not stuck.is_alive
    assert stuck.exit_reason == KILLED
    assert any("stuck did not stop in 0.05s, killed" in r.getMessage() for r in caplog.records)
    assert children_by_id(sup)["stuck"]["state"] == "stopped"
    assert journal.refs["prompt"].is_alive


def test_child_with_infinity_shutdown_is_given_all_the_time_it_needs(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, "slow", shutdown="infinity", terminate_sleep_s=0.05)])
    slow = journal.refs["slow"]
    terminate_child(sup, "slow")
    assert journal.events[-2:] == [("terminate", "slow"), ("terminated", "slow")]
    assert slow.exit_reason == SHUTDOWN


def test_brutal_kill_skips_terminate(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([
        worker_spec(journal, "gentle"),
        worker_spec(journal, "brutal", shutdown="brutal_kill"),
    ])
    refs = dict(journal.refs)
    assert sup.stop(SHUTDOWN, timeout=POLL_LIMIT_S) is True
    assert refs["brutal"].exit_reason == KILLED
    assert ("terminate", "brutal") not in journal.events
    assert refs["gentle"].exit_reason == SHUTDOWN
    assert ("terminated", "gentle") in journal.events


def test_supervisor_killed_while_stopping_its_children_leaves_none_running(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([
        worker_spec(journal, "first"),
        worker_spec(journal, "slow", shutdown=POLL_LIMIT_S, terminate_waits_for_release=True),
    ])
    refs = dict(journal.refs)
    # The supervisor is still waiting for "slow" when its own stop timeout kills it.
    assert sup.stop(SHUTDOWN, timeout=0.05) is False
    journal.release.set()
    wait_until(lambda: not refs["slow"].is_alive, "the child being stopped to finish")
    # "first" was never reached by the shutdown: only the supervisor's exit can stop it.
    wait_until(lambda: not refs["first"].is_alive, "the not yet stopped child to be killed")
    assert sup.exit_reason == KILLED
    assert refs["first"].exit_reason == KILLED


def test_supervisor_stopped_while_stopping_a_child_lets_that_child_finish_terminate(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([
        worker_spec(journal, "a"),
        worker_spec(journal, "slow", shutdown=POLL_LIMIT_S, terminate_waits_for_release=True),
    ])
    slow = journal.refs["slow"]

    def terminate_slow() -> None:
        try:
            terminate_child(sup, "slow")
        except ActorDead:
            pass  # the supervisor was stopped before it could answer

    terminating = gevent.spawn(terminate_slow)
    wait_until(lambda: ("terminate", "slow") in journal.events, "slow's terminate() to begin")
    stopping = gevent.spawn(sup.stop, SHUTDOWN, POLL_LIMIT_S)  # e.g. the parent shuts down
    gevent.sleep(0.01)  # let the supervisor's own shutdown reach "slow" if it is going to
    journal.release.set()
    stopping.join(POLL_LIMIT_S)
    terminating.join(POLL_LIMIT_S)
    assert not slow.is_alive and not sup.is_alive
    assert ("terminated", "slow") in journal.events  # its terminate() ran to the end


def test_killed_supervisor_takes_its_children_down(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, i) for i in ("a", "b")])
    refs = dict(journal.refs)
    sup.kill()
    wait_until(lambda: not any(ref.is_alive for ref in refs.values()), "the children to die")
    assert all(ref.exit_reason == KILLED for ref in refs.values())


def test_killed_supervisor_stops_a_nested_supervisor_and_its_children(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    inner_instances: list[Supervisor] = []

    def make_inner() -> Supervisor:
        inner = Supervisor([worker_spec(journal, "leaf")], name="test-sup-inner")
        inner_instances.append(inner)
        return inner

    outer = supervise([ChildSpec("inner", make_inner, type="supervisor")])
    inner, leaf = inner_instances[0].ref, journal.refs["leaf"]
    outer.kill()
    wait_until(lambda: not inner.is_alive and not leaf.is_alive, "the subtree to stop")
    assert inner.exit_reason == KILLED  # a supervisor exits with its parent's reason
    assert journal.terminate_reasons["leaf"] == [SHUTDOWN]  # stopped by its own supervisor


# --- the API -------------------------------------------------------------------------------


def test_start_child_adds_a_child_after_the_existing_ones(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, "a")])
    ref = start_child(sup, worker_spec(journal, "late", "transient"))
    assert ref == journal.refs["late"] and ref.is_alive
    assert [c["id"] for c in which_children(sup)] == ["a", "late"]
    with pytest.raises(SupervisorError, match="already present"):
        start_child(sup, worker_spec(journal, "late"))
    with pytest.raises(SupervisorError, match="ChildSpec"):
        start_child(sup, ("not", "a", "spec"))
    mark = len(journal.events)
    sup.stop(SHUTDOWN, timeout=POLL_LIMIT_S)
    assert [e for e in journal.events_since(mark) if e[0] == "terminate"] == [
        ("terminate", "late"), ("terminate", "a"),
    ]


def test_start_child_whose_init_fails_raises_and_adds_nothing(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, "a")])
    journal.fail_init.add("bad")
    with pytest.raises(SupervisorError, match="bad cannot start"):
        start_child(sup, worker_spec(journal, "bad"))
    assert [c["id"] for c in which_children(sup)] == ["a"]
    assert sup.is_alive


def test_start_child_whose_start_function_raises_adds_nothing(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    def broken_factory() -> Actor:
        raise ValueError("cannot build the actor")

    sup = supervise([worker_spec(journal, "a")])
    with pytest.raises(SupervisorError, match="cannot build the actor"):
        start_child(sup, ChildSpec("broken", broken_factory))
    assert [c["id"] for c in which_children(sup)] == ["a"]


def test_start_function_raising_on_restart_counts_against_intensity(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    builds: list[str] = []

    def factory_that_breaks_after_first_use() -> Actor:
        builds.append("build")
        if len(builds) > 1:
            raise ValueError("config went bad")
        return Worker(journal, "w")

    sup = supervise([ChildSpec("w", factory_that_breaks_after_first_use)],
                    flags("one_for_one", intensity=3))
    journal.refs["w"].send("crash")
    # As a failing start: retried while within the intensity, then escalated (OTP treats an
    # exception in the start function as {error, Reason}); not a crash of the supervisor.
    assert sup.join(POLL_LIMIT_S) == MAX_INTENSITY_REASON
    assert len(builds) == 1 + 3


def test_terminate_restart_and_delete_child(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, "a"), worker_spec(journal, "b")])
    first_b = journal.refs["b"]
    terminate_child(sup, "b")
    assert first_b.exit_reason == SHUTDOWN
    assert journal.terminate_reasons["b"] == [SHUTDOWN]
    assert children_by_id(sup)["b"]["state"] == "stopped"
    assert count_children(sup) == {"specs": 2, "active": 1, "supervisors": 0, "workers": 2}
    second_b = restart_child(sup, "b")
    assert second_b != first_b and second_b == journal.refs["b"] and second_b.is_alive
    assert children_by_id(sup)["b"]["state"] == "running"
    with pytest.raises(SupervisorError, match="running"):
        restart_child(sup, "b")
    with pytest.raises(SupervisorError, match="running"):
        delete_child(sup, "b")
    terminate_child(sup, "b")
    delete_child(sup, "b")
    assert [c["id"] for c in which_children(sup)] == ["a"]
    assert count_children(sup) == {"specs": 1, "active": 1, "supervisors": 0, "workers": 1}


def test_terminate_child_forgets_a_temporary_child(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([worker_spec(journal, "a"), worker_spec(journal, "temp", "temporary")])
    temp = journal.refs["temp"]
    terminate_child(sup, "temp")
    assert temp.exit_reason == SHUTDOWN
    # OTP: "If the child is temporary, the child specification is deleted as soon as the
    # process terminates" -- restart_child cannot bring it back.
    assert [c["id"] for c in which_children(sup)] == ["a"]
    with pytest.raises(SupervisorError):
        restart_child(sup, "temp")


@pytest.mark.parametrize("operation", [terminate_child, restart_child, delete_child])
def test_api_on_an_unknown_child_raises_supervisor_error(
    supervise: Callable[..., ActorRef], journal: Journal,
    operation: Callable[[ActorRef, str], Any],
) -> None:
    sup = supervise([worker_spec(journal, "a")])
    with pytest.raises(SupervisorError, match="no-such-child"):
        operation(sup, "no-such-child")
    assert sup.is_alive
    assert journal.refs["a"].is_alive


def test_terminate_child_of_simple_one_for_one_by_ref_forgets_it(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    sup = supervise([ChildSpec("leg", lambda call_id: Worker(journal, call_id))],
                    flags("simple_one_for_one"))
    kept = start_child(sup, ["call-a"])
    dropped = start_child(sup, ["call-b"])
    terminate_child(sup, dropped)
    assert dropped.exit_reason == SHUTDOWN
    assert len(which_children(sup)) == 1
    assert count_children(sup)["active"] == 1
    with pytest.raises(SupervisorError, match="not a child"):
        terminate_child(sup, dropped)
    assert kept.is_alive


def test_which_children_describes_each_child(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    inner = ChildSpec("inner", lambda: Supervisor([], name="inner"), type="supervisor")
    sup = supervise([worker_spec(journal, "w", "transient"), inner])
    assert which_children(sup) == [
        {"id": "w", "kind": "actor", "state": "running", "restarts": 0,
         "restart": "transient", "last_exit": None},
        {"id": "inner", "kind": "supervisor", "state": "running", "restarts": 0,
         "restart": "permanent", "last_exit": None},
    ]
    assert count_children(sup) == {"specs": 2, "active": 2, "supervisors": 1, "workers": 1}


def test_unexpected_message_to_a_supervisor_is_logged_and_ignored(
    supervise: Callable[..., ActorRef], journal: Journal, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mirliton.supervisors")
    sup = supervise([worker_spec(journal, "a")])
    child = journal.refs["a"]
    sup.send("stray message")  # as `Sup ! stray` in OTP: logged, the supervisor carries on
    assert children_by_id(sup)["a"]["state"] == "running"  # ActorDead here if it crashed
    assert child.is_alive and journal.inits("a") == 1
    assert any("unexpected message" in r.getMessage() for r in caplog.records)


def test_on_change_reports_each_change_of_the_tree(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    snapshots: list[list[tuple[str, str, int]]] = []

    def on_change(sup: Supervisor) -> None:
        snapshots.append([(c["id"], c["state"], c["restarts"]) for c in sup.tree()["children"]])

    sup = supervise([worker_spec(journal, "a"), worker_spec(journal, "b")], on_change=on_change)
    assert snapshots == [[("a", "running", 0), ("b", "running", 0)]]
    crash_child(sup, journal, "a")
    assert snapshots[-1] == [("a", "running", 1), ("b", "running", 0)]
    terminate_child(sup, "b")
    assert snapshots[-1] == [("a", "running", 1), ("b", "stopped", 0)]


def test_tree_describes_nested_supervisors_and_counts_dynamic_children(
    supervise: Callable[..., ActorRef], journal: Journal,
) -> None:
    calls_instances: list[Supervisor] = []

    def make_calls() -> Supervisor:
        calls = Supervisor([ChildSpec("leg", lambda call_id: Worker(journal, call_id),
                                      restart="temporary")],
                           flags("simple_one_for_one"), name="calls")
        calls_instances.append(calls)
        return calls

    role_instances: list[Supervisor] = []

    def make_role() -> Supervisor:
        role = Supervisor([worker_spec(journal, "registrar"),
                           ChildSpec("calls", make_calls, type="supervisor")],
                          name="role")
        role_instances.append(role)
        return role

    supervise([ChildSpec("role", make_role, type="supervisor")], name="top")
    for call_id in ("call-1", "call-2"):
        start_child(calls_instances[0].ref, (call_id,))
    tree = role_instances[0].tree()
    assert tree["id"] == "role" and tree["strategy"] == "one_for_one"
    registrar, calls = tree["children"]
    assert registrar["id"] == "registrar" and registrar["state"] == "running"
    assert calls["id"] == "calls" and calls["kind"] == "supervisor"
    assert calls["children_count"] == 2
    assert calls_instances[0].tree() == {
        "id": "calls", "kind": "supervisor", "strategy": "simple_one_for_one",
        "state": "running", "children_count": 2, "restarts": 0,
    }


# --- crashes are logged and restarted ------------------------------------------------------


def test_exception_in_a_child_is_logged_with_traceback_and_followed_by_a_restart(
    supervise: Callable[..., ActorRef], journal: Journal, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    sup = supervise([worker_spec(journal, "w")], name="test-sup-logged")
    old = crash_child(sup, journal, "w")
    crash_records = [r for r in caplog.records if r.name == "mirliton.actors" and r.exc_info]
    assert len(crash_records) == 1
    record = crash_records[0]
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert repr(old) in record.getMessage()
    assert "explode_in_worker" in caplog.text
    assert any(r.name == "mirliton.supervisors" and "child w exited" in r.getMessage()
               for r in caplog.records)
    assert journal.refs["w"] != old and journal.refs["w"].is_alive
