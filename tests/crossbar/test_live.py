"""The API on a real (local) bus: document-change notifications go out on ``configuration``;
registrations and channels are asked of whoever answers, and an unanswered question comes back
quickly as an empty list with a note."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from falcon import testing

from actors.calls.api import CHANNELS_ROUTING_KEY, channels_resp
from actors.crossbar.app import make_app
from actors.crossbar.live import nodes_running
from bus import Binding, Bus, Delivery, Message, connect
from bus.api.registration import reg_query_resp
from store import Store
from store.accounts import create_account
from store.kazoo import account_db_name, encode_db_name
from tests.crossbar.conftest import ApiClient, created, login, ok

LIVE_TIMEOUT = 0.3


@pytest.fixture
def buses(tmp_path: Path) -> Iterator[tuple[Bus, Bus]]:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    api_bus = connect("local", node="api", data_dir=data_dir)
    peer_bus = connect("local", node="peer", data_dir=data_dir)
    yield api_bus, peer_bus
    api_bus.close()
    peer_bus.close()


@pytest.fixture
def api(embedded_store: Store, buses: tuple[Bus, Bus]) -> tuple[ApiClient, str]:
    account = create_account(embedded_store, "Live", "live.example.test", "admin", "adminpass")
    app = make_app(embedded_store, bus=buses[0], live_timeout=LIVE_TIMEOUT)
    anon = ApiClient(testing.TestClient(app))
    return anon.as_token(login(anon, "admin", "adminpass", "live.example.test")), account["account_id"]


def _wait(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.01)


def test_writes_publish_doc_change_notifications(api: tuple[ApiClient, str], buses: tuple[Bus, Bus]) -> None:
    client, account_id = api
    seen: list[Message] = []
    buses[1].consume([Binding("configuration", "#")], lambda msg, _d: seen.append(msg))
    gevent.sleep(0.05)
    device = created(client.put(f"/v2/accounts/{account_id}/devices", {"name": "notified"}))
    ok(client.patch(f"/v2/accounts/{account_id}/devices/{device['id']}", {"name": "edited"}))
    ok(client.delete(f"/v2/accounts/{account_id}/devices/{device['id']}"))
    _wait(lambda: len([m for m in seen if m["ID"] == device["id"]]) == 3)
    events = [m for m in seen if m["ID"] == device["id"]]
    assert [m["Event-Name"] for m in events] == ["doc_created", "doc_edited", "doc_deleted"]
    assert all(m["Type"] == "device" and m["Account-ID"] == account_id for m in events)
    assert events[0]["Database"] == encode_db_name(account_db_name(account_id))
    assert events[2]["Is-Soft-Deleted"] is True
    assert events[1]["Rev"].startswith("2-")


def test_registrations_come_from_the_registrars(api: tuple[ApiClient, str], buses: tuple[Bus, Bus]) -> None:
    client, account_id = api
    queries: list[Message] = []

    def registrar(msg: Message, _delivery: Delivery) -> None:
        queries.append(msg)
        fields = [
            {"Username": "desk100", "Realm": "live.example.test", "Contact": "<sip:desk100@127.0.0.1:5070>",
             "Expires": 300, "User-Agent": "pjsua", "Call-ID": "reg-1"},
        ]
        buses[1].reply(msg, reg_query_resp.build(fields=fields))

    buses[1].consume([Binding("registrar", "registration.query.#")], registrar)
    gevent.sleep(0.05)
    device = created(client.put(f"/v2/accounts/{account_id}/devices", {"name": "desk", "sip": {"username": "desk100", "password": "secret-1"}}))
    created(client.put(f"/v2/accounts/{account_id}/devices", {"name": "other", "sip": {"username": "other200", "password": "secret-2"}}))
    body = client.get(f"/v2/accounts/{account_id}/registrations").json
    assert body["status"] == "success" and "note" not in body
    assert body["data"] == [{"username": "desk100", "realm": "live.example.test", "contact": "<sip:desk100@127.0.0.1:5070>",
                             "expires": 300, "user_agent": "pjsua", "call_id": "reg-1"}]
    assert queries[-1]["Realm"] == "live.example.test"
    assert ok(client.get(f"/v2/accounts/{account_id}/registrations/count")) == {"count": 1}
    status = {item["device_id"]: item["registered"] for item in ok(client.get(f"/v2/accounts/{account_id}/devices/status"))}
    assert status[device["id"]] is True and list(status.values()).count(True) == 1


def test_no_registrar_answers_quickly_with_a_note(api: tuple[ApiClient, str]) -> None:
    client, account_id = api
    started = time.monotonic()
    body = client.get(f"/v2/accounts/{account_id}/registrations").json
    elapsed = time.monotonic() - started
    assert body["status"] == "success" and body["data"] == []
    assert "no registrar responder answered" in body["note"]
    # Bounded by the live timeout rather than hanging (a generous margin: not a speed test).
    assert elapsed < LIVE_TIMEOUT + 10.0


def test_flush_publishes_reg_flush(api: tuple[ApiClient, str], buses: tuple[Bus, Bus]) -> None:
    client, account_id = api
    flushes: list[Message] = []
    buses[1].consume([Binding("registrar", "registration.flush.#")], lambda msg, _d: flushes.append(msg))
    gevent.sleep(0.05)
    ok(client.delete(f"/v2/accounts/{account_id}/registrations/desk100"))
    _wait(lambda: bool(flushes))
    assert flushes[0]["Realm"] == "live.example.test" and flushes[0]["Username"] == "desk100"


def test_channels_come_from_the_call_nodes(api: tuple[ApiClient, str], buses: tuple[Bus, Bus]) -> None:
    client, account_id = api
    assert "no call node responder" in client.get(f"/v2/accounts/{account_id}/channels").json["note"]

    def shard(msg: Message, _delivery: Delivery) -> None:
        # As actors/calls/shard.py answers, plus a row of another account it should have filtered.
        rows = [
            {"call_id": "call-1", "direction": "inbound", "state": "answered", "account_id": account_id,
             "callee_id_number": "100"},
            {"call_id": "call-2", "direction": "inbound", "state": "ringing", "account_id": "f" * 32},
        ]
        buses[1].reply(msg, channels_resp.build(channels=rows))

    buses[1].consume([Binding("callmgr", CHANNELS_ROUTING_KEY)], shard)
    gevent.sleep(0.05)
    channels = client.get(f"/v2/accounts/{account_id}/channels").json
    assert "note" not in channels
    assert channels["data"] == [{"call_id": "call-1", "uuid": "call-1", "direction": "inbound", "state": "answered",
                                 "account_id": account_id, "callee_id_number": "100"}]
    assert ok(client.get(f"/v2/accounts/{account_id}/channels/call-1"))["callee_id_number"] == "100"
    assert client.get(f"/v2/accounts/{account_id}/channels/call-2").status_code == 404


def test_system_channels_list_every_account(api: tuple[ApiClient, str], buses: tuple[Bus, Bus]) -> None:
    client, account_id = api  # the first account: the system account, its admin a superduper
    asked: list[Message] = []

    def shard(msg: Message, _delivery: Delivery) -> None:
        asked.append(msg)
        rows = [{"call_id": "call-1", "account_id": account_id}, {"call_id": "call-2", "account_id": "f" * 32}]
        buses[1].reply(msg, channels_resp.build(channels=rows))

    buses[1].consume([Binding("callmgr", CHANNELS_ROUTING_KEY)], shard)
    gevent.sleep(0.05)
    body = client.get("/v2/channels").json
    assert body["status"] == "success" and "note" not in body
    assert [(c["uuid"], c["account_id"]) for c in body["data"]] == [("call-1", account_id), ("call-2", "f" * 32)]
    assert not asked[0].get("Account-ID")  # the question named no account
    tenant = created(client.put("/v2/accounts", {"name": "Tenant", "realm": "tenant.live.example.test"}))
    created(client.put(f"/v2/accounts/{tenant['id']}/users", {
        "first_name": "T", "last_name": "A", "username": "tadmin", "password": "t-pw", "priv_level": "admin"}))
    tenant_admin = client.as_token(login(client.as_token(None), "tadmin", "t-pw", "tenant.live.example.test"))
    assert tenant_admin.get("/v2/channels").json["error_id"] == "superduper_admin_only"
    assert ok(tenant_admin.get(f"/v2/accounts/{tenant['id']}/channels")) == []


def test_answers_go_out_once_every_known_responder_answered(
    embedded_store: Store, buses: tuple[Bus, Bus], tmp_path: Path
) -> None:
    snapshot = tmp_path / "nodes.json"
    snapshot.write_text(json.dumps({"nodes": [
        {"name": "n1", "roles": ["edge", "crossbar"], "expires_at": time.time() + 60},
        {"name": "n2", "roles": ["calls"], "expires_at": time.time() + 60},
        {"name": "gone", "roles": ["edge"], "expires_at": time.time() - 1},
    ]}))
    count = nodes_running(snapshot)
    assert (count("edge"), count("calls"), count("registrar")) == (1, 1, 0)
    assert nodes_running(tmp_path / "missing.json")("edge") is None

    create_account(embedded_store, "Fast", "fast.example.test", "admin", "adminpass")
    app = make_app(embedded_store, bus=buses[0], live_timeout=5.0, live_responders=count)
    anon = ApiClient(testing.TestClient(app))
    client = anon.as_token(login(anon, "admin", "adminpass", "fast.example.test"))
    account_id = app.service.store.find("accounts", {"pvt_type": "account"}).docs[0]["_id"]
    buses[1].consume([Binding("registrar", "registration.query.#")],
                     lambda msg, _d: buses[1].reply(msg, reg_query_resp.build(fields=[], count=0)))
    gevent.sleep(0.05)
    started = time.monotonic()
    body = client.get(f"/v2/accounts/{account_id}/registrations").json
    assert body["data"] == [] and "note" not in body
    assert time.monotonic() - started < 4.0  # did not sit out the 5 s timeout


def test_an_account_disabled_through_another_node_is_seen_at_once(
    embedded_store: Store, buses: tuple[Bus, Bus]
) -> None:
    from actors.crossbar.notifier import follow_changes

    create_account(embedded_store, "Top", "top.example.test", "top", "top-pw")
    node1 = make_app(embedded_store, bus=buses[0])
    node2 = make_app(embedded_store, bus=buses[1])
    follow_changes(buses[1], node2.service.cache.forget)
    gevent.sleep(0.05)
    api1 = ApiClient(testing.TestClient(node1))
    api2 = ApiClient(testing.TestClient(node2))
    top = api1.as_token(login(api1, "top", "top-pw", "top.example.test"))
    tenant = created(top.put("/v2/accounts", {"name": "Tenant", "realm": "tenant.example.test"}))
    created(top.put(f"/v2/accounts/{tenant['id']}/users", {"first_name": "T", "last_name": "U", "username": "tu",
                                                            "password": "tu-pw", "priv_level": "admin"}))
    tenant_on_node2 = api2.as_token(login(api2, "tu", "tu-pw", "tenant.example.test"))
    assert tenant_on_node2.get(f"/v2/accounts/{tenant['id']}").status_code == 200  # now cached on node 2
    ok(top.patch(f"/v2/accounts/{tenant['id']}", {"enabled": False}))
    _wait(lambda: tenant_on_node2.get(f"/v2/accounts/{tenant['id']}").status_code == 401, timeout=5.0)
    assert tenant_on_node2.get(f"/v2/accounts/{tenant['id']}").json["error_id"] == "account_disabled"
