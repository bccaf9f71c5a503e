"""``user``: ring every device the user (``data.id``) owns, simultaneously or one by one
(``strategy``), for ``timeout`` seconds (default 20); failure branches as ``device``."""

from __future__ import annotations

from typing import Any

from actors.callflow.call import Call
from actors.callflow.endpoints import user_endpoints

__all__ = ["handle"]


def handle(data: dict[str, Any], call: Call) -> str | None:
    timeout = float(data.get("timeout") or 20)
    endpoints = user_endpoints(call, str(data.get("id") or ""), timeout=timeout,
                               delay=float(data.get("delay") or 0),
                               can_call_self=bool(data.get("can_call_self")))
    strategy = str(data.get("strategy") or "simultaneous")
    result = call.bridge(endpoints, timeout=timeout if strategy == "simultaneous" else None,
                         strategy=strategy)
    if result.ok:
        return None
    return result.sip_code or "_"
