"""Voicemail message routes (Kazoo's ``/vmboxes/{id}/messages[/{msg}[/raw]]``) over messages
stored the way the calls shard stores them (store/voicemail.py): list with folders, read, move,
soft and hard delete, bulk moves, the audio byte-exact as a WAV or in the box's format."""

from __future__ import annotations

import io
import math
import struct
import wave
from typing import Any

import pytest

from actors.crossbar.audio import AudioFormat, convert, sox_formats
from store import Store
from store.kazoo import gregorian_now
from store.voicemail import attachment_name, message_db, new_message_id, save_message
from tests.crossbar.conftest import ApiClient, Tree, created, login, ok


def tone_wav(seconds: float = 1.0, frequency: float = 440.0, rate: int = 8000) -> bytes:
    """A WAV as the calls shard records it: 8 kHz mono 16-bit PCM."""
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * frequency * n / rate)))
                      for n in range(int(seconds * rate)))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def leave_message(store: Store, account_id: str, box: dict[str, Any], audio: bytes, *,
                  caller: str = "1001", timestamp: int | None = None, length_ms: int = 1000) -> str:
    """What a call to the box does: the audio creates the document, then it becomes a message."""
    msg_id = new_message_id()
    db = message_db(account_id, msg_id)
    store.create_db(db, exist_ok=True)
    store.put_attachment(db, msg_id, attachment_name(msg_id), audio, content_type="audio/wav")
    save_message(store, account_id, {"_id": box["id"], "mailbox": box["mailbox"]}, msg_id,
                 caller_id_number=caller, caller_id_name=f"Caller {caller}", call_id=f"call-{msg_id}",
                 from_=f"{caller}@a.example.test", to=f"{box['mailbox']}@a.example.test",
                 length_ms=length_ms, timestamp=timestamp)
    return msg_id


def _box(client: ApiClient, base: str, mailbox: str, **extra: Any) -> dict[str, Any]:
    return created(client.put(f"{base}/vmboxes", {"name": f"Box {mailbox}", "mailbox": mailbox, **extra}))


@pytest.fixture
def audio() -> bytes:
    return tone_wav()


def test_list_read_move_and_delete(tree: Tree, audio: bytes) -> None:
    client, base, account = tree.clients["A"], tree.account_path("A"), tree.ids["A"]
    box, other = _box(client, base, "3001"), _box(client, base, "3002")
    now = gregorian_now()
    first = leave_message(tree.store, account, box, audio, caller="1001", timestamp=now - 60)
    second = leave_message(tree.store, account, box, audio, caller="1002", timestamp=now - 30)
    leave_message(tree.store, account, other, audio)
    messages = f"{base}/vmboxes/{box['id']}/messages"

    listed = client.get(messages).json
    assert listed["status"] == "success" and listed["page_size"] == 2
    assert [m["media_id"] for m in listed["data"]] == [first, second]  # oldest first
    one = listed["data"][0]
    assert one["folder"] == "new" and one["caller_id_number"] == "1001" and one["length"] == 1000
    assert one["timestamp"] == now - 60 and one["call_id"] == f"call-{first}"
    assert not any(k.startswith(("pvt_", "_")) for k in one)

    read = client.get(f"{messages}/{first}")
    assert read.status_code == 200 and read.json["data"] == one and read.json["revision"].startswith("2-")

    moved = client.post(f"{messages}/{first}", {"folder": "saved"})
    assert moved.status_code == 200 and moved.json["data"]["folder"] == "saved"
    assert [m["media_id"] for m in ok(client.get(messages, params={"folder": "saved"}))] == [first]
    assert [m["media_id"] for m in ok(client.get(messages, params={"folder": "new"}))] == [second]
    # Kazoo's ?folder= on a POST without a body.
    assert ok(client.post(f"{messages}/{first}", params={"folder": "new"}))["folder"] == "new"

    # Kazoo 4: a delete moves the message to the deleted folder; listings leave it out.
    deleted = client.delete(f"{messages}/{second}")
    assert deleted.status_code == 200 and deleted.json["data"]["folder"] == "deleted"
    assert [m["media_id"] for m in ok(client.get(messages))] == [first]
    assert [m["media_id"] for m in ok(client.get(messages, params={"folder": "deleted"}))] == [second]
    assert ok(client.get(f"{messages}/{second}"))["folder"] == "deleted"
    # ... and hard=true removes it with its audio.
    assert client.delete(f"{messages}/{second}", params={"hard": "true"}).status_code == 200
    gone = client.get(f"{messages}/{second}")
    assert gone.status_code == 404 and gone.json["error_id"] == "bad_identifier"
    assert client.get(f"{messages}/{second}/raw").status_code == 404
    assert ok(client.get(messages, params={"folder": "deleted"})) == []
    # Changes are announced like every other document's.
    events = [(event, db, doc["metadata"]["folder"]) for event, db, doc in tree.notifier.events
              if doc.get("_id") == second]
    assert events == [("doc_edited", message_db(account, second), "deleted"),
                      ("doc_deleted", message_db(account, second), "deleted")]
    # ... and so is the box's new/saved count (MWI), to the mailbox at the account's realm.
    mwi = [doc for event, _, doc in tree.notifier.events if event == "mwi_update"]
    assert mwi and mwi[-1]["To"].startswith("3001@")
    assert (mwi[-1]["Messages-New"], mwi[-1]["Messages-Saved"]) == (1, 0)  # first is new again

    # Paging as everywhere else.
    page = client.get(messages, params={"page_size": "1", "folder": "new"}).json
    assert [m["media_id"] for m in page["data"]] == [first] and "next_start_key" not in page
    third = leave_message(tree.store, account, box, audio, timestamp=now)
    page = client.get(messages, params={"page_size": "1"}).json
    assert [m["media_id"] for m in page["data"]] == [first] and page["next_start_key"]
    rest = ok(client.get(messages, params={"page_size": "1", "start_key": page["next_start_key"]}))
    assert [m["media_id"] for m in rest] == [third]
    assert [m["media_id"] for m in ok(client.get(messages, params={"filter_caller_id_number": "1001"}))] == [first, third]


