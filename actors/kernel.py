"""Lightweight actors: gevent greenlets with a mailbox, Erlang-style.

An actor owns a mailbox and runs in its own greenlet. It receives messages one at a time,
can wait selectively for a message of a given shape (``receive``), is linked to or monitors
other actors and is told why they exited. An exception that escapes a handler is a *crash*:
the actor exits with a :class:`Crash` reason carrying the traceback, linked actors are
killed with it (unless they trap exits) and monitors get a :class:`Down` message. Nothing
is swallowed: "let it crash" means "restarted by the supervisor".

Why greenlets and not one Thespian process per actor: a greenlet costs ~12 KB and ~26 us to
spawn, a Thespian actor process ~4.3 MB and 10-20 ms (ARCHITECTURE.md section 2), and call
legs, registrations and running callflows come in thousands per process.

Request/reply uses a fresh :class:`gevent.event.AsyncResult` per request rather than the
caller's mailbox, so a reply that arrives after its request timed out lands in an abandoned
result and can never be taken for the answer to a later request.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import gevent
import gevent.event
from gevent import Greenlet, GreenletExit

__all__ = [
    "Actor",
    "ActorRef",
    "ActorDead",
    "CallTimeout",
    "Crash",
    "Down",
    "Exit",
    "ExitReason",
    "KILLED",
    "NORMAL",
    "SHUTDOWN",
    "MonitorRef",
    "ReceiveTimeout",
    "SpawnError",
    "UnhandledMessage",
    "actor_count",
    "current_actor",
    "current_call_id",
    "is_normal",
    "on",
    "register",
    "registered",
    "spawn",
    "unregister",
    "whereis",
]

log = logging.getLogger("mirliton.actors")

NORMAL = "normal"
SHUTDOWN = "shutdown"
KILLED = "killed"


@dataclass(frozen=True)
class Crash:
    """Exit reason of an actor whose code raised: the error and its formatted traceback."""

    error: str
    traceback: str = field(repr=False, compare=False, default="")

    def __str__(self) -> str:
        return f"crash: {self.error}"


# A reason is "normal", "shutdown", "killed", a Crash, or any value given to stop()/exit().
ExitReason = Any


def is_normal(reason: ExitReason) -> bool:
    """normal, shutdown and ("shutdown", detail) do not take linked actors down (OTP rules)."""
    if reason == NORMAL or reason == SHUTDOWN:
        return True
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == SHUTDOWN


@dataclass(frozen=True)
class Exit:
    """Delivered to an actor that traps exits when a linked actor exits."""

    ref: ActorRef
    reason: ExitReason


@dataclass(frozen=True)
class MonitorRef:
    id: int


@dataclass(frozen=True)
class Down:
    """Delivered to a monitoring actor when the monitored one exits (or was already dead)."""

    monitor: MonitorRef
    ref: ActorRef
    reason: ExitReason


class ActorDead(Exception):
    """The target actor is not alive (or died before replying)."""

    def __init__(self, ref: ActorRef, reason: ExitReason = None) -> None:
        super().__init__(f"actor {ref} is dead ({reason})")
        self.ref = ref
        self.reason = reason


class CallTimeout(Exception):
    """No reply within the call's timeout."""


class ReceiveTimeout(Exception):
    """Selective receive saw no matching message within its timeout."""


class _ExitSignal(GreenletExit):
    """Raised inside an actor's greenlet to make it exit with a reason (kill or linked exit)."""

    def __init__(self, reason: ExitReason) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Call:
    request: Any
    result: gevent.event.AsyncResult


# The actor running in this greenlet (gevent gives each greenlet its own context), for logs.
current_actor: contextvars.ContextVar[ActorRef | None] = contextvars.ContextVar(
    "current_actor", default=None
)
# The call a log line is about, set by call-leg and callflow actors.
current_call_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_call_id", default=None
)

_ids = itertools.count(1)
_monitor_ids = itertools.count(1)
_registry: dict[str, ActorRef] = {}
_live: dict[int, ActorRef] = {}
_counts_by_kind: dict[str, int] = {}


