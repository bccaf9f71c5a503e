"""Write-through of registration bindings to the store, with group commit.

Every change of an AOR's bindings is written before the REGISTER is answered, so a restarted
edge process restores what it had promised (a crash must not unregister every phone). One
document per (node, AOR) in the ``registrations`` database. Writes from all registration
actors go through one :class:`BindingWriter`, which takes every write waiting in its mailbox
and sends them in one ``bulk_docs``: under load a batch carries many registrations for the
cost of one store round trip (and one SQLite commit on the embedded store).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import gevent.event

from actors.kernel import Actor, ReceiveTimeout, on, register
from store import Store, StoreError
from store.kazoo import gregorian_now

__all__ = ["REGISTRATIONS_DB", "WRITER_NAME", "BindingWriter", "WriteBindings", "load_node_bindings"]

log = logging.getLogger("mirliton.edge.persistence")

REGISTRATIONS_DB = "registrations"
WRITER_NAME = "edge.binding_writer"
# A batch never grows beyond this, so one slow write cannot hold thousands of REGISTERs.
MAX_BATCH = 500


@dataclass(frozen=True)
class WriteBindings:
    """Replace the document ``doc_id`` with ``doc`` (None deletes it). ``done`` gets True once
    written, or the StoreError. ``urgent`` False (a refresh that only moves an expiry) may
    wait up to ``BindingWriter.behind`` seconds, to share a commit with other writes."""

    doc_id: str
    doc: dict[str, Any] | None
    urgent: bool = True
    done: gevent.event.AsyncResult = field(default_factory=gevent.event.AsyncResult)


@dataclass(frozen=True)
class _FlushBehind:
    pass


class BindingWriter(Actor):
    def __init__(self, store: Store, behind: float = 0.25) -> None:
        self.store = store
        self.behind = behind
        self.revs: dict[str, str] = {}
        # Written behind, with the next batch; one per AOR (the latest), whatever the rate.
        self.waiting: dict[str, WriteBindings] = {}
        self._flush_armed = False

    def init(self) -> None:
        self.store.create_db(REGISTRATIONS_DB, exist_ok=True)
        register(WRITER_NAME, self.ref)

    @on(WriteBindings)
    def on_write(self, first: WriteBindings) -> None:
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self.receive(WriteBindings, timeout=0))
            except ReceiveTimeout:
                break
        if not any(write.urgent for write in batch):
            for write in batch:
                self.waiting[write.doc_id] = write
            if not self._flush_armed:
                self._flush_armed = True
                self.send_after(self.behind, _FlushBehind())
            return
        self._commit(batch)

    @on(_FlushBehind)
    def on_flush_behind(self, _: _FlushBehind) -> None:
        self._flush_armed = False
        if self.waiting:
            self._commit([])

    def terminate(self, reason: Any) -> None:
        if self.waiting:
            try:
                self._commit([])
            except StoreError:
                pass

    def _commit(self, batch: list[WriteBindings]) -> None:
        # Writes held behind go first: a later write of the same AOR in ``batch`` wins.
        batch = [*self.waiting.values(), *batch]
        self.waiting = {}
        # Several writes of one AOR in a batch: the last one is what the AOR holds now.
        latest: dict[str, WriteBindings] = {}
        for write in batch:
            latest[write.doc_id] = write
        try:
            self._write(list(latest.values()))
        except StoreError as error:
            log.error("writing %d registration documents failed: %s", len(latest), error)
            for write in batch:
                write.done.set_exception(error)
            return
        for write in batch:
            write.done.set(True)

    def _write(self, writes: list[WriteBindings], retry: bool = True) -> None:
        docs: list[dict[str, Any]] = []
        for write in writes:
            rev = self.revs.get(write.doc_id)
            if write.doc is None:
                if rev is None:
                    rev = self._current_rev(write.doc_id)
                    if rev is None:
                        continue  # nothing stored: nothing to delete
                docs.append({"_id": write.doc_id, "_rev": rev, "_deleted": True})
                continue
            doc = {**write.doc, "_id": write.doc_id, "pvt_modified": gregorian_now()}
            if rev is not None:
                doc["_rev"] = rev
            docs.append(doc)
        if not docs:
            return
        results = self.store.bulk_docs(REGISTRATIONS_DB, docs)
        conflicted: list[WriteBindings] = []
        by_id = {w.doc_id: w for w in writes}
        for result in results:
            if result.ok:
                if by_id[result.id].doc is None:
                    self.revs.pop(result.id, None)
                else:
                    self.revs[result.id] = str(result.rev)
            else:
                # Written by an earlier life of this process (restored, or a crash before the
                # rev came back): learn the current rev and write again, once.
                self.revs.pop(result.id, None)
                conflicted.append(by_id[result.id])
        if conflicted:
            if not retry:
                raise StoreError(f"registration documents kept conflicting: {[w.doc_id for w in conflicted]}")
            for write in conflicted:
                rev = self._current_rev(write.doc_id)
                if rev is not None:
                    self.revs[write.doc_id] = rev
            self._write(conflicted, retry=False)

    def _current_rev(self, doc_id: str) -> str | None:
        doc = self.store.open_or_none(REGISTRATIONS_DB, doc_id)
        return None if doc is None else str(doc["_rev"])


def load_node_bindings(store: Store, node: str) -> list[dict[str, Any]]:
    """Every registration document this node wrote (to restore after a restart)."""
    store.create_db(REGISTRATIONS_DB, exist_ok=True)
    return list(store.find_all(REGISTRATIONS_DB, {"pvt_type": "registration", "node": node}))
