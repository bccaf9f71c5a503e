"""Authentication (Kazoo's cb_user_auth, cb_api_auth, cb_token_auth) and authorization
(cb_simple_authz).

Tokens are HS256 JWTs valid one hour, sent back in ``X-Auth-Token``. The signing secret is
generated once per cluster and kept in the store's ``system_config/crossbar`` document
(``default.token_signing_secret``), so every node's API accepts every node's tokens; a
conflicting first write by two processes converges on one secret (only_if_missing + re-read).

Who reaches what: a token reaches its own account and that account's descendants (an account
whose ``pvt_tree`` holds the token's account id); the system account's admins reach every
account. ``priv_level: user`` tokens read their own account only and may change only their
own user document (never its priv_level); admins do everything within reach.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from actors.crossbar.errors import Forbidden, Unauthorized
from store import Store
from store.kazoo import get_config, set_config

__all__ = ["TOKEN_TTL", "Principal", "TokenSigner", "load_signing_secret"]

TOKEN_TTL = 3600  # Kazoo's token_auth_expiry_s
_ALGORITHM = "HS256"
_ISSUER = "mirliton"
_SECRET_KEY = "token_signing_secret"


def load_signing_secret(store: Store) -> str:
    """The cluster's token signing secret, generated on first use."""
    secret = get_config(store, "crossbar", _SECRET_KEY)
    if isinstance(secret, str) and len(secret) >= 32:
        return secret
    set_config(store, "crossbar", _SECRET_KEY, secrets.token_hex(32), only_if_missing=True)
    secret = get_config(store, "crossbar", _SECRET_KEY)
    if not isinstance(secret, str):
        raise RuntimeError("could not store the token signing secret")
    return secret


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for."""

    account_id: str
    owner_id: str | None
    priv_level: str  # "admin" or "user"
    superduper: bool  # an admin of the system account: reaches every account
    method: str  # "user_auth", "api_auth" or "basic_auth"
    token: str = ""

    @property
    def is_admin(self) -> bool:
        return self.priv_level == "admin"

    def reaches(self, account_id: str, tree: list[str]) -> bool:
        """Whether this token may act on the account ``account_id`` whose ancestors are ``tree``."""
        if self.superduper:
            return True
        return account_id == self.account_id or self.account_id in tree

    def check_write(self, account_id: str, resource: str, doc_id: str | None) -> None:
        """403 unless this token may change ``resource``/``doc_id`` of ``account_id``."""
        if self.is_admin:
            return
        if resource == "users" and doc_id is not None and doc_id == self.owner_id:
            return
        raise Forbidden("a user-level token may only change its own user", error_id="priv_level_user")

    def check_read(self, account_id: str) -> None:
        if not self.is_admin and account_id != self.account_id:
            raise Forbidden("a user-level token reads its own account only", error_id="priv_level_user")


class TokenSigner:
    """Issues and verifies the API's JWTs."""

    def __init__(self, secret: str, *, ttl: int = TOKEN_TTL, cache_size: int = 10_000) -> None:
        self._secret = secret
        self.ttl = ttl
        # Verified tokens: checking a JWT's signature costs far more than the rest of a GET.
        self._verified: dict[str, tuple[float, Principal]] = {}
        self._cache_size = cache_size

    def issue(
        self,
        *,
        account_id: str,
        owner_id: str | None,
        priv_level: str,
        superduper: bool,
        method: str,
        now: float | None = None,
    ) -> str:
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": _ISSUER,
            "sub": owner_id or account_id,
            "jti": uuid.uuid4().hex,
            "iat": issued,
            "exp": issued + self.ttl,
            "account_id": account_id,
            "owner_id": owner_id,
            "priv_level": priv_level,
            "superduper": superduper,
            "method": method,
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            if cached[0] > time.time():
                return cached[1]
            del self._verified[token]
        principal, expires = self._verify(token)
        if len(self._verified) >= self._cache_size:
            self._verified.clear()
        self._verified[token] = (expires, principal)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                issuer=_ISSUER,
                options={"require": ["exp", "iat", "iss", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the auth token has expired", error_id="token_expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("the auth token is not valid", error_id="invalid_token") from None
        account_id = claims.get("account_id")
        priv_level = claims.get("priv_level")
        if not isinstance(account_id, str) or priv_level not in ("admin", "user"):
            raise Unauthorized("the auth token is not valid", error_id="invalid_token")
        owner = claims.get("owner_id")
        principal = Principal(
            account_id=account_id,
            owner_id=owner if isinstance(owner, str) else None,
            priv_level=priv_level,
            superduper=bool(claims.get("superduper")),
            method=str(claims.get("method", "")),
            token=token,
        )
        return principal, float(claims["exp"])
