"""The calls role: B2BUA call legs as lightweight actors in shard processes (Kazoo's
FreeSWITCH + ecallmgr). See :mod:`actors.calls.role` and :mod:`actors.calls.legs`."""

from __future__ import annotations

__all__: list[str] = []
