"""OTP supervision for both levels: lightweight actors inside a process (``Supervisor``) and
process actors on Thespian (``supervisors.process``). The same child specs, strategies,
restart types, intensity/period and the same API functions serve both."""

from __future__ import annotations

from supervisors.api import (
    count_children,
    delete_child,
    restart_child,
    start_child,
    terminate_child,
    which_children,
)
from supervisors.core import ChildSpec, SupervisorFlags
from supervisors.local import Supervisor, SupervisorError

__all__ = [
    "ChildSpec",
    "Supervisor",
    "SupervisorError",
    "SupervisorFlags",
    "count_children",
    "delete_child",
    "restart_child",
    "start_child",
    "terminate_child",
    "which_children",
]
