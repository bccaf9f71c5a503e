"""``set_variables``: ``custom_application_vars`` kept with the call and set on its channel."""

from __future__ import annotations

from typing import Any

from actors.callflow.call import Call

__all__ = ["handle"]


def handle(data: dict[str, Any], call: Call) -> str | None:
    values = {str(k): v for k, v in (data.get("custom_application_vars") or {}).items()}
    call.kvs.update(values)
    call.command("set", **{"Custom-Channel-Vars": {}, "Custom-Call-Vars": {},
                           "Custom-Application-Vars": values})
    return "_"
