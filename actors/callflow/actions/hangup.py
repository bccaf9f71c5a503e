"""``hangup``: end the call (``data.hangup_cause``, default NORMAL_CLEARING)."""

from __future__ import annotations

from typing import Any

from actors.callflow.call import Call

__all__ = ["handle"]


def handle(data: dict[str, Any], call: Call) -> str | None:
    call.hangup(str(data.get("hangup_cause") or "NORMAL_CLEARING"))
    return None
