"""Voicemail messages in the month databases (store/voicemail.py), on both backends."""

from __future__ import annotations

import pytest

from store import NotFound, Store
from store.kazoo import account_db_name, encode_db_name, modb_name, new_account_id
from store.voicemail import (
    attachment_name,
    count_messages,
    delete_message,
    get_message,
    list_messages,
    message_audio,
    message_db,
    new_message_id,
    save_message,
    set_folder,
)

WAV = b"RIFF$\x00\x00\x00WAVEfmt " + bytes(36)


def _record(store: Store, account: str, message_id: str) -> None:
    """What the calls shard does when a recording ends: the audio creates the document."""
    db = message_db(account, message_id)
    store.create_db(db, exist_ok=True)
    store.put_attachment(db, message_id, attachment_name(message_id), WAV,
                         content_type="audio/wav")


def test_a_message_is_listed_counted_moved_and_deleted(store: Store) -> None:
    account = new_account_id()
    box = {"_id": "b" * 32, "mailbox": "3001"}
    first, second = new_message_id(), new_message_id()
    for message_id in (first, second):
        _record(store, account, message_id)
        save_message(store, account, box, message_id, caller_id_number="1001",
                     caller_id_name="Alice", call_id="c-" + message_id, length_ms=3000)
    assert message_db(account, first) == modb_name(account)
    doc = get_message(store, account, first, box["_id"])
    assert doc["pvt_type"] == "mailbox_message"
    assert doc["pvt_account_db"] == encode_db_name(account_db_name(account))
    assert doc["metadata"]["folder"] == "new" and doc["metadata"]["length"] == 3000
    assert {d["_id"] for d in list_messages(store, account, box["_id"])} == {first, second}
    assert count_messages(store, account, box["_id"]) == (2, 0)

    set_folder(store, account, first, "saved", box["_id"])
    assert count_messages(store, account, box["_id"]) == (1, 1)
    assert [d["_id"] for d in list_messages(store, account, box["_id"], folder="saved")] == [first]

    delete_message(store, account, second, vmbox_id=box["_id"])
    assert [d["_id"] for d in list_messages(store, account, box["_id"])] == [first]
    assert len(list_messages(store, account, box["_id"], include_deleted=True)) == 2
    delete_message(store, account, second, vmbox_id=box["_id"], hard=True)
    with pytest.raises(NotFound):
        get_message(store, account, second)

    data, content_type = message_audio(store, account, first, box["_id"])
    assert data == WAV and content_type == "audio/wav"


def test_audio_without_metadata_is_no_message(store: Store) -> None:
    """A recording whose caller never got its metadata written (a killed callflow) is not
    listed and cannot be fetched as a message."""
    account = new_account_id()
    box = {"_id": "c" * 32, "mailbox": "3002"}
    orphan = new_message_id()
    _record(store, account, orphan)
    assert list_messages(store, account, box["_id"]) == []
    with pytest.raises(NotFound):
        get_message(store, account, orphan)


def test_metadata_without_audio_is_refused(store: Store) -> None:
    account = new_account_id()
    message_id = new_message_id()
    store.create_db(message_db(account, message_id), exist_ok=True)
    store.put(message_db(account, message_id), {"_id": message_id})
    with pytest.raises(NotFound):
        save_message(store, account, {"_id": "d" * 32, "mailbox": "1"}, message_id)


def test_message_ids_from_another_box_or_malformed_are_not_found(store: Store) -> None:
    account = new_account_id()
    box = {"_id": "e" * 32, "mailbox": "3003"}
    message_id = new_message_id()
    _record(store, account, message_id)
    save_message(store, account, box, message_id)
    with pytest.raises(NotFound):
        get_message(store, account, message_id, "f" * 32)
    with pytest.raises(NotFound):
        get_message(store, account, "not-a-message")
