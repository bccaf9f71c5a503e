"""Issue 8's acceptance: a whole PBX provisioned over HTTP only, then real phones use it.

A real node runs every role a call needs plus ``crossbar``, on the embedded defaults (embedded
store, local bus) and on RabbitMQ + the suite's CouchDB-API server. The
CLI only bootstraps the system account (as ``make run`` users do); everything else goes through
the REST API: the customer account, its admin, two users, two SIP devices owned by them and a
callflow per extension. Two pjsua2 phones register with the credentials the API created, A
dials B's extension, B answers, each hears the other's tone (FFT), and the API then shows what
happened: registrations and device status while they are up, the live channels during the call,
the CDRs of both legs afterwards.

The node, phones and FFT helper are those of the call tests (tests/calls/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.calls.conftest import (
    PBX,
    ROLES,
    Phone,
    backends,
    calls_amqp_url,  # noqa: F401 - a fixture, used through getfixturevalue
    dominant_frequency,
    start_pbx,
    stop_pbx,
    wait_until,
)
from tests.foundation.nodeutil import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TONE_A, TONE_B = 440.0, 1000.0
EXTENSIONS = ("1001", "1002")


@pytest.fixture(params=["embedded", "amqp+couchdb"])
def pbx_with_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[PBX, str]]:
    http_port = free_port()
    pbx = start_pbx(tmp_path, roles=[*ROLES, "crossbar"], **backends(request),
                    MIRLITON_HTTP__LISTEN=f"127.0.0.1:{http_port}")
    try:
        yield pbx, f"http://127.0.0.1:{http_port}"
    finally:
        stop_pbx(pbx)


class Http:
    """Kazoo envelopes over httpx, failing the test with the body on an unexpected status."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def login(self, username: str, password: str, **account: str) -> str:
        result = self.client.put("/v2/user_auth", json={"data": {
            "credentials": hashlib.md5(f"{username}:{password}".encode()).hexdigest(), **account}})
        assert result.status_code == 201, result.text
        token: str = result.json()["auth_token"]
        self.client.headers["X-Auth-Token"] = token
        return token

    def put(self, path: str, data: dict[str, Any]) -> dict[str, Any]:
        result = self.client.put(path, json={"data": data})
        assert result.status_code == 201, f"PUT {path}: {result.text}"
        body: dict[str, Any] = result.json()["data"]
        return body

    def get(self, path: str, **params: str) -> Any:
        result = self.client.get(path, params=params)
        assert result.status_code == 200, f"GET {path}: {result.text}"
        return result.json()


def _provision(pbx: PBX, http: Http, realm: str) -> dict[str, dict[str, str]]:
    """The PBX, over HTTP only; returns per extension its user, device and callflow ids."""
    # Realms (and account names) unique per run: the CouchDB-API server is the suite's.
    operator_realm = f"operator.{realm}"
    system = json.loads(pbx.node.cli(
        "account", "create", "--name", f"Operator {realm}", "--realm", operator_realm,
        "--username", "root", "--password", "root-pw", "--json").stdout)
    http.login("root", "root-pw", account_realm=operator_realm)
    account = http.put(f"/v2/accounts/{system['account_id']}", {"name": f"Acme {realm}", "realm": realm})
    acc = f"/v2/accounts/{account['id']}"
    http.put(f"{acc}/users", {"first_name": "Boss", "last_name": "Acme", "username": "boss",
                              "password": "boss-pw", "priv_level": "admin"})
    # From here on as the customer's own admin, the way a reseller hands an account over.
    http.login("boss", "boss-pw", account_name=f"Acme {realm}")
    made: dict[str, dict[str, str]] = {}
    for ext in EXTENSIONS:
        user = http.put(f"{acc}/users", {"first_name": f"User{ext}", "last_name": "Acme",
                                         "username": f"user{ext}", "password": f"pw-{ext}"})
        device = http.put(f"{acc}/devices", {
            "name": f"Desk {ext}", "device_type": "sip_device", "owner_id": user["id"],
            "sip": {"username": ext, "password": f"sip-secret-{ext}"}})
        callflow = http.put(f"{acc}/callflows", {
            "name": f"Ext {ext}", "numbers": [ext],
            "flow": {"module": "user", "data": {"id": user["id"], "timeout": 20}, "children": {}}})
        made[ext] = {"user": user["id"], "device": device["id"], "callflow": callflow["id"]}
        # What the phones need, as a provisioning system would hand it to them.
        pbx.devices[ext] = device["id"]
        pbx.passwords[ext] = f"sip-secret-{ext}"
        pbx.users[f"user{ext}"] = user["id"]
    pbx.realm, pbx.account_id = realm, str(account["id"])
    return made


