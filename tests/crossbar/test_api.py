"""The Crossbar API against the embedded store, in-process: verbs, envelopes, auth, resources,
paging and filters, bad input, metrics."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import jwt
import pytest
from prometheus_client import REGISTRY

from actors.crossbar.auth import load_signing_secret
from store.kazoo import account_db_name, gregorian_now, modb_name, save_to_modb
from tests.crossbar.conftest import Tree, created, login, md5_credentials, ok

# One valid body per account resource; tests/crossbar/test_tenancy.py uses them too.
SAMPLES: dict[str, dict[str, Any]] = {
    "users": {"first_name": "Carol", "last_name": "Jones", "username": "carol", "password": "carol-pw"},
    "devices": {"name": "Desk phone", "device_type": "sip_device", "sip": {"username": "desk100", "password": "s3cret-pw"}},
    "callflows": {"name": "Ext 100", "numbers": ["100"], "flow": {"module": "device", "data": {"id": "d" * 32}}},
    "vmboxes": {"name": "Box 100", "mailbox": "100", "pin": "1234"},
    "media": {"name": "Greeting", "media_source": "upload"},
    "menus": {"name": "Main menu"},
    "temporal_rules": {"name": "Office hours", "cycle": "weekly", "wdays": ["monday"]},
    "groups": {"name": "Sales"},
    "conferences": {"name": "Room 1", "conference_numbers": ["3000"]},
    "webhooks": {"name": "CDR hook", "uri": "https://hooks.example.test/cdr", "hook": "channel_destroy"},
}


def no_private_fields(value: Any) -> bool:
    text = json.dumps(value)
    return '"pvt_' not in text and '"_rev"' not in text and '"_id"' not in text


# -- auth ---------------------------------------------------------------------------------------


def test_user_auth_returns_a_one_hour_jwt_and_kazoo_auth_data(tree: Tree) -> None:
    result = tree.anon.put("/v2/user_auth", {"credentials": md5_credentials("alice", "alice-pw"), "account_name": "Account A"})
    assert result.status_code == 201
    body = result.json
    assert body["status"] == "success" and body["request_id"] and body["revision"]
    assert body["data"]["account_id"] == tree.ids["A"]
    assert body["data"]["owner_id"]
    assert result.headers["X-Auth-Token"] == body["auth_token"]
    claims = jwt.decode(body["auth_token"], load_signing_secret(tree.store), algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["account_id"] == tree.ids["A"] and claims["priv_level"] == "admin"


def test_user_auth_with_sha1_credentials(tree: Tree) -> None:
    sha = hashlib.sha1(b"alice:alice-pw").hexdigest()
    result = tree.anon.put("/v2/user_auth", {"credentials": sha, "method": "sha", "account_realm": "a.example.test"})
    assert result.status_code == 201, result.text


@pytest.mark.parametrize(
    "data, status, error_id",
    [
        ({"credentials": md5_credentials("alice", "wrong"), "account_realm": "a.example.test"}, 401, "invalid_credentials"),
        ({"credentials": md5_credentials("alice", "alice-pw"), "account_realm": "b.example.test"}, 401, "invalid_credentials"),
        ({"credentials": "not-hex", "account_realm": "a.example.test"}, 400, "validation_failed"),
        ({"credentials": md5_credentials("alice", "alice-pw")}, 400, "validation_failed"),
    ],
)
def test_user_auth_refusals(tree: Tree, data: dict[str, Any], status: int, error_id: str) -> None:
    result = tree.anon.put("/v2/user_auth", data)
    assert result.status_code == status
    assert result.json["status"] == "error" and result.json["error_id"] == error_id
    assert result.json["error"] == str(status)


def test_api_auth_with_the_accounts_api_key(tree: Tree) -> None:
    key = ok(tree.clients["A"].get(f"{tree.account_path('A')}/api_key"))["api_key"]
    assert len(key) == 64
    result = tree.anon.put("/v2/api_auth", {"api_key": key})
    assert result.status_code == 201
    token_client = tree.anon.as_token(result.json["auth_token"])
    assert ok(token_client.get(tree.account_path("A")))["id"] == tree.ids["A"]
    assert tree.anon.put("/v2/api_auth", {"api_key": "0" * 64}).status_code == 401


@pytest.mark.parametrize("token", [None, "garbage", "eyJhbGciOiJub25lIn0.e30."])
def test_missing_or_invalid_token_is_401(tree: Tree, token: str | None) -> None:
    result = tree.anon.as_token(token).get(f"{tree.account_path('A')}/devices")
    assert result.status_code == 401
    assert result.json["error_id"] in ("missing_token", "invalid_token")


def test_expired_and_forged_tokens_are_401(tree: Tree) -> None:
    signer = tree.app.service.signer
    old = signer.issue(account_id=tree.ids["A"], owner_id=None, priv_level="admin", superduper=False,
                       method="api_auth", now=time.time() - 7200)
    assert tree.anon.as_token(old).get(tree.account_path("A")).json["error_id"] == "token_expired"
    forged = jwt.encode({"iss": "mirliton", "sub": "x", "iat": int(time.time()), "exp": int(time.time()) + 60,
                         "account_id": tree.ids["A"], "priv_level": "admin", "superduper": True},
                        "not-the-secret-" + "x" * 32, algorithm="HS256")
    assert tree.anon.as_token(forged).get(tree.account_path("A")).status_code == 401


def test_token_of_a_deleted_account_stops_working(tree: Tree) -> None:
    client_a = tree.clients["A"]
    assert client_a.get(tree.account_path("A")).status_code == 200
    ok(tree.clients["P"].delete(tree.account_path("A")))
    result = client_a.get(tree.account_path("A"))
    assert result.status_code == 401


def test_user_level_token_reads_its_account_and_edits_only_itself(tree: Tree) -> None:
    user = created(tree.clients["A"].put(f"{tree.account_path('A')}/users", SAMPLES["users"]))
    carol = tree.anon.as_token(login(tree.anon, "carol", "carol-pw", "a.example.test"))
    assert carol.get(f"{tree.account_path('A')}/devices").status_code == 200
    denied = carol.put(f"{tree.account_path('A')}/devices", SAMPLES["devices"])
    assert denied.status_code == 403 and denied.json["error_id"] == "priv_level_user"
    assert ok(carol.patch(f"{tree.account_path('A')}/users/{user['id']}", {"first_name": "Caroline"}))["first_name"] == "Caroline"
    assert carol.patch(f"{tree.account_path('A')}/users/{user['id']}", {"priv_level": "admin"}).status_code == 403
    assert carol.get(f"{tree.account_path('A')}/api_key").status_code == 403


def _basic(account_id: str, credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{account_id}:{credentials}".encode()).decode()}


def test_basic_auth_on_every_request(tree: Tree) -> None:
    """Kazoo's basic_auth: account id and md5 (or sha1) of username:password, no token."""
    a, b = tree.account_path("A"), tree.account_path("B")
    alice = _basic(tree.ids["A"], md5_credentials("alice", "alice-pw"))
    result = tree.anon.get(f"{a}/devices", headers=alice)
    assert result.status_code == 200 and result.json["status"] == "success"
    assert "auth_token" not in result.json
    assert created(tree.anon.put(f"{a}/devices", SAMPLES["devices"], headers=alice))["name"] == "Desk phone"
    sha = hashlib.sha1(b"alice:alice-pw").hexdigest()
    assert tree.anon.get(a, headers=_basic(tree.ids["A"], sha)).status_code == 200
    # Tenancy as with a token: the sibling is out of reach, the parent's admin reaches it.
    assert tree.anon.get(f"{b}/devices", headers=alice).json["error_id"] == "forbidden"
    paula = _basic(tree.ids["P"], md5_credentials("paula", "paula-pw"))
    assert tree.anon.get(f"{b}/devices", headers=paula).status_code == 200
    for headers in (_basic(tree.ids["A"], md5_credentials("alice", "wrong")),
                    _basic(tree.ids["B"], md5_credentials("alice", "alice-pw")),  # alice is not B's
                    _basic("0" * 32, md5_credentials("alice", "alice-pw")),
                    _basic(tree.ids["A"], "not-hex"),
                    {"Authorization": "Basic %%%"},
                    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}):
        refused = tree.anon.get(f"{a}/devices", headers=headers)
        assert refused.status_code == 401 and refused.json["error_id"] == "invalid_credentials", headers
    # A user-level login is a user-level principal; a disabled user is refused at once.
    user = created(tree.clients["A"].put(f"{a}/users", SAMPLES["users"]))
    carol = _basic(tree.ids["A"], md5_credentials("carol", "carol-pw"))
    assert tree.anon.get(f"{a}/devices", headers=carol).status_code == 200
    assert tree.anon.put(f"{a}/devices", SAMPLES["devices"], headers=carol).json["error_id"] == "priv_level_user"
    ok(tree.clients["A"].patch(f"{a}/users/{user['id']}", {"enabled": False}))
    assert tree.anon.get(f"{a}/devices", headers=carol).status_code == 401
    # A token, when given, is what counts.
    both = {**alice, "X-Auth-Token": "garbage"}
    assert tree.anon.get(f"{a}/devices", headers=both).json["error_id"] == "invalid_token"


