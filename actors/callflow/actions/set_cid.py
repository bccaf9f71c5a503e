"""``set_cid``: the caller id presented to the endpoints bridged next."""

from __future__ import annotations

from typing import Any

from actors.callflow.call import Call

__all__ = ["handle"]


def handle(data: dict[str, Any], call: Call) -> str | None:
    if data.get("caller_id_name"):
        call.caller_id_name = str(data["caller_id_name"])
    if data.get("caller_id_number"):
        call.caller_id_number = str(data["caller_id_number"])
    return "_"
