"""The edge: the node's public SIP face (Kazoo's Kamailio as SBC and registrar).

:class:`actors.edge.role.EdgeRole` is the process; guards (:mod:`actors.edge.guards`) and
registration bindings (:mod:`actors.edge.bindings`) are sans-I/O and tested on their own.
"""

from __future__ import annotations

__all__: list[str] = []
