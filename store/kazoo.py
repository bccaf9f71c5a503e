"""Kazoo's database layout and document conventions on top of any Store.

- Account ids are 32 lowercase hex digits. An account's database is ``account/ab/cd/<28 hex>``
  (``account%2Fab%2Fcd%2F...`` on the wire; the drivers encode, this module deals in the plain
  form). Month databases (MODBs) for CDRs, voicemail messages and recordings are
  ``account/ab/cd/<28 hex>-YYYYMM`` and are created by the first write of the month.
- ``accounts`` aggregates every account document; ``system_config`` holds one document per
  configuration category, ``{"_id": "callflow", "default": {...}, "<node>": {...}}``.
- Private fields start with ``pvt_`` and never leave through the API (``public_fields``).
  Timestamps are Gregorian seconds (Unix time + 62167219200), as Kazoo stores them.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from store.base import Store
from store.errors import BadRequest, Conflict, NotFound

__all__ = [
    "ACCOUNTS_DB",
    "GREGORIAN_OFFSET",
    "SYSTEM_CONFIG_DB",
    "SYSTEM_DBS",
    "account_db_name",
    "account_id_from_db",
    "db_classification",
    "decode_db_name",
    "encode_db_name",
    "ensure_saved",
    "get_config",
    "gregorian_now",
    "is_account_id",
    "is_soft_deleted",
    "modb_doc_id",
    "modb_name",
    "new_account_id",
    "parse_modb",
    "public_fields",
    "save_to_modb",
    "set_config",
    "set_pvt_fields",
    "soft_delete",
    "touch",
    "update_doc",
]

ACCOUNTS_DB = "accounts"
SYSTEM_CONFIG_DB = "system_config"
SYSTEM_DBS = (
    "accounts",
    "system_config",
    "system_data",
    "system_media",
    "system_schemas",
    "system_auth",
    "sip_auth",
    "offnet",
    "anonymous_cdrs",
    "token_auth",
    "webhooks",
    "services",
    "faxes",
    "alerts",
    "ratedeck",
    "tasks",
    "pending_notifications",
)
GREGORIAN_OFFSET = 62167219200
DEFAULT_NODE = "default"
# Kazoo retries a conflicting read-modify-write this many times before giving up.
UPDATE_RETRIES = 10

_ACCOUNT_ID = re.compile(r"^[0-9a-f]{32}$")
# account/ab/cd/<28>, optionally -YYYYMM (MODB) or -YYYY (YODB).
_ACCOUNT_DB = re.compile(r"^account/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{28})(?:-(\d{4})(\d{2})?)?$")


def new_account_id() -> str:
    return uuid.uuid4().hex


def is_account_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_ACCOUNT_ID.match(value))


def decode_db_name(name: str) -> str:
    """The plain form of a database name given encoded (``%2F``/``%2f``) or plain."""
    return unquote(name)


def encode_db_name(name: str) -> str:
    """The form CouchDB's URLs and Kazoo's ``pvt_account_db`` use: ``/`` as ``%2F``."""
    return decode_db_name(name).replace("/", "%2F").replace("+", "%2B")


def account_db_name(account: str) -> str:
    """``account/ab/cd/<rest>`` for an account id or any of its database name encodings."""
    account_id = account_id_from_db(account) if not is_account_id(account) else account
    return f"account/{account_id[:2]}/{account_id[2:4]}/{account_id[4:]}"


def account_id_from_db(name: str) -> str:
    """The account id in a raw id, an account database or MODB name, plain or encoded."""
    plain = decode_db_name(name)
    if is_account_id(plain):
        return plain
    match = _ACCOUNT_DB.match(plain)
    if not match:
        raise BadRequest(f"not an account database name: {name!r}")
    return "".join(match.group(1, 2, 3))


def modb_name(account: str, year: int | None = None, month: int | None = None) -> str:
    """The account's month database, ``account/ab/cd/<rest>-YYYYMM`` (this month by default)."""
    if year is None or month is None:
        now = datetime.now(UTC)
        year, month = now.year, now.month
    if not 1 <= month <= 12 or not 1970 <= year <= 9999:
        raise BadRequest(f"invalid month {year}-{month}")
    return f"{account_db_name(account)}-{year:04d}{month:02d}"


