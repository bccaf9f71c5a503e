"""CDRs delivered with confirmation (Kazoo's cdr app, made loss-proof).

Every CHANNEL_DESTROY is first appended to the local spool, a journal file
``data_dir/cdr/spool.jsonl``, and made durable with ``fsync`` (run in gevent's thread pool so
the process keeps serving, and shared by every record appended meanwhile: group commit).
:class:`CdrWriter` moves spooled records into the accounts' month databases (created on first
write) in bulk, one ``_bulk_docs`` per database, and appends a ``done`` line for each record
the store took. While the store is down it retries with exponential backoff (0.2 s doubling
to 30 s); a killed cdr process replays the journal when restarted and writes what has no
``done`` line. Writes are idempotent (:mod:`actors.cdr.records`: a conflict means written),
so a ``done`` line lost in a crash only costs a second, refused write. The journal is cut
back to nothing whenever everything in it is done.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import gevent
from gevent.event import Event
from prometheus_client import Counter, Gauge

from actors.cdr.records import cdr_doc, cdr_month
from actors.kernel import Actor, current_call_id
from store import NotFound, Store, StoreError
from store.kazoo import modb_name

__all__ = ["CdrSpool", "CdrWriter", "Wake"]

log = logging.getLogger("mirliton.cdr")

CDRS_STORED = Counter("mirliton_cdrs_stored", "CDRs written to account month databases.")
CDRS_SPOOLED = Gauge("mirliton_cdrs_spooled", "CDRs waiting in the local spool.",
                     multiprocess_mode="livesum")
CDR_STORE_ERRORS = Counter("mirliton_cdr_store_errors", "Failed CDR writes (retried).")

BATCH = 200


@dataclass(frozen=True, slots=True)
class Wake:
    pass


class CdrSpool:
    """The journal: ``{"cdr": event}`` and ``{"done": call_id}`` lines."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "spool.jsonl"
        self.pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._replay()
        self._file: IO[bytes] = open(self.path, "ab")  # noqa: SIM115 - lives with the spool
        self._synced = Event()
        self._synced.set()
        self._syncing = False
        self._dirty = False

    def _replay(self) -> None:
        try:
            with open(self.path, "rb") as journal:
                for line in journal:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a kill
                    if "cdr" in entry:
                        self.pending[str(entry["cdr"].get("Call-ID"))] = entry["cdr"]
                    elif "done" in entry:
                        self.pending.pop(str(entry["done"]), None)
        except FileNotFoundError:
            pass
        if self.pending:
            log.info("cdr spool: %d CDR(s) left by a previous run", len(self.pending))

    def put(self, event: dict[str, Any]) -> None:
        """Append a record and return once it is on disk (fsync, shared with the records
        appended while it ran)."""
        self.pending[str(event["Call-ID"])] = event
        self._file.write(json.dumps({"cdr": event}).encode() + b"\n")
        self._dirty = True
        self.sync()

    def sync(self) -> None:
        while self._dirty:
            if self._syncing:
                self._synced.wait()
                continue
            self._syncing = True
            self._dirty = False
            self._synced.clear()
            try:
                self._file.flush()
                gevent.get_hub().threadpool.apply(os.fsync, (self._file.fileno(),))
            finally:
                self._syncing = False
                self._synced.set()

    def done(self, call_ids: list[str]) -> None:
        for call_id in call_ids:
            self.pending.pop(call_id, None)
            self._file.write(json.dumps({"done": call_id}).encode() + b"\n")
        self._file.flush()
        if not self.pending and self._file.tell() > 1_000_000:
            self._file.truncate(0)
            self._file.seek(0)

    def close(self) -> None:
        self._file.close()


class CdrWriter(Actor):
    def __init__(self, store: Store, spool: CdrSpool) -> None:
        self.store = store
        self.spool = spool
        self.backoff = 0.0
        self.scheduled = False

    def init(self) -> None:
        self.ref.send(Wake())

    def handle_cast(self, msg: Any) -> None:
        if isinstance(msg, Wake):
            self.scheduled = False
            self.drain()

    def drain(self) -> None:
        while self.spool.pending:
            batch = list(self.spool.pending.items())[:BATCH]
            stored = self.store_batch([event for _, event in batch])
            if stored is None:
                self.retry_later()
                break
            self.spool.done([call_id for call_id, _ in batch])
            self.backoff = 0.0
        CDRS_SPOOLED.set(len(self.spool.pending))

    def store_batch(self, events: list[dict[str, Any]]) -> int | None:
        """Write a batch, one bulk write per month database; None when the store failed."""
        by_db: dict[str, tuple[str, int, int, list[dict[str, Any]]]] = {}
        for event in events:
            found = cdr_doc(event)
            if found is None:
                continue  # no account: Kazoo writes no CDR either
            account_id, doc = found
            year, month = cdr_month(event)
            db = modb_name(account_id, year, month)
            by_db.setdefault(db, (account_id, year, month, []))[3].append(doc)
        stored = 0
        # Log lines name the call when the batch is one leg (the usual case); a larger batch
        # logs each refused leg by its CDR id, which holds the Call-ID.
        current_call_id.set(str(events[0].get("Call-ID")) if len(events) == 1 else None)
        try:
            for db, (_, _, _, docs) in by_db.items():
                try:
                    results = self.store.bulk_docs(db, docs)
                except NotFound:
                    self.store.create_db(db, exist_ok=True)  # the month's first CDR
                    results = self.store.bulk_docs(db, docs)
                for result in results:
                    if result.ok or result.error == "conflict":  # conflict: written before
                        stored += 1
                    else:
                        log.error("CDR %s refused by the store: %s", result.id, result.error)
        except StoreError as error:
            CDR_STORE_ERRORS.inc()
            log.warning("%d CDR(s) not stored yet (%s); retrying", len(events), error)
            return None
        CDRS_STORED.inc(stored)
        log.info("%d CDR(s) stored", stored)
        return stored

    def retry_later(self) -> None:
        self.backoff = min(30.0, max(0.2, self.backoff * 2))
        if not self.scheduled:
            self.scheduled = True
            self.send_after(self.backoff, Wake())
