"""Document-change notifications on the bus, as Kazoo's crossbar publishes them after writes:
``doc_created|doc_edited|doc_deleted`` on the ``configuration`` exchange, routing key
``<event>.<db>.<type>.<id>``. Other apps flush their caches and webhooks fire on them.

A notification that cannot be published is logged, never turned into an API error: the write
already happened, and Kazoo's publish is fire-and-forget too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from bus import Binding, Bus, BusError, Consumer, Delivery, Message
from bus.api import conf
from store.kazoo import encode_db_name

__all__ = ["BusNotifier", "Notifier", "NullNotifier", "RecordingNotifier", "follow_changes"]

log = logging.getLogger("mirliton.crossbar")


class Notifier(Protocol):
    def notify(self, event: str, db: str, doc: dict[str, Any]) -> None: ...


class NullNotifier:
    def notify(self, event: str, db: str, doc: dict[str, Any]) -> None:
        return None


class RecordingNotifier:
    """Keeps what would have been published (for tests and benchmarks without a bus)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def notify(self, event: str, db: str, doc: dict[str, Any]) -> None:
        self.events.append((event, db, doc))


class BusNotifier:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def notify(self, event: str, db: str, doc: dict[str, Any]) -> None:
        fields: dict[str, Any] = {
            "ID": doc["_id"],
            "Database": encode_db_name(db),
            "Type": str(doc.get("pvt_type") or "unknown"),
            "Rev": doc.get("_rev"),
            "Date-Created": doc.get("pvt_created"),
            "Date-Modified": doc.get("pvt_modified"),
            "Is-Soft-Deleted": True if event == "doc_deleted" else None,
        }
        account_id = doc.get("pvt_account_id")
        if isinstance(account_id, str):
            fields["Account-ID"] = account_id
        try:
            msg = conf.doc_change[event].build({k: v for k, v in fields.items() if v is not None})
            self.bus.publish(msg)
        except BusError:
            log.warning("could not publish %s for %s/%s", event, db, doc.get("_id"), exc_info=True)


def follow_changes(bus: Bus, forget: Callable[[str], None]) -> Consumer:
    """Call ``forget(doc_id)`` for every account or user document edited or deleted anywhere in
    the cluster (through this node's API or another's), so that cached accounts and users (what
    every request's authorization reads) never outlive a change."""

    def on_change(msg: Message, _delivery: Delivery) -> None:
        forget(str(msg["ID"]))

    return bus.consume(
        [
            Binding("configuration", f"{event}.*.{doc_type}.*")
            for event in ("doc_edited", "doc_deleted")
            for doc_type in ("account", "user")
        ],
        on_change,
    )