def parse_modb(name: str) -> tuple[str, int, int]:
    """(account id, year, month) of a MODB name; BadRequest if it is not one."""
    match = _ACCOUNT_DB.match(decode_db_name(name))
    if not match or match.group(5) is None:
        raise BadRequest(f"not a month database name: {name!r}")
    return "".join(match.group(1, 2, 3)), int(match.group(4)), int(match.group(5))


def db_classification(name: str) -> str:
    """Kazoo's ``db_classification``: account, modb, yodb, numbers, system, aggregate or external."""
    plain = decode_db_name(name)
    match = _ACCOUNT_DB.match(plain)
    if match:
        if match.group(5):
            return "modb"
        return "yodb" if match.group(4) else "account"
    if plain.startswith("numbers/"):
        return "numbers"
    if plain in ("accounts", "sip_auth", "faxes", "webhooks", "services", "token_auth"):
        return "aggregate"
    if plain.startswith("system_") or plain in SYSTEM_DBS:
        return "system"
    return "external"


def modb_doc_id(year: int | None = None, month: int | None = None) -> str:
    """``YYYYMM-<32 hex>``: MODB document ids sort by month."""
    if year is None or month is None:
        now = datetime.now(UTC)
        year, month = now.year, now.month
    return f"{year:04d}{month:02d}-{uuid.uuid4().hex}"


# -- private fields ----------------------------------------------------------------------------


def gregorian_now() -> int:
    return int(time.time()) + GREGORIAN_OFFSET


def set_pvt_fields(
    doc: dict[str, Any],
    pvt_type: str,
    account_id: str | None = None,
    *,
    vsn: str = "1",
    now: int | None = None,
) -> dict[str, Any]:
    """A copy of ``doc`` with Kazoo's private fields; ``pvt_created`` is kept when already set."""
    stamp = gregorian_now() if now is None else now
    out = dict(doc)
    out["pvt_type"] = pvt_type
    out["pvt_vsn"] = out.get("pvt_vsn", vsn)
    out.setdefault("pvt_created", stamp)
    out["pvt_modified"] = stamp
    if account_id is not None:
        out["pvt_account_id"] = account_id
        out["pvt_account_db"] = encode_db_name(account_db_name(account_id))
    return out


def touch(doc: dict[str, Any], now: int | None = None) -> dict[str, Any]:
    out = dict(doc)
    out["pvt_modified"] = gregorian_now() if now is None else now
    return out


def soft_delete(doc: dict[str, Any], now: int | None = None) -> dict[str, Any]:
    """Kazoo's soft delete: the document stays, flagged ``pvt_deleted``; views skip it."""
    out = touch(doc, now)
    out["pvt_deleted"] = True
    return out


def is_soft_deleted(doc: dict[str, Any]) -> bool:
    return bool(doc.get("pvt_deleted", False))


def public_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """What the API may show: no ``pvt_*`` and no ``_*`` fields, the id as ``id`` (Kazoo's shape)."""
    out = {k: v for k, v in doc.items() if not k.startswith(("pvt_", "_"))}
    if "_id" in doc:
        out["id"] = doc["_id"]
    return out


# -- read-modify-write -------------------------------------------------------------------------


def update_doc(
    store: Store,
    db: str,
    doc_id: str,
    update: Callable[[dict[str, Any]], dict[str, Any] | None],
    *,
    create: dict[str, Any] | None = None,
    retries: int = UPDATE_RETRIES,
) -> dict[str, Any]:
    """Kazoo's ``update_doc``: open, apply ``update``, save; on Conflict re-open and re-apply.

    ``update`` gets a copy of the current document and returns the new one (or None to leave it
    unchanged). When the document is missing, ``create`` (if given) is the starting point.
    """
    for _ in range(retries):
        try:
            current = store.get(db, doc_id)
        except NotFound:
            if create is None:
                raise
            current = {**create, "_id": doc_id}
        changed = update(copy.deepcopy(current))
        if changed is None or changed == current:
            return current
        changed["_id"] = doc_id
        if "_rev" in current:
            changed["_rev"] = current["_rev"]
        else:
            changed.pop("_rev", None)
        try:
            return store.put(db, changed)
        except Conflict:
            continue
    raise Conflict(f"gave up after {retries} conflicting updates", db=db, doc_id=doc_id)


