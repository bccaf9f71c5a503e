"""``answer``: answer the call (media inactive until a bridge; anchoring is a later issue)."""

from __future__ import annotations

from typing import Any

from actors.callflow.call import Call

__all__ = ["handle"]


def handle(data: dict[str, Any], call: Call) -> str | None:
    call.answer()
    return "_"