# -- verbs and envelopes ----------------------------------------------------------------------


@pytest.mark.parametrize("resource", sorted(SAMPLES))
def test_crud_cycle_of_every_account_resource(tree: Tree, resource: str) -> None:
    client, base = tree.clients["A"], f"{tree.account_path('A')}/{resource}"
    doc = created(client.put(base, SAMPLES[resource]))
    doc_id = doc["id"]
    assert no_private_fields(doc) and "password" not in doc or resource == "devices"
    got = client.get(f"{base}/{doc_id}")
    assert got.status_code == 200 and got.json["revision"].startswith("1-")
    assert got.headers["ETag"] == f'"{got.json["revision"]}"'
    listed = ok(client.get(base))
    assert doc_id in [item["id"] for item in listed]

    patched = client.patch(f"{base}/{doc_id}", {"custom_note": "hello", "name": doc.get("name")} if "name" in doc else {"custom_note": "hello"})
    assert patched.status_code == 200, patched.text
    assert patched.json["data"]["custom_note"] == "hello"
    assert patched.json["revision"].startswith("2-")
    removed = ok(client.patch(f"{base}/{doc_id}", {"custom_note": None}))
    assert "custom_note" not in removed

    replacement = {k: v for k, v in SAMPLES[resource].items() if k != "password"}
    replacement["replaced"] = True
    replaced = ok(client.post(f"{base}/{doc_id}", replacement))
    assert replaced["replaced"] is True

    deleted = client.delete(f"{base}/{doc_id}")
    assert deleted.status_code == 200 and deleted.json["data"]["id"] == doc_id
    assert client.get(f"{base}/{doc_id}").status_code == 404
    assert doc_id not in [item["id"] for item in ok(client.get(base))]
    # Soft delete: the document stays in the account database, flagged.
    stored = tree.store.get(account_db_name(tree.ids["A"]), doc_id)
    assert stored["pvt_deleted"] is True
    events = [(event, doc["_id"]) for event, _db, doc in tree.notifier.events if doc["_id"] == doc_id]
    assert [e for e, _ in events] == ["doc_created", "doc_edited", "doc_edited", "doc_edited", "doc_deleted"]