def ensure_saved(store: Store, db: str, doc: dict[str, Any], *, retries: int = UPDATE_RETRIES) -> dict[str, Any]:
    """Kazoo's ``ensure_saved``: save ``doc`` over whatever revision is current (last writer wins)."""
    body = dict(doc)
    for _ in range(retries):
        try:
            return store.put(db, body)
        except Conflict:
            if "_id" not in body:
                raise
            try:
                body["_rev"] = store.get(db, body["_id"])["_rev"]
            except NotFound:
                body.pop("_rev", None)
    raise Conflict(f"gave up after {retries} conflicting saves", db=db, doc_id=body.get("_id"))


def save_to_modb(
    store: Store,
    account: str,
    doc: dict[str, Any],
    *,
    year: int | None = None,
    month: int | None = None,
    retries: int = 3,
) -> dict[str, Any]:
    """Save into the account's month database, creating it on the first write (Kazoo's kazoo_modb).

    The write is tried first; on NotFound (no database yet) the database is created (a race with
    another creator is fine) and the write retried.
    """
    db = modb_name(account, year, month)
    body = dict(doc)
    if "_id" not in body:
        body["_id"] = modb_doc_id(year, month)
    for _ in range(retries):
        try:
            return store.put(db, body)
        except NotFound:
            # No database yet (or deleted meanwhile): create it; losing a creation race is fine.
            store.create_db(db, exist_ok=True)
    return store.put(db, body)


# -- system_config -----------------------------------------------------------------------------


def _key_path(key: str | Sequence[str]) -> list[str]:
    return [key] if isinstance(key, str) else [str(part) for part in key]


def _lookup(section: Any, path: list[str]) -> tuple[bool, Any]:
    value = section
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _assign(section: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        child = section.get(part)
        if not isinstance(child, dict):
            child = {}
            section[part] = child
        section = child
    section[path[-1]] = value


def get_config(
    store: Store,
    category: str,
    key: str | Sequence[str],
    default: Any = None,
    *,
    node: str | None = None,
) -> Any:
    """A ``system_config`` value, like Kazoo's ``kapps_config:get``.

    Looks in the node's section, then in ``default``. When neither has it and ``default`` is not
    None, the default is written into the ``default`` section (so operators see every setting in
    the document) and returned. ``key`` may be a list for nested settings.
    """
    path = _key_path(key)
    try:
        doc = store.get(SYSTEM_CONFIG_DB, category)
    except NotFound:
        doc = {}
    for section in ([node] if node else []) + [DEFAULT_NODE]:
        found, value = _lookup(doc.get(section), path)
        if found:
            return value
    if default is None:
        return None
    set_config(store, category, path, default, only_if_missing=True)
    return default


def set_config(
    store: Store,
    category: str,
    key: str | Sequence[str],
    value: Any,
    *,
    node: str = DEFAULT_NODE,
    only_if_missing: bool = False,
) -> dict[str, Any]:
    """Write one ``system_config`` setting (creating the database and document as needed)."""
    path = _key_path(key)
    store.create_db(SYSTEM_CONFIG_DB, exist_ok=True)

    def apply(doc: dict[str, Any]) -> dict[str, Any] | None:
        section = doc.get(node)
        if not isinstance(section, dict):
            section = {}
        if only_if_missing and _lookup(section, path)[0]:
            return None
        _assign(section, path, value)
        doc[node] = section
        doc["pvt_type"] = "config"
        doc["pvt_modified"] = gregorian_now()
        doc.setdefault("pvt_created", doc["pvt_modified"])
        return doc

    return update_doc(store, SYSTEM_CONFIG_DB, category, apply, create={})

