"""OTP supervision rules as a sans-I/O state machine, shared by both levels.

The decisions of a supervisor — which children to stop and restart when one exits, when the
restart intensity is exceeded, which children a temporary/transient policy drops — do not
depend on whether a child is a greenlet or an OS process. This module holds them; the two
drivers (``supervisors.local.Supervisor`` for lightweight actors, ``supervisors.process`` for
Thespian process actors) only carry out the plans it returns, with time passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from actors.kernel import is_normal

__all__ = [
    "ChildSpec",
    "Escalate",
    "Plan",
    "RestartType",
    "Shutdown",
    "Strategy",
    "SupervisorCore",
    "SupervisorFlags",
]

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]
# Seconds to wait after asking a child to stop, "brutal_kill" (kill at once) or "infinity".
Shutdown = float | Literal["brutal_kill", "infinity"]
ChildType = Literal["worker", "supervisor"]

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
RESTARTS = ("permanent", "transient", "temporary")


@dataclass(frozen=True)
class ChildSpec:
    """What a supervisor needs to know to start, stop and restart one child.

    ``start`` is what the driver calls: for lightweight actors a callable returning a fresh
    ``Actor`` (called with the extra args of ``start_child`` under simple_one_for_one); for
    process actors a ``supervisors.process.ProcessChild``.
    """

    id: str
    start: Any
    restart: RestartType = "permanent"
    shutdown: Shutdown = 5.0
    type: ChildType = "worker"

    def __post_init__(self) -> None:
        if self.restart not in RESTARTS:
            raise ValueError(f"child {self.id!r}: restart must be one of {RESTARTS}")
        if self.type not in ("worker", "supervisor"):
            raise ValueError(f"child {self.id!r}: type must be worker or supervisor")
        if not (
            self.shutdown in ("brutal_kill", "infinity")
            or (isinstance(self.shutdown, int | float) and self.shutdown >= 0)
        ):
            raise ValueError(f"child {self.id!r}: shutdown must be seconds, brutal_kill or infinity")


@dataclass(frozen=True)
class SupervisorFlags:
    strategy: Strategy = "one_for_one"
    intensity: int = 3  # restarts allowed ...
    period: float = 5.0  # ... within this many seconds, else escalate

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}")
        if self.intensity < 0 or self.period <= 0:
            raise ValueError("intensity must be >= 0 and period > 0")


@dataclass
class ChildState:
    """A child slot. ``key`` is the spec id, or a unique key per dynamic child."""

    key: str
    spec: ChildSpec
    args: tuple[Any, ...] = ()
    handle: Any = None  # driver's handle (ActorRef, process handle); None when not running
    restarts: int = 0
    last_exit: Any = None

    @property
    def running(self) -> bool:
        return self.handle is not None


@dataclass(frozen=True)
class Plan:
    """Stop these children (in this order, already reverse start order), then start these."""

    terminate: tuple[str, ...] = ()
    start: tuple[str, ...] = ()


@dataclass(frozen=True)
class Escalate:
    """Restart intensity exceeded: stop every child and exit with ``reason``."""

    reason: Any = ("shutdown", "reached_max_restart_intensity")


@dataclass
class SupervisorCore:
    flags: SupervisorFlags
    # Insertion-ordered: the start order. Indexed by handle too, since a simple_one_for_one
    # supervisor of call legs holds thousands of children and learns of exits by handle.
    _children: dict[str, ChildState] = field(default_factory=dict)
    _by_handle: dict[Any, str] = field(default_factory=dict)
    _restart_times: deque[float] = field(default_factory=deque)
    _dynamic_seq: int = 0

    @classmethod
    def create(cls, flags: SupervisorFlags, specs: list[ChildSpec]) -> SupervisorCore:
        if flags.strategy == "simple_one_for_one" and len(specs) != 1:
            raise ValueError("simple_one_for_one takes exactly one child spec (the template)")
        ids = [s.id for s in specs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate child ids in {ids}")
        core = cls(flags)
        core.template = specs[0] if flags.strategy == "simple_one_for_one" else None
        if core.template is None:
            core._children = {s.id: ChildState(s.id, s) for s in specs}
        return core

    template: ChildSpec | None = None

    # --- lookups ------------------------------------------------------------------------
    @property
    def children(self) -> list[ChildState]:
        return list(self._children.values())

    def child(self, key: str) -> ChildState:
        return self._children[key]

    def has_child(self, key: str) -> bool:
        return key in self._children

    def find_by_handle(self, handle: Any) -> ChildState | None:
        key = self._by_handle.get(handle)
        return None if key is None else self._children.get(key)

    def set_running(self, key: str, handle: Any) -> None:
        child = self._children[key]
        if child.handle is not None:
            self._by_handle.pop(child.handle, None)
        child.handle = handle
        self._by_handle[handle] = key

    def _clear_handle(self, child: ChildState) -> None:
        if child.handle is not None:
            self._by_handle.pop(child.handle, None)
            child.handle = None

    def start_order(self) -> list[str]:
        return list(self._children)

    def shutdown_order(self) -> list[str]:
        return [k for k, c in reversed(self._children.items()) if c.running]

    # --- dynamic children ---------------------------------------------------------------
    def add_child(self, spec: ChildSpec) -> ChildState:
        if self.template is not None:
            raise ValueError("use add_dynamic under simple_one_for_one")
        if spec.id in self._children:
            raise ValueError(f"child {spec.id!r} already present")
        state = ChildState(spec.id, spec)
        self._children[spec.id] = state
        return state

    def add_dynamic(self, args: tuple[Any, ...]) -> ChildState:
        if self.template is None:
            raise ValueError("add_dynamic is for simple_one_for_one supervisors")
        self._dynamic_seq += 1
        state = ChildState(f"{self.template.id}-{self._dynamic_seq}", self.template, args)
        self._children[state.key] = state
        return state

    def remove(self, key: str) -> None:
        child = self._children.pop(key, None)
        if child is not None:
            self._clear_handle(child)

    def stopped(self, key: str) -> None:
        """A child was stopped on request (terminate_child): keep its spec, not running."""
        self._clear_handle(self._children[key])

    # --- the rules ----------------------------------------------------------------------
    def child_exited(self, key: str, reason: Any, now: float) -> Plan | Escalate | None:
        """A running child exited on its own (not stopped by us). Decide what happens."""
        child = self.child(key)
        self._clear_handle(child)
        child.last_exit = reason
        restart = child.spec.restart
        if restart == "temporary":
            self.remove(key)
            return None
        if restart == "transient" and is_normal(reason):
            if self.template is not None:
                self.remove(key)
            return None
        if self._intensity_exceeded(now):
            return Escalate()
        child.restarts += 1
        strategy = self.flags.strategy
        if strategy in ("one_for_one", "simple_one_for_one"):
            return Plan(start=(key,))
        keys = self.start_order()
        if strategy == "one_for_all":
            affected = keys
        else:  # rest_for_one: the child and every child started after it
            affected = keys[keys.index(key):]
        to_stop = tuple(k for k in reversed(affected) if k != key and self.child(k).running)
        for k in to_stop:
            sibling = self.child(k)
            if sibling.spec.restart != "temporary":
                sibling.restarts += 1
        return Plan(terminate=to_stop, start=tuple(affected))

    def sibling_stopped(self, key: str) -> None:
        """A child we stopped as part of a plan: temporary children are not restarted."""
        child = self.child(key)
        self._clear_handle(child)
        if child.spec.restart == "temporary":
            self.remove(key)

    def start_failed(self, key: str, now: float) -> Escalate | None:
        """A restart attempt failed: it counts against the intensity, then is retried."""
        if self._intensity_exceeded(now):
            return Escalate()
        self.child(key).restarts += 1
        return None

    def _intensity_exceeded(self, now: float) -> bool:
        times = self._restart_times
        times.append(now)
        horizon = now - self.flags.period
        while times and times[0] < horizon:
            times.popleft()
        return len(times) > self.flags.intensity

    def counts(self) -> dict[str, int]:
        """count_children: specs, active, supervisors, workers."""
        active = [c for c in self.children if c.running]
        return {
            "specs": 1 if self.template is not None else len(self.children),
            "active": len(active),
            "supervisors": sum(1 for c in self.children if c.spec.type == "supervisor"),
            "workers": sum(1 for c in self.children if c.spec.type == "worker"),
        }


def describe_reason(reason: Any) -> str:
    """A short, stable text for an exit reason (status output and metrics labels avoid it)."""
    if reason is None:
        return ""
    if isinstance(reason, tuple):
        return ":".join(str(r) for r in reason)
    return str(reason)


StartFn = Callable[..., Any]