def test_users_passwords_are_hashed_and_never_returned(tree: Tree) -> None:
    client, base = tree.clients["A"], f"{tree.account_path('A')}/users"
    user = created(client.put(base, SAMPLES["users"]))
    assert "password" not in user and no_private_fields(user)
    stored = tree.store.get(account_db_name(tree.ids["A"]), user["id"])
    assert stored["pvt_password_hash"].startswith("$argon2id$")
    assert stored["pvt_md5_auth"] == md5_credentials("carol", "carol-pw")
    assert stored["pvt_sha1_auth"] == hashlib.sha1(b"carol:carol-pw").hexdigest()
    assert "password" not in stored
    # A new username needs the password again (the credential hashes cover both).
    refused = client.patch(f"{base}/{user['id']}", {"username": "caroline"})
    assert refused.status_code == 400 and "password" in refused.json["data"]
    ok(client.patch(f"{base}/{user['id']}", {"username": "caroline", "password": "new-pw"}))
    login(tree.anon, "caroline", "new-pw", "a.example.test")


def test_devices_are_copied_to_sip_auth_for_the_registrar(tree: Tree) -> None:
    client, base = tree.clients["A"], f"{tree.account_path('A')}/devices"
    device = created(client.put(base, SAMPLES["devices"]))
    copy = tree.store.get("sip_auth", device["id"])
    assert copy["sip"]["username"] == "desk100" and copy["pvt_account_id"] == tree.ids["A"]
    assert copy["pvt_account_realm"] == "a.example.test"
    ok(client.delete(f"{base}/{device['id']}"))
    assert tree.store.open_or_none("sip_auth", device["id"]) is None


def test_accounts_children_descendants_parents_tree(tree: Tree) -> None:
    p = tree.clients["P"]
    children = ok(p.get(f"{tree.account_path('P')}/children"))
    assert sorted(c["id"] for c in children) == sorted([tree.ids["A"], tree.ids["B"]])
    grandchild = created(tree.clients["A"].put(tree.account_path("A"), {"name": "A1", "realm": "a1.example.test"}))
    descendants = ok(p.get(f"{tree.account_path('P')}/descendants"))
    assert grandchild["id"] in {d["id"] for d in descendants}
    assert grandchild["id"] not in {c["id"] for c in ok(p.get(f"{tree.account_path('P')}/children"))}
    # A's admin sees its ancestors only from itself down: none above it.
    parents_for_a = ok(tree.clients["A"].get(f"/v2/accounts/{grandchild['id']}/parents"))
    assert [x["id"] for x in parents_for_a] == [tree.ids["A"]]
    parents_for_system = ok(tree.system.get(f"/v2/accounts/{grandchild['id']}/parents"))
    assert [x["id"] for x in parents_for_system] == [tree.ids["system"], tree.ids["P"], tree.ids["A"]]
    path = ok(tree.system.get(f"/v2/accounts/{grandchild['id']}/tree"))
    assert path == [{"id": tree.ids["system"], "name": "System"}, {"id": tree.ids["P"], "name": "Reseller P"},
                    {"id": tree.ids["A"], "name": "Account A"}]
    assert [x["id"] for x in ok(p.get(f"/v2/accounts/{grandchild['id']}/tree"))] == [tree.ids["P"], tree.ids["A"]]
    # An account with descendants is not deleted.
    refused = p.delete(tree.account_path("A"))
    assert refused.status_code == 409 and refused.json["error_id"] == "account_has_descendants"
    # PUT /v2/accounts creates under the token's own account.
    own_child = created(tree.clients["B"].put("/v2/accounts", {"name": "B1"}))
    assert tree.store.get("accounts", own_child["id"])["pvt_tree"][-1] == tree.ids["B"]
    assert own_child["realm"].endswith(".sip.mirliton.local")