def actor_count(kind: str | None = None) -> int:
    """Live lightweight actors in this process (all, or of one class name)."""
    if kind is None:
        return len(_live)
    return _counts_by_kind.get(kind, 0)


class _Mailbox:
    """FIFO with selective take: the first message matching a predicate, else wait."""

    __slots__ = ("_items", "_event")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._event = gevent.event.Event()

    def put(self, msg: Any) -> None:
        self._items.append(msg)
        self._event.set()

    def __len__(self) -> int:
        return len(self._items)

    def take(self, match: Callable[[Any], bool] | None, timeout: float | None) -> Any:
        deadline = None if timeout is None else _now() + timeout
        scanned = 0
        while True:
            items = self._items
            if match is None:
                if items:
                    return items.popleft()
            else:
                # Messages already scanned and not matching stay in place (Erlang's save queue).
                for i in range(scanned, len(items)):
                    if match(items[i]):
                        msg = items[i]
                        del items[i]
                        return msg
                scanned = len(items)
            self._event.clear()
            remaining = None if deadline is None else deadline - _now()
            if remaining is not None and remaining <= 0:
                raise ReceiveTimeout()
            if not self._event.wait(remaining) and deadline is not None and _now() >= deadline:
                raise ReceiveTimeout()


def _now() -> float:
    return gevent.get_hub().loop.now()


class ActorRef:
    """The address of a lightweight actor. Cheap to copy; safe to keep after the actor died."""

    __slots__ = ("id", "_actor", "__weakref__")

    def __init__(self, actor: Actor) -> None:
        self.id = next(_ids)
        self._actor = actor

    def __repr__(self) -> str:
        name = self._actor._name
        kind = type(self._actor).__name__
        return f"<{kind} #{self.id}{' ' + name if name else ''}>"

    def __hash__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.id == self.id

    @property
    def name(self) -> str | None:
        return self._actor._name

    @property
    def kind(self) -> str:
        return type(self._actor).__name__

    @property
    def is_alive(self) -> bool:
        return self._actor._exit_reason is _RUNNING

    @property
    def exit_reason(self) -> ExitReason:
        reason = self._actor._exit_reason
        return None if reason is _RUNNING else reason

    def send(self, msg: Any) -> None:
        """Asynchronous send. Messages to a dead actor are dropped, as in Erlang."""
        if self._actor._exit_reason is _RUNNING:
            self._actor._mailbox.put(msg)

    def call(self, request: Any, timeout: float | None = 5.0) -> Any:
        """Synchronous request: the value ``handle_call`` returned (or raised, re-raised here)."""
        actor = self._actor
        if actor._exit_reason is not _RUNNING:
            raise ActorDead(self, actor._exit_reason)
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        actor._pending_calls.add(result)
        try:
            actor._mailbox.put(_Call(request, result))
            try:
                return result.get(timeout=timeout)
            except gevent.Timeout:
                raise CallTimeout(f"{self} did not reply to {request!r} in {timeout}s") from None
        finally:
            actor._pending_calls.discard(result)

    def stop(self, reason: ExitReason = SHUTDOWN, timeout: float | None = 5.0) -> bool:
        """Ask the actor to exit (terminate() runs); kill it if it has not within timeout.

        Returns True when it stopped in time, False when it had to be killed.
        """
        actor = self._actor
        if actor._exit_reason is not _RUNNING:
            return True
        actor._signal_exit(reason)
        if actor._greenlet.join(timeout) is None and not actor._greenlet.dead:
            self.kill()
            return False
        return True

    def kill(self) -> None:
        """Brutal kill: the actor exits with reason 'killed' at once, terminate() is skipped."""
        actor = self._actor
        if actor._exit_reason is _RUNNING:
            actor._brutal = True
            actor._greenlet.kill(_ExitSignal(KILLED), block=True)

    def exit(self, reason: ExitReason) -> None:
        """Send an exit signal, as erlang:exit/2: kills unless the target traps exits."""
        actor = self._actor
        if actor._exit_reason is not _RUNNING:
            return
        if reason == KILLED:
            self.kill()
        elif actor.trap_exits:
            # As erlang:exit/2: the trapping target learns who sent the signal.
            actor._mailbox.put(Exit(current_actor.get() or self, reason))
        elif reason != NORMAL:
            actor._signal_exit(reason)

    def join(self, timeout: float | None = None) -> ExitReason:
        self._actor._greenlet.join(timeout)
        return self.exit_reason

    def monitor(self, watcher: ActorRef) -> MonitorRef:
        """Make ``watcher`` receive a Down when this actor exits."""
        return watcher._actor.monitor(self)


