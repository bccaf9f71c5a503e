"""What a shard must know to end its calls after it was killed: the dialogs it had up.

Kazoo loses the calls of a FreeSWITCH that dies, and its phones find out when their RTP
stops. A shard does better at almost no cost: every leg appends one line to
``data_dir/run/calls/shard-<n>.dialogs`` when it is answered (what a BYE needs: Call-ID, tags,
URIs, route set, remote target, CSeq) and one when it ends. A shard starting with lines left
by a predecessor that died sends each still-open dialog a BYE (through the edge, like any
in-dialog request), publishes its CHANNEL_DESTROY (``NORMAL_TEMPORARY_FAILURE``, so the CDR
is written) and starts a fresh journal. Writes are plain appends, not fsynced: the journal
only has to survive the death of the process, not of the machine.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any

from protocols.sip import Dialog, DialogState, NameAddr, Request
from protocols.sip.uri import URI

__all__ = ["DialogJournal", "bye_request", "dialog_record", "restore_dialog"]

log = logging.getLogger("mirliton.calls.journal")


def dialog_record(dialog: Dialog) -> dict[str, Any]:
    return {
        "call_id": dialog.call_id,
        "local_tag": dialog.local_tag,
        "remote_tag": dialog.remote_tag,
        "local_uri": str(dialog.local_uri),
        "remote_uri": str(dialog.remote_uri),
        "remote_target": str(dialog.remote_target),
        "route_set": [str(r) for r in dialog.route_set],
        "local_seq": dialog.local_seq,
        "is_uac": dialog.is_uac,
        "local_contact": str(dialog.local_contact) if dialog.local_contact is not None else None,
    }


def restore_dialog(record: dict[str, Any]) -> Dialog:
    contact = record.get("local_contact")
    return Dialog(
        call_id=record["call_id"],
        local_tag=record["local_tag"],
        remote_tag=record["remote_tag"],
        local_uri=NameAddr.parse(record["local_uri"]),
        remote_uri=NameAddr.parse(record["remote_uri"]),
        remote_target=URI.parse(record["remote_target"]),
        route_set=[NameAddr.parse(r) for r in record.get("route_set") or []],
        local_seq=record.get("local_seq"),
        remote_seq=None,
        is_uac=bool(record.get("is_uac")),
        state=DialogState.CONFIRMED,
        local_contact=NameAddr.parse(contact) if contact else None,
    )


class DialogJournal:
    def __init__(self, data_dir: Path | str, shard: int) -> None:
        self.path = Path(data_dir) / "run" / "calls" / f"shard-{shard}.dialogs"
        self._file: IO[str] | None = None

    def take_leftovers(self) -> list[dict[str, Any]]:
        """The dialogs a previous run of this shard left open (and forget the old journal)."""
        open_legs: dict[str, dict[str, Any]] = {}
        try:
            with open(self.path) as journal:
                for line in journal:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by the kill
                    if entry.get("op") == "up":
                        open_legs[entry["leg"]["call_id"]] = entry
                    elif entry.get("op") == "down":
                        open_legs.pop(entry.get("call_id"), None)
        except FileNotFoundError:
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", buffering=1)
        return list(open_legs.values())

    def up(self, dialog: Dialog, event: dict[str, Any]) -> None:
        self._write({"op": "up", "leg": dialog_record(dialog), "event": event, "t": time.time()})

    def down(self, call_id: str) -> None:
        self._write({"op": "down", "call_id": call_id})

    def _write(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(entry) + "\n")
        except (OSError, ValueError) as error:
            log.warning("dialog journal: %s", error)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            os.unlink(self.path)  # a clean stop leaves nothing to clean up
        except OSError:
            pass


def bye_request(dialog: Dialog, via: Any) -> Request:
    return dialog.create_request("BYE", via=via, extra_headers=(("Reason",
                                 'Q.850;cause=41;text="NORMAL_TEMPORARY_FAILURE"'),))
