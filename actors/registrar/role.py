"""The registrar role process (Kazoo's registrar app).

Its tree (one_for_one)::

    registrar (process)
      authn     AuthnResponder   answers authn_req (callmgr ``authn.req.<realm>``) from the store
      watcher   DeviceWatcher    follows the account databases' change feeds and publishes
                                 reg_flush when a device is deleted or disabled or its
                                 credentials change, or its account is disabled, whoever
                                 wrote the change (crossbar, the CLI, another tool): the
                                 edges drop those registrations and cached credentials

The authn queue is named and shared, so the registrars of several nodes take turns
(competing consumers), as Kazoo's shared listeners.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gevent

from actors.kernel import Actor, current_call_id, on
from actors.registrar.devices import lookup_sip_credentials
from bus import Binding, Bus, BusError, Delivery, Message, connect
from bus.api.authn import authn_err, authn_resp
from bus.api.registration import reg_flush
from bus.listener import ListenerActor
from mirliton.config import Config
from mirliton.roles import RoleProcess
from store import Store, StoreError, open_store
from store.kazoo import (
    ACCOUNTS_DB,
    account_db_name,
    account_id_from_db,
    db_classification,
    is_account_id,
)
from supervisors.core import ChildSpec

__all__ = ["AuthnResponder", "DeviceWatcher", "RegistrarRole"]

log = logging.getLogger("mirliton.registrar")

AUTHN_QUEUE = "registrar.authn"


class AuthnResponder(ListenerActor):
    bindings = (Binding("callmgr", "authn.req.*"),)
    responders = {("directory", "authn_req"): "on_authn_req"}
    queue = AUTHN_QUEUE

    def __init__(self, bus: Bus, store: Store) -> None:
        super().__init__(bus)
        self.store = store

    def on_authn_req(self, msg: Message, delivery: Delivery) -> None:
        current_call_id.set(msg.get("Call-ID"))
        realm = str(msg["Auth-Realm"]).lower()
        user = str(msg["Auth-User"])
        lookup = lookup_sip_credentials(self.store, realm, user)
        if lookup.password is None:
            log.info("authn_req %s@%s from %s: refused (%s)", user, realm, msg.get("Orig-IP"),
                     lookup.error)
            self.reply(msg, authn_err.build(error_message=lookup.error))
            return
        ccvs = {
            "Account-ID": lookup.account_id,
            "Authorizing-ID": lookup.device_id,
            "Authorizing-Type": "device",
            "Username": lookup.username,
            "Realm": realm,
        }
        if lookup.owner_id:
            ccvs["Owner-ID"] = lookup.owner_id
        self.reply(msg, authn_resp.build({
            "Auth-Method": "password",
            "Auth-Password": lookup.password,
            "Auth-Username": lookup.username,
            "Custom-Channel-Vars": ccvs,
            "Expires": lookup.expire_seconds,
            "Register-Overwrite-Notify": lookup.register_overwrite_notify,
            "Suppress-Unregister-Notifications": lookup.suppress_unregister_notifications,
        }))


@dataclass(frozen=True)
class _DocChanged:
    db: str
    doc_id: str
    deleted: bool


@dataclass(frozen=True)
class _Credential:
    """What a device's registrations depend on; a change of any of it flushes them."""

    realm: str
    username: str
    password: str
    enabled: bool


