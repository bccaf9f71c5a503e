"""Shared pieces of the call tests: a real node with registrar, edge (dispatching calls),
callflow, cdr and calls roles; an account with devices, a user and callflows written to the
store; real pjsua2 phones in helper processes; audio checks by FFT."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.calls.fake_app import FakeApp
from tests.foundation.nodeutil import Node, free_port, wait_until
from tests.phones import Phone as PhoneProcess
from tests.phones import dominant_frequency
from tests.rabbitmq import amqp_vhost

EDGE_ROLE = "edge"
ROLES = ["ops", "registrar", EDGE_ROLE, "cdr", "callflow", "calls"]

__all__ = ["PBX", "Phone", "backends", "dominant_frequency", "start_pbx", "stop_pbx",
           "wait_until"]


@dataclass
class PBX:
    node: Node
    sip_port: int
    store_url: str
    realm: str = ""
    account_id: str = ""
    devices: dict[str, str] = field(default_factory=dict)  # username -> device id
    passwords: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # name -> user id

    @property
    def edge(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def store(self) -> Any:
        from store import open_store

        return open_store(self.store_url, self.node.data_dir)

    def provision(self, realm: str, usernames: list[str]) -> None:
        account = json.loads(self.node.cli(
            "account", "create", "--name", f"Account {realm}", "--realm", realm,
            "--username", "admin", "--password", "admin-secret", "--json").stdout)
        self.realm, self.account_id = realm, str(account["account_id"])
        for username in usernames:
            self.add_device(username)

    def add_device(self, username: str) -> str:
        password = f"secret-{username}"
        device = json.loads(self.node.cli(
            "device", "create", "--account", self.account_id, "--name", f"phone {username}",
            "--username", username, "--password", password, "--json").stdout)
        self.devices[username] = str(device["device_id"])
        self.passwords[username] = password
        return self.devices[username]

    @property
    def account_db(self) -> str:
        from store.kazoo import account_db_name

        return account_db_name(self.account_id)

    def add_user(self, name: str, device_usernames: list[str]) -> str:
        from store import new_doc_id
        from store.kazoo import set_pvt_fields

        with self.store() as store:
            user = set_pvt_fields({"_id": new_doc_id(), "first_name": name, "last_name": "Test",
                                   "username": name.lower(), "enabled": True},
                                  "user", self.account_id)
            store.put(self.account_db, user)
            for username in device_usernames:
                device = store.get(self.account_db, self.devices[username])
                device["owner_id"] = user["_id"]
                store.put(self.account_db, device)
        self.users[name] = str(user["_id"])
        return self.users[name]

    def add_doc(self, pvt_type: str, doc: dict[str, Any]) -> str:
        from store import new_doc_id
        from store.kazoo import set_pvt_fields

        with self.store() as store:
            saved = store.put(self.account_db, set_pvt_fields(
                {"_id": new_doc_id(), **doc}, pvt_type, self.account_id))
        return str(saved["_id"])

    def add_callflow(self, numbers: list[str], flow: dict[str, Any],
                     patterns: list[str] | None = None, doc_id: str | None = None) -> str:
        doc: dict[str, Any] = {"numbers": numbers, "patterns": patterns or [], "flow": flow,
                               "name": f"flow {numbers or patterns}"}
        if doc_id is not None:
            doc["_id"] = doc_id
        return self.add_doc("callflow", doc)

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.node.ops_port}/metrics",
                                    timeout=10) as reply:
            return str(reply.read().decode())

    def cdrs(self) -> list[dict[str, Any]]:
        from store import NotFound
        from store.kazoo import modb_name

        now = time.gmtime()
        with self.store() as store:
            try:
                rows = store.all_docs(modb_name(self.account_id, now.tm_year, now.tm_mon),
                                      include_docs=True)
            except NotFound:
                return []
        return [r["doc"] for r in rows if r.get("doc", {}).get("pvt_type") == "cdr"]

    def cdr(self, call_id: str, timeout: float = 20.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((c for c in self.cdrs() if c.get("call_id") == call_id), None)

        found: dict[str, Any] = wait_until(find, timeout=timeout, interval=0.2,
                                           what=f"the CDR of {call_id}")
        return found

    def legs_of(self, a_call_id: str, timeout: float = 20.0) -> tuple[dict[str, Any], dict[str, Any]]:
        """The CDRs of a bridged call: the caller's leg and its winning B-leg."""
        a_leg = self.cdr(a_call_id, timeout)
        other = a_leg.get("other_leg_call_id")
        assert other, f"the A-leg was never bridged: {a_leg}"
        return a_leg, self.cdr(str(other), timeout)

    def calls(self) -> list[dict[str, Any]]:
        proc = self.node.cli("calls", "--json", check=False)
        if proc.returncode != 0:
            return []
        rows: list[dict[str, Any]] = json.loads(proc.stdout)
        return rows


def start_pbx(base: Path, *, store_url: str = "embedded", bus_url: str = "local",
              shards: int = 2, roles: list[str] | None = None, **env: str) -> PBX:
    port = free_port()
    node_env = {
        "MIRLITON_SIP__LISTEN": json.dumps([f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"]),
        "MIRLITON_NODE__NAME": f"calls-{uuid.uuid4().hex[:8]}",
        "MIRLITON_STORE__URL": store_url,
        "MIRLITON_BUS__URL": bus_url,
        "MIRLITON_CALLS__SHARDS": str(shards),
    }
    node_env.update(env)
    node = Node(base / "node", roles or ROLES, node_env)
    node.start()
    return PBX(node, port, store_url)


def stop_pbx(pbx: PBX) -> None:
    pbx.node.stop()
    pbx.node.kill_everything()


class Phone(PhoneProcess):
    """A phone of ``pbx`` (tests/phones) registered through its edge as ``user``, playing a
    ``tone`` Hz sine into every call and recording what it hears (``recording``)."""

    def __init__(self, pbx: PBX, user: str, workdir: Path, *, tone: float = 440.0,
                 answer_after: float = -1.0, reject: int = 0, record: bool = True,
                 early_media: bool = False) -> None:
        self.user = user
        recording = workdir / f"heard-{user}-{uuid.uuid4().hex[:6]}.wav" if record else None
        super().__init__(workdir, name=user, record=recording, edge=pbx.edge, realm=pbx.realm,
                         user=user, password=pbx.passwords[user], tone=tone, loop_tone=True,
                         answer_after=answer_after, reject=reject, early_media=early_media,
                         user_agent=f"pjsua2-calls-{user}", lifetime=300)


@pytest.fixture
def app(pbx: PBX) -> Iterator[FakeApp]:
    """The test in the callflow app's place on the bus (for modules whose ``pbx`` runs
    without the callflow role)."""
    fake = FakeApp(pbx)
    try:
        yield fake
    finally:
        fake.close()


# -- backends -------------------------------------------------------------------------------------


def backends(request: pytest.FixtureRequest) -> dict[str, str]:
    """``start_pbx``'s bus and store for the platform ``request.param`` names: "embedded" (the
    defaults: local bus, embedded store) or "amqp+couchdb" (RabbitMQ in a vhost of the
    module's, the suite's CouchDB-API server)."""
    if request.param != "amqp+couchdb":
        return {}
    return {"bus_url": request.getfixturevalue("calls_amqp_url"),
            "store_url": request.getfixturevalue("couchdb_url")}


@pytest.fixture(scope="module")
def calls_amqp_url() -> Iterator[str]:
    """RabbitMQ at MIRLITON_TEST_AMQP_URL, in a vhost of its own when rabbitmqctl can make one."""
    with amqp_vhost("calls") as url:
        yield url
