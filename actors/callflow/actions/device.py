"""``device``: ring one device (``data.id``) for ``timeout`` seconds (default 20) after
``delay``; on failure the branch ``sip:<code>`` if the tree has it, else ``"_"``."""

from __future__ import annotations

from typing import Any

from actors.callflow.call import Call
from actors.callflow.endpoints import device_endpoints

__all__ = ["handle"]


def handle(data: dict[str, Any], call: Call) -> str | None:
    timeout = float(data.get("timeout") or 20)
    endpoints = device_endpoints(call, str(data.get("id") or ""), timeout=timeout,
                                 delay=float(data.get("delay") or 0),
                                 can_call_self=bool(data.get("can_call_self")))
    result = call.bridge(endpoints, timeout=timeout,
                         strategy=str(data.get("dial_strategy") or "simultaneous"))
    if result.ok:
        return None
    return result.sip_code or "_"