def test_realm_is_unique_and_freed_by_deletion(tree: Tree) -> None:
    p = tree.clients["P"]
    dup = p.put(tree.account_path("P"), {"name": "Dup", "realm": "A.example.test"})
    assert dup.status_code == 400 and "unique" in dup.json["data"]["realm"]
    moved = p.patch(tree.account_path("B"), {"realm": "a.example.test"})
    assert moved.status_code == 400
    ok(p.patch(tree.account_path("B"), {"realm": "b2.example.test"}))
    # B's old realm is free again; the new one is taken.
    created(p.put(tree.account_path("P"), {"name": "Reuse", "realm": "b.example.test"}))
    assert p.put(tree.account_path("P"), {"name": "Again", "realm": "b2.example.test"}).status_code == 400
    ok(p.delete(tree.account_path("B")))
    created(p.put(tree.account_path("P"), {"name": "After delete", "realm": "b2.example.test"}))


def test_callflow_numbers_and_patterns_are_unique_per_account(tree: Tree) -> None:
    base_a = f"{tree.account_path('A')}/callflows"
    first = created(tree.clients["A"].put(base_a, {"numbers": ["100", "101"], "patterns": ["^2\\d\\d$"]}))
    dup_number = tree.clients["A"].put(base_a, {"numbers": ["101"]})
    assert dup_number.status_code == 400
    assert dup_number.json["data"]["numbers"]["unique"]["cause"] == "101"
    dup_pattern = tree.clients["A"].put(base_a, {"patterns": ["^2\\d\\d$"]})
    assert dup_pattern.status_code == 400 and "patterns" in dup_pattern.json["data"]
    # Another account may use the same numbers; the callflow itself may keep its own.
    created(tree.clients["B"].put(f"{tree.account_path('B')}/callflows", {"numbers": ["100"]}))
    ok(tree.clients["A"].post(f"{base_a}/{first['id']}", {"numbers": ["100", "101", "102"]}))
    # Once deleted, its numbers are free.
    ok(tree.clients["A"].delete(f"{base_a}/{first['id']}"))
    created(tree.clients["A"].put(base_a, {"numbers": ["101"]}))


def test_paging_with_opaque_start_keys(tree: Tree) -> None:
    client, base = tree.clients["A"], f"{tree.account_path('A')}/devices"
    ids = {created(client.put(base, {"name": f"phone {i:03d}"}))["id"] for i in range(120)}
    seen: list[str] = []
    sizes = []
    params: dict[str, Any] = {}
    while True:
        body = client.get(base, params=params).json
        seen += [item["id"] for item in body["data"]]
        sizes.append(len(body["data"]))
        if "next_start_key" not in body:
            assert body["page_size"] == len(body["data"])
            break
        assert body["page_size"] == 50
        params = {"start_key": body["next_start_key"]}
    assert sizes == [50, 50, 20]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 120
    small = client.get(base, params={"page_size": "7"}).json
    assert len(small["data"]) == 7 and small["page_size"] == 7
    everything = client.get(base, params={"paginate": "false"}).json
    assert len(everything["data"]) == 120 and "next_start_key" not in everything
    for bad in ({"page_size": "0"}, {"page_size": "x"}, {"start_key": "%%%"}):
        result = client.get(base, params=bad)
        assert result.status_code == 400, bad


def test_kazoo_filters(tree: Tree) -> None:
    client, base = tree.clients["A"], f"{tree.account_path('A')}/devices"
    created(client.put(base, {"name": "one", "device_type": "softphone", "enabled": False}))
    created(client.put(base, {"name": "two", "device_type": "sip_device", "mac_address": "00:11:22:33:44:55"}))
    names = lambda params: sorted(d["name"] for d in ok(client.get(base, params=params)))  # noqa: E731
    assert names({"filter_device_type": "softphone"}) == ["one"]
    assert names({"filter_not_device_type": "softphone"}) == ["two"]
    assert names({"filter_enabled": "false"}) == ["one"]
    assert names({"has_key": "mac_address"}) == ["two"]
    assert names({"key_missing": "mac_address"}) == ["one"]
    assert names({"filter_device_type": "sip_device", "filter_enabled": "true"}) == ["two"]
    assert names({"created_from": str(gregorian_now() - 60)}) == ["one", "two"]
    assert names({"created_to": str(gregorian_now() - 3600)}) == []
    assert client.get(base, params={"filter_pvt_api_key": "x"}).status_code == 400


