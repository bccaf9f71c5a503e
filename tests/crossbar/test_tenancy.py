"""Tenancy over every route of the route table: a token of account A cannot read, list, change or
delete anything of its sibling B (403, and B's database is byte-for-byte unchanged), while their
parent P's token can. A route added to the table without a decision here fails
``test_every_route_is_covered``."""

from __future__ import annotations

import re
from typing import Any

from falcon import testing

from actors.crossbar.service import ACCOUNT_RESOURCES
from store.kazoo import account_db_name, gregorian_now, save_to_modb
from tests.crossbar.conftest import ApiClient, Tree, created
from tests.crossbar.test_api import SAMPLES
from tests.crossbar.test_vmbox_messages import leave_message, tone_wav

# Routes that name no account: auth, the OpenAPI document, PUT /v2/accounts (which always
# creates under the token's own account) and the system admins' /v2/channels; checked
# separately below.
NOT_ACCOUNT_SCOPED = {"/v2/user_auth", "/v2/api_auth", "/v2/openapi.json", "/v2/accounts", "/v2/channels"}
AUDIO = b"RIFF" + bytes(2000)


def _fixture_ids(tree: Tree, owner: str) -> dict[str, Any]:
    """One document of each kind in ``owner``'s account, a CDR, media with audio and a voicemail
    message."""
    client = tree.clients[owner]
    base = tree.account_path(owner)
    ids: dict[str, str] = {}
    for name in ACCOUNT_RESOURCES:
        ids[name] = created(client.put(f"{base}/{name}", SAMPLES[name]))["id"]
    upload = client.request("POST", f"{base}/media/{ids['media']}/raw", body=AUDIO, headers={"Content-Type": "audio/x-wav"})
    assert upload.status_code == 200, upload.text
    cdr = save_to_modb(tree.store, tree.ids[owner], {"call_id": "c1", "timestamp": gregorian_now(), "pvt_type": "cdr"})
    ids["cdr"] = cdr["_id"]
    box = {"id": ids["vmboxes"], "mailbox": SAMPLES["vmboxes"]["mailbox"]}
    ids["message"] = leave_message(tree.store, tree.ids[owner], box, tone_wav(0.2))
    return ids


def _path(template: str, account_id: str, ids: dict[str, str]) -> str:
    kind = template.split("/")[4] if template.count("/") >= 5 else ""
    values = {
        "account_id": account_id,
        "doc_id": ids.get(kind, ""),
        "cdr_id": ids["cdr"],
        "msg_id": ids["message"],
        "username": "desk100",
        "uuid_": "call-uuid-1",
    }
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], template)


def _body(template: str, method: str, unique: str, ids: dict[str, str]) -> dict[str, Any]:
    if template.endswith("/messages/{msg_id}/raw"):
        # The sample box asks for mp3 (Kazoo's default), which this machine's sox may not write.
        return {"headers": {"Accept": "audio/wav"}}
    if template.endswith("/raw"):
        return {"body": AUDIO, "headers": {"Content-Type": "audio/x-wav"}}
    if method not in ("PUT", "POST", "PATCH"):
        return {}
    if template.endswith("/messages"):
        return {"data": {"messages": [ids["message"]], "folder": "saved"}}
    if template.endswith("/messages/{msg_id}"):
        return {"data": {"folder": "saved"}}
    segments = template.split("/")
    if segments[-1] == "{account_id}" or segments[-1] == "accounts":
        return {"data": {"name": f"Account {unique}", "realm": f"{unique}.example.test"}}
    kind = segments[4] if segments[-1] != "{doc_id}" else segments[-2]
    sample = dict(SAMPLES[kind])
    # Writes by the parent must pass the uniqueness rules too.
    for key, value in (("username", f"user{unique}"), ("mailbox", unique[-6:])):
        if key in sample:
            sample[key] = value
    if "numbers" in sample:
        sample["numbers"] = [unique[-8:]]
    if "conference_numbers" in sample:
        sample["conference_numbers"] = [unique[-8:]]
    if "sip" in sample:
        sample["sip"] = {**sample["sip"], "username": f"u{unique[-10:]}"}
    return {"data": sample}


def _operations(tree: Tree) -> list[tuple[str, str]]:
    ops = [(route.template, method) for route in tree.app.routes for method in route.operations
           if route.template not in NOT_ACCOUNT_SCOPED]
    # Deletes last, deeper paths first (a box's messages before the box), the account's own
    # delete at the very end: they remove what others use.
    return sorted(ops, key=lambda op: (op[1] == "DELETE", op[0] == "/v2/accounts/{account_id}",
                                       -op[0].count("/") if op[1] == "DELETE" else 0))


