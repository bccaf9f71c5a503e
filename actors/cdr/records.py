"""CHANNEL_DESTROY -> a Kazoo CDR document (cdr_channel_destroy / kzd_cdrs).

The document id is ``YYYYMM-<call-id>`` in the account's month database for the month the leg
ended, so writing the same leg twice (a redelivered event, a retry after a timeout whose write
did land) is idempotent: the second write conflicts and counts as done.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["GREGORIAN_EPOCH_OFFSET", "cdr_doc", "cdr_month"]

GREGORIAN_EPOCH_OFFSET = 62167219200

_FIELDS = (
    ("Call-ID", "call_id"),
    ("Other-Leg-Call-ID", "other_leg_call_id"),
    ("Call-Direction", "call_direction"),
    ("Caller-ID-Name", "caller_id_name"),
    ("Caller-ID-Number", "caller_id_number"),
    ("Callee-ID-Name", "callee_id_name"),
    ("Callee-ID-Number", "callee_id_number"),
    ("From", "from"),
    ("To", "to"),
    ("Request", "request"),
    ("Duration-Seconds", "duration_seconds"),
    ("Billing-Seconds", "billing_seconds"),
    ("Ringing-Seconds", "ringing_seconds"),
    ("Timestamp", "timestamp"),
    ("Hangup-Cause", "hangup_cause"),
    ("Hangup-Code", "hangup_code"),
    ("Disposition", "disposition"),
    ("Node", "node"),
    ("User-Agent", "user_agent"),
    ("App-Name", "app_name"),
    ("App-Version", "app_version"),
)


def cdr_month(event: dict[str, Any]) -> tuple[int, int]:
    timestamp = event.get("Timestamp")
    if isinstance(timestamp, int | float) and timestamp > GREGORIAN_EPOCH_OFFSET:
        when = dt.datetime.fromtimestamp(timestamp - GREGORIAN_EPOCH_OFFSET, dt.UTC)
    else:
        when = dt.datetime.now(dt.UTC)
    return when.year, when.month


def cdr_doc(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(account id, CDR document) of a CHANNEL_DESTROY, or None when it has no account."""
    ccvs = dict(event.get("Custom-Channel-Vars") or {})
    account_id = event.get("Account-ID") or ccvs.get("Account-ID")
    if not account_id:
        return None
    year, month = cdr_month(event)
    doc: dict[str, Any] = {wire_name: event[key] for key, wire_name in _FIELDS
                           if event.get(key) not in (None, "")}
    for name in ("from", "to"):
        if name in doc:
            doc[f"{name}_uri"] = doc[name]
    doc["custom_channel_vars"] = ccvs
    if ccvs.get("Media-Server"):
        doc["media_server"] = ccvs["Media-Server"]
    doc["interaction_id"] = str(event.get("Other-Leg-Call-ID") or event["Call-ID"]) \
        if event.get("Call-Direction") == "outbound" else str(event["Call-ID"])
    now = int(dt.datetime.now(dt.UTC).timestamp()) + GREGORIAN_EPOCH_OFFSET
    doc.update({
        "_id": f"{year:04d}{month:02d}-{event['Call-ID']}",
        "pvt_type": "cdr",
        "pvt_account_id": str(account_id),
        "pvt_created": now,
        "pvt_modified": now,
        "pvt_vsn": 1,
    })
    return str(account_id), doc