def test_unknown_ids_bad_folders_and_other_boxes(tree: Tree, audio: bytes) -> None:
    client, base, account = tree.clients["A"], tree.account_path("A"), tree.ids["A"]
    box, other = _box(client, base, "3001"), _box(client, base, "3002")
    msg = leave_message(tree.store, account, box, audio)
    messages = f"{base}/vmboxes/{box['id']}/messages"
    for path in (f"{messages}/{new_message_id()}",                  # a well-formed id of nothing
                 f"{messages}/{new_message_id(1999, 1)}",          # a month with no database
                 f"{messages}/201313-{'0' * 32}",                  # no such month
                 f"{messages}/not-a-message",
                 f"{base}/vmboxes/{other['id']}/messages/{msg}",  # another box's message
                 f"{base}/vmboxes/{'0' * 32}/messages",
                 f"{base}/vmboxes/{'0' * 32}/messages/{msg}/raw"):
        for method in ("GET", "DELETE") if not path.endswith(("/messages", "/raw")) else ("GET",):
            result = client.request(method, path)
            assert result.status_code == 404, (method, path, result.text)
            assert result.json["status"] == "error" and result.json["error_id"] == "bad_identifier"

    for data in ({"folder": "archive"}, {"folder": 3}, {}):
        result = client.post(f"{messages}/{msg}", data)
        assert result.status_code == 400, result.text
        assert result.json["error_id"] == "validation_failed" and "folder" in result.json["data"]
    assert client.get(messages, params={"folder": "archive"}).json["data"]["folder"]["enum"]["target"] == [
        "new", "saved", "deleted"]
    assert client.post(f"{messages}/{msg}", body=b"{not json", headers={"Content-Type": "application/json"}
                       ).json["error_id"] == "invalid_json"
    bad_hard = client.delete(f"{messages}/{msg}", params={"hard": "yes"})
    assert bad_hard.status_code == 400 and bad_hard.json["error_id"] == "invalid_parameter"
    assert ok(client.get(f"{messages}/{msg}"))["folder"] == "new", "a refused request changed nothing"

    # A deleted box's messages are out of reach.
    assert client.delete(f"{base}/vmboxes/{box['id']}").status_code == 200
    assert client.get(f"{messages}/{msg}").status_code == 404


def test_bulk_move(tree: Tree, audio: bytes) -> None:
    client, base, account = tree.clients["A"], tree.account_path("A"), tree.ids["A"]
    box, other = _box(client, base, "3001"), _box(client, base, "3002")
    ids = [leave_message(tree.store, account, box, audio) for _ in range(3)]
    foreign = leave_message(tree.store, account, other, audio)
    missing = new_message_id()
    messages = f"{base}/vmboxes/{box['id']}/messages"
    result = ok(client.post(messages, {"messages": [*ids[:2], foreign, missing], "folder": "saved"}))
    assert result == {"succeeded": ids[:2], "failed": {foreign: "not_found", missing: "not_found"}}
    assert {m["media_id"] for m in ok(client.get(messages, params={"folder": "saved"}))} == set(ids[:2])
    assert ok(client.get(f"{base}/vmboxes/{other['id']}/messages/{foreign}"))["folder"] == "new"
    bad = client.post(messages, {"messages": "all", "folder": "attic"})
    assert bad.status_code == 400 and set(bad.json["data"]) == {"messages", "folder"}


def test_raw_is_the_stored_wav_byte_for_byte(tree: Tree, audio: bytes) -> None:
    client, base, account = tree.clients["A"], tree.account_path("A"), tree.ids["A"]
    box = _box(client, base, "3001", media_extension="wav")
    msg = leave_message(tree.store, account, box, audio, caller="+15551234")
    raw = client.get(f"{base}/vmboxes/{box['id']}/messages/{msg}/raw")
    assert raw.status_code == 200, raw.text
    assert raw.headers["Content-Type"] == "audio/wav"
    disposition = raw.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="VM_3001_+15551234_') and disposition.endswith('.wav"')
    assert raw.content == audio
    with wave.open(io.BytesIO(raw.content)) as parsed:
        assert (parsed.getnchannels(), parsed.getsampwidth(), parsed.getframerate()) == (1, 2, 8000)
        assert parsed.getnframes() == 8000


