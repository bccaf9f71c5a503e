"""``callflow``: jump to another callflow's tree (``data.id``), e.g. a shared sub-flow."""

from __future__ import annotations

from typing import Any

from actors.callflow.call import Call

__all__ = ["handle"]


def handle(data: dict[str, Any], call: Call) -> str | dict[str, Any] | None:
    doc = call.open_doc(str(data.get("id") or ""))
    if doc is None or not isinstance(doc.get("flow"), dict):
        return "_"
    flow: dict[str, Any] = doc["flow"]
    return flow
