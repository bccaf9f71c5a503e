"""What the API does to documents, independent of HTTP: Kazoo's crossbar modules in one place.

Every account resource (devices, users, callflows, ...) is a document of a ``pvt_type`` in the
account's database, validated by its JSON schema, with Kazoo's private fields (``pvt_*``) set
here and never shown. Writes check everything first (schema, uniqueness, revision) and only
then touch the store, so a refused request leaves nothing behind; a write that spans several
documents (an account and its aggregate copy, a device and its ``sip_auth`` entry) writes the
authoritative document first and undoes it when a later step fails.

Deletes are Kazoo's soft deletes: the document stays with ``pvt_deleted: true``, listings and
reads skip it, and a ``doc_deleted`` notification goes out.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from gevent.threadpool import ThreadPool

from actors.crossbar import schemas
from actors.crossbar.auth import Principal, TokenSigner
from actors.crossbar.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    ValidationError,
)
from actors.crossbar.notifier import Notifier, NullNotifier
from bus.api.presence import mwi_update
from store import Store, voicemail
from store import errors as store_errors
from store.accounts import credential_hashes
from store.kazoo import (
    ACCOUNTS_DB,
    GREGORIAN_OFFSET,
    account_db_name,
    gregorian_now,
    is_account_id,
    modb_name,
    new_account_id,
    parse_modb,
    set_pvt_fields,
    update_doc,
)

log = logging.getLogger("mirliton.crossbar")

__all__ = [
    "ACCOUNT_RESOURCES",
    "CrossbarService",
    "ListPage",
    "PasswordHashing",
    "ResourceKind",
    "decode_start_key",
    "encode_start_key",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# Kazoo's crossbar.maximum_range: 31 days + 1 hour.
MAXIMUM_RANGE = 31 * 86400 + 3600
DEFAULT_REALM_SUFFIX = "sip.mirliton.local"
MEDIA_ATTACHMENT = "audio"
# How long a uniqueness claim without its document counts as a write in progress.
CLAIM_GRACE = 60

_password_hasher = PasswordHasher()  # argon2id, argon2-cffi's recommended parameters
# argon2id hashes at once: each costs ~0.5 s of CPU and 64 MiB; more than the machine's cores
# only queue up in memory.
HASH_THREADS = 2


class PasswordHashing:
    """argon2id off the gevent hub. A hash takes ~0.5 s of CPU in C code that releases the GIL;
    run inline it would stop every other request of the process for that long (the server is
    one gevent hub). It runs in a small native thread pool instead, while the request's
    greenlet waits and the hub serves the others. The pool is made on first use, in the
    thread (and process: the role forks) that serves requests; called from another thread, it
    hashes inline (gevent's rule for a pool of another hub)."""

    def __init__(self, threads: int = HASH_THREADS) -> None:
        self.threads = threads
        self._pool: ThreadPool | None = None

    def hash(self, password: str) -> str:
        if self._pool is None:
            self._pool = ThreadPool(self.threads)
        # The module's hasher looked up at call time: tests swap it for a cheap one.
        result: str = self._pool.apply(lambda: _password_hasher.hash(password))
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.kill()
            self._pool = None


# -- resource kinds ----------------------------------------------------------------------------


def _get_path(doc: Any, path: str) -> Any:
    value = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


_MISSING = object()


@dataclass(frozen=True)
class UniqueRule:
    """Values of ``field`` must not appear in another live document of the same account."""

    field: str
    values: Callable[[dict[str, Any]], list[str]]
    what: str


def _scalar(path: str) -> Callable[[dict[str, Any]], list[str]]:
    def values(doc: dict[str, Any]) -> list[str]:
        value = _get_path(doc, path)
        return [value.lower()] if isinstance(value, str) and value else []

    return values


def _listed(path: str) -> Callable[[dict[str, Any]], list[str]]:
    def values(doc: dict[str, Any]) -> list[str]:
        value = _get_path(doc, path)
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    return values


@dataclass(frozen=True)
class ResourceKind:
    """One account resource: URL noun, Kazoo ``pvt_type``, schema and listing fields."""

    name: str
    pvt_type: str
    schema: str
    # Listing fields: output key -> dotted path in the document.
    summary: tuple[tuple[str, str], ...]
    unique: tuple[UniqueRule, ...] = ()
    # Kazoo keeps a copy of these documents in an aggregate database (sip_auth, webhooks).
    aggregate_db: str | None = None
    description: str = ""


def _summary(*fields: str) -> tuple[tuple[str, str], ...]:
    return tuple((f.rsplit(".", 1)[-1], f) for f in fields)


ACCOUNT_RESOURCES: dict[str, ResourceKind] = {
    kind.name: kind
    for kind in (
        ResourceKind(
            "users", "user", "users",
            _summary("first_name", "last_name", "username", "email", "priv_level", "enabled", "presence_id"),
            (UniqueRule("username", _scalar("username"), "Username"),),
            description="People of the account: login, priv_level, call settings",
        ),
        ResourceKind(
            "devices", "device", "devices",
            _summary("name", "device_type", "owner_id", "enabled", "mac_address", "sip.username"),
            (UniqueRule("sip.username", _scalar("sip.username"), "SIP username"),),
            aggregate_db="sip_auth",
            description="SIP phones, softphones, cell phones: what calls ring and who registers",
        ),
        ResourceKind(
            "callflows", "callflow", "callflows",
            _summary("name", "numbers", "patterns", "featurecode"),
            (
                UniqueRule("numbers", _listed("numbers"), "Number"),
                UniqueRule("patterns", _listed("patterns"), "Pattern"),
            ),
            description="Numbers and patterns routed to a tree of actions",
        ),
        ResourceKind(
            "vmboxes", "vmbox", "vmboxes",
            _summary("name", "mailbox", "owner_id"),
            (UniqueRule("mailbox", _scalar("mailbox"), "Mailbox"),),
            description="Voicemail boxes",
        ),
        ResourceKind(
            "media", "media", "media",
            _summary("name", "media_source", "language", "content_type", "streamable"),
            description="Prompts, greetings and music; the audio is at /media/{id}/raw",
        ),
        ResourceKind("menus", "menu", "menus", _summary("name"), description="IVR menus"),
        ResourceKind(
            "temporal_rules", "temporal_rule", "temporal_rules",
            _summary("name", "cycle", "enabled"), description="Time-of-day rules",
        ),
        ResourceKind("groups", "group", "groups", _summary("name", "endpoints"), description="Groups of users and devices"),
        ResourceKind(
            "conferences", "conference", "conferences",
            _summary("name", "owner_id", "conference_numbers"),
            (UniqueRule("conference_numbers", _listed("conference_numbers"), "Conference number"),),
            description="Conference rooms",
        ),
        ResourceKind(
            "webhooks", "webhook", "webhooks",
            _summary("name", "uri", "hook", "http_verb", "enabled"),
            aggregate_db="webhooks",
            description="HTTP callbacks on account events",
        ),
    )
}

ACCOUNT_SUMMARY = _summary("name", "realm", "enabled")


# -- helpers -----------------------------------------------------------------------------------


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """What the API shows: no ``pvt_*``/``_*`` fields, the id as ``id``; media gains its audio's
    content type and length from the attachment stub."""
    out = {k: v for k, v in doc.items() if not k.startswith(("pvt_", "_"))}
    if "_id" in doc:
        out["id"] = doc["_id"]
    stub = (doc.get("_attachments") or {}).get(MEDIA_ATTACHMENT)
    if doc.get("pvt_type") == "media" and isinstance(stub, dict):
        out["content_type"] = stub.get("content_type", out.get("content_type"))
        out["content_length"] = stub.get("length", out.get("content_length"))
    return out


def _strip_input(data: dict[str, Any]) -> dict[str, Any]:
    """Kazoo ignores private and reserved fields in a request, and ``id`` (the URL names it)."""
    return {k: v for k, v in data.items() if not k.startswith(("pvt_", "_")) and k != "id"}


def merge_patch(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Kazoo's PATCH: a recursive merge where ``null`` deletes the key."""
    out = copy.deepcopy(current)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def encode_start_key(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_start_key(token: str) -> Any:
    try:
        padded = token + "=" * (-len(token) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("start_key is not one this API gave out", error_id="invalid_start_key") from None


def _unique_error(field: str, what: str, value: str, other_id: str) -> dict[str, dict[str, Any]]:
    return {field: {"unique": {"message": f"{what} {value} is already used by {other_id}", "cause": value}}}


def _check_revision(current: dict[str, Any], revision: str | None) -> None:
    if revision is not None and revision != current.get("_rev"):
        raise Conflict(
            f"revision {revision} is not the current one ({current.get('_rev')})",
            error_id="stale_revision",
        )


@dataclass
class ListPage:
    items: list[dict[str, Any]]
    page_size: int
    start_key: str | None = None
    next_start_key: str | None = None


@dataclass
class Query:
    """Listing parameters: paging and Kazoo's filters (crossbar doc/filters.md)."""

    page_size: int = DEFAULT_PAGE_SIZE
    start_key: str | None = None
    paginate: bool = True
    filters: list[Callable[[dict[str, Any]], bool]] = field(default_factory=list)
    created_from: int | None = None
    created_to: int | None = None

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Query:
        query = cls()
        raw_size = params.get("page_size")
        if raw_size is not None:
            if not raw_size.isdigit() or not 1 <= int(raw_size) <= MAX_PAGE_SIZE:
                raise BadRequest(f"page_size must be 1..{MAX_PAGE_SIZE}", error_id="invalid_page_size")
            query.page_size = int(raw_size)
        query.start_key = params.get("start_key") or None
        query.paginate = params.get("paginate", "true").lower() != "false"
        for name, raw in params.items():
            query._add_filter(name, raw)
        return query

    def _add_filter(self, name: str, raw: str) -> None:
        def key_of(prefix: str) -> str:
            key = name[len(prefix):] if prefix else raw
            if not key or key.startswith(("pvt_", "_")):
                raise BadRequest(f"cannot filter on {key!r}", error_id="invalid_filter")
            return key

        def wanted(value: str) -> Any:
            try:
                return json.loads(value)
            except ValueError:
                return value

        def same(actual: Any, value: str) -> bool:
            return actual is not _MISSING and (actual == wanted(value) or actual == value)

        if name.startswith("filter_not_"):
            key = key_of("filter_not_")
            self.filters.append(lambda d: not same(_get_path(d, key), raw))
        elif name.startswith("filter_"):
            key = key_of("filter_")
            self.filters.append(lambda d: same(_get_path(d, key), raw))
        elif name == "has_key":
            key = key_of("")
            self.filters.append(lambda d: _get_path(d, key) is not _MISSING)
        elif name == "key_missing":
            key = key_of("")
            self.filters.append(lambda d: _get_path(d, key) is _MISSING)
        elif name == "has_value":
            key = key_of("")
            self.filters.append(lambda d: _get_path(d, key) not in (_MISSING, None, "", [], {}))
        elif name == "missing_value":
            key = key_of("")
            self.filters.append(lambda d: _get_path(d, key) in (_MISSING, None, "", [], {}))
        elif name in ("created_from", "created_to", "modified_from", "modified_to"):
            if not raw.isdigit():
                raise BadRequest(f"{name} must be Gregorian seconds", error_id="invalid_range")
            bound = int(raw)
            if name == "created_from":
                self.created_from = bound
            elif name == "created_to":
                self.created_to = bound
            pvt = "pvt_created" if name.startswith("created") else "pvt_modified"
            if name.endswith("_from"):
                self.filters.append(lambda d: isinstance(d.get(pvt), int) and d[pvt] >= bound)
            else:
                self.filters.append(lambda d: isinstance(d.get(pvt), int) and d[pvt] <= bound)

    def keep(self, doc: dict[str, Any]) -> bool:
        return all(f(doc) for f in self.filters)


_MESSAGE_ID = re.compile(r"\d{4}(0[1-9]|1[0-2])-[0-9a-f]{32}")


def message_metadata(doc: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a voicemail message: Kazoo's metadata (``media_id`` is its id)."""
    return {**(doc.get("metadata") or {}), "media_id": doc["_id"]}


def _message_key(doc: dict[str, Any]) -> tuple[int, str]:
    stamp = (doc.get("metadata") or {}).get("timestamp")
    return (stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else 0, doc["_id"])


def _message_probe(doc: dict[str, Any]) -> dict[str, Any]:
    """What filters look at: the metadata, with the message's time as created/modified."""
    stamp = _message_key(doc)[0]
    return {**message_metadata(doc), "pvt_created": stamp, "pvt_modified": doc.get("pvt_modified", stamp)}


def _folder_error(folder: Any) -> dict[str, dict[str, dict[str, Any]]]:
    if folder is None:
        return {"folder": {"required": {"message": f"folder is required: one of {', '.join(voicemail.FOLDERS)}"}}}
    return {"folder": {"enum": {"message": f"folder must be one of {', '.join(voicemail.FOLDERS)}",
                                "target": list(voicemail.FOLDERS), "cause": folder}}}


def _check_folder(folder: Any) -> None:
    if folder not in voicemail.FOLDERS:
        raise ValidationError(_folder_error(folder))


def _summarize(doc: dict[str, Any], summary: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": doc["_id"]}
    for key, path in summary:
        value = _get_path(doc, path)
        if value is not _MISSING:
            out[key] = len(value) if key == "endpoints" and isinstance(value, dict) else value
    return out


class SharedDocCache:
    """Documents by (database, id) for ``ttl`` seconds: the accounts and users every request
    checks (the token's account and owner, the target account).

    Unlike store.cache.DocumentCache the cached document is shared, not copied (callers treat it
    as read-only): this is on every request's path. Writes through this API invalidate at once;
    changes made by other nodes arrive as bus notifications (``follow_changes``) or expire.
    """

    def __init__(self, store: Store, *, ttl: float, max_entries: int = 10_000) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._generation = 0

    def get(self, db: str, doc_id: str) -> dict[str, Any]:
        """The document; store.NotFound as the store raises it (not cached)."""
        key = (db, doc_id)
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        generation = self._generation
        doc = self.store.get(db, doc_id)
        if generation == self._generation:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (now + self.ttl, doc)
        return doc

    def invalidate(self, db: str, doc_id: str) -> None:
        self._generation += 1
        self._entries.pop((db, doc_id), None)

    def forget(self, doc_id: str) -> None:
        """Drop ``doc_id`` whatever its database (ids are unique across accounts)."""
        self._generation += 1
        for key in [key for key in self._entries if key[1] == doc_id]:
            del self._entries[key]


# -- the service -------------------------------------------------------------------------------


class CrossbarService:
    """Kazoo's crossbar semantics over a Store. Thread/greenlet safe (the store and cache are)."""

    def __init__(
        self,
        store: Store,
        signer: TokenSigner,
        *,
        notifier: Notifier | None = None,
        account_cache_ttl: float = 30.0,
        realm_suffix: str = DEFAULT_REALM_SUFFIX,
        max_media_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.signer = signer
        self.notifier: Notifier = notifier or NullNotifier()
        self.cache = SharedDocCache(store, ttl=account_cache_ttl)
        self.realm_suffix = realm_suffix
        self.max_media_bytes = max_media_bytes
        self.passwords = PasswordHashing()
        for db in (ACCOUNTS_DB, "sip_auth", "webhooks"):
            store.create_db(db, exist_ok=True)
        self._type_indexed: set[str] = set()

    def close(self) -> None:
        """Stop the password hashing threads (the store is its owner's to close)."""
        self.passwords.close()

    # -- accounts: lookup and authorization ----------------------------------------------------

    def account(self, account_id: str) -> dict[str, Any]:
        """The account document (from the ``accounts`` aggregate); 404 if missing or deleted."""
        if not is_account_id(account_id):
            raise NotFound(f"no account {account_id}", error_id="account_not_found")
        try:
            doc = self.cache.get(ACCOUNTS_DB, account_id)
        except store_errors.NotFound:
            raise NotFound(f"no account {account_id}", error_id="account_not_found") from None
        if doc.get("pvt_deleted") or doc.get("pvt_type") != "account":
            raise NotFound(f"no account {account_id}", error_id="account_not_found")
        return doc

    def authorize(
        self,
        principal: Principal,
        account_id: str,
        *,
        write: bool = False,
        resource: str = "",
        doc_id: str | None = None,
    ) -> dict[str, Any]:
        """The target account, once the token is allowed to act on it (else 403/404)."""
        self.principal_account(principal)
        account = self.account(account_id)
        if not principal.reaches(account_id, list(account.get("pvt_tree") or [])):
            raise Forbidden(f"the token's account does not reach account {account_id}")
        principal.check_read(account_id)
        if write:
            principal.check_write(account_id, resource, doc_id)
        return account

    def current_principal(self, principal: Principal) -> Principal:
        """The token's principal as things stand now: its account must still exist and be
        enabled, its user too, and the user's current priv_level applies (a demoted or deleted
        user loses access at once, not when the token expires)."""
        self.principal_account(principal)
        if principal.owner_id is None:
            return principal
        try:
            user = self.cache.get(account_db_name(principal.account_id), principal.owner_id)
        except (store_errors.NotFound, store_errors.BadRequest):
            raise Unauthorized("the token's user no longer exists", error_id="invalid_token") from None
        if user.get("pvt_type") != "user" or user.get("pvt_deleted"):
            raise Unauthorized("the token's user no longer exists", error_id="invalid_token")
        if user.get("enabled") is False:
            raise Unauthorized("the token's user is disabled", error_id="user_disabled")
        priv_level = "admin" if user.get("priv_level") == "admin" else "user"
        if priv_level == principal.priv_level:
            return principal
        return dataclasses.replace(principal, priv_level=priv_level, superduper=principal.superduper and priv_level == "admin")

    def principal_account(self, principal: Principal) -> dict[str, Any]:
        """The token's own account; a token of a deleted or disabled account is refused."""
        try:
            account = self.account(principal.account_id)
        except NotFound:
            raise Unauthorized("the token's account no longer exists", error_id="invalid_token") from None
        if account.get("pvt_enabled") is False or account.get("enabled") is False:
            raise Unauthorized("the token's account is disabled", error_id="account_disabled")
        return account

    # -- authentication ------------------------------------------------------------------------

    def _find_accounts(self, *, name: str | None, realm: str | None) -> list[dict[str, Any]]:
        selector: dict[str, Any] = {"pvt_type": "account"}
        if realm:
            selector["realm"] = realm.strip().lower()
        elif name:
            selector["name"] = name
        else:
            return []
        self._ensure_type_index(ACCOUNTS_DB)
        docs = self.store.find(ACCOUNTS_DB, selector).docs
        return [d for d in docs if not d.get("pvt_deleted")]

    def user_auth(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Kazoo's PUT /v2/user_auth: md5 (or sha1) of "username:password" and an account."""
        credentials = data.get("credentials")
        method = data.get("method", "md5")
        errors: dict[str, dict[str, dict[str, Any]]] = {}
        if not isinstance(credentials, str) or not re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{40}", credentials):
            errors["credentials"] = {"pattern": {"message": "credentials must be md5 or sha1 hex of username:password"}}
        if method not in ("md5", "sha"):
            errors["method"] = {"enum": {"message": "method must be md5 or sha", "target": ["md5", "sha"]}}
        name, realm = data.get("account_name"), data.get("account_realm")
        if not isinstance(name, str) and not isinstance(realm, str):
            errors["account_name"] = {"required": {"message": "account_name or account_realm is required"}}
        if errors:
            raise ValidationError(errors)
        field_name = "pvt_md5_auth" if method == "md5" else "pvt_sha1_auth"
        for account in self._find_accounts(
            name=name if isinstance(name, str) else None, realm=realm if isinstance(realm, str) else None
        ):
            db = account_db_name(account["_id"])
            try:
                self._ensure_type_index(db)
                users = self.store.find(db, {"pvt_type": "user", field_name: str(credentials).lower()}).docs
            except store_errors.NotFound:
                continue
            for user in users:
                if user.get("pvt_deleted") or user.get("enabled") is False:
                    continue
                if account.get("enabled") is False or account.get("pvt_enabled") is False:
                    raise Unauthorized("the account is disabled", error_id="account_disabled")
                priv = "admin" if user.get("priv_level") == "admin" else "user"
                token = self.signer.issue(
                    account_id=account["_id"],
                    owner_id=user["_id"],
                    priv_level=priv,
                    superduper=priv == "admin" and bool(account.get("pvt_superduper_admin")),
                    method="user_auth",
                )
                return token, self._auth_data(account, user["_id"], user.get("language"))
        raise Unauthorized("invalid credentials", error_id="invalid_credentials")

    def basic_auth(self, account_id: str, credentials: str) -> Principal:
        """Kazoo's cb_basic_auth: HTTP Basic with the account id as user name and md5 (or sha1)
        hex of "username:password" as password, checked on every request (no token)."""
        refused = Unauthorized("invalid basic auth credentials", error_id="invalid_credentials")
        match = re.fullmatch(r"[0-9a-fA-F]{32}|([0-9a-fA-F]{40})", credentials)
        if match is None or not is_account_id(account_id):
            raise refused
        try:
            account = self.account(account_id)
        except NotFound:
            raise refused from None
        field_name = "pvt_sha1_auth" if match.group(1) else "pvt_md5_auth"
        db = account_db_name(account_id)
        try:
            self._ensure_type_index(db)
            users = self.store.find(db, {"pvt_type": "user", field_name: credentials.lower()}).docs
        except store_errors.NotFound:
            raise refused from None
        for user in users:
            if user.get("pvt_deleted") or user.get("enabled") is False:
                continue
            priv = "admin" if user.get("priv_level") == "admin" else "user"
            return Principal(
                account_id=account_id,
                owner_id=user["_id"],
                priv_level=priv,
                superduper=priv == "admin" and bool(account.get("pvt_superduper_admin")),
                method="basic_auth",
            )
        raise refused

    def api_auth(self, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        api_key = data.get("api_key")
        if not isinstance(api_key, str) or not re.fullmatch(r"[0-9a-f]{64}", api_key):
            raise ValidationError({"api_key": {"pattern": {"message": "api_key must be 64 hex digits"}}})
        self._ensure_type_index(ACCOUNTS_DB)
        found = [
            d
            for d in self.store.find(ACCOUNTS_DB, {"pvt_type": "account", "pvt_api_key": api_key}).docs
            if not d.get("pvt_deleted")
        ]
        if not found:
            raise Unauthorized("invalid api key", error_id="invalid_credentials")
        account = found[0]
        if account.get("enabled") is False or account.get("pvt_enabled") is False:
            raise Unauthorized("the account is disabled", error_id="account_disabled")
        token = self.signer.issue(
            account_id=account["_id"],
            owner_id=None,
            priv_level="admin",
            superduper=bool(account.get("pvt_superduper_admin")),
            method="api_auth",
        )
        return token, self._auth_data(account, None, None)

    def _auth_data(self, account: dict[str, Any], owner_id: str | None, language: Any) -> dict[str, Any]:
        tree = list(account.get("pvt_tree") or [])
        out: dict[str, Any] = {
            "account_id": account["_id"],
            "account_name": account.get("name"),
            "is_reseller": bool(account.get("pvt_reseller")),
            "reseller_id": account.get("pvt_reseller_id") or (tree[-1] if tree else account["_id"]),
            "language": language or account.get("language") or "en-us",
            "apps": [],
            "is_superduper_admin": bool(account.get("pvt_superduper_admin")),
        }
        if owner_id is not None:
            out["owner_id"] = owner_id
        return out

    def api_key(self, account: dict[str, Any]) -> dict[str, Any]:
        key = account.get("pvt_api_key")
        if not isinstance(key, str):
            key = secrets.token_hex(32)
            account = self._update_account(account["_id"], lambda doc: {**doc, "pvt_api_key": key}, event="doc_edited")
        return {"api_key": key}

    # -- accounts: documents ---------------------------------------------------------------

    def _realm_claim_id(self, realm: str) -> str:
        # Same claim documents as store.accounts.create_account (one realm, one claim id).
        return f"realm:{realm}"

    def _claim_realm(self, realm: str, account_id: str) -> dict[str, Any]:
        try:
            claim = self.store.get(ACCOUNTS_DB, self._realm_claim_id(realm))
        except store_errors.NotFound:
            claim = None
        if claim is not None:
            owner = claim.get("pvt_account_id")
            if owner == account_id:
                return claim
            try:
                holder = self.store.get(ACCOUNTS_DB, str(owner))
            except store_errors.NotFound:
                holder = None
            if holder is not None and not holder.get("pvt_deleted"):
                raise ValidationError(_unique_error("realm", "Realm", realm, str(owner)))
            # A claim left behind by a deleted (or half-created) account: take it over.
            try:
                return self.store.put(ACCOUNTS_DB, {**claim, "pvt_account_id": account_id, "pvt_modified": gregorian_now()})
            except store_errors.Conflict:
                raise ValidationError(_unique_error("realm", "Realm", realm, "another account")) from None
        try:
            return self.store.put(
                ACCOUNTS_DB,
                set_pvt_fields({"_id": self._realm_claim_id(realm), "realm": realm}, "realm_claim", account_id),
            )
        except store_errors.Conflict:
            raise ValidationError(_unique_error("realm", "Realm", realm, "another account")) from None

    def _release_realm(self, realm: str, account_id: str) -> None:
        try:
            claim = self.store.get(ACCOUNTS_DB, self._realm_claim_id(realm))
            if claim.get("pvt_account_id") == account_id:
                self.store.delete(ACCOUNTS_DB, claim["_id"], claim["_rev"])
        except (store_errors.NotFound, store_errors.Conflict):
            pass

    def _validate_account(self, data: dict[str, Any]) -> dict[str, Any]:
        if isinstance(data.get("realm"), str):
            data = {**data, "realm": data["realm"].strip().lower()}
        errors = schemas.validate("accounts", data)
        if errors:
            raise ValidationError(errors)
        return data

    def create_account(self, parent: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        data = self._validate_account(_strip_input(data))
        account_id = new_account_id()
        if "realm" not in data:
            data["realm"] = f"{account_id[:12]}.{self.realm_suffix}"
        realm = data["realm"]
        claim = self._claim_realm(realm, account_id)
        db = account_db_name(account_id)
        created_db = False
        try:
            self.store.create_db(db)
            created_db = True
            doc = schemas.apply_defaults("accounts", data)
            doc = set_pvt_fields({**doc, "_id": account_id}, "account", account_id)
            tree = [*(parent.get("pvt_tree") or []), parent["_id"]]
            doc.update(
                {
                    "pvt_tree": tree,
                    "pvt_enabled": True,
                    "pvt_superduper_admin": False,
                    "pvt_api_key": secrets.token_hex(32),
                    "pvt_reseller_id": parent.get("pvt_reseller_id") or tree[0],
                }
            )
            saved = self.store.put(db, doc)
            aggregate = self.store.put(ACCOUNTS_DB, {k: v for k, v in saved.items() if k != "_rev"})
        except BaseException:
            if created_db:
                self._quietly(lambda: self.store.delete_db(db, missing_ok=True))
            self._quietly(lambda: self.store.delete(ACCOUNTS_DB, claim["_id"], claim["_rev"]))
            raise
        self.cache.invalidate(ACCOUNTS_DB, account_id)
        self.notifier.notify("doc_created", db, saved)
        return aggregate

    @staticmethod
    def _quietly(action: Callable[[], Any]) -> None:
        try:
            action()
        except store_errors.StoreError:
            pass

    def _update_account(
        self, account_id: str, change: Callable[[dict[str, Any]], dict[str, Any]], *, event: str,
        revision: str | None = None,
    ) -> dict[str, Any]:
        """Write the account document in its own database, then its ``accounts`` copy."""
        db = account_db_name(account_id)
        try:
            current = self.store.get(db, account_id)
        except store_errors.NotFound:
            raise NotFound(f"no account {account_id}", error_id="account_not_found") from None
        _check_revision(current, revision)
        new = change(copy.deepcopy(current))
        new["_id"], new["_rev"] = account_id, current["_rev"]
        new["pvt_modified"] = gregorian_now()
        try:
            saved = self.store.put(db, new)
        except store_errors.Conflict:
            raise Conflict("the account changed meanwhile", error_id="stale_revision") from None
        body = {k: v for k, v in saved.items() if k not in ("_rev", "_attachments")}
        update_doc(self.store, ACCOUNTS_DB, account_id, lambda _old: dict(body), create={})
        self.cache.invalidate(ACCOUNTS_DB, account_id)
        self.notifier.notify(event, db, saved)
        return saved

    def get_account(self, account_id: str) -> dict[str, Any]:
        try:
            return self.store.get(account_db_name(account_id), account_id)
        except store_errors.NotFound:
            return self.account(account_id)

    def write_account(
        self, account: dict[str, Any], data: dict[str, Any], *, merge: bool, revision: str | None
    ) -> dict[str, Any]:
        account_id = account["_id"]
        current = self.get_account(account_id)
        _check_revision(current, revision)
        incoming = _strip_input(data)
        new_public = merge_patch(public(current), incoming) if merge else incoming
        new_public.pop("id", None)
        new_public = self._validate_account(new_public)
        old_realm = current.get("realm")
        new_realm = str(new_public.get("realm") or old_realm or f"{account_id[:12]}.{self.realm_suffix}")
        new_public["realm"] = new_realm
        new_public = schemas.apply_defaults("accounts", new_public)
        claimed = None
        if new_realm != old_realm:
            claimed = self._claim_realm(new_realm, account_id)
        private = {k: v for k, v in current.items() if k.startswith("pvt_")}
        try:
            saved = self._update_account(
                account_id, lambda _doc: {**new_public, **private}, event="doc_edited", revision=revision
            )
        except BaseException:
            if claimed is not None:
                self._release_realm(new_realm, account_id)
            raise
        if claimed is not None and isinstance(old_realm, str):
            self._release_realm(old_realm, account_id)
        return saved

    def delete_account(self, principal: Principal, account: dict[str, Any], revision: str | None) -> dict[str, Any]:
        account_id = account["_id"]
        if account_id == principal.account_id:
            raise Forbidden("an account cannot delete itself", error_id="cannot_delete_own_account")
        if account.get("pvt_superduper_admin"):
            raise Forbidden("the system account cannot be deleted", error_id="cannot_delete_system_account")
        if self.descendants(account_id):
            raise Conflict("the account has descendants; delete them first", error_id="account_has_descendants")
        saved = self._update_account(
            account_id, lambda doc: {**doc, "pvt_deleted": True}, event="doc_deleted", revision=revision
        )
        if isinstance(saved.get("realm"), str):
            self._release_realm(saved["realm"], account_id)
        return saved

    def descendants(self, account_id: str) -> list[dict[str, Any]]:
        self._ensure_type_index(ACCOUNTS_DB)
        docs = self.store.find(ACCOUNTS_DB, {"pvt_type": "account", "pvt_tree": {"$all": [account_id]}}).docs
        return [d for d in docs if not d.get("pvt_deleted")]

    def list_accounts(self, account_id: str, relation: str, query: Query) -> ListPage:
        docs = self.descendants(account_id)
        if relation == "children":
            docs = [d for d in docs if (d.get("pvt_tree") or [None])[-1] == account_id]
        return self._page([d for d in docs if query.keep(d)], query, lambda d: _summarize(d, ACCOUNT_SUMMARY))

    def parents(self, principal: Principal, account: dict[str, Any]) -> list[dict[str, Any]]:
        """The account's ancestors the token may see, root first."""
        out = []
        for ancestor_id in account.get("pvt_tree") or []:
            try:
                ancestor = self.account(ancestor_id)
            except NotFound:
                continue
            if principal.reaches(ancestor_id, list(ancestor.get("pvt_tree") or [])):
                out.append(_summarize(ancestor, ACCOUNT_SUMMARY))
        return out

    def tree(self, principal: Principal, account: dict[str, Any]) -> list[dict[str, Any]]:
        """Kazoo's ``/tree``: the path from the top to the account, as {id, name}, without the
        ancestors the token may not see."""
        return [{"id": item["id"], "name": item.get("name")} for item in self.parents(principal, account)]

    # -- account resources ---------------------------------------------------------------------

    def _page(
        self,
        docs: list[dict[str, Any]],
        query: Query,
        render: Callable[[dict[str, Any]], dict[str, Any]],
        key: Callable[[dict[str, Any]], Any] = lambda d: d["_id"],
    ) -> ListPage:
        docs = sorted(docs, key=key)
        if query.start_key is not None:
            after = decode_start_key(query.start_key)
            try:
                docs = [d for d in docs if key(d) > (tuple(after) if isinstance(after, list) else after)]
            except TypeError:
                raise BadRequest("start_key is not one this API gave out", error_id="invalid_start_key") from None
        if not query.paginate:
            return ListPage([render(d) for d in docs], len(docs), query.start_key)
        page = docs[: query.page_size]
        next_key = None
        if len(docs) > query.page_size:
            last = key(page[-1])
            next_key = encode_start_key(list(last) if isinstance(last, tuple) else last)
        return ListPage([render(d) for d in page], query.page_size, query.start_key, next_key)

    def _ensure_type_index(self, db: str) -> None:
        """An index on ``pvt_type`` (Kazoo's per-type views), the same one the callflow app
        declares: without it pouchdb-server may answer a ``pvt_type`` selector from another
        index starting with ``pvt_type`` (the registrar's ``[pvt_type, sip.username]``) and miss
        every document lacking that index's other fields."""
        if db not in self._type_indexed:
            self.store.create_index(db, ["pvt_type"], name="by_pvt_type")
            self._type_indexed.add(db)

    def _live_docs(self, db: str, pvt_type: str, selector: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        try:
            self._ensure_type_index(db)
            docs = self.store.find(db, {"pvt_type": pvt_type, **(selector or {})}).docs
        except store_errors.NotFound:
            return []
        return [d for d in docs if not d.get("pvt_deleted")]

    def live_docs(self, kind: ResourceKind, account_id: str) -> list[dict[str, Any]]:
        """Every live (not soft-deleted) document of ``kind`` in the account."""
        return self._live_docs(account_db_name(account_id), kind.pvt_type)

    def list_docs(self, kind: ResourceKind, account_id: str, query: Query) -> ListPage:
        docs = [d for d in self._live_docs(account_db_name(account_id), kind.pvt_type) if query.keep(d)]
        return self._page(docs, query, lambda d: _summarize(d, kind.summary))

    def get_doc(self, kind: ResourceKind, account_id: str, doc_id: str) -> dict[str, Any]:
        try:
            doc = self.store.get(account_db_name(account_id), doc_id)
        except (store_errors.NotFound, store_errors.BadRequest):
            raise NotFound(f"no {kind.pvt_type} {doc_id}", error_id="bad_identifier") from None
        if doc.get("pvt_type") != kind.pvt_type or doc.get("pvt_deleted"):
            raise NotFound(f"no {kind.pvt_type} {doc_id}", error_id="bad_identifier")
        return doc

    # Uniqueness (a device's SIP username, a callflow's numbers, ...) is kept by claim documents
    # in the account database, one per value, ``_id`` derived from the value: two concurrent
    # writers of one value collide on that id and exactly one wins, and checking costs one read
    # instead of a scan of the account. A claim whose owner is gone or no longer holds the value
    # (left by a crash) is taken over.

    @staticmethod
    def _claim_id(kind: ResourceKind, rule: UniqueRule, value: str) -> str:
        readable = re.fullmatch(r"[A-Za-z0-9.+@-]{1,64}", value) is not None
        key = value if readable else hashlib.sha1(value.encode(), usedforsecurity=False).hexdigest()
        return f"claim:{kind.name}:{rule.field}:{key}"

    def _claim_unique(
        self, kind: ResourceKind, account_id: str, doc_id: str, doc: dict[str, Any], current: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """Claim every unique value of ``doc`` (ValidationError if one is taken); returns the
        claims made, to release if the write that follows fails."""
        db = account_db_name(account_id)
        acquired: list[dict[str, Any]] = []
        errors: dict[str, Any] = {}
        for rule in kind.unique:
            held = set(rule.values(current)) if current is not None else set()
            for value in rule.values(doc):
                if value in held:
                    continue
                claim_id = self._claim_id(kind, rule, value)
                body = set_pvt_fields(
                    {"_id": claim_id, "pvt_owner_id": doc_id, "field": rule.field, "value": value},
                    "unique_claim", account_id,
                )
                try:
                    acquired.append(self.store.put(db, body))
                    continue
                except store_errors.Conflict:
                    pass
                claim = self.store.open_or_none(db, claim_id)
                owner = claim.get("pvt_owner_id") if claim else None
                if claim is not None and owner == doc_id:
                    continue
                holder = self.store.open_or_none(db, str(owner)) if owner else None
                holds = (
                    holder is not None and not holder.get("pvt_deleted")
                    and holder.get("pvt_type") == kind.pvt_type and value in rule.values(holder)
                )
                # A young claim whose owner does not hold the value (yet) is a write in progress
                # (claim first, document next), not debris: only an old one is taken over, or
                # one whose owner was deleted.
                claimed_at = claim.get("pvt_modified") if claim is not None else None
                young = isinstance(claimed_at, int) and gregorian_now() - claimed_at < CLAIM_GRACE
                owner_deleted = holder is not None and bool(holder.get("pvt_deleted"))
                if claim is None or holds or (young and not owner_deleted):
                    errors.update(_unique_error(rule.field, rule.what, value, str(owner or "another document")))
                    break
                try:
                    acquired.append(self.store.put(db, {**body, "_rev": claim["_rev"]}))
                except store_errors.Conflict:
                    errors.update(_unique_error(rule.field, rule.what, value, "another document"))
                    break
        if errors:
            self._release_claims(db, acquired)
            raise ValidationError(errors)
        return acquired

    def _release_claims(self, db: str, claims: list[dict[str, Any]]) -> None:
        for claim in claims:
            try:
                self.store.delete(db, claim["_id"], claim["_rev"])
            except store_errors.StoreError:
                continue

    def _release_values(
        self, kind: ResourceKind, account_id: str, doc_id: str, old: dict[str, Any], new: dict[str, Any] | None
    ) -> None:
        """Free the claims ``doc_id`` holds for values of ``old`` that ``new`` no longer has."""
        db = account_db_name(account_id)
        for rule in kind.unique:
            keep = set(rule.values(new)) if new is not None else set()
            for value in set(rule.values(old)) - keep:
                claim = self.store.open_or_none(db, self._claim_id(kind, rule, value))
                if claim is not None and claim.get("pvt_owner_id") == doc_id:
                    self._release_claims(db, [claim])

    def _prepare(
        self, kind: ResourceKind, account: dict[str, Any], data: dict[str, Any], current: dict[str, Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Validate a new public body; returns (public doc with defaults, private fields to set)."""
        if kind.name == "users" and isinstance(data.get("username"), str):
            data = {**data, "username": data["username"].strip().lower()}
        sip = data.get("sip")
        if kind.name == "devices" and isinstance(sip, dict) and isinstance(sip.get("username"), str):
            # Lower-cased, as Kazoo and the registrar's credential lookup have it.
            data = {**data, "sip": {**sip, "username": sip["username"].strip().lower()}}
        errors = schemas.validate(kind.schema, data)
        private: dict[str, Any] = {}
        if kind.name == "users" and not errors:
            password = data.pop("password", None)
            username = data.get("username")
            old_username = current.get("username") if current else None
            if isinstance(password, str):
                if isinstance(username, str):
                    private.update(credential_hashes(username, password))
                private["pvt_password_hash"] = self.passwords.hash(password)
            elif username != old_username and username is not None:
                errors["password"] = {
                    "required": {"message": "a new username needs the password (credentials are hashes of both)"}
                }
            if username is None and current is not None:
                # No login any more: forget the credential hashes.
                private.update({"pvt_md5_auth": None, "pvt_sha1_auth": None})
        if kind.name == "media":
            data.pop("content_length", None)
        if errors:
            raise ValidationError(errors)
        return schemas.apply_defaults(kind.schema, data), private

    def create_doc(self, kind: ResourceKind, account: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        account_id = account["_id"]
        body, private = self._prepare(kind, account, _strip_input(data), None)
        doc = set_pvt_fields({**body, "_id": secrets.token_hex(16)}, kind.pvt_type, account_id)
        doc.update({k: v for k, v in private.items() if v is not None})
        db = account_db_name(account_id)
        claims = self._claim_unique(kind, account_id, doc["_id"], doc, None)
        try:
            saved = self._put(db, doc)
        except BaseException:
            self._release_claims(db, claims)
            raise
        self._sync_aggregate(kind, saved, account)
        self.notifier.notify("doc_created", db, saved)
        return saved

    def _put(self, db: str, doc: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.store.put(db, doc)
        except store_errors.Conflict:
            raise Conflict("the document changed meanwhile", error_id="stale_revision") from None
        except store_errors.NotFound:
            raise NotFound("the account database is missing", error_id="account_not_found") from None

    def write_doc(
        self,
        kind: ResourceKind,
        account: dict[str, Any],
        doc_id: str,
        data: dict[str, Any],
        *,
        merge: bool,
        revision: str | None,
    ) -> dict[str, Any]:
        current = self.get_doc(kind, account["_id"], doc_id)
        _check_revision(current, revision)
        incoming = _strip_input(data)
        new_public = merge_patch(public(current), incoming) if merge else incoming
        new_public.pop("id", None)
        if kind.name == "media" and MEDIA_ATTACHMENT in (current.get("_attachments") or {}):
            # Derived from the uploaded audio (see public()); never stored from a request.
            new_public.pop("content_type", None)
            new_public.pop("content_length", None)
        body, private = self._prepare(kind, account, new_public, current)
        doc = {k: v for k, v in current.items() if k.startswith(("pvt_", "_"))}
        doc.update(body)
        for key, value in private.items():
            if value is None:
                doc.pop(key, None)
            else:
                doc[key] = value
        doc["pvt_modified"] = gregorian_now()
        db = account_db_name(account["_id"])
        claims = self._claim_unique(kind, account["_id"], doc_id, doc, current)
        try:
            saved = self._put(db, doc)
        except BaseException:
            self._release_claims(db, claims)
            raise
        self._release_values(kind, account["_id"], doc_id, current, saved)
        self.cache.invalidate(db, doc_id)
        self._sync_aggregate(kind, saved, account)
        self.notifier.notify("doc_edited", db, saved)
        return saved

    def delete_doc(self, kind: ResourceKind, account: dict[str, Any], doc_id: str, revision: str | None) -> dict[str, Any]:
        current = self.get_doc(kind, account["_id"], doc_id)
        _check_revision(current, revision)
        doc = {**current, "pvt_deleted": True, "pvt_modified": gregorian_now()}
        db = account_db_name(account["_id"])
        saved = self._put(db, doc)
        self._release_values(kind, account["_id"], doc_id, current, None)
        self.cache.invalidate(db, doc_id)
        self._sync_aggregate(kind, saved, account)
        self.notifier.notify("doc_deleted", db, saved)
        return saved

    def _sync_aggregate(self, kind: ResourceKind, saved: dict[str, Any], account: dict[str, Any]) -> None:
        """Kazoo's aggregate copies: ``sip_auth`` (what the registrar looks credentials up in)
        and ``webhooks``. A deleted document leaves the aggregate."""
        if kind.aggregate_db is None:
            return
        body = {k: v for k, v in saved.items() if k not in ("_rev", "_attachments")}
        body["pvt_account_realm"] = account.get("realm")
        if saved.get("pvt_deleted"):
            try:
                current = self.store.get(kind.aggregate_db, saved["_id"])
                self.store.delete(kind.aggregate_db, saved["_id"], current["_rev"])
            except (store_errors.NotFound, store_errors.Conflict):
                pass
            return
        update_doc(self.store, kind.aggregate_db, saved["_id"], lambda _old: dict(body), create={})

    # -- media -----------------------------------------------------------------------------

    def put_media(
        self, account: dict[str, Any], doc_id: str, data: Iterable[bytes] | bytes, content_type: str
    ) -> dict[str, Any]:
        kind = ACCOUNT_RESOURCES["media"]
        current = self.get_doc(kind, account["_id"], doc_id)
        db = account_db_name(account["_id"])
        try:
            self.store.put_attachment(
                db, doc_id, MEDIA_ATTACHMENT, data, content_type=content_type, rev=current["_rev"]
            )
        except store_errors.Conflict:
            raise Conflict("the media document changed meanwhile", error_id="stale_revision") from None
        saved = self.get_doc(kind, account["_id"], doc_id)
        self.notifier.notify("doc_edited", db, saved)
        return saved

    def open_media(self, account: dict[str, Any], doc_id: str) -> Any:
        self.get_doc(ACCOUNT_RESOURCES["media"], account["_id"], doc_id)
        try:
            return self.store.open_attachment(account_db_name(account["_id"]), doc_id, MEDIA_ATTACHMENT)
        except store_errors.NotFound:
            raise NotFound("this media has no audio yet", error_id="media_not_uploaded") from None

    # -- voicemail messages (Kazoo 4's kvm_messages: documents in the month databases) -------

    def vmbox(self, account_id: str, vmbox_id: str) -> dict[str, Any]:
        return self.get_doc(ACCOUNT_RESOURCES["vmboxes"], account_id, vmbox_id)

    def list_messages(self, account_id: str, vmbox_id: str, folder: str | None, query: Query) -> ListPage:
        """The box's messages (metadata), oldest first; without ``folder`` the deleted ones are
        left out, as Kazoo does."""
        self.vmbox(account_id, vmbox_id)
        if folder is not None:
            _check_folder(folder)
        docs = voicemail.list_messages(self.store, account_id, vmbox_id, folder=folder)
        docs = [d for d in docs if query.keep(_message_probe(d))]
        return self._page(docs, query, message_metadata, key=_message_key)

    def get_message(self, account_id: str, vmbox_id: str, message_id: str) -> dict[str, Any]:
        """The message document; 404 unless it is a message of this (live) box."""
        self.vmbox(account_id, vmbox_id)
        if not _MESSAGE_ID.fullmatch(message_id):
            raise NotFound(f"no voicemail message {message_id}", error_id="bad_identifier")
        try:
            return voicemail.get_message(self.store, account_id, message_id, vmbox_id)
        except (store_errors.NotFound, store_errors.BadRequest):
            raise NotFound(f"no voicemail message {message_id}", error_id="bad_identifier") from None

    def announce_mwi(self, account_id: str, vmbox_id: str) -> None:
        """The box's new/saved counts to its owner's phones (``mwi_update``, as Kazoo's
        cb_vmboxes does after a change through the API). Never fails the request."""
        try:
            box = self.vmbox(account_id, vmbox_id)
            realm = str(self.account(account_id).get("realm") or "")
            if not realm:
                return
            new, saved = voicemail.count_messages(self.store, account_id, vmbox_id)
            for user in voicemail.mwi_users(self.store, account_id, box):
                self.notifier.publish(mwi_update.build(
                    to=f"{user}@{realm}", messages_new=new, messages_saved=saved))
        except Exception as error:  # noqa: BLE001 - the lamp is not worth the API call
            log.warning("box %s: MWI not announced: %s", vmbox_id, error)

    def move_message(self, account_id: str, vmbox_id: str, message_id: str, folder: Any,
                     *, announce: bool = True) -> dict[str, Any]:
        _check_folder(folder)
        self.get_message(account_id, vmbox_id, message_id)
        try:
            saved = voicemail.set_folder(self.store, account_id, message_id, folder, vmbox_id)
        except store_errors.NotFound:
            # Hard-deleted between the read and the write.
            raise NotFound(f"no voicemail message {message_id}", error_id="bad_identifier") from None
        self.notifier.notify("doc_edited", voicemail.message_db(account_id, message_id), saved)
        if announce:
            self.announce_mwi(account_id, vmbox_id)
        return saved

    def move_messages(self, account_id: str, vmbox_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Kazoo's bulk change of folder: ``{"messages": [ids], "folder": ...}``; answers which
        moved and why the others did not."""
        messages, folder = data.get("messages"), data.get("folder")
        errors: dict[str, dict[str, dict[str, Any]]] = {}
        if not isinstance(messages, list) or not messages or not all(isinstance(m, str) for m in messages):
            errors["messages"] = {"type": {"message": "messages must be a non-empty list of message ids"}}
            messages = []
        if folder not in voicemail.FOLDERS:
            errors.update(_folder_error(folder))
        if errors:
            raise ValidationError(errors)
        self.vmbox(account_id, vmbox_id)
        succeeded: list[str] = []
        failed: dict[str, str] = {}
        for message_id in dict.fromkeys(messages):
            try:
                self.move_message(account_id, vmbox_id, message_id, folder, announce=False)
                succeeded.append(message_id)
            except NotFound:
                failed[message_id] = "not_found"
        if succeeded:
            self.announce_mwi(account_id, vmbox_id)
        return {"succeeded": succeeded, "failed": failed}

    def delete_message(self, account_id: str, vmbox_id: str, message_id: str, *, hard: bool) -> dict[str, Any]:
        """Kazoo 4 moves a deleted message to the ``deleted`` folder; ``hard`` removes it and its
        audio. Returns the message as it was last."""
        if not hard:
            return self.move_message(account_id, vmbox_id, message_id, "deleted")
        doc = self.get_message(account_id, vmbox_id, message_id)
        try:
            voicemail.delete_message(self.store, account_id, message_id, vmbox_id=vmbox_id, hard=True)
        except store_errors.NotFound:
            raise NotFound(f"no voicemail message {message_id}", error_id="bad_identifier") from None
        except store_errors.Conflict:
            raise Conflict("the message changed meanwhile", error_id="stale_revision") from None
        self.notifier.notify("doc_deleted", voicemail.message_db(account_id, message_id), doc)
        self.announce_mwi(account_id, vmbox_id)
        return doc

    def message_audio(self, account_id: str, vmbox_id: str, message_id: str) -> tuple[dict[str, Any], bytes, str]:
        """(message document, its stored audio, that audio's content type)."""
        doc = self.get_message(account_id, vmbox_id, message_id)
        try:
            data, content_type = voicemail.message_audio(self.store, account_id, message_id, vmbox_id)
        except store_errors.NotFound:
            raise NotFound(f"voicemail message {message_id} has no audio", error_id="bad_identifier") from None
        return doc, data, content_type

    # -- cdrs --------------------------------------------------------------------------------

    def _cdr_range(self, query: Query) -> tuple[int, int]:
        now = gregorian_now()
        created_to = query.created_to if query.created_to is not None else now
        created_from = query.created_from if query.created_from is not None else created_to - MAXIMUM_RANGE + 3600
        if created_from > created_to:
            raise BadRequest("created_from is after created_to", error_id="invalid_range")
        if created_to - created_from > MAXIMUM_RANGE:
            raise BadRequest(
                f"the range may not exceed {MAXIMUM_RANGE} seconds", error_id="range_too_large"
            )
        return created_from, created_to

    def _modbs(self, account_id: str, created_from: int, created_to: int) -> Iterator[str]:
        start = datetime.fromtimestamp(max(created_from - GREGORIAN_OFFSET, 0), UTC)
        end = datetime.fromtimestamp(max(created_to - GREGORIAN_OFFSET, 0), UTC)
        existing = set(self.store.list_dbs(prefix=account_db_name(account_id) + "-"))
        year, month = start.year, start.month
        while (year, month) <= (end.year, end.month):
            name = modb_name(account_id, year, month)
            if name in existing:
                yield name
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)

    @staticmethod
    def _cdr_time(doc: dict[str, Any]) -> int:
        value = doc.get("timestamp", doc.get("pvt_created"))
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    def list_cdrs(self, account_id: str, query: Query) -> ListPage:
        created_from, created_to = self._cdr_range(query)
        docs = []
        for db in self._modbs(account_id, created_from, created_to):
            for doc in self._live_docs(db, "cdr"):
                if created_from <= self._cdr_time(doc) <= created_to and self._keep_cdr(doc, query):
                    docs.append(doc)
        return self._page(docs, query, public, key=lambda d: (self._cdr_time(d), d["_id"]))

    @staticmethod
    def _keep_cdr(doc: dict[str, Any], query: Query) -> bool:
        probe = {**doc, "pvt_created": CrossbarService._cdr_time(doc), "pvt_modified": CrossbarService._cdr_time(doc)}
        return query.keep(probe)

    def get_cdr(self, account_id: str, cdr_id: str) -> dict[str, Any]:
        # MODB ids are YYYYMM-<anything>: the cdr app uses the leg's Call-ID (which may hold @ . :).
        match = re.fullmatch(r"(\d{4})(\d{2})-.+", cdr_id, re.DOTALL)
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise NotFound(f"no cdr {cdr_id}", error_id="bad_identifier")
        db = modb_name(account_id, int(match.group(1)), int(match.group(2)))
        try:
            parse_modb(db)
            doc = self.store.get(db, cdr_id)
        except (store_errors.NotFound, store_errors.BadRequest):
            raise NotFound(f"no cdr {cdr_id}", error_id="bad_identifier") from None
        if doc.get("pvt_type") != "cdr" or doc.get("pvt_deleted"):
            raise NotFound(f"no cdr {cdr_id}", error_id="bad_identifier")
        return doc

    # -- helpers for the HTTP layer ----------------------------------------------------------

    @staticmethod
    def list_revision(items: Any) -> str:
        """Kazoo answers a revision for listings too: a hash of what was returned."""
        raw = json.dumps(items, sort_keys=True, separators=(",", ":"), default=str).encode()
        return hashlib.md5(raw, usedforsecurity=False).hexdigest()

    @staticmethod
    def store_unavailable(exc: store_errors.StoreUnavailable) -> ServiceUnavailable:
        return ServiceUnavailable(
            str(exc.reason), headers={"Retry-After": str(max(1, int(exc.retry_after)))}
        )
