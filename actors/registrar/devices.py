"""SIP devices in the store: creation (CLI, until the REST API exists) and the credential
lookup the registrar answers ``authn_req`` with.

A device is a document of ``pvt_type: device`` in its account's database, Kazoo's shape:
``{"name", "enabled", "sip": {"username", "password", "method": "password", ...}}``. The
username is unique within the account (so within its realm), lower-cased as Kazoo does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from store import NotFound, Store, ValidationFailed, new_doc_id, schemas
from store.accounts import find_account_by_realm
from store.kazoo import ACCOUNTS_DB, account_db_name, is_soft_deleted, set_pvt_fields

__all__ = ["DeviceLookup", "create_device", "find_device", "lookup_sip_credentials"]

_indexed: set[str] = set()


def _ensure_index(store: Store, db: str) -> None:
    if db not in _indexed:
        store.create_index(db, ["pvt_type", "sip.username"], name="devices_by_sip_username")
        _indexed.add(db)


def find_device(store: Store, account_db: str, username: str) -> dict[str, Any] | None:
    _ensure_index(store, account_db)
    found = store.find(
        account_db, {"pvt_type": "device", "sip.username": username.strip().lower()}, limit=1
    )
    return found.docs[0] if found.docs else None


def create_device(
    store: Store,
    account_id: str,
    name: str,
    username: str,
    password: str,
    *,
    enabled: bool = True,
) -> dict[str, Any]:
    """Create a SIP device; returns ids and where it lives. ValidationFailed (Kazoo's shape)
    for bad input, an unknown account or a username already used in the account."""
    username = username.strip().lower()
    try:
        account = store.get(ACCOUNTS_DB, account_id)
    except NotFound:
        raise ValidationFailed(
            {"account_id": {"not_found": {"message": "Account does not exist", "cause": account_id}}}
        ) from None
    doc_input: dict[str, Any] = {
        "name": name,
        "enabled": enabled,
        "device_type": "sip_device",
        "sip": {"username": username, "password": password, "method": "password"},
    }
    errors = schemas.validate("devices", doc_input)
    if errors:
        raise ValidationFailed(errors)
    account_db = account_db_name(account_id)
    if find_device(store, account_db, username) is not None:
        raise ValidationFailed(
            {"sip.username": {"unique": {"message": "SIP username already in use", "cause": username}}},
            reason=f"SIP username {username!r} is already used in this account",
        )
    doc = schemas.apply_defaults("devices", doc_input)
    doc = set_pvt_fields({**doc, "_id": new_doc_id()}, "device", account_id)
    saved = store.put(account_db, doc)
    return {
        "device_id": saved["_id"],
        "account_id": account_id,
        "account_db": account_db,
        "name": name,
        "username": username,
        "realm": account.get("realm"),
    }


@dataclass(frozen=True)
class DeviceLookup:
    """The answer to an authn_req: credentials, or why there are none."""

    password: str | None
    error: str | None = None
    account_id: str | None = None
    device_id: str | None = None
    owner_id: str | None = None
    username: str | None = None
    expire_seconds: int | None = None
    register_overwrite_notify: bool = False
    suppress_unregister_notifications: bool = False


def lookup_sip_credentials(store: Store, realm: str, username: str) -> DeviceLookup:
    """The device whose ``sip.username`` is ``username`` in the account whose realm is
    ``realm``; disabled (or soft-deleted) devices and accounts are refused."""
    account = find_account_by_realm(store, realm)
    if account is None:
        return DeviceLookup(None, "unknown realm")
    if account.get("pvt_enabled") is False or account.get("enabled") is False or is_soft_deleted(account):
        return DeviceLookup(None, "account disabled")
    account_id = str(account["_id"])
    device = find_device(store, account_db_name(account_id), username)
    if device is None:
        return DeviceLookup(None, "unknown user")
    if device.get("enabled") is False or is_soft_deleted(device):
        return DeviceLookup(None, "device disabled")
    sip = device.get("sip") or {}
    if sip.get("method", "password") != "password" or not sip.get("password"):
        return DeviceLookup(None, "no password credentials")
    expires = sip.get("expire_seconds")
    return DeviceLookup(
        password=str(sip["password"]),
        account_id=account_id,
        device_id=str(device["_id"]),
        owner_id=device.get("owner_id"),
        username=str(sip.get("username")),
        expire_seconds=expires if isinstance(expires, int) else None,
        register_overwrite_notify=bool(device.get("register_overwrite_notify", False)),
        suppress_unregister_notifications=bool(device.get("suppress_unregister_notifications", False)),
    )
