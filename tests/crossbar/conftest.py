"""Fixtures of the Crossbar tests: the WSGI app over a fresh embedded store, called in-process
with falcon's test client, and an account tree to act on:

    system (superduper admin)
    └── reseller P
        ├── A   (admin user alice)
        └── B   (admin user bob)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from falcon import testing

import store.accounts as store_accounts
from actors.crossbar import service as service_module
from actors.crossbar.app import CrossbarApp, make_app
from actors.crossbar.notifier import RecordingNotifier
from store import Store, open_store
from store.accounts import create_account

SYSTEM_REALM = "system.example.test"


def md5_credentials(username: str, password: str) -> str:
    return hashlib.md5(f"{username}:{password}".encode()).hexdigest()


class ApiClient:
    """Falcon's in-process test client with a token and Kazoo envelopes."""

    def __init__(self, client: testing.TestClient, token: str | None = None) -> None:
        self.client = client
        self.token = token

    def as_token(self, token: str | None) -> ApiClient:
        return ApiClient(self.client, token)

    def request(
        self, method: str, path: str, data: Any = None, *, body: bytes | None = None,
        headers: dict[str, str] | None = None, params: dict[str, Any] | None = None,
        envelope: dict[str, Any] | None = None,
    ) -> testing.Result:
        all_headers = dict(headers or {})
        if self.token is not None:
            all_headers.setdefault("X-Auth-Token", self.token)
        kwargs: dict[str, Any] = {"headers": all_headers, "params": params}
        if body is not None:
            kwargs["body"] = body
        elif envelope is not None:
            kwargs["json"] = envelope
        elif data is not None:
            kwargs["json"] = {"data": data}
        return self.client.simulate_request(method, path, **kwargs)

    def get(self, path: str, **kw: Any) -> testing.Result:
        return self.request("GET", path, **kw)

    def put(self, path: str, data: Any = None, **kw: Any) -> testing.Result:
        return self.request("PUT", path, data, **kw)

    def post(self, path: str, data: Any = None, **kw: Any) -> testing.Result:
        return self.request("POST", path, data, **kw)

    def patch(self, path: str, data: Any = None, **kw: Any) -> testing.Result:
        return self.request("PATCH", path, data, **kw)

    def delete(self, path: str, **kw: Any) -> testing.Result:
        return self.request("DELETE", path, **kw)


def created(result: testing.Result) -> dict[str, Any]:
    assert result.status_code == 201, result.text
    data: dict[str, Any] = result.json["data"]
    return data


def ok(result: testing.Result) -> Any:
    assert result.status_code == 200, result.text
    return result.json["data"]


@dataclass
class Tree:
    app: CrossbarApp
    store: Store
    anon: ApiClient
    notifier: RecordingNotifier
    system_id: str
    system: ApiClient
    ids: dict[str, str] = field(default_factory=dict)
    clients: dict[str, ApiClient] = field(default_factory=dict)

    def account_path(self, name: str) -> str:
        return f"/v2/accounts/{self.ids[name]}"


def login(anon: ApiClient, username: str, password: str, realm: str) -> str:
    result = anon.put("/v2/user_auth", {"credentials": md5_credentials(username, password), "account_realm": realm})
    assert result.status_code == 201, result.text
    token: str = result.json["auth_token"]
    return token


def build_app(store: Store, notifier: RecordingNotifier | None = None, **kw: Any) -> CrossbarApp:
    return make_app(store, notifier=notifier or RecordingNotifier(), **kw)


def build_tree(store: Store) -> Tree:
    system = create_account(store, "System", SYSTEM_REALM, "root", "rootpass")
    notifier = RecordingNotifier()
    app = build_app(store, notifier)
    anon = ApiClient(testing.TestClient(app))
    tree = Tree(app, store, anon, notifier, system["account_id"], anon.as_token(login(anon, "root", "rootpass", SYSTEM_REALM)))
    tree.ids["system"] = system["account_id"]
    tree.clients["system"] = tree.system
    reseller = created(tree.system.put(f"/v2/accounts/{system['account_id']}", {"name": "Reseller P", "realm": "p.example.test"}))
    tree.ids["P"] = reseller["id"]
    for name in ("A", "B"):
        account = created(tree.system.put(f"/v2/accounts/{reseller['id']}", {"name": f"Account {name}", "realm": f"{name.lower()}.example.test"}))
        tree.ids[name] = account["id"]
    for name, user in (("P", "paula"), ("A", "alice"), ("B", "bob")):
        created(tree.system.put(
            f"/v2/accounts/{tree.ids[name]}/users",
            {"first_name": user.title(), "last_name": "Admin", "username": user, "password": f"{user}-pw", "priv_level": "admin"},
        ))
        tree.clients[name] = anon.as_token(login(anon, user, f"{user}-pw", f"{name.lower()}.example.test"))
    return tree


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with minimal cost: the production parameters take ~0.5 s a hash on CI."""
    fast = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(service_module, "_password_hasher", fast)
    monkeypatch.setattr(store_accounts, "_password_hasher", fast)


@pytest.fixture
def embedded_store(tmp_path: Path) -> Iterator[Store]:
    store = open_store("embedded", tmp_path / "data")
    yield store
    store.close()


@pytest.fixture
def tree(embedded_store: Store) -> Tree:
    return build_tree(embedded_store)