def test_raw_byte_ranges(tree: Tree, audio: bytes) -> None:
    client, base, account = tree.clients["A"], tree.account_path("A"), tree.ids["A"]
    box = _box(client, base, "3001", media_extension="wav")
    raw = f"{base}/vmboxes/{box['id']}/messages/{leave_message(tree.store, account, box, audio)}/raw"
    part = client.get(raw, headers={"Range": "bytes=44-"})  # the samples, past the WAV header
    assert part.status_code == 206 and part.content == audio[44:]
    assert part.headers["Content-Range"] == f"bytes 44-{len(audio) - 1}/{len(audio)}"
    assert part.headers["Content-Type"] == "audio/wav"
    refused = client.get(raw, headers={"Range": f"bytes={len(audio)}-"})
    assert refused.status_code == 416 and refused.json["error_id"] == "range_not_satisfiable"


def test_raw_in_the_box_format(tree: Tree, audio: bytes) -> None:
    """Boxes default to Kazoo's mp3: converted by sox when it can write mp3, else a 406 naming
    why (never WAV bytes presented as mp3); a client asking for WAV always gets it."""
    client, base, account = tree.clients["A"], tree.account_path("A"), tree.ids["A"]
    box = _box(client, base, "3001")
    assert box["media_extension"] == "mp3"
    msg = leave_message(tree.store, account, box, audio)
    raw = f"{base}/vmboxes/{box['id']}/messages/{msg}/raw"
    result = client.get(raw)
    if "mp3" in sox_formats():
        assert result.status_code == 200 and result.headers["Content-Type"] == "audio/mpeg"
        # An ID3 tag, or straight an MPEG audio frame (11 sync bits; 8 kHz is MPEG 2.5).
        frame_sync = result.content[0] == 0xFF and result.content[1] & 0xE0 == 0xE0
        assert result.content[:3] == b"ID3" or frame_sync, result.content[:4]
        assert result.headers["Content-Disposition"].endswith('.mp3"')
    else:
        assert result.status_code == 406, result.text
        assert result.json["error_id"] == "media_conversion_unavailable"
        assert result.headers["Content-Type"].startswith("application/json")
    for ask in ({"headers": {"Accept": "audio/wav"}}, {"headers": {"Accept": "application/json;q=0.5, audio/x-wav"}},
                {"params": {"accept": "audio/wav"}}):
        wav = client.get(raw, **ask)
        assert wav.status_code == 200 and wav.content == audio and wav.headers["Content-Type"] == "audio/wav", ask
    refused = client.get(raw, headers={"Accept": "application/json"})
    assert refused.status_code == 406 and refused.json["error_id"] == "not_acceptable"


def test_sox_conversion_path() -> None:
    """The conversion itself, with a format every sox writes (Sun .au)."""
    converted = convert(tone_wav(0.5), AudioFormat("au", "audio/basic", "au"))
    assert converted[:4] == b".snd" and len(converted) > 4000


def test_a_user_reaches_only_the_messages_of_its_own_boxes(tree: Tree, audio: bytes) -> None:
    admin, base, account = tree.clients["A"], tree.account_path("A"), tree.ids["A"]
    users = {}
    for name in ("uma", "vic"):
        users[name] = created(admin.put(f"{base}/users", {"first_name": name, "last_name": "User",
                                                          "username": name, "password": f"{name}-pw"}))
    box = _box(admin, base, "3001", owner_id=users["uma"]["id"], media_extension="wav")
    msg = leave_message(tree.store, account, box, audio)
    messages = f"{base}/vmboxes/{box['id']}/messages"
    uma = tree.anon.as_token(login(tree.anon, "uma", "uma-pw", "a.example.test"))
    vic = tree.anon.as_token(login(tree.anon, "vic", "vic-pw", "a.example.test"))
    assert [m["media_id"] for m in ok(uma.get(messages))] == [msg]
    assert uma.get(f"{messages}/{msg}/raw").content == audio
    assert ok(uma.post(f"{messages}/{msg}", {"folder": "saved"}))["folder"] == "saved"
    for method, path, data in (("GET", messages, None), ("GET", f"{messages}/{msg}", None),
                               ("GET", f"{messages}/{msg}/raw", None),
                               ("POST", f"{messages}/{msg}", {"folder": "new"}),
                               ("DELETE", f"{messages}/{msg}", None)):
        result = vic.request(method, path, data)
        assert result.status_code == 403 and result.json["error_id"] == "priv_level_user", (method, path)
    assert ok(admin.get(f"{messages}/{msg}"))["folder"] == "saved"
