"""voicemail compose and check (Kazoo's cf_voicemail) with the test as the shard: messages
land in the month database with their audio, hanging up while recording still leaves the
message, PIN and owner logins, listening, saving, deleting, a new greeting."""

from __future__ import annotations

from typing import Any

from actors.callflow.call import ALL_DTMF
from actors.callflow.media import BEEP, message_media
from store import new_doc_id
from store.kazoo import encode_db_name, gregorian_now
from store.voicemail import (
    attachment_name,
    count_messages,
    get_message,
    list_messages,
    message_db,
    new_message_id,
    save_message,
)
from tests.callflow.conftest import FakeShard, Harness, finished, wav


def _box(harness: Harness, **fields: Any) -> str:
    return harness.add_doc("vmbox", {"name": "Box 3001", "mailbox": "3001", **fields})


def _compose(box_id: str) -> dict[str, Any]:
    return {"module": "voicemail", "data": {"id": box_id, "action": "compose"}}


def _check(box_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"action": "check"}
    if box_id:
        data["id"] = box_id
    return {"module": "voicemail", "data": data}


def _leave(harness: Harness, box_id: str, seconds: float = 2.0, age: int = 0) -> str:
    """A message as compose leaves it: audio stored by the shard, then saved."""
    message_id = new_message_id()
    db = message_db(harness.account_id, message_id)
    harness.store.create_db(db, exist_ok=True)
    harness.store.put_attachment(db, message_id, attachment_name(message_id), wav(seconds),
                                 content_type="audio/wav")
    save_message(harness.store, harness.account_id, harness.doc(box_id), message_id,
                 caller_id_number="1002", length_ms=int(seconds * 1000),
                 timestamp=gregorian_now() - age)
    return message_id


def _greeting(shard: FakeShard) -> list[str]:
    msg = shard.played()
    media = msg["Media-Name"]
    return media if isinstance(media, list) else [media]


def test_compose_greeting_beep_record_and_hangup_leaves_the_message(harness: Harness) -> None:
    box_id = _box(harness)
    shard, ref = harness.start_call(_compose(box_id), caller="1002")
    shard.expect("answer")
    assert _greeting(shard) == ["/system_media/vm-person", "/system_media/digits-3",
                                "/system_media/digits-0", "/system_media/digits-0",
                                "/system_media/digits-1", "/system_media/vm-not_available"]
    beep = shard.played()
    assert beep["Media-Name"] == BEEP
    record = shard.record(3.0, hangup=True)  # the caller hangs up while recording
    name = str(record["Media-Name"])
    message_id = name.removesuffix(".wav")
    assert record["Media-Transfer-Destination"] == (
        f"store://{encode_db_name(message_db(harness.account_id, message_id))}/{message_id}")
    assert (record["Time-Limit"], record["Terminators"]) == (500, ["#"])
    finished(ref)
    assert "hangup" not in shard.names()
    message = get_message(harness.store, harness.account_id, message_id, box_id)
    meta = message["metadata"]
    assert (meta["folder"], meta["length"], meta["caller_id_number"], meta["call_id"]) == (
        "new", 3000, "1002", shard.call_id)
    assert meta["from"] == "1002@media.example.com"
    assert count_messages(harness.store, harness.account_id, box_id) == (1, 0)


def test_compose_ended_by_the_pound_key_says_saved_and_goodbye(harness: Harness) -> None:
    greeting_id = harness.add_doc("media", {"name": "my greeting", "media_source": "upload"})
    box_id = _box(harness, media={"unavailable": greeting_id})
    shard, ref = harness.start_call({**_compose(box_id), "data": {
        "id": box_id, "max_message_length": 60}})
    greeting = shard.played("#")  # skipped with #
    assert greeting["Media-Name"] == f"/{encode_db_name(harness.account_db)}/{greeting_id}"
    assert greeting["Terminators"] == ["*", "#"]
    shard.expect("flush_dtmf", skip=("answer", "set"))
    shard.played()  # beep
    record = shard.record(1.5, terminator="#")
    assert record["Time-Limit"] == 60
    assert shard.played()["Media-Name"] == ["/system_media/vm-saved", "/system_media/vm-goodbye"]
    shard.expect("hangup")
    finished(ref)
    assert count_messages(harness.store, harness.account_id, box_id) == (1, 0)