def test_a_pbx_provisioned_over_http_carries_a_call(pbx_with_api: tuple[PBX, str], tmp_path: Path) -> None:
    pbx, base_url = pbx_with_api
    realm = f"acme-{uuid.uuid4().hex[:8]}.example.test"
    phones: list[Phone] = []
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        http = Http(client)
        made = _provision(pbx, http, realm)
        acc = f"/v2/accounts/{pbx.account_id}"
        try:
            a = Phone(pbx, "1001", tmp_path, tone=TONE_A)
            phones.append(a)
            b = Phone(pbx, "1002", tmp_path, tone=TONE_B, answer_after=1.0)
            phones.append(b)
            a.registered()
            b.registered()

            # The registrars' view, through the API.
            registered = wait_until(
                lambda: {r.get("username") for r in http.get(f"{acc}/registrations")["data"]} >= set(EXTENSIONS),
                timeout=10, interval=0.2, what="both phones in /registrations")
            assert registered
            status = {s["device_id"]: s["registered"] for s in http.get(f"{acc}/devices/status")["data"]}
            assert status == {made[ext]["device"]: True for ext in EXTENSIONS}

            a.call("1002", realm)
            b.incoming()
            a_call_id = a.state("CONFIRMED")["call_id"]
            b.state("CONFIRMED")
            # The calls shards' view of the live call, through the API.
            channels = wait_until(
                lambda: [c for c in http.get(f"{acc}/channels")["data"] if c.get("answered")] or None,
                timeout=10, interval=0.2, what="the answered call in /channels")
            assert {c["direction"] for c in channels} == {"inbound", "outbound"}, channels
            assert any(c["call_id"] == a_call_id and c["other_leg_call_id"] for c in channels), channels
            time.sleep(3.0)  # talk: each phone plays its tone to the other
            a.send(cmd="hangup")
            a.state("DISCONNECTED")
            b.state("DISCONNECTED")
        finally:
            for phone in phones:
                phone.stop()

        # The CDRs of both legs, through the API.
        def legs() -> list[dict[str, Any]] | None:
            rows = http.get(f"{acc}/cdrs")["data"]
            a_leg = next((r for r in rows if r.get("call_id") == a_call_id), None)
            if a_leg is None or not a_leg.get("other_leg_call_id"):
                return None
            b_leg = next((r for r in rows if r.get("call_id") == a_leg["other_leg_call_id"]), None)
            return [a_leg, b_leg] if b_leg is not None else None

        a_leg, b_leg = wait_until(legs, timeout=20, interval=0.5, what="the CDRs of both legs in /cdrs")
        for leg in (a_leg, b_leg):
            assert leg["hangup_cause"] == "NORMAL_CLEARING", leg
            assert 2 <= leg["billing_seconds"] <= 8, leg
            assert not any(k.startswith("pvt_") for k in leg)
        assert a_leg["caller_id_number"] == "1001" and a_leg["callee_id_number"] == "1002"
        assert a_leg["custom_channel_vars"]["Authorizing-ID"] == made["1001"]["device"]
        assert b_leg["custom_channel_vars"]["Authorizing-ID"] == made["1002"]["device"]
        assert b_leg["custom_channel_vars"]["Owner-ID"] == made["1002"]["user"]
        one = http.get(f"{acc}/cdrs/{a_leg['id']}")["data"]
        assert one["call_id"] == a_call_id

    assert a.recording is not None and b.recording is not None
    heard_by_a, share_a = dominant_frequency(a.recording)
    heard_by_b, share_b = dominant_frequency(b.recording)
    assert abs(heard_by_a - TONE_B) < 20 and share_a > 0.5, (heard_by_a, share_a)
    assert abs(heard_by_b - TONE_A) < 20 and share_b > 0.5, (heard_by_b, share_b)
