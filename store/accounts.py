"""Creating an account and its first admin user, the way Crossbar does.

An account is its database (``account/ab/cd/<rest>``), its document there (``_id`` = account id)
and a copy of that document in the ``accounts`` aggregate. The realm is unique across accounts:
a claim document ``realm:<realm>`` in ``accounts`` makes two concurrent creations with one realm
collide on a document id, so exactly one succeeds. The first account ever created becomes the
system account (``pvt_superduper_admin: true``) and is recorded as Kazoo does, in
``system_config/accounts`` → ``default.master_account_id``.

User passwords are kept as an argon2id hash (``pvt_password_hash``) plus the md5 and sha1 of
``"username:password"`` (``pvt_md5_auth``/``pvt_sha1_auth``) that Kazoo's user_auth compares
against the credentials a client sends.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from store import schemas
from store.base import Store, new_doc_id
from store.errors import Conflict, NotFound, StoreError, ValidationFailed
from store.kazoo import (
    ACCOUNTS_DB,
    SYSTEM_CONFIG_DB,
    account_db_name,
    encode_db_name,
    get_config,
    gregorian_now,
    new_account_id,
    set_config,
    set_pvt_fields,
    update_doc,
)

__all__ = [
    "create_account",
    "credential_hashes",
    "find_account_by_realm",
    "master_account_id",
    "verify_password",
]

_password_hasher = PasswordHasher()
# A realm claim without its account, older than this, is left over from a crashed creation.
STALE_CLAIM_SECONDS = 300  # argon2id with argon2-cffi's recommended parameters


def credential_hashes(username: str, password: str) -> dict[str, str]:
    """Kazoo's credential hashes of ``"username:password"`` (username lowercased, as Kazoo does)."""
    credentials = f"{username.lower()}:{password}".encode()
    return {
        "pvt_md5_auth": hashlib.md5(credentials, usedforsecurity=False).hexdigest(),
        "pvt_sha1_auth": hashlib.sha1(credentials, usedforsecurity=False).hexdigest(),
    }