def test_a_recording_that_was_not_stored_is_no_message(harness: Harness) -> None:
    box_id = _box(harness, skip_greeting=True)
    shard, ref = harness.start_call(_compose(box_id))
    shard.played()  # beep
    record = shard.expect("record")
    shard.event("RECORD_STOP", **{"Media-Name": record["Media-Name"], "Length": 200,
                                  "Media-Stored": False, "Reason": "hangup"})
    shard.destroy()
    finished(ref)
    assert list_messages(harness.store, harness.account_id, box_id) == []


def test_the_owner_calling_the_box_checks_it(harness: Harness) -> None:
    owner = new_doc_id()
    box_id = _box(harness, owner_id=owner)
    shard, ref = harness.start_call(_compose(box_id), ccvs={"Owner-ID": owner})
    menu = _greeting(shard)  # no PIN: straight to "no new messages" and the main menu
    assert menu == ["/system_media/vm-no_messages", "/system_media/vm-main_menu"]
    shard.collect("#")
    assert shard.played()["Media-Name"] == "/system_media/vm-goodbye"
    shard.expect("hangup")
    finished(ref)


def _login(shard: FakeShard, pin: str) -> None:
    prompt = shard.played()
    assert prompt["Media-Name"] == "/system_media/vm-enter_pass"
    assert prompt["Terminators"] == list(ALL_DTMF)
    collect = shard.collect(pin, terminator="#")
    assert (collect["Maximum-Digits"], collect["Terminators"]) == (15, ["#"])


def test_check_pin_listen_save_delete(harness: Harness) -> None:
    box_id = _box(harness, pin="4321")
    first = _leave(harness, box_id, 2.0, age=60)
    second = _leave(harness, box_id, 1.0)
    shard, ref = harness.start_call(_check(box_id))
    _login(shard, "1111")
    assert shard.played()["Media-Name"] == "/system_media/vm-fail_auth"
    _login(shard, "4321")
    menu = _greeting(shard)
    assert menu == ["/system_media/vm-you_have", "/system_media/digits-2",
                    "/system_media/vm-new_messages", "/system_media/vm-main_menu"]
    shard.collect("1")
    # newest first (Kazoo's default): the second message, its number said first
    message = _greeting(shard)
    assert message == ["/system_media/vm-message_number", "/system_media/digits-1",
                       message_media(harness.account_id, second)]
    # played to its end: the message menu, stopped by 7 (delete)
    assert shard.played("7")["Media-Name"] == "/system_media/vm-message_menu"
    shard.collect("7")
    assert shard.played()["Media-Name"] == "/system_media/vm-deleted"
    shard.played("2")  # the first message, stopped by 2 (save)
    shard.collect("2")  # the key that stopped it: no menu prompt
    assert shard.played()["Media-Name"] == "/system_media/vm-saved"
    assert shard.played()["Media-Name"] == "/system_media/vm-no_more_messages"
    assert _greeting(shard) == ["/system_media/vm-main_menu"]
    shard.collect("#")
    shard.played()  # goodbye
    shard.expect("hangup")
    finished(ref)
    folders = {m["_id"]: m["metadata"]["folder"] for m in list_messages(
        harness.store, harness.account_id, box_id, include_deleted=True)}
    assert folders == {first: "saved", second: "deleted"}


def test_a_listened_message_is_saved_and_saved_ones_are_listed(harness: Harness) -> None:
    box_id = _box(harness, pin="4321")
    message_id = _leave(harness, box_id)
    shard, ref = harness.start_call(_check(box_id))
    _login(shard, "4321")
    shard.played()
    shard.collect("1")
    shard.played()  # the message, to its end
    shard.played()  # the message menu
    shard.collect("6")  # next: none left
    shard.played()  # no more messages
    assert _greeting(shard) == ["/system_media/vm-main_menu"]
    shard.collect("2")
    saved = _greeting(shard)
    assert saved[-1] == message_media(harness.account_id, message_id)
    shard.destroy()
    finished(ref)
    assert count_messages(harness.store, harness.account_id, box_id) == (0, 1)


