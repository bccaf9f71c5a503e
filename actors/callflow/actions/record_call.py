"""``record_call``: record both parties of the call (Kazoo's cf_record_call).

``action: start`` creates a ``call_recording`` document in the account's month database
(Kazoo keeps them there) and has the shard record into it (``store://<modb>/<id>``, the WAV
as its attachment ``media_name``, default ``<id>.wav``) for at most ``time_limit`` seconds
(3600). The recording goes on when the callflow moves on or hands the call off to a bridge:
the shard stores it when the call ends. ``action: stop`` stops it and notes its length.
The document is written before the recording starts so that a recording still running when
this executor is gone is still labelled (call, caller, account); a recording that never
started is removed again. Always ``"_"``.
"""

from __future__ import annotations

import logging
from typing import Any

from actors.callflow.call import Call
from actors.callflow.media import store_destination
from store import NotFound, StoreError
from store.kazoo import modb_doc_id, modb_name, save_to_modb, set_pvt_fields, update_doc

__all__ = ["handle"]

log = logging.getLogger("mirliton.callflow.record_call")

KVS_KEY = "record_call"
DEFAULT_TIME_LIMIT = 3600  # s, Kazoo's


def _start(data: dict[str, Any], call: Call) -> None:
    if call.kvs.get(KVS_KEY):
        log.info("record_call: already recording")
        return
    recording_id = modb_doc_id()
    db = modb_name(call.account_id)
    name = str(data.get("media_name") or f"{recording_id}.wav")
    if not name.endswith(".wav"):
        name += ".wav"
    time_limit = int(data.get("time_limit") or DEFAULT_TIME_LIMIT)
    realm = call.realm
    doc = set_pvt_fields({
        "_id": recording_id,
        "name": name,
        "description": f"call recording {call.call_id}",
        "content_type": "audio/wav",
        "media_name": name,
        "media_source": "recorded",
        "media_type": "wav",
        "source_type": "callflow",
        "label": data.get("label") or "",
        "call_id": call.call_id,
        "owner_id": call.ccvs.get("Owner-ID") or "",
        "from": f"{call.caller_id_number}@{realm}",
        "to": f"{call.request_number}@{realm}",
        "caller_id_name": call.caller_id_name,
        "caller_id_number": call.caller_id_number,
        "custom_channel_vars": dict(call.ccvs),
        "time_limit": time_limit,
    }, "call_recording", call.account_id)
    save_to_modb(call.store, call.account_id, doc)
    if call.record_call_start(name, store_destination(db, recording_id), time_limit=time_limit):
        call.kvs[KVS_KEY] = {"id": recording_id, "db": db, "media_name": name}
        log.info("record_call: recording %s started", recording_id)
        return
    log.warning("record_call: the recording did not start")
    try:
        current = call.store.get(db, recording_id)
        if not current.get("_attachments"):
            call.store.delete(db, recording_id, current["_rev"])
    except StoreError as error:
        # An empty call_recording document left behind is harmless, but say so.
        log.warning("record_call: the unused recording document %s stays: %s", recording_id, error)


def _stop(call: Call) -> None:
    active = call.kvs.pop(KVS_KEY, None)
    if not active:
        log.info("record_call: nothing to stop")
        return
    recorded = call.record_call_stop(str(active["media_name"]))
    if recorded is None or not recorded.stored:
        log.info("record_call: recording %s not stored", active["id"])
        return

    def note(doc: dict[str, Any]) -> dict[str, Any]:
        doc["duration_ms"] = recorded.length_ms
        return doc

    try:
        update_doc(call.store, str(active["db"]), str(active["id"]), note)
    except NotFound:
        log.warning("record_call: recording %s vanished", active["id"])
    log.info("record_call: recording %s stored (%d ms)", active["id"], recorded.length_ms)


def handle(data: dict[str, Any], call: Call) -> str | None:
    action = str(data.get("action") or "start")
    if action == "stop":
        _stop(call)
    else:
        _start(data, call)
    return "_"