# -- bad input: 400/404/405/409 in the envelope, nothing half-written ------------------------


def _count_docs(tree: Tree, account: str) -> int:
    return tree.store.db_info(account_db_name(tree.ids[account])).doc_count


def test_bad_json_and_bad_envelopes_write_nothing(tree: Tree) -> None:
    client, base = tree.clients["A"], f"{tree.account_path('A')}/devices"
    before = _count_docs(tree, "A")
    cases = [
        (b"{not json", "invalid_json"),
        (b"", "invalid_envelope"),
        (b"[1, 2]", "invalid_envelope"),
        (b'{"name": "no envelope"}', "invalid_envelope"),
        (b'{"data": "text"}', "invalid_envelope"),
        (b"\xff\xfe", "invalid_json"),
    ]
    for body, error_id in cases:
        result = client.request("PUT", base, body=body, headers={"Content-Type": "application/json"})
        assert result.status_code == 400, body
        assert result.json["status"] == "error" and result.json["error_id"] == error_id, body
    assert _count_docs(tree, "A") == before


def test_wrong_types_are_field_errors_in_kazoo_shape(tree: Tree) -> None:
    client, base = tree.clients["A"], f"{tree.account_path('A')}/devices"
    before = _count_docs(tree, "A")
    result = client.put(base, {"name": 42, "sip": {"username": "x", "expire_seconds": "soon"}, "enabled": "yes"})
    assert result.status_code == 400
    errors = result.json["data"]
    assert errors["name"]["type"]["message"]
    assert errors["sip.username"]["minLength"]["message"] == "String must be at least 2 characters"
    assert "type" in errors["sip.expire_seconds"] and "type" in errors["enabled"]
    missing = client.put(base, {})
    assert missing.json["data"]["name"]["required"]["message"] == "Field is required but missing"
    assert _count_docs(tree, "A") == before


def test_unknown_ids_are_404(tree: Tree) -> None:
    client = tree.clients["A"]
    unknown = "0" * 32
    assert client.get(f"{tree.account_path('A')}/devices/{unknown}").json["error_id"] == "bad_identifier"
    assert client.patch(f"{tree.account_path('A')}/devices/{unknown}", {"name": "x"}).status_code == 404
    assert client.delete(f"{tree.account_path('A')}/users/not-an-id").status_code == 404
    assert client.get(f"/v2/accounts/{unknown}/devices").json["error_id"] == "account_not_found"
    assert client.get(f"{tree.account_path('A')}/nonsense").json["error_id"] == "unknown_route"
    # A device id is not a user id.
    device = created(client.put(f"{tree.account_path('A')}/devices", {"name": "d"}))
    assert client.get(f"{tree.account_path('A')}/users/{device['id']}").status_code == 404


def test_unsupported_verbs_are_405_in_the_envelope(tree: Tree) -> None:
    client = tree.clients["A"]
    result = client.post(f"{tree.account_path('A')}/devices", {"name": "x"})
    assert result.status_code == 405
    assert result.json["error_id"] == "method_not_allowed" and "PUT" in result.headers["Allow"]
    assert client.put(f"{tree.account_path('A')}/cdrs", {"call_id": "x"}).status_code == 405


def test_stale_revision_is_409_and_changes_nothing(tree: Tree) -> None:
    client, base = tree.clients["A"], f"{tree.account_path('A')}/devices"
    device = client.put(base, {"name": "rev test"}).json
    first_rev, device_id = device["revision"], device["data"]["id"]
    ok(client.patch(f"{base}/{device_id}", {"name": "second"}, headers={"If-Match": f'"{first_rev}"'}))
    stale = client.patch(f"{base}/{device_id}", {"name": "third"}, headers={"If-Match": first_rev})
    assert stale.status_code == 409 and stale.json["error_id"] == "stale_revision"
    stale_envelope = client.request("POST", f"{base}/{device_id}", envelope={"data": {"name": "third"}, "revision": first_rev})
    assert stale_envelope.status_code == 409
    assert client.delete(f"{base}/{device_id}", headers={"If-Match": first_rev}).status_code == 409
    assert ok(client.get(f"{base}/{device_id}"))["name"] == "second"


def test_private_fields_in_requests_are_ignored(tree: Tree) -> None:
    client, base = tree.clients["A"], f"{tree.account_path('A')}/devices"
    doc = created(client.put(base, {"name": "x", "pvt_account_id": tree.ids["B"], "_id": "mine", "id": "mine"}))
    stored = tree.store.get(account_db_name(tree.ids["A"]), doc["id"])
    assert stored["pvt_account_id"] == tree.ids["A"] and doc["id"] != "mine"
    patched = ok(tree.clients["A"].patch(tree.account_path("A"), {"pvt_superduper_admin": True, "pvt_tree": []}))
    assert no_private_fields(patched)
    account = tree.store.get("accounts", tree.ids["A"])
    assert account["pvt_superduper_admin"] is False and account["pvt_tree"] == [tree.ids["system"], tree.ids["P"]]


