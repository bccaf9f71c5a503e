"""A real node running the crossbar role (``mirliton start --detach``): the system account
created with the CLI, then a whole small PBX provisioned over HTTP only (account, admin, users,
devices, voicemail boxes, callflows, a ring group, office hours and a menu), and the API's
metrics aggregated by the node's ops endpoint.

Real phones registering with credentials created over HTTP and calling each other: see
tests/crossbar/test_provisioned_call.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from store import open_store
from tests.foundation.nodeutil import Node, free_port, running_node

pytestmark = pytest.mark.slow


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Node, str]]:
    port = free_port()
    yield from ((n, f"http://127.0.0.1:{port}") for n in running_node(
        tmp_path, ["ops", "crossbar"], MIRLITON_HTTP__LISTEN=f"127.0.0.1:{port}"))


def test_provision_a_pbx_over_http_on_a_running_node(node: tuple[Node, str]) -> None:
    running, base_url = node
    assert running.child("crossbar")["state"] == "running"
    # The CLI bootstraps the system account; everything else goes over HTTP.
    made = running.cli("account", "create", "--name", "Operator", "--realm", "operator.example.test",
                       "--username", "root", "--password", "root-pw", "--json")
    system_id = json.loads(made.stdout)["account_id"]
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        auth = http.put("/v2/user_auth", json={"data": {
            "credentials": hashlib.md5(b"root:root-pw").hexdigest(), "account_realm": "operator.example.test"}})
        assert auth.status_code == 201, auth.text
        http.headers["X-Auth-Token"] = auth.json()["auth_token"]

        def put(path: str, data: dict[str, object]) -> dict[str, object]:
            result = http.put(path, json={"data": data})
            assert result.status_code == 201, f"{path}: {result.text}"
            body: dict[str, object] = result.json()["data"]
            return body

        account = put(f"/v2/accounts/{system_id}", {"name": "Acme", "realm": "acme.example.test"})
        acc = f"/v2/accounts/{account['id']}"
        put(f"{acc}/users", {"first_name": "Boss", "last_name": "Acme", "username": "boss",
                             "password": "boss-pw", "priv_level": "admin"})
        # From here on, as Acme's own admin.
        login = http.put("/v2/user_auth", json={"data": {
            "credentials": hashlib.md5(b"boss:boss-pw").hexdigest(), "account_name": "Acme"}})
        assert login.status_code == 201, login.text
        http.headers["X-Auth-Token"] = login.json()["auth_token"]
        devices = []
        for ext in ("100", "101"):
            user = put(f"{acc}/users", {"first_name": f"User{ext}", "last_name": "Acme",
                                        "username": f"user{ext}", "password": f"pw-{ext}"})
            device = put(f"{acc}/devices", {"name": f"Phone {ext}", "owner_id": user["id"], "device_type": "sip_device",
                                            "sip": {"username": f"phone{ext}", "password": f"secret-{ext}"}})
            devices.append(device["id"])
            vmbox = put(f"{acc}/vmboxes", {"name": f"Box {ext}", "mailbox": ext, "owner_id": user["id"]})
            put(f"{acc}/callflows", {"numbers": [ext], "flow": {
                "module": "user", "data": {"id": user["id"], "timeout": 20},
                "children": {"_": {"module": "voicemail", "data": {"id": vmbox["id"]}, "children": {}}}}})
        group = put(f"{acc}/groups", {"name": "Everyone", "endpoints": {d: {"type": "device"} for d in devices}})
        hours = put(f"{acc}/temporal_rules", {"name": "Office hours", "cycle": "weekly",
                                              "wdays": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                                              "time_window_start": 32400, "time_window_stop": 61200})
        menu = put(f"{acc}/menus", {"name": "Main menu"})
        put(f"{acc}/callflows", {"numbers": ["+15550100"], "flow": {
            "module": "temporal_route", "data": {"rules": [hours["id"]]},
            "children": {hours["id"]: {"module": "ring_group", "data": {
                "endpoints": [{"id": group["id"], "endpoint_type": "group"}]}, "children": {}},
                         "_": {"module": "menu", "data": {"id": menu["id"]}, "children": {}}}}})
        listed = http.get(f"{acc}/callflows").json()
        assert sorted(n for cf in listed["data"] for n in cf["numbers"]) == ["+15550100", "100", "101"]
        assert http.get(f"{acc}/registrations").json()["status"] == "success"
        # A user of the account logs in with the credentials created above.
        user_login = http.put("/v2/user_auth", json={"data": {
            "credentials": hashlib.md5(b"user100:pw-100").hexdigest(), "account_realm": "acme.example.test"}})
        assert user_login.status_code == 201 and user_login.json()["data"]["account_id"] == account["id"]
        metrics = httpx.get(f"http://127.0.0.1:{running.ops_port}/metrics", timeout=10.0).text
    assert 'route="/v2/accounts/{account_id}/devices"' in metrics
    assert "mirliton_http_request_duration_seconds_bucket" in metrics
    assert str(account["id"]) not in metrics
    store = open_store("embedded", running.data_dir)
    try:
        # What the registrar will look credentials up in (sip_auth, as Kazoo).
        for device_id, ext in zip(devices, ("100", "101"), strict=True):
            creds = store.get("sip_auth", device_id)
            assert creds["sip"]["username"] == f"phone{ext}" and creds["sip"]["password"] == f"secret-{ext}"
            assert creds["pvt_account_realm"] == "acme.example.test"
    finally:
        store.close()
