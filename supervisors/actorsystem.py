"""How a node uses Thespian: processes attached to the node and sockets on loopback."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["join_actor_system", "keep_admin_attached", "thespian_on_loopback"]


def keep_admin_attached() -> None:
    """Make Thespian's admin a plain child of the node process instead of a daemon.

    Thespian daemonizes its admin (setsid + double fork) so that it outlives the process that
    started it; a node must not: its admin and every actor below it must die with the node,
    or a ``kill -9`` of the node leaves orphans. The admin's start function is wrapped so that
    its one daemonizing fork returns "child" without forking and setsid does nothing; the
    admin then stays our child and PR_SET_PDEATHSIG covers it.
    """
    from thespian.system import multiprocCommon

    original = multiprocCommon.startAdmin
    if getattr(original, "_mirliton_attached", False):
        return

    def start_admin_attached(*args: Any) -> Any:
        real_fork, real_setsid = os.fork, os.setsid

        def fork_once() -> int:
            os.fork = real_fork
            return 0

        os.fork = fork_once
        os.setsid = lambda: None
        try:
            return original(*args)
        finally:
            os.fork, os.setsid = real_fork, real_setsid

    start_admin_attached._mirliton_attached = True  # type: ignore[attr-defined]
    multiprocCommon.startAdmin = start_admin_attached


def thespian_on_loopback() -> None:
    """Thespian binds actor sockets to every interface; a node's processes talk to each other
    only on this machine (nodes talk over the bus), so bind them to loopback."""
    from thespian.system.transport.IPBase import IPActorAddress

    def loopback_bind_args(self: Any) -> tuple[tuple[str, int]]:
        host, port = self.bindname[0], self.bindname[1]
        return ((host if host not in ("", "0.0.0.0") else "127.0.0.1", port),)

    IPActorAddress.bindArgs = property(loopback_bind_args)

    # Addresses Thespian hands out must be loopback too, or a client cannot reach the admin.
    os.environ["THESPIAN_BASE_IPADDR"] = "127.0.0.1"


def join_actor_system(admin_port: int) -> Any:
    """A client handle on a running node's actor system (operators' tools, tests)."""
    from thespian.actors import ActorSystem

    thespian_on_loopback()
    return ActorSystem("multiprocTCPBase", {"Admin Port": admin_port}, transientUnique=True)
