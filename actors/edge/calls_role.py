"""The edge role with call dispatching (:mod:`actors.edge.dispatch`) as a plug-in role
(``node.roles = ["...", "actors.edge.calls_role:CallsEdgeRole"]``): the same tree as
:class:`~actors.edge.role.EdgeRole` with :class:`CallDispatchingSipActor` as its SIP actor.
"""

from __future__ import annotations

from actors.edge.dispatch import CallDispatchingSipActor
from actors.edge.role import EdgeRole
from mirliton.config import Config
from supervisors.core import ChildSpec

__all__ = ["CallsEdgeRole"]


class CallsEdgeRole(EdgeRole):
    def child_specs(self, cfg: Config) -> list[ChildSpec]:
        ctx = self.ctx
        return [
            ChildSpec("sip", lambda: CallDispatchingSipActor(ctx), shutdown=5.0)
            if spec.id == "sip" else spec
            for spec in super().child_specs(cfg)
        ]
