"""Declared message types, one module per Kazoo kapi area.

Importing this package registers every type; ``bus.messages.message_type(name)`` finds them by
name and ``bus.messages.lookup(msg)`` by Event-Category/Event-Name.
"""

from __future__ import annotations

from bus.api import authn, call, conf, dialplan, nodes, offnet, presence, registration, route

__all__ = ["authn", "call", "conf", "dialplan", "nodes", "offnet", "presence", "registration", "route"]