# -- media, cdrs ------------------------------------------------------------------------------


def test_media_audio_upload_and_download(tree: Tree) -> None:
    client, base = tree.clients["A"], f"{tree.account_path('A')}/media"
    media = created(client.put(base, SAMPLES["media"]))
    raw = f"{base}/{media['id']}/raw"
    assert client.get(raw).json["error_id"] == "media_not_uploaded"
    audio = bytes(range(256)) * 1000
    uploaded = client.request("POST", raw, body=audio, headers={"Content-Type": "audio/x-wav"})
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json["data"]["content_type"] == "audio/x-wav"
    assert uploaded.json["data"]["content_length"] == len(audio)
    downloaded = client.get(raw)
    assert downloaded.status_code == 200 and downloaded.content == audio
    assert downloaded.headers["Content-Type"] == "audio/x-wav"
    assert client.request("POST", raw, body=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    # Metadata edits keep the audio.
    ok(client.patch(f"{base}/{media['id']}", {"name": "Renamed"}))
    assert client.get(raw).content == audio


def test_media_audio_byte_ranges(tree: Tree) -> None:
    """What an <audio> element seeking asks for: one range, 206 with Content-Range (spanning
    the store's 64 KiB chunks); past the end 416; anything else the whole audio."""
    client, base = tree.clients["A"], f"{tree.account_path('A')}/media"
    media = created(client.put(base, SAMPLES["media"]))
    raw = f"{base}/{media['id']}/raw"
    audio = bytes(range(256)) * 1000
    ok(client.request("POST", raw, body=audio, headers={"Content-Type": "audio/x-wav"}))
    assert client.get(raw).headers["Accept-Ranges"] == "bytes"
    for header, (first, last) in (("bytes=0-99", (0, 99)), ("bytes=65000-70000", (65000, 70000)),
                                  ("bytes=200000-", (200000, 255999)), ("bytes=-10", (255990, 255999)),
                                  ("bytes=255000-999999", (255000, 255999))):
        part = client.get(raw, headers={"Range": header})
        assert part.status_code == 206, (header, part.text)
        assert part.content == audio[first:last + 1], header
        assert part.headers["Content-Range"] == f"bytes {first}-{last}/{len(audio)}"
        assert part.headers["Content-Length"] == str(last - first + 1)
    past = client.get(raw, headers={"Range": "bytes=256000-"})
    assert past.status_code == 416 and past.json["error_id"] == "range_not_satisfiable"
    assert past.headers["Content-Range"] == f"bytes */{len(audio)}"
    for ignored in ("bytes=0-1,5-9", "bytes=9-1", "items=0-9", "bytes=x-"):
        whole = client.get(raw, headers={"Range": ignored})
        assert whole.status_code == 200 and whole.content == audio, ignored


def test_media_upload_limit(tree: Tree) -> None:
    tree.app.service.max_media_bytes = 1000
    client, base = tree.clients["A"], f"{tree.account_path('A')}/media"
    media = created(client.put(base, SAMPLES["media"]))
    result = client.request("POST", f"{base}/{media['id']}/raw", body=b"x" * 2000, headers={"Content-Type": "audio/mpeg"})
    assert result.status_code == 413 and result.json["error_id"] == "payload_too_large"
    assert client.get(f"{base}/{media['id']}/raw").status_code == 404


def test_cdrs_from_the_month_databases(tree: Tree) -> None:
    account_id = tree.ids["A"]
    now = gregorian_now()
    saved = []
    for i, (year, month) in enumerate(((2026, 10), (2026, 11))):
        doc = {"call_id": f"call-{i}", "timestamp": now - (40 - i * 35) * 86400, "pvt_type": "cdr",
               "pvt_account_id": account_id, "pvt_created": now}
        saved.append(save_to_modb(tree.store, account_id, doc, year=year, month=month))
    recent = {"call_id": "call-now", "timestamp": now - 60, "pvt_type": "cdr", "pvt_created": now}
    saved.append(save_to_modb(tree.store, account_id, recent))
    client, base = tree.clients["A"], f"{tree.account_path('A')}/cdrs"
    default_range = ok(client.get(base))
    assert {c["call_id"] for c in default_range} >= {"call-now"}
    assert "call-0" not in {c["call_id"] for c in default_range}
    window = ok(client.get(base, params={"created_from": str(now - 120), "created_to": str(now)}))
    assert [c["call_id"] for c in window] == ["call-now"]
    assert no_private_fields(window)
    one = ok(client.get(f"{base}/{saved[-1]['_id']}"))
    assert one["call_id"] == "call-now"
    too_wide = client.get(base, params={"created_from": str(now - 40 * 86400), "created_to": str(now)})
    assert too_wide.status_code == 400 and too_wide.json["error_id"] == "range_too_large"
    assert client.get(f"{base}/209901-{'0' * 32}").status_code == 404
    # As the cdr app writes them: id YYYYMM-<Call-ID>, Gregorian timestamp maybe fractional.
    now_month = modb_name(account_id).rsplit("-", 1)[1]
    leg = save_to_modb(tree.store, account_id, {"_id": f"{now_month}-abc.123@10.0.0.1", "call_id": "abc.123@10.0.0.1",
                                                "timestamp": now - 30.5, "pvt_type": "cdr"})
    assert ok(client.get(f"{base}/{leg['_id']}"))["call_id"] == "abc.123@10.0.0.1"
    assert "abc.123@10.0.0.1" in {c["call_id"] for c in ok(client.get(base))}
    assert tree.clients["B"].get(f"{base}/{saved[-1]['_id']}").status_code == 403


# -- live resources without a bus, metrics ----------------------------------------------------


def test_live_resources_without_a_bus_answer_empty_with_a_note(tree: Tree) -> None:
    client = tree.clients["A"]
    for path in ("registrations", "channels"):
        body = client.get(f"{tree.account_path('A')}/{path}").json
        assert body["data"] == [] and "no bus" in body["note"]
    created(client.put(f"{tree.account_path('A')}/devices", SAMPLES["devices"]))
    status = client.get(f"{tree.account_path('A')}/devices/status").json
    assert [item["registered"] for item in status["data"]] == [False]


def test_metrics_label_route_templates_not_paths(tree: Tree) -> None:
    template = "/v2/accounts/{account_id}/devices/{doc_id}"

    def count(code: str) -> float:
        return REGISTRY.get_sample_value(
            "mirliton_http_requests_total", {"route": template, "method": "GET", "code": code}) or 0.0

    before_404, before_200 = count("404"), count("200")
    client = tree.clients["A"]
    device = created(client.put(f"{tree.account_path('A')}/devices", {"name": "m"}))
    client.get(f"{tree.account_path('A')}/devices/{device['id']}")
    client.get(f"{tree.account_path('A')}/devices/{'f' * 32}")
    assert count("200") == before_200 + 1 and count("404") == before_404 + 1
    histogram = REGISTRY.get_sample_value(
        "mirliton_http_request_duration_seconds_count", {"route": template, "method": "GET"})
    assert histogram is not None and histogram >= 2
    client.get("/v2/no/such/route")
    assert REGISTRY.get_sample_value(
        "mirliton_http_requests_total", {"route": "unmatched", "method": "GET", "code": "404"})
    labels = {s.labels.get("route") for m in REGISTRY.collect() if m.name == "mirliton_http_requests" for s in m.samples}
    assert not any(tree.ids["A"] in str(label) for label in labels)


def test_request_id_is_echoed(tree: Tree) -> None:
    result = tree.clients["A"].get(tree.account_path("A"), headers={"X-Request-ID": "req-123"})
    assert result.json["request_id"] == "req-123" and result.headers["X-Request-ID"] == "req-123"
    error = tree.clients["A"].get(f"{tree.account_path('A')}/devices/{'0' * 32}", headers={"X-Request-ID": "req-9"})
    assert error.json["request_id"] == "req-9"


# -- uniqueness claims ------------------------------------------------------------------------


def test_concurrent_creations_of_one_sip_username_let_exactly_one_win(tree: Tree) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client, base = tree.clients["A"], f"{tree.account_path('A')}/devices"
    body = {"name": "racer", "sip": {"username": "race100", "password": "secret-1"}}
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: client.put(base, body).status_code, range(8)))
    assert sorted(statuses) == [201] + [400] * 7
    assert [d["username"] for d in ok(client.get(base)) if d.get("username") == "race100"] == ["race100"]


