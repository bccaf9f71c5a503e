"""Voicemail messages in the account's month databases (Kazoo 4's ``kvm_messages``).

A message is a document of ``pvt_type: mailbox_message`` in the MODB of the month it was left
(``account/ab/cd/<rest>-YYYYMM``), id ``YYYYMM-<32 hex>``, the audio as its attachment
``<id>.wav`` (8 kHz mono 16-bit PCM). ``metadata`` holds what the mailbox menu and the API show
(Kazoo's ``kzd_box_message`` fields): ``timestamp`` (gregorian seconds), ``from``, ``to``,
``caller_id_number``, ``caller_id_name``, ``call_id``, ``folder`` (new | saved | deleted),
``length`` (ms), ``media_id`` (the document id).

The audio is written first: the calls shard that recorded it stores the attachment, which
creates the document; :func:`save_message` then turns it into a message. A shard killed while
recording stores nothing, and a document that never got its metadata is no message (listings
ask for the type), so a broken recording never shows up as a corrupt message.

Listings look at the months of the retention window (:data:`RETENTION_MONTHS`, Kazoo's default
of about three months), newest last.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from store.base import Store
from store.errors import BadRequest, NotFound
from store.kazoo import (
    account_db_name,
    encode_db_name,
    gregorian_now,
    modb_doc_id,
    modb_name,
    update_doc,
)

__all__ = [
    "FOLDERS",
    "MESSAGE_TYPE",
    "RETENTION_MONTHS",
    "attachment_name",
    "count_messages",
    "delete_message",
    "get_message",
    "list_messages",
    "message_audio",
    "message_db",
    "mwi_users",
    "new_message_id",
    "save_message",
    "set_folder",
]

MESSAGE_TYPE = "mailbox_message"
FOLDERS = ("new", "saved", "deleted")
RETENTION_MONTHS = 3
AUDIO_CONTENT_TYPE = "audio/wav"


def new_message_id(year: int | None = None, month: int | None = None) -> str:
    """``YYYYMM-<32 hex>`` for a message left now (or in the given month)."""
    return modb_doc_id(year, month)


def message_db(account_id: str, message_id: str) -> str:
    """The MODB a message lives in, from the month its id starts with."""
    prefix = message_id.split("-", 1)[0]
    if len(prefix) != 6 or not prefix.isdigit() or not 1 <= int(prefix[4:]) <= 12:
        raise NotFound(f"not a voicemail message id: {message_id!r}")
    try:
        return modb_name(account_id, int(prefix[:4]), int(prefix[4:]))
    except BadRequest as error:  # a year out of range: no such month database either
        raise NotFound(f"not a voicemail message id: {message_id!r}") from error


def attachment_name(message_id: str) -> str:
    return f"{message_id}.wav"


def _months(count: int, now: datetime | None = None) -> list[tuple[int, int]]:
    current = now or datetime.now(UTC)
    year, month = current.year, current.month
    out = []
    for _ in range(count):
        out.append((year, month))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out


def save_message(
    store: Store,
    account_id: str,
    vmbox: dict[str, Any],
    message_id: str,
    *,
    caller_id_name: str = "",
    caller_id_number: str = "",
    from_: str = "",
    to: str = "",
    call_id: str = "",
    length_ms: int = 0,
    folder: str = "new",
    timestamp: int | None = None,
) -> dict[str, Any]:
    """Make the document the recording created into a message of ``vmbox`` (NotFound when the
    audio was never stored)."""
    if folder not in FOLDERS:
        raise ValueError(f"unknown folder {folder!r}")
    stamp = gregorian_now() if timestamp is None else timestamp
    mailbox = str(vmbox.get("mailbox") or "")

    def apply(doc: dict[str, Any]) -> dict[str, Any]:
        if attachment_name(message_id) not in (doc.get("_attachments") or {}):
            raise NotFound(f"message {message_id} has no audio")
        when = datetime.fromtimestamp(stamp - 62167219200, UTC)
        doc.update({
            "name": f"mailbox {mailbox} message {when:%m-%d-%Y %H:%M:%S}",
            "description": "voicemail message with media",
            "source_type": "voicemail",
            "source_id": vmbox["_id"],
            "media_source": "recording",
            "media_filename": attachment_name(message_id),
            "streamable": True,
            "content_type": AUDIO_CONTENT_TYPE,
            "utc_seconds": stamp,
            "metadata": {
                "timestamp": stamp, "from": from_, "to": to,
                "caller_id_number": caller_id_number, "caller_id_name": caller_id_name,
                "call_id": call_id, "folder": folder, "length": int(length_ms),
                "media_id": message_id,
            },
            "pvt_type": MESSAGE_TYPE,
            "pvt_account_id": account_id,
            "pvt_account_db": encode_db_name(account_db_name(account_id)),
            "pvt_created": doc.get("pvt_created", stamp),
            "pvt_modified": gregorian_now(),
        })
        return doc

    return update_doc(store, message_db(account_id, message_id), message_id, apply)


def get_message(store: Store, account_id: str, message_id: str,
                vmbox_id: str | None = None) -> dict[str, Any]:
    """The message document; NotFound when missing, not a message, or of another box."""
    doc = store.get(message_db(account_id, message_id), message_id)
    if doc.get("pvt_type") != MESSAGE_TYPE or (vmbox_id and doc.get("source_id") != vmbox_id):
        raise NotFound(f"no voicemail message {message_id}")
    return doc


def list_messages(store: Store, account_id: str, vmbox_id: str, *,
                  folder: str | None = None, include_deleted: bool = False,
                  months: int = RETENTION_MONTHS) -> list[dict[str, Any]]:
    """The box's message documents over the retention window, oldest first; ``folder`` picks
    one folder; deleted messages only when asked for."""
    found: list[dict[str, Any]] = []
    for year, month in _months(months):
        db = modb_name(account_id, year, month)
        if not store.db_exists(db):
            continue
        result = store.find(db, {"pvt_type": MESSAGE_TYPE, "source_id": vmbox_id})
        for doc in result.docs:
            box_folder = (doc.get("metadata") or {}).get("folder", "new")
            if folder is not None and box_folder != folder:
                continue
            if folder is None and box_folder == "deleted" and not include_deleted:
                continue
            found.append(doc)
    found.sort(key=lambda d: ((d.get("metadata") or {}).get("timestamp", 0), d["_id"]))
    return found


def count_messages(store: Store, account_id: str, vmbox_id: str) -> tuple[int, int]:
    """(new, saved): what MWI and "you have N new messages" say."""
    docs = list_messages(store, account_id, vmbox_id)
    new = sum(1 for d in docs if (d.get("metadata") or {}).get("folder", "new") == "new")
    return new, len(docs) - new


def set_folder(store: Store, account_id: str, message_id: str, folder: str,
               vmbox_id: str | None = None) -> dict[str, Any]:
    if folder not in FOLDERS:
        raise ValueError(f"unknown folder {folder!r}")
    get_message(store, account_id, message_id, vmbox_id)

    def apply(doc: dict[str, Any]) -> dict[str, Any]:
        doc.setdefault("metadata", {})["folder"] = folder
        doc["pvt_modified"] = gregorian_now()
        return doc

    return update_doc(store, message_db(account_id, message_id), message_id, apply)


def delete_message(store: Store, account_id: str, message_id: str, *,
                   vmbox_id: str | None = None, hard: bool = False) -> None:
    """Kazoo moves a deleted message to the ``deleted`` folder; ``hard`` removes the document
    and its audio."""
    doc = get_message(store, account_id, message_id, vmbox_id)
    if hard:
        store.delete(message_db(account_id, message_id), message_id, doc["_rev"])
    else:
        set_folder(store, account_id, message_id, "deleted", vmbox_id)


def mwi_users(store: Store, account_id: str, vmbox: dict[str, Any]) -> list[str]:
    """Who a box's message-waiting state goes to (Kazoo's cf_voicemail:update_mwi): the SIP
    usernames of its owner's devices (unless a device turned ``mwi_unsolicited_updates`` off),
    and the mailbox number (a phone may register as it, or subscribe to it)."""
    users: set[str] = set()
    if vmbox.get("mailbox"):
        users.add(str(vmbox["mailbox"]))
    owner_id = vmbox.get("owner_id")
    if owner_id:
        db = account_db_name(account_id)
        # Selecting on pvt_type wants an index of its own (pouchdb-server otherwise answers
        # from another index starting with pvt_type and misses documents); idempotent.
        store.create_index(db, ["pvt_type"], name="by_pvt_type")
        for device in store.find_all(db, {"pvt_type": "device", "owner_id": owner_id}):
            if device.get("pvt_deleted") or device.get("mwi_unsolicited_updates") is False:
                continue
            username = (device.get("sip") or {}).get("username")
            if username:
                users.add(str(username))
    return sorted(users)


def message_audio(store: Store, account_id: str, message_id: str,
                  vmbox_id: str | None = None) -> tuple[bytes, str]:
    """The message's audio (WAV bytes) and content type."""
    get_message(store, account_id, message_id, vmbox_id)
    return store.get_attachment(message_db(account_id, message_id), message_id,
                                attachment_name(message_id))
