"""``ring_group``: ring ``endpoints`` (devices, users, groups, each with its own ``delay`` and
``timeout``) simultaneously (first answer wins, the others are cancelled) or one after the
other (``strategy: single``), the whole group ``repeats`` times; ``timeout`` (default 20)
bounds a simultaneous round."""

from __future__ import annotations

from typing import Any

from actors.callflow.call import Call
from actors.callflow.endpoints import endpoints_for

__all__ = ["handle"]


def handle(data: dict[str, Any], call: Call) -> str | None:
    strategy = str(data.get("strategy") or "simultaneous")
    if strategy not in ("simultaneous", "single"):
        strategy = "simultaneous"  # weighted_random rings like simultaneous here
    group_timeout = float(data.get("timeout") or 20)
    endpoints: list[dict[str, Any]] = []
    for member in data.get("endpoints") or []:
        if not isinstance(member, dict) or not member.get("id"):
            continue
        endpoints.extend(endpoints_for(
            call, str(member.get("endpoint_type") or "device"), str(member["id"]),
            timeout=float(member.get("timeout") or group_timeout),
            delay=float(member.get("delay") or 0)))
    result = None
    for _ in range(max(1, int(data.get("repeats") or 1))):
        result = call.bridge(endpoints, strategy=strategy,
                             timeout=group_timeout if strategy == "simultaneous" else None)
        if result.ok:
            return None
    assert result is not None
    return result.sip_code or "_"