def test_a_claim_left_by_a_crash_is_taken_over(tree: Tree) -> None:
    db = account_db_name(tree.ids["A"])
    # As if a process died between claiming the number and writing its callflow, a while ago.
    claim = tree.store.put(db, {"_id": "claim:callflows:numbers:555", "pvt_type": "unique_claim",
                                "pvt_owner_id": "f" * 32, "field": "numbers", "value": "555",
                                "pvt_modified": gregorian_now()})
    # Fresh, it is a write in progress: the number is taken.
    assert tree.clients["A"].put(f"{tree.account_path('A')}/callflows", {"numbers": ["555"]}).status_code == 400
    tree.store.put(db, {**claim, "pvt_modified": gregorian_now() - 3600})
    flow = created(tree.clients["A"].put(f"{tree.account_path('A')}/callflows", {"numbers": ["555"]}))
    assert tree.store.get(db, "claim:callflows:numbers:555")["pvt_owner_id"] == flow["id"]
    # A value given up by an edit is free again, and the claim goes with it.
    ok(tree.clients["A"].post(f"{tree.account_path('A')}/callflows/{flow['id']}", {"numbers": ["556"]}))
    assert tree.store.open_or_none(db, "claim:callflows:numbers:555") is None
    created(tree.clients["A"].put(f"{tree.account_path('A')}/callflows", {"numbers": ["555"]}))


