"""What the actors of one edge process share: configuration, bus, store, the SIP runner, the
guards' state and the credentials cache. One instance per edge process, made by the role."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.edge.bindings import ExpiryLimits
from actors.edge.credentials import CredentialsCache
from actors.edge.guards import AuthLockout, FloodGuard, TrustedSources
from actors.edge.metrics import REGISTRATIONS, count_response
from bus import Bus
from mirliton.config import Config
from protocols.sip import DigestServer, Response, ServerTransaction
from protocols.sip.transport import TransactionRunner
from store import Store

__all__ = ["EdgeContext", "nonce_secret"]

log = logging.getLogger("mirliton.edge")

LINGER = 5.0


def nonce_secret(cfg: Config) -> bytes:
    """The digest nonce secret: configured (shared by a cluster's edges) or kept in the data
    dir, so nonces issued before a restart of the edge process still verify after it."""
    if cfg.edge.nonce_secret:
        return cfg.edge.nonce_secret.encode()
    path = Path(cfg.data_dir) / "edge" / "nonce.secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(hashlib.sha256(secrets.token_bytes(32)).hexdigest().encode())
    try:
        os.link(tmp, path)  # first writer wins; a concurrent one reads the winner's secret
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


@dataclass
class EdgeContext:
    config: Config
    bus: Bus
    store: Store
    digest: DigestServer
    trusted: TrustedSources
    flood: FloodGuard
    lockout: AuthLockout
    credentials: CredentialsCache
    limits: ExpiryLimits
    runner: TransactionRunner | None = None
    # Registration documents read at start, taken by each AOR's actor in its first init.
    restored: dict[str, dict[str, Any]] = field(default_factory=dict)
    bindings_held: int = 0
    # Answered REGISTER transactions, oldest first, ended LINGER seconds after their answer.
    lingering: deque[tuple[float, ServerTransaction]] = field(default_factory=deque)
    # The edge's own address for Proxy-Path in reg_success / reg_query answers.
    proxy_uri: str = ""
    # (transport key, local address) of each SIP listener: requests the edge originates
    # (MWI NOTIFYs) leave through the listener of the phone's transport.
    sip_listeners: list[tuple[str, tuple[str, int]]] = field(default_factory=list)

    @classmethod
    def create(cls, cfg: Config, bus: Bus, store: Store) -> EdgeContext:
        edge = cfg.edge
        reg = cfg.registrar
        return cls(
            config=cfg,
            bus=bus,
            store=store,
            digest=DigestServer(
                nonce_secret(cfg),
                nonce_lifetime=edge.nonce_lifetime,
                algorithms=tuple(edge.digest_algorithms),
            ),
            trusted=TrustedSources(edge.trusted_cidrs),
            flood=FloodGuard(edge.flood_requests, edge.flood_window, edge.flood_release),
            lockout=AuthLockout(edge.auth_failures, edge.auth_failure_window),
            credentials=CredentialsCache(edge.credentials_ttl, edge.negative_credentials_ttl),
            limits=ExpiryLimits(reg.min_expires, reg.default_expires, reg.max_expires, reg.max_contacts),
        )

    @property
    def node(self) -> str:
        return self.config.node.name

    def respond(self, transaction: ServerTransaction, response: Response) -> None:
        """Answer through the transaction layer (from any greenlet of this process)."""
        runner = self.runner
        if runner is None or transaction.terminated:
            return
        count_response(response.status)
        try:
            runner.respond(transaction, response)
        except ValueError as error:  # answered already, or terminated meanwhile
            log.debug("cannot answer %r: %s", transaction, error)

    def respond_briefly(self, transaction: ServerTransaction, response: Response) -> None:
        """A final answer whose transaction is kept ``LINGER`` seconds rather than Timer J's
        32 s (Kamailio's wait timer is 5 s): retransmissions in that time get the very same
        answer from the transaction layer; thousands of REGISTERs a second would otherwise
        keep tens of thousands of transactions alive. A retransmission arriving later is
        handled again, which registration makes idempotent (same Call-ID and CSeq)."""
        self.respond(transaction, response)
        if not transaction.terminated:
            self.lingering.append((time.monotonic() + LINGER, transaction))

    def forget_lingering(self, now: float) -> None:
        """End the transactions whose lingering time is over (called about once a second)."""
        runner = self.runner
        lingering = self.lingering
        ended = False
        while lingering and lingering[0][0] <= now:
            _, transaction = lingering.popleft()
            if runner is not None and not transaction.terminated:
                # One flush for the whole batch below, not one per transaction.
                runner.layer.terminate(transaction)
                ended = True
        if ended and runner is not None:
            runner.flush()

    def abandon(self, transaction: ServerTransaction) -> None:
        """Drop a request without an answer (Kazoo drops a REGISTER whose authn_req timed out;
        the phone retries); otherwise its transaction would wait in Trying until the layer's
        guard timer."""
        runner = self.runner
        if runner is not None and not transaction.terminated:
            runner.terminate(transaction)

    def bindings_changed(self, delta: int) -> None:
        if not delta:
            return
        self.bindings_held += delta
        REGISTRATIONS.set(self.bindings_held)