def verify_password(user: dict[str, Any], password: str) -> bool:
    stored = user.get("pvt_password_hash")
    if not isinstance(stored, str):
        return False
    try:
        return bool(_password_hasher.verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


def _realm_claim_id(realm: str) -> str:
    return f"realm:{realm}"


def find_account_by_realm(store: Store, realm: str) -> dict[str, Any] | None:
    """The account document in ``accounts`` whose realm is ``realm`` (case-insensitive)."""
    try:
        claim = store.get(ACCOUNTS_DB, _realm_claim_id(realm.strip().lower()))
        return store.get(ACCOUNTS_DB, claim["pvt_account_id"])
    except NotFound:
        pass
    try:
        found = store.find(ACCOUNTS_DB, {"pvt_type": "account", "realm": realm.strip().lower()}, limit=1)
    except NotFound:
        return None
    return found.docs[0] if found.docs else None


def master_account_id(store: Store) -> str | None:
    """The system account's id, from ``system_config/accounts`` like Kazoo."""
    value = get_config(store, "accounts", "master_account_id")
    return value if isinstance(value, str) else None


def _claim_realm(store: Store, realm: str, account_id: str) -> dict[str, Any]:
    """Take the realm's claim document, or raise the realm-in-use error.

    A claim whose account never got written (its creator died half-way) is taken over once it
    is older than STALE_CLAIM_SECONDS; a younger one may be a creation still in progress.
    """
    fresh = set_pvt_fields({"_id": _realm_claim_id(realm), "realm": realm}, "realm_claim", account_id)
    try:
        return store.put(ACCOUNTS_DB, fresh)
    except Conflict:
        pass
    try:
        existing = store.get(ACCOUNTS_DB, _realm_claim_id(realm))
    except NotFound:
        raise _realm_taken(realm) from None
    owner = existing.get("pvt_account_id")
    if isinstance(owner, str) and store.open_or_none(ACCOUNTS_DB, owner) is not None:
        raise _realm_taken(realm)
    if gregorian_now() - int(existing.get("pvt_created", 0)) < STALE_CLAIM_SECONDS:
        raise _realm_taken(realm)
    try:
        return store.put(ACCOUNTS_DB, {**fresh, "_rev": existing["_rev"]})
    except Conflict:
        raise _realm_taken(realm) from None


def _realm_taken(realm: str) -> ValidationFailed:
    return ValidationFailed(
        {"realm": {"unique": {"message": "Realm already in use", "cause": realm}}},
        reason=f"realm {realm!r} is already used by another account",
    )


def create_account(
    store: Store,
    name: str,
    realm: str,
    username: str,
    password: str,
    *,
    parent_id: str | None = None,
    first_name: str = "Account",
    last_name: str = "Admin",
    email: str | None = None,
    timezone: str | None = None,
    language: str | None = None,
) -> dict[str, Any]:
    """Create an account and its first admin user; returns ids and where they live.

    Raises ValidationFailed (Kazoo's field-error shape) for bad input, a realm already in use or
    an unknown parent. The result: ``account_id``, ``account_db``, ``name``, ``realm``,
    ``superduper_admin``, ``user_id``, ``username``.
    """
    realm = (realm or "").strip().lower()
    username = (username or "").strip().lower()
    account_input: dict[str, Any] = {"name": name, "realm": realm}
    if timezone:
        account_input["timezone"] = timezone
    if language:
        account_input["language"] = language
    user_input: dict[str, Any] = {
        "first_name": first_name,
        "last_name": last_name,
        "username": username,
        "password": password,
        "priv_level": "admin",
    }
    if email:
        user_input["email"] = email
    errors = schemas.validate("accounts", account_input)
    errors.update(schemas.validate("users", user_input))
    if not realm:
        errors.setdefault("realm", {})["required"] = {"message": "Field is required but missing"}
    if not username:
        errors.setdefault("username", {})["required"] = {"message": "Field is required but missing"}
    if not password:
        errors.setdefault("password", {})["required"] = {"message": "Field is required but missing"}
    if errors:
        raise ValidationFailed(errors)

    store.create_db(ACCOUNTS_DB, exist_ok=True)
    store.create_db(SYSTEM_CONFIG_DB, exist_ok=True)
    # Realm lookups (here, and the registrar's later) read this index instead of scanning.
    try:
        store.create_index(ACCOUNTS_DB, ["pvt_type", "realm"], name="by_realm", ddoc="mirliton-accounts")
    except Conflict:
        pass  # another creator declared it at the same moment

    tree: list[str] = []
    if parent_id:
        try:
            parent = store.get(ACCOUNTS_DB, parent_id)
        except NotFound:
            raise ValidationFailed(
                {"parent_id": {"not_found": {"message": "Parent account does not exist", "cause": parent_id}}}
            ) from None
        tree = [*parent.get("pvt_tree", []), parent_id]

    if find_account_by_realm(store, realm) is not None:
        raise _realm_taken(realm)

    account_id = new_account_id()
    account_db = account_db_name(account_id)
    claim = _claim_realm(store, realm, account_id)

    became_master = False
    try:
        store.create_db(account_db)
        set_config(store, "accounts", "master_account_id", account_id, only_if_missing=True)
        became_master = master_account_id(store) == account_id

        account_doc = schemas.apply_defaults("accounts", account_input)
        account_doc = set_pvt_fields({**account_doc, "_id": account_id}, "account", account_id)
        account_doc.update(
            {
                "pvt_tree": tree,
                "pvt_enabled": True,
                "pvt_superduper_admin": became_master,
                "pvt_api_key": secrets.token_hex(32),
            }
        )
        saved = store.put(account_db, account_doc)
        aggregate = {k: v for k, v in saved.items() if k != "_rev"}
        store.put(ACCOUNTS_DB, aggregate)

        user_doc = schemas.apply_defaults("users", {k: v for k, v in user_input.items() if k != "password"})
        user_doc = set_pvt_fields({**user_doc, "_id": new_doc_id()}, "user", account_id)
        user_doc.update(credential_hashes(username, password))
        user_doc["pvt_password_hash"] = _password_hasher.hash(password)
        user = store.put(account_db, user_doc)
    except BaseException:
        _undo(store, account_id, account_db, claim, became_master)
        raise

    return {
        "account_id": account_id,
        "account_db": account_db,
        "account_db_encoded": encode_db_name(account_db),
        "name": name,
        "realm": realm,
        "superduper_admin": became_master,
        "user_id": user["_id"],
        "username": username,
    }


def _undo(store: Store, account_id: str, account_db: str, claim: dict[str, Any], became_master: bool) -> None:
    """Best-effort removal of a half-created account, so its realm can be used again."""
    cleanups = [
        lambda: store.delete_db(account_db, missing_ok=True),
        lambda: store.delete(ACCOUNTS_DB, claim["_id"], claim["_rev"]),
        lambda: store.delete(ACCOUNTS_DB, account_id, store.get(ACCOUNTS_DB, account_id)["_rev"]),
    ]
    if became_master:

        def forget_master(doc: dict[str, Any]) -> dict[str, Any] | None:
            section = dict(doc.get("default") or {})
            if section.pop("master_account_id", None) != account_id:
                return None
            doc["default"] = section
            return doc

        cleanups.append(lambda: update_doc(store, SYSTEM_CONFIG_DB, "accounts", forget_master))
    for cleanup in cleanups:
        try:
            cleanup()
        except StoreError:
            continue