def test_three_wrong_pins_abort(harness: Harness) -> None:
    box_id = _box(harness, pin="4321")
    shard, ref = harness.start_call(_check(box_id))
    for _ in range(3):
        _login(shard, "0000")
        shard.played()  # fail_auth
    assert shard.played()["Media-Name"] == "/system_media/vm-abort"
    shard.expect("hangup")
    finished(ref)


def test_a_box_without_pin_refuses_strangers(harness: Harness) -> None:
    box_id = _box(harness, owner_id=new_doc_id())
    shard, ref = harness.start_call(_check(box_id), ccvs={"Owner-ID": new_doc_id()})
    assert shard.played()["Media-Name"] == "/system_media/vm-abort"
    shard.expect("hangup")
    finished(ref)


def test_check_without_id_asks_for_the_mailbox(harness: Harness) -> None:
    _box(harness, pin="4321")
    shard, ref = harness.start_call(_check())
    assert shard.played()["Media-Name"] == "/system_media/vm-enter_id"
    shard.collect("3001", terminator="#")
    _login(shard, "4321")
    shard.played()
    shard.collect("#")
    shard.played()
    shard.expect("hangup")
    finished(ref)


def test_settings_record_a_new_greeting_and_change_the_pin(harness: Harness) -> None:
    owner = new_doc_id()
    box_id = _box(harness, owner_id=owner, pin="4321")
    shard, ref = harness.start_call(_check(box_id), ccvs={"Owner-ID": owner})
    shard.played()
    shard.collect("5")
    assert _greeting(shard) == ["/system_media/vm-settings_menu"]
    shard.collect("1")
    assert shard.played()["Media-Name"] == "/system_media/vm-record_greeting"
    assert shard.played()["Media-Name"] == BEEP
    record = shard.record(2.0, terminator="#")
    media_id = str(record["Media-Transfer-Destination"]).rsplit("/", 1)[1]
    review = _greeting(shard)
    assert review == [f"/{encode_db_name(harness.account_db)}/{media_id}",
                      "/system_media/vm-greeting_saved"]
    shard.played()  # settings menu
    shard.collect("3")
    assert shard.played()["Media-Name"] == "/system_media/vm-enter_new_pin"
    shard.collect("98765", terminator="#")
    shard.played()
    shard.collect("98765", terminator="#")
    assert shard.played()["Media-Name"] == "/system_media/vm-pin_set"
    shard.played()
    shard.collect("0")
    shard.played()  # main menu
    shard.collect("#")
    shard.played()
    shard.expect("hangup")
    finished(ref)
    box = harness.doc(box_id)
    assert box["media"]["unavailable"] == media_id and box["pin"] == "98765"
    media = harness.doc(media_id)
    assert (media["pvt_type"], media["media_source"], media["source_id"]) == (
        "media", "recording", box_id)
    assert f"{media_id}.wav" in media["_attachments"]


def test_a_full_box_takes_no_message(harness: Harness) -> None:
    box_id = _box(harness, max_message_count=1)
    _leave(harness, box_id)
    shard, ref = harness.start_call(_compose(box_id))
    assert _greeting(shard) == ["/system_media/vm-mailbox_full", "/system_media/vm-goodbye"]
    shard.expect("hangup")
    finished(ref)
    assert "record" not in shard.names()


def test_star_during_the_greeting_logs_in_to_the_box(harness: Harness) -> None:
    box_id = _box(harness, pin="4321")
    shard, ref = harness.start_call(_compose(box_id))
    shard.played("*")
    shard.expect("flush_dtmf", skip=("answer", "set"))
    _login(shard, "4321")
    assert _greeting(shard) == ["/system_media/vm-no_messages", "/system_media/vm-main_menu"]
    shard.destroy()
    finished(ref)
    assert "record" not in shard.names()
