"""The supervisor of lightweight actors: an actor that traps exits and applies the OTP rules.

Children are started in order, each one's ``init()`` completing before the next starts
(``spawn`` returns only then), and stopped in reverse order with their shutdown timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent

from actors.kernel import (
    SHUTDOWN,
    Actor,
    ActorRef,
    Exit,
    SpawnError,
    is_normal,
    spawn,
)
from supervisors.core import (
    ChildSpec,
    ChildState,
    Escalate,
    Plan,
    SupervisorCore,
    SupervisorFlags,
    describe_reason,
)
from supervisors.metrics import record_restart

__all__ = ["Supervisor", "SupervisorError"]

log = logging.getLogger("mirliton.supervisors")


class SupervisorError(Exception):
    """A supervisor API call failed (unknown child, start failure, wrong strategy...)."""


class Supervisor(Actor):
    """A lightweight supervisor. ``spawn(Supervisor(specs, flags))`` starts the whole subtree."""

    trap_exits = True

    def __init__(
        self,
        specs: list[ChildSpec],
        flags: SupervisorFlags | None = None,
        *,
        name: str = "supervisor",
        on_change: Callable[[Supervisor], None] | None = None,
    ) -> None:
        self.specs = specs
        self.flags = flags or SupervisorFlags()
        self.sup_name = name
        self.on_change = on_change
        self.core = SupervisorCore.create(self.flags, specs)

    # --- lifecycle ----------------------------------------------------------------------
    def init(self) -> None:
        # Spawned with link=parent: before any child starts, the only link is the parent's.
        self._parent: ActorRef | None = next(iter(self._links), None)
        for key in self.core.start_order():
            try:
                self._start(key)
            except SpawnError as err:
                log.error("supervisor %s: child %s failed to start: %s", self.sup_name, key,
                          err.reason)
                self._shutdown_all()
                raise
        self._changed()

    def terminate(self, reason: Any) -> None:
        self._shutdown_all()

    def _start(self, key: str) -> ActorRef:
        child = self.core.child(key)
        actor = child.spec.start(*child.args)
        if not isinstance(actor, Actor):
            raise TypeError(f"child {key!r}: start must return an Actor, got {actor!r}")
        ref = spawn(actor, link=self.ref)
        self.core.set_running(key, ref)
        return ref

    def _terminate(self, child: ChildState) -> None:
        ref: ActorRef = child.handle
        # Unlink first: this exit is ours, not a failure to react to.
        self.unlink(ref)
        shutdown = child.spec.shutdown
        if shutdown == "brutal_kill":
            ref.kill()
        elif shutdown == "infinity":
            ref.stop(SHUTDOWN, timeout=None)
        else:
            if not ref.stop(SHUTDOWN, timeout=float(shutdown)):
                log.warning("supervisor %s: child %s did not stop in %ss, killed",
                            self.sup_name, child.key, shutdown)

    def _shutdown_all(self) -> None:
        for key in self.core.shutdown_order():
            child = self.core.child(key)
            self._terminate(child)
            self.core.stopped(key)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    # --- exits --------------------------------------------------------------------------
    def handle_cast(self, msg: Any) -> None:
        # A stray message must not take a whole subtree down.
        log.warning("supervisor %s: unexpected message %r ignored", self.sup_name, msg)

    def handle_info(self, msg: Any) -> None:
        if not isinstance(msg, Exit):
            self.handle_cast(msg)
            return
        child = self.core.find_by_handle(msg.ref)
        if child is None:
            if msg.ref == self._parent and msg.reason != "normal":
                self.stop(msg.reason)  # OTP: a supervisor exits with its parent
            # Otherwise a stale exit of a child already replaced by a plan.
            return
        if not is_normal(msg.reason):
            log.error("supervisor %s: child %s exited: %s", self.sup_name, child.key,
                      describe_reason(msg.reason))
        decision = self.core.child_exited(child.key, msg.reason, _now())
        self._carry_out(decision, child.key)

    def _carry_out(self, decision: Plan | Escalate | None, failed_key: str) -> None:
        while decision is not None:
            if isinstance(decision, Escalate):
                log.error("supervisor %s: restart intensity reached (%d in %ss), escalating",
                          self.sup_name, self.flags.intensity, self.flags.period)
                self._shutdown_all()
                self._changed()
                self.stop(decision.reason)
                return
            decision = self._run_plan(decision, failed_key)
        self._changed()

    def _run_plan(self, plan: Plan, failed_key: str) -> Escalate | None:
        for key in plan.terminate:
            child = self.core.child(key)
            if child.running:
                self._terminate(child)
            self.core.sibling_stopped(key)
        for key in plan.start:
            if not self.core.has_child(key):
                continue  # a temporary sibling dropped by the plan
            while True:
                try:
                    self._start(key)
                    record_restart(self.sup_name, self.core.child(key).spec.id)
                    break
                except Exception as err:  # noqa: BLE001 - init or the start function failed
                    reason = err.reason if isinstance(err, SpawnError) else repr(err)
                    log.error("supervisor %s: restart of %s failed: %s", self.sup_name, key,
                              reason)
                    escalate = self.core.start_failed(key, _now())
                    if escalate is not None:
                        return escalate
        return None

    # --- the API (called through the module functions below) ---------------------------
    def handle_call(self, request: Any) -> Any:
        op, *args = request
        try:
            return ("ok", getattr(self, "_op_" + op)(*args))
        except (KeyError, ValueError, TypeError, SpawnError, SupervisorError) as err:
            return ("error", err)

    def _op_start_child(self, spec_or_args: Any) -> ActorRef:
        if self.core.template is not None:
            state = self.core.add_dynamic(tuple(spec_or_args))
        else:
            if not isinstance(spec_or_args, ChildSpec):
                raise TypeError("start_child takes a ChildSpec here")
            state = self.core.add_child(spec_or_args)
        try:
            ref = self._start(state.key)
        except SpawnError:
            self.core.remove(state.key)
            raise
        except Exception as err:  # the start function itself raised: nothing is added
            self.core.remove(state.key)
            raise SupervisorError(f"start of {state.key} failed: {err}") from err
        self._changed()
        return ref

    def _key_for(self, ident: str | ActorRef) -> str:
        if isinstance(ident, ActorRef):
            child = self.core.find_by_handle(ident)
            if child is None:
                raise KeyError(f"{ident} is not a child of {self.sup_name}")
            return child.key
        if not self.core.has_child(ident):
            raise KeyError(f"no child {ident!r} in {self.sup_name}")
        return ident

    def _op_terminate_child(self, ident: str | ActorRef) -> None:
        key = self._key_for(ident)
        child = self.core.child(key)
        if child.running:
            self._terminate(child)
        if self.core.template is not None or child.spec.restart == "temporary":
            self.core.remove(key)  # dynamic and temporary children are forgotten (OTP)
        else:
            self.core.stopped(key)
        self._changed()

    def _op_restart_child(self, key: str) -> ActorRef:
        child = self.core.child(self._key_for(key))
        if child.running:
            raise SupervisorError(f"child {key!r} is running")
        ref = self._start(child.key)
        self._changed()
        return ref

    def _op_delete_child(self, key: str) -> None:
        child = self.core.child(self._key_for(key))
        if child.running:
            raise SupervisorError(f"child {key!r} is running")
        self.core.remove(child.key)
        self._changed()

    def _op_which_children(self) -> list[dict[str, Any]]:
        return [child_info(c) for c in self.core.children]

    def _op_count_children(self) -> dict[str, int]:
        return self.core.counts()

    def _op_tree(self) -> dict[str, Any]:
        return self.tree()

    def tree(self) -> dict[str, Any]:
        """This supervisor and its children, for status output. Dynamic children are counted."""
        info: dict[str, Any] = {
            "id": self.sup_name,
            "kind": "supervisor",
            "strategy": self.flags.strategy,
            "state": "running",
        }
        if self.core.template is not None:
            info["children_count"] = self.core.counts()["active"]
            info["restarts"] = sum(c.restarts for c in self.core.children)
            return info
        children = []
        for c in self.core.children:
            entry = child_info(c)
            ref = c.handle
            if ref is not None and isinstance(ref._actor, Supervisor):
                sub = ref._actor.tree()
                entry["children"] = sub.get("children", [])
                if "children_count" in sub:
                    entry["children_count"] = sub["children_count"]
            children.append(entry)
        info["children"] = children
        return info


def child_info(child: ChildState) -> dict[str, Any]:
    return {
        "id": child.key,
        "kind": "actor" if child.spec.type == "worker" else "supervisor",
        "state": "running" if child.running else "stopped",
        "restarts": child.restarts,
        "restart": child.spec.restart,
        "last_exit": describe_reason(child.last_exit) or None,
    }


def _now() -> float:
    return gevent.get_hub().loop.now()
