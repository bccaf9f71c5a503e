"""The core of the API on the CouchDB backend (the session's CouchDB-API server): auth, CRUD with
PATCH/POST/DELETE, uniqueness, paging, stale revisions, tenancy and media."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Store, open_store
from store.kazoo import account_db_name
from tests.crossbar.conftest import Tree, build_tree, created, ok
from tests.crossbar.test_api import SAMPLES

pytestmark = pytest.mark.couchdb


@pytest.fixture
def couch_tree(fresh_couchdb_url: str, tmp_path: Path) -> Iterator[Tree]:
    store: Store = open_store(fresh_couchdb_url, tmp_path / "data")
    before = set(store.list_dbs())
    assert "accounts" not in before, "each test leaves the server as it found it"
    try:
        yield build_tree(store)
    finally:
        for db in set(store.list_dbs()) - before:
            store.delete_db(db, missing_ok=True)
        store.close()


def test_couchdb_crud_paging_and_revisions(couch_tree: Tree) -> None:
    tree = couch_tree
    client, base = tree.clients["A"], f"{tree.account_path('A')}/devices"
    device = client.put(base, SAMPLES["devices"]).json
    device_id, first_rev = device["data"]["id"], device["revision"]
    ok(client.patch(f"{base}/{device_id}", {"name": "patched", "sip": {"password": None}}))
    got = ok(client.get(f"{base}/{device_id}"))
    assert got["name"] == "patched" and "password" not in got["sip"] and got["sip"]["username"] == "desk100"
    assert client.post(f"{base}/{device_id}", {"name": "x"}, headers={"If-Match": first_rev}).status_code == 409
    assert client.put(base, {"name": "dup", "sip": {"username": "desk100"}}).status_code == 400
    for i in range(7):
        created(client.put(base, {"name": f"phone {i}"}))
    first = client.get(base, params={"page_size": "5"}).json
    second = client.get(base, params={"page_size": "5", "start_key": first["next_start_key"]}).json
    assert len(first["data"]) == 5 and len(second["data"]) == 3 and "next_start_key" not in second
    assert not {d["id"] for d in first["data"]} & {d["id"] for d in second["data"]}
    ok(client.delete(f"{base}/{device_id}"))
    assert client.get(f"{base}/{device_id}").status_code == 404
    assert tree.store.get(account_db_name(tree.ids["A"]), device_id)["pvt_deleted"] is True
    assert tree.store.open_or_none("sip_auth", device_id) is None


def test_couchdb_tenancy_and_users(couch_tree: Tree) -> None:
    tree = couch_tree
    user = created(tree.clients["B"].put(f"{tree.account_path('B')}/users", SAMPLES["users"]))
    assert "password" not in user
    for method, suffix in (("GET", "/users"), ("GET", f"/users/{user['id']}"), ("DELETE", f"/users/{user['id']}"),
                           ("PATCH", f"/users/{user['id']}"), ("GET", "")):
        data = {"first_name": "x"} if method == "PATCH" else None
        assert tree.clients["A"].request(method, f"{tree.account_path('B')}{suffix}", data).status_code == 403
        assert tree.clients["P"].request("GET", f"{tree.account_path('B')}{suffix}").status_code == 200
    assert ok(tree.clients["B"].get(f"{tree.account_path('B')}/users/{user['id']}"))["first_name"] == "Carol"


def test_couchdb_media_round_trip(couch_tree: Tree) -> None:
    tree = couch_tree
    client, base = tree.clients["A"], f"{tree.account_path('A')}/media"
    media = created(client.put(base, SAMPLES["media"]))
    audio = bytes(range(256)) * 300
    upload = client.request("POST", f"{base}/{media['id']}/raw", body=audio, headers={"Content-Type": "audio/mpeg"})
    assert upload.status_code == 200, upload.text
    assert client.get(f"{base}/{media['id']}/raw").content == audio


def test_couchdb_listing_is_not_hidden_by_the_registrars_index(couch_tree: Tree) -> None:
    tree = couch_tree
    tree.store.create_index(account_db_name(tree.ids["A"]), ["pvt_type", "sip.username"], name="devices_by_sip_username")
    client, base = tree.clients["A"], f"{tree.account_path('A')}/devices"
    plain = created(client.put(base, {"name": "no sip"}))
    with_sip = created(client.put(base, {"name": "sip", "sip": {"username": "idx100"}}))
    assert {d["id"] for d in ok(client.get(base))} == {plain["id"], with_sip["id"]}


def test_couchdb_voicemail_messages(couch_tree: Tree) -> None:
    """Messages in a month database that holds CDRs too: listed by box and folder, moved, hard
    deleted, and their audio byte for byte."""
    from store.kazoo import gregorian_now, save_to_modb
    from tests.crossbar.test_vmbox_messages import leave_message, tone_wav

    tree = couch_tree
    client, base, account = tree.clients["A"], tree.account_path("A"), tree.ids["A"]
    box = created(client.put(f"{base}/vmboxes", {"name": "Box", "mailbox": "3001", "media_extension": "wav"}))
    save_to_modb(tree.store, account, {"call_id": "c1", "timestamp": gregorian_now(), "pvt_type": "cdr"})
    audio = tone_wav(0.5)
    first = leave_message(tree.store, account, box, audio, timestamp=gregorian_now() - 10)
    second = leave_message(tree.store, account, box, audio, caller="1002")
    messages = f"{base}/vmboxes/{box['id']}/messages"
    assert [m["media_id"] for m in ok(client.get(messages))] == [first, second]
    assert ok(client.post(f"{messages}/{first}", {"folder": "saved"}))["folder"] == "saved"
    assert [m["media_id"] for m in ok(client.get(messages, params={"folder": "saved"}))] == [first]
    raw = client.get(f"{messages}/{second}/raw")
    assert raw.status_code == 200 and raw.content == audio and raw.headers["Content-Type"] == "audio/wav"
    ok(client.delete(f"{messages}/{second}", params={"hard": "true"}))
    assert client.get(f"{messages}/{second}").status_code == 404
    assert [m["media_id"] for m in ok(client.get(messages))] == [first]
    assert len(ok(client.get(f"{base}/cdrs"))) == 1