def _snapshot(tree: Tree, account: str) -> list[tuple[str, str, str]]:
    """Every document revision of the account database and its month databases (CDRs,
    voicemail messages)."""
    db = account_db_name(tree.ids[account])
    out = []
    for name in [db, *tree.store.list_dbs(prefix=db + "-")]:
        out += [(name, row["id"], row["value"]["rev"]) for row in tree.store.all_docs(name)]
    return sorted(out)


def _call(client: ApiClient, method: str, path: str, spec: dict[str, Any]) -> testing.Result:
    if "body" in spec:
        return client.request(method, path, body=spec["body"], headers=spec["headers"])
    return client.request(method, path, spec.get("data"), headers=spec.get("headers"))


def test_every_route_is_covered(tree: Tree) -> None:
    templates = {route.template for route in tree.app.routes}
    assert NOT_ACCOUNT_SCOPED <= templates
    for template in templates - NOT_ACCOUNT_SCOPED:
        assert template.startswith("/v2/accounts/{account_id}"), template


def test_sibling_cannot_touch_anything_and_parent_can(tree: Tree) -> None:
    ids_b = _fixture_ids(tree, "B")
    before = _snapshot(tree, "B")
    assert {ids_b["message"], ids_b["cdr"]} <= {doc_id for _db, doc_id, _rev in before}
    aggregate_before = tree.store.get("accounts", tree.ids["B"])["_rev"]
    checked = 0
    for n, (template, method) in enumerate(_operations(tree)):
        path = _path(template, tree.ids["B"], ids_b)
        result = _call(tree.clients["A"], method, path, _body(template, method, f"a{tree.ids['B'][:6]}{n:04d}", ids_b))
        assert result.status_code == 403, f"A {method} {template}: {result.status_code} {result.text}"
        assert result.json["status"] == "error" and result.json["error_id"] == "forbidden"
        checked += 1
    assert checked >= 50
    assert _snapshot(tree, "B") == before, "a refused request changed B's database"
    assert tree.store.get("accounts", tree.ids["B"])["_rev"] == aggregate_before

    for n, (template, method) in enumerate(_operations(tree)):
        path = _path(template, tree.ids["B"], ids_b)
        if (template, method) == ("/v2/accounts/{account_id}", "DELETE"):
            # The PUT above created a sub-account of B; an account with descendants stays.
            for child in tree.app.service.descendants(tree.ids["B"]):
                assert tree.clients["P"].delete(f"/v2/accounts/{child['_id']}").status_code == 200
        result = _call(tree.clients["P"], method, path, _body(template, method, f"p{tree.ids['B'][:6]}{n:04d}", ids_b))
        if template.endswith("/channels/{uuid_}"):
            # Reached, but there is no such live call.
            assert result.status_code == 404 and result.json["error_id"] == "bad_identifier"
            continue
        assert result.status_code in (200, 201), f"P {method} {template}: {result.status_code} {result.text}"
        if template.endswith("/messages/{msg_id}/raw"):
            assert result.content[:4] == b"RIFF", "the parent got the message's audio"
        if method == "DELETE" and template.endswith("{doc_id}"):
            # Soft-deleted: gone for the API.
            assert tree.clients["P"].get(path).status_code == 404


def test_sibling_cannot_create_under_another_account(tree: Tree) -> None:
    children_before = tree.app.service.descendants(tree.ids["B"])
    result = tree.clients["A"].put(f"{tree.account_path('B')}", {"name": "Intruder"})
    assert result.status_code == 403
    own = created(tree.clients["A"].put("/v2/accounts", {"name": "A child"}))
    assert tree.store.get("accounts", own["id"])["pvt_tree"][-1] == tree.ids["A"]
    assert tree.app.service.descendants(tree.ids["B"]) == children_before


def test_child_cannot_reach_its_parent(tree: Tree) -> None:
    for method, path in (("GET", tree.account_path("P")), ("GET", f"{tree.account_path('P')}/users"),
                         ("GET", f"{tree.account_path('P')}/children"), ("GET", f"{tree.account_path('P')}/api_key"),
                         ("PATCH", tree.account_path("P"))):
        result = tree.clients["A"].request(method, path, {"name": "x"} if method == "PATCH" else None)
        assert result.status_code == 403, (method, path)


def test_system_admin_reaches_every_account(tree: Tree) -> None:
    for name in ("P", "A", "B"):
        assert tree.system.get(f"{tree.account_path(name)}/users").status_code == 200


def test_only_system_admins_list_every_call(tree: Tree) -> None:
    for name in ("P", "A"):
        refused = tree.clients[name].get("/v2/channels")
        assert refused.status_code == 403 and refused.json["error_id"] == "superduper_admin_only"
    assert tree.anon.get("/v2/channels").status_code == 401
    assert tree.system.get("/v2/channels").status_code == 200
