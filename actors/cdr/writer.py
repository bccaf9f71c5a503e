"""CDRs delivered with confirmation (Kazoo's cdr app, made loss-proof).

Every CHANNEL_DESTROY is first written to the local spool, one file per leg under
``data_dir/cdr/spool/`` (written to a temporary name, fsynced, renamed), and only then
acknowledged to the bus. :class:`CdrWriter` moves spooled records into the account's month
database (created on first write) and deletes each spool file once the store took it. While
the store is down it retries with exponential backoff (0.2 s doubling to 30 s); a killed cdr
process finds its spool again when restarted. Writes are idempotent (:mod:`actors.cdr.records`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from actors.cdr.records import cdr_doc, cdr_month
from actors.kernel import Actor, current_call_id
from store import Conflict, Store, StoreError
from store.kazoo import save_to_modb

__all__ = ["CdrSpool", "CdrWriter", "Wake"]

log = logging.getLogger("mirliton.cdr")

CDRS_STORED = Counter("mirliton_cdrs_stored", "CDRs written to account month databases.")
CDRS_SPOOLED = Gauge("mirliton_cdrs_spooled", "CDRs waiting in the local spool.",
                     multiprocess_mode="livesum")
CDR_STORE_ERRORS = Counter("mirliton_cdr_store_errors", "Failed CDR writes (retried).")


@dataclass(frozen=True, slots=True)
class Wake:
    pass


class CdrSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def put(self, event: dict[str, Any]) -> Path:
        name = hashlib.sha1(str(event["Call-ID"]).encode()).hexdigest() + ".json"
        path = self.directory / name
        tmp = self.directory / (name + ".tmp")
        with open(tmp, "wb") as out:
            out.write(json.dumps(event).encode())
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
        return path

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)


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
        pending = self.spool.pending()
        CDRS_SPOOLED.set(len(pending))
        for path in pending:
            try:
                event = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                log.error("unreadable spooled CDR %s dropped: %s", path.name, error)
                path.unlink(missing_ok=True)
                continue
            if not self.store_one(event):
                self.retry_later()
                return
            path.unlink(missing_ok=True)
        self.backoff = 0.0
        CDRS_SPOOLED.set(len(self.spool.pending()))

    def store_one(self, event: dict[str, Any]) -> bool:
        current_call_id.set(str(event.get("Call-ID")))
        found = cdr_doc(event)
        if found is None:
            log.debug("CHANNEL_DESTROY without an account: no CDR")
            return True
        account_id, doc = found
        year, month = cdr_month(event)
        try:
            save_to_modb(self.store, account_id, doc, year=year, month=month)
        except Conflict:
            pass  # written already (a redelivery)
        except StoreError as error:
            CDR_STORE_ERRORS.inc()
            log.warning("CDR not stored yet (%s); retrying", error)
            return False
        CDRS_STORED.inc()
        log.info("CDR stored: %s %s", doc.get("hangup_cause"), doc["_id"])
        return True

    def retry_later(self) -> None:
        self.backoff = min(30.0, max(0.2, self.backoff * 2))
        if not self.scheduled:
            self.scheduled = True
            self.send_after(self.backoff, Wake())
