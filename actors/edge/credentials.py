"""SIP credentials: asked of the registrar over the bus (``authn_req``), cached in the edge.

Kazoo's Kamailio keeps passwords in an ``auth_cache`` htable (7200 s) so re-REGISTERs skip
AMQP, and caches ``authn_err`` too. Here :class:`CredentialsCache` does both, with a shorter
life for "unknown user" answers, and forgets entries when the documents behind them change
(``doc_edited``/``doc_deleted`` of a device or account on the ``configuration`` exchange) or a
``reg_flush`` names the user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bus import Bus, RequestTimeout
from bus.api.authn import authn_req

__all__ = ["Credentials", "CredentialsCache", "RequestTimeout", "ask_registrar"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the registrar said about (realm, username). ``password`` None: refused/unknown."""

    realm: str
    username: str
    password: str | None
    cached_until: float
    account_id: str | None = None
    device_id: str | None = None
    owner_id: str | None = None
    expires: int | None = None
    custom_channel_vars: Mapping[str, Any] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return self.password is not None


class CredentialsCache:
    def __init__(self, ttl: float = 7200.0, negative_ttl: float = 60.0, max_entries: int = 100_000):
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], Credentials] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(realm: str, username: str) -> tuple[str, str]:
        return realm.lower(), username.lower()

    def get(self, realm: str, username: str, now: float) -> Credentials | None:
        entry = self._entries.get(self.key(realm, username))
        if entry is None or entry.cached_until <= now:
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, credentials: Credentials) -> None:
        if len(self._entries) >= self.max_entries:
            # Crude but bounded: a scanner trying millions of user names cannot grow us.
            self._entries.clear()
        self._entries[self.key(credentials.realm, credentials.username)] = credentials

    def lifetime(self, known: bool) -> float:
        return self.ttl if known else self.negative_ttl

    def forget_user(self, realm: str, username: str | None = None) -> int:
        realm = realm.lower()
        if username is not None:
            return 1 if self._entries.pop(self.key(realm, username), None) is not None else 0
        keys = [key for key in self._entries if key[0] == realm]
        for key in keys:
            del self._entries[key]
        return len(keys)

    def forget_device(self, device_id: str) -> int:
        keys = [key for key, c in self._entries.items() if c.device_id == device_id]
        for key in keys:
            del self._entries[key]
        return len(keys)

    def forget_account(self, account_id: str) -> int:
        keys = [key for key, c in self._entries.items() if c.account_id == account_id]
        for key in keys:
            del self._entries[key]
        return len(keys)

    def forget_unknown(self) -> int:
        """A device was created somewhere: cached "unknown user" answers may be wrong now."""
        keys = [key for key, c in self._entries.items() if not c.known]
        for key in keys:
            del self._entries[key]
        return len(keys)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def ask_registrar(
    bus: Bus,
    *,
    realm: str,
    username: str,
    method: str,
    now: float,
    ttl: float,
    negative_ttl: float,
    timeout: float,
    request_fields: Mapping[str, Any],
) -> Credentials:
    """One ``authn_req`` on ``callmgr`` ``authn.req.<realm>``; the first reply wins.

    Raises :class:`bus.RequestTimeout` when no registrar answers in ``timeout`` seconds.
    """
    message = authn_req.build(
        {
            "Method": method,
            "Auth-Realm": realm,
            "Auth-User": username,
            **{k: v for k, v in request_fields.items() if v is not None},
        }
    )
    reply = bus.request(message, timeout=timeout)
    if reply.get("Event-Name") != "authn_resp" or reply.get("Auth-Method") != "password":
        return Credentials(realm, username, None, now + negative_ttl)
    ccvs = reply.get("Custom-Channel-Vars") or {}
    expires = reply.get("Expires")
    return Credentials(
        realm=realm,
        username=username,
        password=str(reply.get("Auth-Password", "")),
        cached_until=now + ttl,
        account_id=ccvs.get("Account-ID"),
        device_id=ccvs.get("Authorizing-ID"),
        owner_id=ccvs.get("Owner-ID"),
        expires=expires if isinstance(expires, int) else None,
        custom_channel_vars=dict(ccvs),
    )
