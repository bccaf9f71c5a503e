"""The edge's SIP face: listeners, guards in Kazoo's order, and the routing of requests.

:class:`EdgeSipActor` owns the UDP and TCP listeners of ``sip.listen`` and the transaction
layer (through a :class:`TransactionRunner`). A request goes through, in order:

1. sanity - unparsable requests get the parser's status (400, 505 ...) when a response can be
   routed, else are dropped; parsable ones get :func:`validate_request`'s answer (missing
   headers, a second To, bad Contact ``*``, unknown URI scheme, Require ...). With
   ``edge.sanity_drops`` both are dropped silently instead, as Kazoo's SANITY_DROPS_REQUEST.
2. scanner User-Agents - dropped silently;
3. an IP literal as To/From domain of a REGISTER/SUBSCRIBE - dropped;
4. the per-source flood limit on initial requests (never OPTIONS) - dropped;
5. Max-Forwards - 10 inserted when missing, 483 at 0 (OPTIONS exempt);

Guards 2-4 and authentication are skipped for ``edge.trusted_cidrs``. Guards run *before* the
transaction layer, so a dropped request leaves no state behind; retransmissions of a request
being handled skip them and are absorbed (or answered again) by its transaction.

Then by method: OPTIONS is answered ``200 Rawr!!`` (Kazoo's) and a REGISTER without
credentials is challenged (401, the same for every user: no enumeration), both statelessly;
a REGISTER with credentials is authenticated - credentials from the cache (inline) or an
``authn_req`` on the bus (in a greenlet of a bounded pool), digest verified here, failures
counted towards the lockout (403 + Retry-After) - and handed to its AOR's registration
actor, which answers it; INVITE is challenged with 407 and, authenticated, answered 480 until a
calls role takes calls; a SUBSCRIBE to ``message-summary`` (new or a refresh) is challenged
with 407 and, authenticated, answered by :class:`actors.edge.mwi.MwiSubscriptions` (200 and a
NOTIFY with the voicemail counts); in-dialog requests get 481, other known methods 405,
unknown 501.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.pool

from actors.edge.bindings import aor_key
from actors.edge.context import EdgeContext, nonce_secret
from actors.edge.credentials import Credentials, ask_registrar
from actors.edge.guards import has_ip_literal_domain, is_scanner
from actors.edge.metrics import AUTH_FAILURES, DROPPED, count_request, count_response, flush_counts
from actors.edge.mwi import MwiSubscriptions, is_mwi_subscribe, on_client_event
from actors.edge.registrations import SaveRegistration, dispatch_registration
from actors.kernel import Actor, current_call_id
from bus import BusError, RequestTimeout
from mirliton.config import parse_hostport
from protocols.sip import (
    DigestCredentials,
    DigestOutcome,
    Request,
    RequestReceived,
    Response,
    SipParseError,
    canonical_key,
    generate_tag,
    make_response,
    parse_message,
    validate_request,
)
from protocols.sip.digest import DigestParseError
from protocols.sip.message import Message
from protocols.sip.transaction import TransactionLayer, stamp_via
from protocols.sip.transport import SipTransport, TcpTransport, TransactionRunner, UdpTransport
from protocols.sip.validate import error_response

__all__ = ["EdgeSipActor", "parse_listen", "salvage_error_response"]

log = logging.getLogger("mirliton.edge.sip")

# Methods Kazoo authorizes when they come from untrusted sources (authorization.cfg).
AUTHORIZED_METHODS = frozenset({"INVITE", "REFER", "MESSAGE", "NOTIFY", "SUBSCRIBE", "PUBLISH"})
KNOWN_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER"
# Bodies the edge accepts (it relays them to call legs and apps, it does not interpret them).
ACCEPTED_BODY_TYPES = (
    "application/sdp",
    "text/plain",
    "application/pidf+xml",
    "application/dialog-info+xml",
    "application/simple-message-summary",
    "message/sipfrag",
    "application/dtmf-relay",
)
# Requests authenticated at once; beyond that a REGISTER is dropped (its phone retries).
MAX_PENDING_AUTH = 2000
# The listener lets the other greenlets run after this many messages in a row.
YIELD_EVERY = 4


def parse_listen(entry: str) -> tuple[str, str, int]:
    """``"udp:0.0.0.0:5060"`` -> ("UDP", "0.0.0.0", 5060)."""
    kind, sep, rest = entry.partition(":")
    if not sep or kind.lower() not in ("udp", "tcp"):
        raise ValueError(f"sip.listen: {entry!r} is not udp:host:port or tcp:host:port")
    host, port = parse_hostport(rest)
    return kind.upper(), host, port


_ROUTING_HEADERS = ("via", "from", "call-id", "cseq")


def salvage_error_response(error: SipParseError, data: bytes) -> Response | None:
    """The error response to an unparsable request, even when the parser stopped before it
    could hand back the headers a response needs (a broken request line, or a broken header
    met before Via or Call-ID). The same parser reads the message again under a stand-in
    request line and without the broken headers' lines, and the response carries the original
    error's status and reason (400, 505 ...). None for responses, and when no Via can be read
    (nowhere to send an answer)."""
    if error.is_response or data[:4].upper() == b"SIP/":
        return None
    if error.headers is not None and all(
        error.headers.get_all(key) for key in _ROUTING_HEADERS if key != error.header
    ):
        return error_response(error)
    head, _, _ = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")[1:]
    dropped = {"content-length"}
    if error.header is not None:
        dropped.add(error.header)
    headers = error.headers
    for _ in range(8):
        kept: list[bytes] = []
        dropping = False
        for line in lines:
            if line[:1] in (b" ", b"\t"):  # a folded continuation of the previous header
                if not dropping:
                    kept.append(line)
                continue
            key = _header_key(line)
            dropping = key is None or key in dropped
            if not dropping:
                kept.append(line)
        # A stand-in request line (the real one may be what is broken) and no body: this
        # parse only has to yield the headers an answer copies.
        stand_in = b"\r\n".join([b"OPTIONS sip:salvage.invalid SIP/2.0", *kept])
        stand_in += b"\r\nContent-Length: 0\r\n\r\n"
        try:
            headers = parse_message(stand_in).headers
            break
        except SipParseError as second:
            headers = second.headers
            complete = headers is not None and all(
                headers.get_all(key) for key in _ROUTING_HEADERS if key not in dropped
            )
            if complete or second.header is None or second.header in dropped:
                break  # (a CSeq naming another method than the stand-in's ends here too)
            dropped.add(second.header)
    if headers is None:
        return None
    error.headers = headers
    error.is_response = False
    return error_response(error)


class EdgeSipActor(Actor):
    """Owns the SIP listeners and the transaction layer of the edge process."""

    def __init__(self, ctx: EdgeContext) -> None:
        self.ctx = ctx
        cfg = ctx.config.edge
        self.cfg = cfg
        self.transports: list[SipTransport] = []
        self.pool = gevent.pool.Pool(MAX_PENDING_AUTH)
        # Unknown users are verified against a random password: the same work and the same
        # answers as a known user with a wrong one (no enumeration, even by timing).
        self._decoy_password = secrets.token_hex(16)
        self._since_yield = 0
        self._overload_logged = 0.0
        # The To-tags of SUBSCRIBE dialogs are keyed from the nonce secret, so every edge of a
        # cluster (and a restarted one) recognises the refreshes of the others' dialogs.
        self.mwi = MwiSubscriptions(ctx, nonce_secret(ctx.config))

    # -- lifecycle ---------------------------------------------------------------------------

    def init(self) -> None:
        layer = TransactionLayer()
        self.layer = layer
        self.runner = TransactionRunner(layer, self._on_event)
        kinds: dict[str, int] = {}
        for entry in self.ctx.config.sip.listen:
            kind, _, _ = parse_listen(entry)
            kinds[kind] = kinds.get(kind, 0) + 1
        try:
            for entry in self.ctx.config.sip.listen:
                kind, host, port = parse_listen(entry)
                key = kind if kinds[kind] == 1 else f"{kind}:{port}"
                transport: SipTransport
                if kind == "UDP":
                    udp = UdpTransport(host, port, self._on_message,
                                       on_parse_error=self._on_parse_error, key=key)
                    _enlarge_receive_buffer(udp, self.cfg.udp_receive_buffer)
                    transport = udp.start()
                else:
                    transport = TcpTransport(host, port, self._on_message,
                                             on_parse_error=self._on_parse_error, key=key).start()
                self.transports.append(transport)
                self.runner.add_transport(transport)
                log.info("SIP listening on %s %s:%d", kind, *transport.local_address)
        except OSError:
            for transport in self.transports:
                transport.close()
            raise
        self.runner.start()
        first = self.transports[0].local_address if self.transports else ("127.0.0.1", 5060)
        host = first[0] if first[0] not in ("0.0.0.0", "::") else "127.0.0.1"
        self.ctx.proxy_uri = f"sip:{host}:{first[1]}"
        self.ctx.sip_listeners = [(t.key, t.local_address) for t in self.transports]
        self.ctx.runner = self.runner
        self._flusher = gevent.spawn(self._flush_metrics)

    def _flush_metrics(self) -> None:
        # Once a second: the shared metric series, and the REGISTER transactions that have
        # lingered long enough.
        while True:
            gevent.sleep(1.0)
            flush_counts()
            self.ctx.forget_lingering(time.monotonic())

    def terminate(self, reason: Any) -> None:
        self._flusher.kill(block=False)
        flush_counts()
        if self.ctx.runner is self.runner:
            self.ctx.runner = None
        self.runner.stop()
        for transport in self.transports:
            transport.close()
        self.pool.kill(block=False)

    def handle_cast(self, msg: Any) -> None:
        log.debug("edge SIP actor: ignoring %r", msg)

    # -- before the transaction layer: sanity and guards -------------------------------------

    def _on_parse_error(
        self, error: SipParseError, data: bytes, source: tuple[str, int], transport: SipTransport
    ) -> None:
        count_request("other")
        response = None if self.cfg.sanity_drops else salvage_error_response(error, data)
        if response is None:
            DROPPED.labels(reason="sanity").inc()
            log.debug("dropped unparsable message from %s:%d: %s", *source, error)
            return
        self._send_stateless(response, source, transport)

    def _on_message(self, message: Message, source: tuple[str, int], transport: SipTransport) -> None:
        # A gevent socket with datagrams queued never yields on recvfrom: under load the
        # reader would starve the authentication greenlets and registration actors it feeds,
        # so it steps aside every few messages.
        self._since_yield += 1
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            gevent.sleep(0)
        if not isinstance(message, Request):
            # Responses: the edge has no client transactions yet; the layer drops strays.
            self.runner.on_message(message, source, transport)
            return
        request = message
        method = request.method
        count_request(method)
        if method == "ACK" or self.layer.find_server_transaction(request) is not None:
            # ACKs and retransmissions belong to a transaction (or a dialog) already there.
            self.runner.on_message(request, source, transport)
            return
        ip = source[0]
        trusted = self.ctx.trusted.contains(ip)
        rejection = validate_request(
            request,
            accepted_types=ACCEPTED_BODY_TYPES,
            response_types=("application/sdp",) if method == "INVITE" else None,
        )
        if rejection is not None:
            if self.cfg.sanity_drops:
                self._drop("sanity", request, source)
                return
            response = self._stateless_response(request, source, rejection.status, rejection.reason)
            for name, value in rejection.headers:
                response.headers.add(name, value)
            self._send_stateless(response, source, transport)
            return
        if not trusted:
            if is_scanner(request.headers.get("user-agent"), self.cfg.scanner_user_agents):
                self._drop("scanner", request, source)
                return
            if method in ("REGISTER", "SUBSCRIBE") and has_ip_literal_domain(
                request.to.uri.host, request.from_.uri.host
            ):
                self._drop("ip_domain", request, source)
                return
            if (
                method != "OPTIONS"
                and request.to.tag is None
                and not self.ctx.flood.allow(ip, time.monotonic())
            ):
                self._drop("flood", request, source)
                return
        max_forwards = request.max_forwards
        if max_forwards is None:
            request.headers.add("Max-Forwards", str(self.cfg.max_forwards))
        elif max_forwards == 0 and method != "OPTIONS":
            self._send_stateless(self._stateless_response(request, source, 483), source, transport)
            return
        if request.to.tag is None:
            # OPTIONS pings are answered statelessly, as Kazoo's Kamailio does (sl_send_reply):
            # they leave no transaction behind. (REGISTER challenges are not: a retransmitted
            # REGISTER must get the same 401 again, not one with a fresh nonce, or the phone
            # takes it for a new answer.)
            if method == "OPTIONS":
                self._send_stateless(self._options_response(request, source), source, transport)
                return
        self.runner.on_message(request, source, transport)

    def _options_response(self, request: Request, source: tuple[str, int] | None = None) -> Response:
        response = (make_response(request, 200, "Rawr!!", to_tag=generate_tag()) if source is None
                    else self._stateless_response(request, source, 200, "Rawr!!"))
        response.headers.add("Allow", ALLOW)
        response.headers.add("Accept", "application/sdp")
        return response

    def _drop(self, reason: str, request: Request, source: tuple[str, int]) -> None:
        DROPPED.labels(reason=reason).inc()
        if log.isEnabledFor(logging.DEBUG):
            current_call_id.set(_safe_call_id(request))
            log.debug("dropped %s %s from %s:%d (%s)", request.method, request.uri, source[0],
                      source[1], reason)

    def _stateless_response(
        self, request: Request, source: tuple[str, int], status: int, reason: str | None = None
    ) -> Response:
        try:
            stamp_via(request, source)
        except SipParseError:
            pass
        return make_response(request, status, reason, to_tag=generate_tag())

    def _send_stateless(self, response: Response, source: tuple[str, int], transport: SipTransport) -> None:
        count_response(response.status)
        self.runner.send_stateless(response, source, transport.key)

    # -- after the transaction layer: routing ------------------------------------------------

    def _on_event(self, event: Any) -> None:
        if isinstance(event, RequestReceived):
            self.route_request(event)
        else:
            on_client_event(event)  # answers to the NOTIFYs the edge sent

    def route_request(self, event: RequestReceived) -> None:
        request = event.request
        current_call_id.set(request.call_id)
        method = request.method
        trusted = self.ctx.trusted.contains(event.source[0])
        if method == "OPTIONS":
            self.ctx.respond(event.transaction, self._options_response(request))
        elif method == "REGISTER":
            self._on_register(event, trusted)
        elif is_mwi_subscribe(request):
            # New or a refresh (the edge's To-tag proves the dialog): authenticated either way.
            if trusted:
                self.mwi.subscribe(event, None)
            else:
                self._authenticate_then(event, proxy=True, then=self.mwi.subscribe)
        elif method in AUTHORIZED_METHODS and request.to.tag is None:
            if trusted:
                self._no_call_handler(event)
            else:
                self._authenticate_then(event, proxy=True, then=self._no_call_handler)
        elif request.to.tag is not None and method in KNOWN_METHODS:
            self._answer(event, 481)
        elif method in KNOWN_METHODS:
            response = make_response(request, 405, None, to_tag=generate_tag())
            response.headers.add("Allow", ALLOW)
            self.ctx.respond(event.transaction, response)
        else:
            self._answer(event, 501)

    def _answer(self, event: RequestReceived, status: int, reason: str | None = None,
                headers: tuple[tuple[str, str], ...] = ()) -> None:
        response = make_response(event.request, status, reason, to_tag=generate_tag())
        for name, value in headers:
            response.headers.add(name, value)
        self.ctx.respond(event.transaction, response)

    def _no_call_handler(self, event: RequestReceived, credentials: Credentials | None = None) -> None:
        # Until a calls role relays calls (Kazoo's dispatcher with no media server up).
        self._answer(event, 480, "Temporarily Unavailable - No Call Handler")

    # -- REGISTER ----------------------------------------------------------------------------

    def _on_register(self, event: RequestReceived, trusted: bool) -> None:
        if trusted:
            self._save(event, None)
            return
        self._authenticate_then(event, proxy=False, then=self._save)

    def _save(self, event: RequestReceived, credentials: Credentials | None) -> None:
        request = event.request
        current_call_id.set(request.call_id)
        to_uri = request.to.uri
        if credentials is not None and credentials.username.lower() != (to_uri.user or "").lower():
            # Credentials of one user must not register another user's AOR.
            self._answer(event, 403, "Forbidden - Credentials Do Not Match The AOR")
            return
        aor = aor_key(to_uri.user, to_uri.host)
        save = SaveRegistration(
            request=request,
            transaction=event.transaction,
            source=event.source,
            transport=event.transport.partition(":")[0],
            credentials=credentials,
        )
        dispatch_registration(self.ctx, save, aor)

    # -- authentication ----------------------------------------------------------------------

    def _challenge(self, event: RequestReceived, realm: str, proxy: bool, stale: bool = False) -> None:
        status = 407 if proxy else 401
        response = make_response(event.request, status, None, to_tag=generate_tag())
        for name, value in self.ctx.digest.challenge_headers(realm, time.time(), proxy=proxy, stale=stale):
            response.headers.add(name, value)
        if proxy:
            self.ctx.respond(event.transaction, response)  # an INVITE waits for its ACK
        else:
            self.ctx.respond_briefly(event.transaction, response)

    @staticmethod
    def _realm(request: Request, proxy: bool) -> str:
        # REGISTER: the AOR's domain; other requests: the caller's (Kazoo challenges with $fd).
        uri = request.from_.uri if proxy else request.to.uri
        return (uri.host or "").lower()

    @staticmethod
    def _credentials(request: Request, proxy: bool, realm: str) -> DigestCredentials | None:
        header = "proxy-authorization" if proxy else "authorization"
        found: DigestCredentials | None = None
        for value in request.headers.get_all(header):
            try:
                credentials = DigestCredentials.parse(value)
            except DigestParseError:
                continue
            if credentials.realm.lower() == realm:
                return credentials
            found = found or credentials
        return found

    def _authenticate_then(
        self,
        event: RequestReceived,
        *,
        proxy: bool,
        then: Callable[[RequestReceived, Credentials | None], None],
    ) -> None:
        """Digest authentication, then ``then(event, credentials)``. With the user's
        credentials cached this runs to the end here, in the listener's greenlet; otherwise
        a greenlet of the bounded pool asks the registrar over the bus first."""
        request = event.request
        realm = self._realm(request, proxy)
        credentials = self._credentials(request, proxy, realm)
        if credentials is None:
            self._challenge(event, realm, proxy)
            return
        lockout_key = (credentials.username.lower(), event.source[0], event.source[1])
        monotonic = time.monotonic()
        if self.ctx.lockout.locked(lockout_key, monotonic):
            self._locked_out(event, credentials.username)
            return
        known = self.ctx.credentials.get(realm, credentials.username, monotonic)
        if known is not None:
            self._verify(event, credentials, realm, proxy, then, known, lockout_key)
            return
        if self.pool.full():
            DROPPED.labels(reason="overload").inc()
            if monotonic - self._overload_logged > 1.0:  # one line per second, not per drop
                self._overload_logged = monotonic
                log.warning("%s from %s:%d dropped: %d authentications pending", request.method,
                            *event.source, MAX_PENDING_AUTH)
            self.ctx.abandon(event.transaction)
            return
        self.pool.spawn(self._ask_then_verify, event, credentials, realm, proxy, then, lockout_key)

    def _ask_then_verify(
        self,
        event: RequestReceived,
        credentials: DigestCredentials,
        realm: str,
        proxy: bool,
        then: Callable[[RequestReceived, Credentials | None], None],
        lockout_key: tuple[str, str, int],
    ) -> None:
        request = event.request
        current_call_id.set(request.call_id)
        ctx = self.ctx
        username = credentials.username
        monotonic = time.monotonic()
        try:
            known = ask_registrar(
                ctx.bus,
                realm=realm,
                username=username,
                method=request.method,
                now=monotonic,
                ttl=ctx.credentials.lifetime(True),
                negative_ttl=ctx.credentials.lifetime(False),
                timeout=self.cfg.authn_timeout,
                request_fields={
                    "From": str(request.from_),
                    "To": str(request.to),
                    "Orig-IP": event.source[0],
                    "Orig-Port": event.source[1],
                    "Call-ID": request.call_id,
                    "Auth-Nonce": credentials.nonce,
                    "User-Agent": request.headers.get("user-agent"),
                    "Contact": request.headers.get("contact"),
                },
            )
        except (RequestTimeout, BusError) as error:
            # Kazoo: no answer from the registrar in 2.5 s drops a REGISTER (the phone
            # retries) and refuses anything else.
            log.warning("%s from %s:%d: no credentials for %s@%s (%s)", request.method,
                        *event.source, username, realm, error)
            if request.method == "REGISTER":
                DROPPED.labels(reason="authn_timeout").inc()
                ctx.abandon(event.transaction)
            else:
                self._answer(event, 403)
            return
        ctx.credentials.put(known)
        self._verify(event, credentials, realm, proxy, then, known, lockout_key)

    def _verify(
        self,
        event: RequestReceived,
        credentials: DigestCredentials,
        realm: str,
        proxy: bool,
        then: Callable[[RequestReceived, Credentials | None], None],
        known: Credentials,
        lockout_key: tuple[str, str, int],
    ) -> None:
        request = event.request
        ctx = self.ctx
        password = known.password if known.password is not None else self._decoy_password
        verdict = ctx.digest.verify(
            credentials, method=request.method, now=time.time(), password=password, realm=realm
        )
        if verdict.ok and known.known:
            ctx.lockout.clear(lockout_key)
            then(event, known)
            return
        if verdict.stale:
            self._challenge(event, realm, proxy, stale=True)
            return
        if verdict.outcome in (DigestOutcome.WRONG_RESPONSE, DigestOutcome.OK):
            AUTH_FAILURES.inc()
            log.info("%s from %s:%d: authentication of %s@%s failed", request.method,
                     *event.source, credentials.username, realm)
            if ctx.lockout.record_failure(lockout_key, time.monotonic()):
                self._locked_out(event, credentials.username)
                return
        else:
            log.info("%s from %s:%d: credentials refused (%s)", request.method, *event.source,
                     verdict.outcome.value)
        self._challenge(event, realm, proxy)

    def _locked_out(self, event: RequestReceived, username: str) -> None:
        log.warning("%s from %s:%d: %s locked out after %d failed authentications",
                    event.request.method, *event.source, username, self.cfg.auth_failures)
        response = make_response(event.request, 403, "Forbidden", to_tag=generate_tag())
        response.headers.add("Retry-After", str(self.cfg.lockout_retry_after))
        self.ctx.respond_briefly(event.transaction, response)


def _enlarge_receive_buffer(transport: UdpTransport, size: int) -> None:
    """A burst of REGISTERs (phones re-registering after an outage) must wait in the socket,
    not be dropped by the kernel: the default UDP receive buffer holds only ~100 datagrams.
    The kernel caps the size at net.core.rmem_max."""
    if size <= 0:
        return
    try:
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError as error:
        log.warning("cannot set the UDP receive buffer to %d bytes: %s", size, error)


def _header_key(line: bytes) -> str | None:
    try:
        return canonical_key(line.split(b":", 1)[0].strip().decode("latin-1"))
    except SipParseError:
        return None


def _safe_call_id(request: Request) -> str:
    try:
        return request.call_id
    except SipParseError:
        return "-"