def test_token_in_the_envelope_and_verb_tunnelling(tree: Tree) -> None:
    anonymous, base = tree.anon, f"{tree.account_path('A')}/devices"
    token = str(tree.clients["A"].token)
    device = anonymous.request("PUT", base, envelope={"data": {"name": "enveloped"}, "auth_token": token})
    assert device.status_code == 201, device.text
    device_id = device.json["data"]["id"]
    tunnelled = anonymous.request("POST", f"{base}/{device_id}", params={"verb": "PATCH"},
                                  envelope={"data": {"name": "tunnelled"}, "auth_token": token})
    assert tunnelled.status_code == 200 and tunnelled.json["data"]["name"] == "tunnelled"
    deleted = tree.clients["A"].request("POST", f"{base}/{device_id}", params={"verb": "DELETE"})
    assert deleted.status_code == 200
    assert tree.clients["A"].get(f"{base}/{device_id}").status_code == 404
    assert anonymous.request("PUT", base, envelope={"data": {"name": "x"}, "auth_token": "bad"}).status_code == 401


def test_an_unavailable_store_is_503_in_the_envelope(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    from store import StoreUnavailable

    client = tree.clients["A"]
    device = created(client.put(f"{tree.account_path('A')}/devices", {"name": "d"}))

    def down(*_args: Any, **_kw: Any) -> Any:
        raise StoreUnavailable("connection refused", retry_after=2.0)

    monkeypatch.setattr(tree.store, "get", down)
    result = client.get(f"{tree.account_path('A')}/devices/{device['id']}")
    assert result.status_code == 503
    assert result.json["status"] == "error" and result.json["error_id"] == "service_unavailable"
    assert result.headers["Retry-After"] == "2"


def test_deleting_disabling_or_demoting_a_user_takes_effect_at_once(tree: Tree) -> None:
    admin, users = tree.clients["A"], f"{tree.account_path('A')}/users"
    carol = created(admin.put(users, {**SAMPLES["users"], "priv_level": "admin"}))
    token = tree.anon.as_token(login(tree.anon, "carol", "carol-pw", "a.example.test"))
    assert token.put(f"{tree.account_path('A')}/devices", {"name": "by carol"}).status_code == 201
    ok(admin.patch(f"{users}/{carol['id']}", {"priv_level": "user"}))
    demoted = token.put(f"{tree.account_path('A')}/devices", {"name": "by carol"})
    assert demoted.status_code == 403 and demoted.json["error_id"] == "priv_level_user"
    ok(admin.patch(f"{users}/{carol['id']}", {"enabled": False}))
    assert token.get(tree.account_path("A")).json["error_id"] == "user_disabled"
    ok(admin.patch(f"{users}/{carol['id']}", {"enabled": True}))
    assert token.get(tree.account_path("A")).status_code == 200
    ok(admin.delete(f"{users}/{carol['id']}"))
    gone = token.get(tree.account_path("A"))
    assert gone.status_code == 401 and gone.json["error_id"] == "invalid_token"


def test_devices_created_here_are_found_by_the_registrars_lookup(tree: Tree) -> None:
    from actors.registrar.devices import find_device

    device = created(tree.clients["A"].put(f"{tree.account_path('A')}/devices",
                                           {"name": "Mixed case", "sip": {"username": "Desk200", "password": "secret-2"}}))
    assert device["sip"]["username"] == "desk200"
    found = find_device(tree.store, account_db_name(tree.ids["A"]), "DESK200")
    assert found is not None and found["_id"] == device["id"]
    # Same username in another case is the same username.
    dup = tree.clients["A"].put(f"{tree.account_path('A')}/devices", {"name": "dup", "sip": {"username": "DESK200"}})
    assert dup.status_code == 400


def test_listings_see_documents_whatever_other_indexes_exist(tree: Tree) -> None:
    # The registrar's compound index must not hide devices without a SIP username.
    tree.store.create_index(account_db_name(tree.ids["A"]), ["pvt_type", "sip.username"], name="devices_by_sip_username")
    client, base = tree.clients["A"], f"{tree.account_path('A')}/devices"
    plain = created(client.put(base, {"name": "no sip"}))
    with_sip = created(client.put(base, {"name": "sip", "sip": {"username": "idx100"}}))
    assert {d["id"] for d in ok(client.get(base))} == {plain["id"], with_sip["id"]}
