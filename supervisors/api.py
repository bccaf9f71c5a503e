"""One API for both levels: the same functions work on a lightweight supervisor (an
``ActorRef`` of a ``Supervisor``) and on a process supervisor (a ``ProcessSupervisorRef``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.kernel import ActorRef
from supervisors.core import ChildSpec
from supervisors.process import SupervisorOp, SupervisorOpResult

__all__ = [
    "ProcessSupervisorRef",
    "count_children",
    "delete_child",
    "restart_child",
    "start_child",
    "terminate_child",
    "which_children",
]


@dataclass(frozen=True)
class ProcessSupervisorRef:
    """A process supervisor reached through a Thespian ActorSystem (lifecycle traffic only)."""

    system: Any  # thespian.actors.ActorSystem
    address: Any  # thespian.actors.ActorAddress
    timeout: float = 60.0


Sup = ActorRef | ProcessSupervisorRef


def _call(sup: Sup, op: str, *args: Any) -> Any:
    from supervisors.local import SupervisorError

    if isinstance(sup, ActorRef):
        status, value = sup.call((op, *args), timeout=None)
        if status == "error":
            raise SupervisorError(str(value))
        return value
    reply = sup.system.ask(sup.address, SupervisorOp(op, args), sup.timeout)
    if not isinstance(reply, SupervisorOpResult):
        raise SupervisorError(f"{op}: no answer from the supervisor ({reply!r})")
    if not reply.ok:
        raise SupervisorError(str(reply.value))
    return reply.value


def start_child(sup: Sup, spec_or_args: ChildSpec | tuple[Any, ...] | list[Any]) -> Any:
    """Add and start a child: a ChildSpec, or the extra start args under simple_one_for_one.

    Returns the child's ActorRef (lightweight) or its key (process).
    """
    return _call(sup, "start_child", spec_or_args)


def terminate_child(sup: Sup, child: Any) -> None:
    _call(sup, "terminate_child", child)


def restart_child(sup: Sup, child_id: str) -> Any:
    return _call(sup, "restart_child", child_id)


def delete_child(sup: Sup, child_id: str) -> None:
    _call(sup, "delete_child", child_id)


def which_children(sup: Sup) -> list[dict[str, Any]]:
    return list(_call(sup, "which_children"))


def count_children(sup: Sup) -> dict[str, int]:
    return dict(_call(sup, "count_children"))