class DeviceWatcher(Actor):
    """Turns store changes of devices and accounts into reg_flush (see the module doc).

    Document-change events themselves are published by the writers (crossbar's notifier,
    ``mirliton device create``), as Kazoo's apps do after their writes."""

    def __init__(self, bus: Bus, store: Store, poll_new_accounts: float = 1.0) -> None:
        self.bus = bus
        self.store = store
        self.poll_new_accounts = poll_new_accounts
        self.devices: dict[str, tuple[str, _Credential]] = {}  # device id -> (db, credential)
        self.accounts: dict[str, dict[str, Any]] = {}  # account id -> account doc
        self.followed: set[str] = set()
        self.greenlets: list[gevent.Greenlet] = []

    def init(self) -> None:
        self.store.create_db(ACCOUNTS_DB, exist_ok=True)
        self._follow(ACCOUNTS_DB)
        for db in self.store.list_dbs(prefix="account/"):
            if db_classification(db) == "account":
                self._watch_account_db(db)

    def terminate(self, reason: Any) -> None:
        gevent.killall(self.greenlets, block=False)

    def _watch_account_db(self, db: str) -> None:
        if db in self.followed:
            return
        # Follow first, then read: a change between the two is seen twice, never missed.
        self._follow(db)
        try:
            for doc in self.store.find_all(db, {"pvt_type": {"$in": ["device", "account"]}}):
                self._remember(db, doc)
        except StoreError as error:
            log.warning("cannot read %s: %s", db, error)

    def _follow(self, db: str) -> None:
        self.followed.add(db)
        ref = self.ref

        def loop() -> None:
            since: Any = "now"
            while True:
                try:
                    feed = self.store.follow(db, since=since)
                    for change in feed:
                        since = change.seq
                        ref.send(_DocChanged(db, change.id, change.deleted))
                    since = feed.last_seq
                except StoreError as error:
                    log.warning("change feed of %s failed: %s", db, error)
                gevent.sleep(1.0)

        self.greenlets.append(gevent.spawn(loop))

    def _remember(self, db: str, doc: dict[str, Any]) -> None:
        if doc.get("pvt_type") == "account":
            self.accounts[str(doc["_id"])] = doc
        elif doc.get("pvt_type") == "device":
            credential = self._credential(db, doc)
            if credential is not None:
                self.devices[str(doc["_id"])] = (db, credential)

    def _realm_of(self, db: str) -> str:
        try:
            key = account_id_from_db(db)
        except StoreError:
            return ""
        account = self.accounts.get(key)
        if account is None:
            doc = self.store.open_or_none(ACCOUNTS_DB, key) if is_account_id(key) else None
            if doc is not None:
                self.accounts[key] = doc
                account = doc
        return str((account or {}).get("realm") or "")

    def _credential(self, db: str, doc: dict[str, Any]) -> _Credential | None:
        sip = doc.get("sip") or {}
        username = sip.get("username")
        if not username:
            return None
        return _Credential(
            realm=self._realm_of(db),
            username=str(username).lower(),
            password=str(sip.get("password") or ""),
            enabled=doc.get("enabled", True) is not False and not doc.get("pvt_deleted"),
        )

    @on(_DocChanged)
    def on_change(self, change: _DocChanged) -> None:
        if change.db == ACCOUNTS_DB:
            self._account_changed(change)
            return
        doc = None if change.deleted else self.store.open_or_none(change.db, change.doc_id)
        previous = self.devices.get(change.doc_id)
        if doc is not None and doc.get("pvt_type") == "account":
            return  # the account db's copy; the accounts aggregate is the one followed
        if doc is not None and doc.get("pvt_type") != "device":
            return
        if doc is None and previous is None:
            return
        current = None if doc is None else self._credential(change.db, doc)
        if current is None:
            self.devices.pop(change.doc_id, None)
        else:
            self.devices[change.doc_id] = (change.db, current)
        if previous is not None:
            old = previous[1]
            if current is None or current != old and (
                not current.enabled or current.password != old.password or current.username != old.username
            ):
                self._flush(old.realm, old.username)

    def _account_changed(self, change: _DocChanged) -> None:
        if not is_account_id(change.doc_id):
            return
        doc = None if change.deleted else self.store.open_or_none(ACCOUNTS_DB, change.doc_id)
        previous = self.accounts.get(change.doc_id)
        if doc is None:
            self.accounts.pop(change.doc_id, None)
        else:
            self.accounts[change.doc_id] = doc
            self._watch_account_db(account_db_name(change.doc_id))
        was_enabled = previous is not None and previous.get("pvt_enabled", True) is not False
        now_enabled = doc is not None and doc.get("pvt_enabled", True) is not False and doc.get(
            "enabled", True) is not False
        if was_enabled and not now_enabled and previous is not None and previous.get("realm"):
            self._flush(str(previous["realm"]), None)

    def _flush(self, realm: str, username: str | None) -> None:
        if not realm:
            return
        log.info("reg_flush %s@%s", username or "*", realm)
        try:
            self.bus.publish(reg_flush.build({"Realm": realm, "Username": username}))
        except BusError as error:
            log.warning("reg_flush %s@%s not published: %s", username, realm, error)


class RegistrarRole(RoleProcess):
    def init_process(self, args: Any) -> None:
        cfg = Config.model_validate(args["config"])
        self.bus = connect(cfg.bus.url, node=cfg.node.name, data_dir=cfg.data_dir)
        self.store = open_store(cfg.store.url, cfg.data_dir)
        super().init_process(args)

    def child_specs(self, cfg: Config) -> list[ChildSpec]:
        bus, store = self.bus, self.store
        return [
            ChildSpec("authn", lambda: AuthnResponder(bus, store), shutdown=5.0),
            ChildSpec("watcher", lambda: DeviceWatcher(bus, store), shutdown=5.0),
        ]

    def terminate_process(self, reason: Any) -> None:
        super().terminate_process(reason)
        try:
            self.bus.close()
        finally:
            self.store.close()