class _Running:
    def __repr__(self) -> str:
        return "running"


_RUNNING: Any = _Running()

M = TypeVar("M")


def on(*types: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Typed dispatch: ``@on(Ring)`` marks a method as the handler of Ring messages (cast or info)."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn._handles = tuple(getattr(fn, "_handles", ())) + types  # type: ignore[attr-defined]
        return fn

    return mark


class Actor:
    """Base class of lightweight actors (a gen_server shape).

    Override ``init`` (runs in the actor before ``spawn`` returns), ``handle_cast`` (messages
    from ``send``), ``handle_call`` (the return value is the reply), ``handle_info`` (Exit,
    Down and anything unmatched) and ``terminate`` (on a non-brutal exit). Methods decorated
    with ``@on(Type)`` receive messages of that type before the generic handlers.
    """

    trap_exits: bool = False
    _handlers: ClassVar[dict[type, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for t in getattr(value, "_handles", ()):
                    handlers[t] = attr
        cls._handlers = handlers

    # Set by spawn(); declared here for type checkers.
    ref: ActorRef
    _greenlet: Greenlet
    _name: str | None = None

    def _setup(self) -> None:
        self._mailbox = _Mailbox()
        self._exit_reason: ExitReason = _RUNNING
        self._links: set[ActorRef] = set()
        self._monitors: dict[MonitorRef, ActorRef] = {}  # who watches me
        self._watching: dict[MonitorRef, ActorRef] = {}  # whom I watch
        self._pending_calls: set[gevent.event.AsyncResult] = set()
        self._brutal = False
        # Set once an exit signal was delivered: later ones (a second stop, a linked exit)
        # must not interrupt terminate(); only a brutal kill may.
        self._exit_signalled = False
        self._timers: set[Greenlet] = set()
        self.ref = ActorRef(self)

    # --- callbacks ---------------------------------------------------------------------
    def init(self) -> None:
        """Runs inside the actor before spawn() returns; raising fails the spawn."""

    def handle_cast(self, msg: Any) -> None:
        raise UnhandledMessage(f"{type(self).__name__} has no handler for {msg!r}")

    def handle_call(self, request: Any) -> Any:
        raise UnhandledMessage(f"{type(self).__name__} has no call handler for {request!r}")

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, Exit) and not is_normal(msg.reason):
            # Trapping exits without handling them would hide a linked crash: exit too.
            raise _ExitSignal(msg.reason)
        if isinstance(msg, Exit | Down):
            return
        self.handle_cast(msg)

    def terminate(self, reason: ExitReason) -> None:
        """Clean-up hook for a non-brutal exit."""

    # --- API available inside the actor -------------------------------------------------
    def receive(
        self, match: type | tuple[type, ...] | Callable[[Any], bool] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Selective receive: the first message matching a type or predicate.

        Raises ReceiveTimeout when none arrives in time. Other messages stay queued in order.
        """
        pred: Callable[[Any], bool] | None
        if match is None:
            pred = None
        elif isinstance(match, type | tuple):
            types = match
            pred = lambda m: isinstance(m, types)  # noqa: E731
        else:
            pred = match
        return self._mailbox.take(pred, timeout)

    def link(self, other: ActorRef) -> None:
        """Bidirectional link: when either exits abnormally, the other gets the signal."""
        if other == self.ref:
            return
        if not other.is_alive:
            # Linking to a dead actor: as Erlang, an immediate 'noproc' exit signal.
            _propagate_exit(self.ref, other, "noproc")
            return
        self._links.add(other)
        other._actor._links.add(self.ref)

    def unlink(self, other: ActorRef) -> None:
        self._links.discard(other)
        other._actor._links.discard(self.ref)

    def monitor(self, other: ActorRef) -> MonitorRef:
        mref = MonitorRef(next(_monitor_ids))
        if not other.is_alive:
            self._mailbox.put(Down(mref, other, other.exit_reason or "noproc"))
            return mref
        self._watching[mref] = other
        other._actor._monitors[mref] = self.ref
        return mref

    def demonitor(self, mref: MonitorRef) -> None:
        other = self._watching.pop(mref, None)
        if other is not None:
            other._actor._monitors.pop(mref, None)

    def send_after(self, delay: float, msg: Any) -> Greenlet:
        """Deliver ``msg`` to self after ``delay`` seconds; cancelled when the actor exits."""

        def fire() -> None:
            self._timers.discard(timer)
            self.ref.send(msg)

        timer = gevent.spawn_later(delay, fire)
        self._timers.add(timer)
        return timer

    def cancel_timer(self, timer: Greenlet) -> None:
        self._timers.discard(timer)
        timer.kill(block=False)

    def stop(self, reason: ExitReason = NORMAL) -> None:
        """Exit from inside the actor (after the current handler)."""
        raise _ExitSignal(reason)

    def _signal_exit(self, reason: ExitReason) -> None:
        if self._exit_signalled:
            return
        self._exit_signalled = True
        self._greenlet.kill(_ExitSignal(reason), block=False)

    # --- the loop -----------------------------------------------------------------------
    def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, _Call):
            try:
                value = self._dispatch_call(msg.request)
            except _ExitSignal:
                raise
            except BaseException as exc:
                # The caller learns why; the actor still crashes (an unhandled request is a bug).
                msg.result.set_exception(exc)
                raise
            msg.result.set(value)
            return
        handler = self._find_handler(msg)
        if handler is not None:
            handler(msg)
        elif isinstance(msg, Exit | Down):
            self.handle_info(msg)
        else:
            self.handle_cast(msg)

    def _dispatch_call(self, request: Any) -> Any:
        handler = self._find_handler(request)
        if handler is not None:
            return handler(request)
        return self.handle_call(request)

    def _find_handler(self, msg: Any) -> Callable[[Any], Any] | None:
        handlers = self._handlers
        if not handlers:
            return None
        name = handlers.get(type(msg))
        if name is None:
            for t, n in handlers.items():
                if isinstance(msg, t):
                    name = n
                    break
            else:
                return None
        return getattr(self, name)

    def _run(self, started: gevent.event.AsyncResult) -> None:
        current_actor.set(self.ref)
        reason: ExitReason = NORMAL
        initialised = False
        try:
            self.init()
            initialised = True
            started.set(self.ref)
            take = self._mailbox.take
            while True:
                self._dispatch(take(None, None))
        except _ExitSignal as sig:
            reason = sig.reason
        except GreenletExit:
            reason = KILLED
        except BaseException as exc:  # noqa: BLE001 - an actor crash is any exception
            reason = Crash(f"{type(exc).__name__}: {exc}", traceback.format_exc())
            log.error("actor %r crashed: %s", self.ref, reason.error, exc_info=True)
        finally:
            self._exit_signalled = True
            if initialised and not self._brutal:
                try:
                    self.terminate(reason)
                except _ExitSignal as sig:
                    reason = sig.reason  # killed while terminating (shutdown timeout)
                except BaseException:  # noqa: BLE001
                    log.error("actor %r: terminate() raised", self.ref, exc_info=True)
            if not started.ready():
                started.set_exception(_SpawnFailed(reason))
            self._finish(reason)

    def _finish(self, reason: ExitReason) -> None:
        self._exit_reason = reason
        _live.pop(self.ref.id, None)
        kind = type(self).__name__
        _counts_by_kind[kind] = _counts_by_kind.get(kind, 1) - 1
        if self._name is not None and _registry.get(self._name) == self.ref:
            del _registry[self._name]
        for timer in list(self._timers):
            timer.kill(block=False)
        self._timers.clear()
        for result in list(self._pending_calls):
            if not result.ready():
                result.set_exception(ActorDead(self.ref, reason))
        for mref, watcher in list(self._monitors.items()):
            watcher._actor._watching.pop(mref, None)
            watcher.send(Down(mref, self.ref, reason))
        self._monitors.clear()
        for mref, other in list(self._watching.items()):
            other._actor._monitors.pop(mref, None)
        links, self._links = self._links, set()
        for other in links:
            other._actor._links.discard(self.ref)
            _propagate_exit(other, self.ref, reason)


def _propagate_exit(target: ActorRef, source: ActorRef, reason: ExitReason) -> None:
    actor = target._actor
    if actor._exit_reason is not _RUNNING:
        return
    if actor.trap_exits:
        actor._mailbox.put(Exit(source, reason))
    elif not is_normal(reason):
        actor._signal_exit(reason)


class UnhandledMessage(Exception):
    """An actor received a message it has no handler for: a crash, like a function_clause."""


class _SpawnFailed(Exception):
    def __init__(self, reason: ExitReason) -> None:
        super().__init__(f"actor failed to start: {reason}")
        self.reason = reason


class SpawnError(Exception):
    """init() raised or the actor exited before it completed."""

    def __init__(self, reason: ExitReason) -> None:
        super().__init__(f"actor failed to start: {reason}")
        self.reason = reason


A = TypeVar("A", bound=Actor)


def spawn(
    actor: Actor,
    *,
    link: ActorRef | None = None,
    name: str | None = None,
    init_timeout: float | None = None,
) -> ActorRef:
    """Start ``actor`` in its own greenlet and return its ref once ``init()`` completed.

    ``link`` links the new actor to that one before init runs (spawn_link), so a crash in
    init is reported to the supervisor like any other exit. ``name`` registers it in this
    process's name registry (a name in use is an error).
    """
    actor._setup()
    if name is not None:
        existing = _registry.get(name)
        if existing is not None and existing.is_alive:
            raise ValueError(f"name {name!r} is already registered to {existing}")
        actor._name = name
        _registry[name] = actor.ref
    started: gevent.event.AsyncResult = gevent.event.AsyncResult()
    greenlet = Greenlet(actor._run, started)
    actor._greenlet = greenlet
    _live[actor.ref.id] = actor.ref
    kind = type(actor).__name__
    _counts_by_kind[kind] = _counts_by_kind.get(kind, 0) + 1
    if link is not None:
        actor._links.add(link)
        link._actor._links.add(actor.ref)
    greenlet.start()
    try:
        started.get(timeout=init_timeout)
    except _SpawnFailed as failed:
        raise SpawnError(failed.reason) from None
    except gevent.Timeout:
        actor.ref.kill()
        raise SpawnError("init_timeout") from None
    return actor.ref


def register(name: str, ref: ActorRef) -> None:
    existing = _registry.get(name)
    if existing is not None and existing.is_alive and existing != ref:
        raise ValueError(f"name {name!r} is already registered to {existing}")
    ref._actor._name = name
    _registry[name] = ref


def unregister(name: str) -> None:
    ref = _registry.pop(name, None)
    if ref is not None and ref._actor._name == name:
        ref._actor._name = None


def whereis(name: str) -> ActorRef | None:
    ref = _registry.get(name)
    if ref is not None and not ref.is_alive:
        return None
    return ref


def registered() -> Iterator[tuple[str, ActorRef]]:
    return iter(list(_registry.items()))
