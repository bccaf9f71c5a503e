"""A real node running the crossbar role (``mirliton start --detach``): an account created with
the CLI, then a whole small PBX provisioned over HTTP only, and the API's metrics aggregated by
the node's ops endpoint.

Not covered yet: a real phone registering with the credentials created here and calling another
(needs the Edge and Calls roles)."""

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
    made = running.cli("account", "create", "--name", "Acme", "--realm", "acme.example.test",
                       "--username", "boss", "--password", "boss-pw", "--json")
    account = json.loads(made.stdout)
    account_id = account["account_id"]
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        auth = http.put("/v2/user_auth", json={"data": {
            "credentials": hashlib.md5(b"boss:boss-pw").hexdigest(), "account_realm": "acme.example.test"}})
        assert auth.status_code == 201, auth.text
        http.headers["X-Auth-Token"] = auth.json()["auth_token"]
        acc = f"/v2/accounts/{account_id}"
        users, devices = [], []
        for ext in ("100", "101"):
            user = http.put(f"{acc}/users", json={"data": {
                "first_name": f"User{ext}", "last_name": "Acme", "username": f"user{ext}", "password": f"pw-{ext}"}})
            assert user.status_code == 201, user.text
            users.append(user.json()["data"]["id"])
            device = http.put(f"{acc}/devices", json={"data": {
                "name": f"Phone {ext}", "owner_id": users[-1], "sip": {"username": f"phone{ext}", "password": f"secret-{ext}"}}})
            assert device.status_code == 201, device.text
            devices.append(device.json()["data"]["id"])
            flow = http.put(f"{acc}/callflows", json={"data": {
                "numbers": [ext], "flow": {"module": "device", "data": {"id": devices[-1]}, "children": {}}}})
            assert flow.status_code == 201, flow.text
        listed = http.get(f"{acc}/callflows").json()
        assert sorted(n for cf in listed["data"] for n in cf["numbers"]) == ["100", "101"]
        assert http.get(f"{acc}/registrations").json()["status"] == "success"
        # A user of the account logs in with the credentials created above.
        login = http.put("/v2/user_auth", json={"data": {
            "credentials": hashlib.md5(b"user100:pw-100").hexdigest(), "account_name": "Acme"}})
        assert login.status_code == 201 and login.json()["data"]["owner_id"] == users[0]
        metrics = httpx.get(f"http://127.0.0.1:{running.ops_port}/metrics", timeout=10.0).text
    assert 'route="/v2/accounts/{account_id}/devices"' in metrics
    assert "mirliton_http_request_duration_seconds_bucket" in metrics
    assert account_id not in metrics
    store = open_store("embedded", running.data_dir)
    try:
        for device_id, ext in zip(devices, ("100", "101"), strict=True):
            creds = store.get("sip_auth", device_id)
            assert creds["sip"] == {**creds["sip"], "username": f"phone{ext}", "password": f"secret-{ext}"}
            assert creds["pvt_account_realm"] == "acme.example.test"
    finally:
        store.close()
