"""Document change notifications (kapi_conf) on ``configuration``:
``doc_created|doc_edited|doc_deleted.<db>.<type>.<id>``. They drive cache invalidation and
webhooks; the store publishes one per write."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.messages import MessageType, declare
from bus.routing import encode_key_word

__all__ = ["DOC_EVENTS", "doc_change", "doc_created", "doc_deleted", "doc_edited"]

DOC_EVENTS = ("doc_created", "doc_edited", "doc_deleted")


def _doc_key(msg: Mapping[str, Any]) -> str:
    return ".".join(
        (
            str(msg["Event-Name"]),
            encode_key_word(msg["Database"]),
            encode_key_word(msg["Type"]),
            encode_key_word(msg["ID"]),
        )
    )


doc_change: dict[str, MessageType] = {
    event: declare(
        MessageType(
            name=event,
            category="configuration",
            event=event,
            exchange="configuration",
            routing_key=_doc_key,
            required=("ID", "Database", "Type"),
            optional=(
                "Rev",
                "Date-Modified",
                "Date-Created",
                "Version",
                "Origin-Cache",
                "Is-Soft-Deleted",
            ),
            types={"ID": str, "Database": str, "Type": str, "Is-Soft-Deleted": bool},
        )
    )
    for event in DOC_EVENTS
}
doc_created = doc_change["doc_created"]
doc_edited = doc_change["doc_edited"]
doc_deleted = doc_change["doc_deleted"]
