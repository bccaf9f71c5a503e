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

import gevent
import gevent.queue

from bus import Binding, Bus, BusError, Consumer, Delivery, Message
from bus.api import conf
from store.kazoo import encode_db_name

__all__ = ["BusNotifier", "Notifier", "NullNotifier", "RecordingNotifier", "follow_changes"]

log = logging.getLogger("mirliton.crossbar")


class Notifier(Protocol):
    def notify(self, event: str, db: str, doc: dict[str, Any]) -> None: ...

    def publish(self, msg: Message) -> None:
        """Any other announcement (a built, validated message), in the same order."""


class NullNotifier:
    def notify(self, event: str, db: str, doc: dict[str, Any]) -> None:
        return None

    def publish(self, msg: Message) -> None:
        return None


class RecordingNotifier:
    """Keeps what would have been published (for tests and benchmarks without a bus)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def notify(self, event: str, db: str, doc: dict[str, Any]) -> None:
        self.events.append((event, db, doc))

    def publish(self, msg: Message) -> None:
        self.events.append((str(msg.get("Event-Name")), "", dict(msg)))


class BusNotifier:
    """Publishes on the bus from one greenlet fed by a bounded queue: a request never waits for
    the bus (a broker being reconnected, a slow peer), and one publisher keeps the notifications
    of a document in the order of its writes. When the queue is full (bus stuck), notifications
    are dropped and logged rather than stalling the API."""

    def __init__(self, bus: Bus, *, max_pending: int = 10_000) -> None:
        self.bus = bus
        self.dropped = 0
        self._pending: gevent.queue.Queue[Message] = gevent.queue.Queue(maxsize=max_pending)
        self._publisher = gevent.spawn(self._publish_loop)

    def notify(self, event: str, db: str, doc: dict[str, Any]) -> None:
        fields: dict[str, Any] = {
            "ID": doc["_id"],
            "Database": encode_db_name(db),
            "Type": str(doc.get("pvt_type") or "unknown"),
            "Rev": doc.get("_rev"),
            "Date-Created": doc.get("pvt_created"),
            "Date-Modified": doc.get("pvt_modified"),
            # A soft delete leaves the document with pvt_deleted; a hard one (a voicemail
            # message with hard=true) removes it.
            "Is-Soft-Deleted": bool(doc.get("pvt_deleted")) if event == "doc_deleted" else None,
        }
        account_id = doc.get("pvt_account_id")
        if isinstance(account_id, str):
            fields["Account-ID"] = account_id
        try:
            msg = conf.doc_change[event].build({k: v for k, v in fields.items() if v is not None})
            self._pending.put_nowait(msg)
        except BusError:
            log.warning("invalid %s notification for %s/%s", event, db, doc.get("_id"), exc_info=True)
        except gevent.queue.Full:
            self.dropped += 1
            log.warning("bus notification queue full: dropped %s for %s/%s", event, db, doc.get("_id"))

    def publish(self, msg: Message) -> None:
        try:
            self._pending.put_nowait(msg)
        except gevent.queue.Full:
            self.dropped += 1
            log.warning("bus notification queue full: dropped %s", msg.get("Event-Name"))

    def _publish_loop(self) -> None:
        while True:
            msg = self._pending.get()
            try:
                self.bus.publish(msg)
            except BusError:
                log.warning("could not publish %s for %s", msg.get("Event-Name"), msg.get("ID"), exc_info=True)

    def close(self, timeout: float = 2.0) -> None:
        """Publish what is queued (for up to ``timeout`` seconds), then stop."""
        deadline = gevent.Timeout(timeout, False)
        with deadline:
            while not self._pending.empty():
                gevent.sleep(0.01)
        self._publisher.kill(block=False)


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
