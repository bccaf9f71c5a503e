"""``response``: answer the caller with a SIP code (``data.code``, default 486) and an optional
``message``; the call ends there unless the code is provisional."""

from __future__ import annotations

from typing import Any

from actors.callflow.call import Call

__all__ = ["handle"]


def handle(data: dict[str, Any], call: Call) -> str | None:
    code = int(data.get("code") or 486)
    call.respond(code, data.get("message"))
    if code < 200:
        return "_"
    call.ended = True
    return None
