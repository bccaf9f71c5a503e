"""The edge hands calls to the calls shards and proxies the shards' calls to the phones
(Kazoo's Kamailio dispatcher + registrar lookup, as a proxy that record-routes).

:class:`CallRelay` is a *stateless* proxy (RFC 3261 16.11) with Record-Route, used by the
edge's SIP actor for everything about calls once an INVITE has been authenticated:

- an authenticated INVITE from a phone (:meth:`CallRelay.dispatch_invite`) goes to the shard
  that rendezvous hashing on its Call-ID picks among the healthy shards
  (:mod:`actors.calls.registry`), with ``X-Mirliton-CCV-*`` headers naming the authorizing
  device and account (as Kamailio's X-AUTH headers) - any such header the phone sent is removed
  first, and so are its Proxy-Authorization credentials, which were for us. The edge's own
  server transaction for it is dropped; retransmissions, its CANCEL and the ACK of a non-2xx
  answer carry the same branch and are sent the same way without a second authentication.
- B-leg INVITEs from a shard (they carry ``Route: <edge;lr>``, the Proxy-Path of the
  registration) go to the Request-URI, the contact where the phone registered from (its NAT
  address and transport, as the registrar recorded it);
- in-dialog requests that name the edge in their top Route (Record-Route made it the first
  hop of both dialogs) are loose-routed to their Request-URI. From phones they may only reach
  a calls shard: the edge is no open relay;
- responses whose top Via is one of ours lose it and go back to the next Via's address
  (``received``/``rport``) over its transport.

Being stateless, retransmissions are end to end and the branch of a forwarded request is a
hash of the branch it came with, so a CANCEL or a non-2xx ACK matches the transaction of the
INVITE it belongs to downstream. Dialog-creating INVITEs get a Record-Route naming the edge
with the transport of the phone's side.

:class:`CallDispatchingSipActor` is the edge SIP actor with these hooks: requests and
responses go to the relay first (:meth:`_on_message`) and the "no call handler" answer to an
authenticated INVITE becomes a dispatch to a shard.
"""

from __future__ import annotations

import hashlib
import logging
import time

from actors.calls.headers import CCV_PREFIX, ORIG_IP, ORIG_PORT, strip_internal_headers
from actors.calls.registry import ShardDirectory
from actors.edge.context import EdgeContext
from actors.edge.credentials import Credentials
from actors.edge.sip import EdgeSipActor
from actors.kernel import current_call_id
from protocols.sip import Request, RequestReceived, Response, SipParseError, make_response
from protocols.sip.headers import Via
from protocols.sip.message import Message
from protocols.sip.transaction import MAGIC_COOKIE, Address, stamp_via, via_response_address
from protocols.sip.transport import SipTransport, TransactionRunner

__all__ = ["CallDispatchingSipActor", "CallRelay"]

log = logging.getLogger("mirliton.edge.dispatch")

BRANCH_PREFIX = MAGIC_COOKIE + "mrl"
# How long the branch of a relayed INVITE is remembered (its CANCEL, ACK, retransmissions).
INVITE_MEMORY = 300.0


def _branch_for(via: Via, salt: str) -> str:
    source = f"{via.params.get('branch') or ''}|{via.host}|{via.port}|{salt}"
    return BRANCH_PREFIX + hashlib.sha1(source.encode()).hexdigest()[:24]


class CallRelay:
    def __init__(self, ctx: EdgeContext, runner: TransactionRunner,
                 addresses: list[tuple[str, Address]], shards: ShardDirectory) -> None:
        self.ctx = ctx
        self.runner = runner
        # (transport key, local address) of the edge's listeners
        self.addresses = addresses
        self.shards = shards
        self.invites: dict[str, tuple[float, Address]] = {}
        self._swept = time.monotonic()

    # -- identity --------------------------------------------------------------------------------

    def _ours(self, host: str, port: int | None) -> bool:
        """A URI or Via naming one of the edge's listeners (any host when bound to all)."""
        host = host.strip("[]")
        for _, (local_host, local_port) in self.addresses:
            if (port or 5060) != local_port:
                continue
            if host == local_host or local_host in ("0.0.0.0", "::") or (
                    host == "localhost" and local_host.startswith("127.")):
                return True
        return False

    def _local(self, transport: str) -> Address:
        for key, address in self.addresses:
            if key.partition(":")[0] == transport:
                host, port = address
                return ("127.0.0.1" if host in ("0.0.0.0", "::") else host), port
        return self.addresses[0][1]

    def _key(self, transport: str) -> str:
        for key, _ in self.addresses:
            if key.partition(":")[0] == transport:
                return key
        return self.addresses[0][0]

    # -- entry point -------------------------------------------------------------------------------

    def intercept(self, message: Message, source: Address, transport: SipTransport) -> bool:
        """True when the message was the relay's business (forwarded or dropped)."""
        try:
            if isinstance(message, Response):
                return self._response(message)
            assert isinstance(message, Request)
            return self._request(message, source, transport)
        except (SipParseError, ValueError) as error:
            log.debug("relay: unusable message from %s:%d: %s", *source, error)
            return False

    def _response(self, response: Response) -> bool:
        vias = response.vias
        if not vias or not str(vias[0].params.get("branch") or "").startswith(BRANCH_PREFIX):
            return False
        if not self._ours(vias[0].host, vias[0].port):
            return False
        response.headers.remove_first("Via")
        if len(vias) < 2 or (response.status == 100 and response.method == "INVITE"
                             and self.invites.get(str(vias[1].params.get("branch") or ""))):
            # A shard's 100 Trying to a phone's INVITE: the edge sent the phone its own 100
            # when it took the INVITE (100 is hop by hop, RFC 3261 16.7).
            return True
        upstream = vias[1]
        destination = via_response_address(upstream, (upstream.host, upstream.port or 5060))
        self._send(response, destination, upstream.transport.upper())
        return True

    def _request(self, request: Request, source: Address, transport: SipTransport) -> bool:
        if request.method in ("REGISTER", "OPTIONS"):
            return False  # never relayed: the edge's own (and its busiest) business
        from_shard = self.shards.is_shard_address(source)
        routes = request.routes
        top_is_us = bool(routes) and self._ours(routes[0].uri.host, routes[0].uri.port)
        method = request.method
        if from_shard:
            if top_is_us:
                request.headers.remove_first("Route")
            self._forward(request, source, transport, record_route=(
                method == "INVITE" and request.to.tag is None), toward_phone=True)
            return True
        if top_is_us:
            # The edge is the phone's first hop: its outbound proxy, or the Record-Route of a
            # call. Only in-dialog requests to a calls shard go on from here; anything else is
            # the edge's own business (REGISTER, a new INVITE to authenticate) and goes on with
            # the Route consumed. The edge relays phones to nowhere but its shards.
            request.headers.remove_first("Route")
            target = self._target(request)
            if (target is not None and request.to.tag is not None
                    and self.shards.is_shard_address(target[0])):
                # In-dialog only: a new request aimed at a shard must be authenticated first.
                strip_internal_headers(request)  # never the phone's word for its account
                self._forward(request, source, transport, record_route=False, toward_phone=False)
                return True
        branch = str(request.via.params.get("branch") or "")
        remembered = self.invites.get(branch) if method in ("INVITE", "ACK", "CANCEL") else None
        if remembered is not None:
            strip_internal_headers(request)
            self._forward(request, source, transport, record_route=method == "INVITE",
                          toward_phone=False, destination=remembered[1])
            return True
        return False

    # -- dispatch of an authenticated call ------------------------------------------------------

    def dispatch_invite(self, event: RequestReceived, credentials: Credentials | None) -> bool:
        """Send an authenticated (or trusted) INVITE to a calls shard; False when none is up."""
        request = event.request
        shard = self.shards.pick(request.call_id)
        if shard is None:
            return False
        strip_internal_headers(request)
        request.headers.remove("Proxy-Authorization")
        if credentials is not None:
            ccvs = {
                "Account-ID": credentials.account_id,
                "Authorizing-ID": credentials.device_id,
                "Authorizing-Type": "device",
                "Owner-ID": credentials.owner_id,
                "Username": credentials.username,
                "Realm": credentials.realm,
            }
            for name, value in ccvs.items():
                if value:
                    request.headers.add(CCV_PREFIX + name, str(value))
        request.headers.add(ORIG_IP, event.source[0])
        request.headers.add(ORIG_PORT, str(event.source[1]))
        branch = str(request.via.params.get("branch") or "")
        self.invites[branch] = (time.monotonic(), shard.address)
        self._sweep()
        self._forward(request, event.source, self.runner.transport(event.transport),
                      record_route=True, toward_phone=False, destination=shard.address,
                      stamped=True)
        # The shard answers from now on; the edge keeps no transaction for this INVITE.
        self.ctx.abandon(event.transaction)
        log.info("INVITE %s -> calls shard %d", request.uri, shard.shard)
        return True

    # -- forwarding ---------------------------------------------------------------------------

    def _target(self, request: Request) -> tuple[Address, str] | None:
        routes = request.routes
        uri = routes[0].uri if routes else request.uri
        host = (uri.maddr or uri.host).strip("[]")
        if not host:
            return None
        transport = (uri.transport or "udp").upper()
        return (host, uri.port or 5060), transport

    def _forward(self, request: Request, source: Address, transport: SipTransport, *,
                 record_route: bool, toward_phone: bool, destination: Address | None = None,
                 stamped: bool = False) -> None:
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            if request.method != "ACK":
                self._answer(request, source, transport, 483)
            return
        request.headers.replace("Max-Forwards", str((max_forwards or 71) - 1))
        if not stamped:
            stamp_via(request, source)
        if destination is None:
            target = self._target(request)
            if target is None:
                return
            destination, out_transport = target
        else:
            out_transport = "UDP"
        if out_transport not in ("UDP", "TCP"):
            out_transport = "UDP"
        if record_route:
            # The phone's side of the edge: its transport, so in-dialog requests come back on it.
            phone_transport = out_transport if toward_phone else transport.name
            host, port = self._local(phone_transport)
            suffix = ";transport=tcp" if phone_transport == "TCP" else ""
            request.headers.insert("Record-Route", f"<sip:{host}:{port}{suffix};lr>")
        host, port = self._local(out_transport)
        # A CANCEL and a non-2xx ACK carry their INVITE's branch and must match its downstream
        # transaction; an ACK for a 2xx has a branch of its own anyway.
        salt = "INVITE" if request.method in ("ACK", "CANCEL") else request.method
        branch = _branch_for(request.via, salt)
        request.headers.insert("Via", f"SIP/2.0/{out_transport} {host}:{port};branch={branch};rport")
        self._send(request, destination, out_transport)

    def _send(self, message: Message, destination: Address, transport: str) -> None:
        try:
            self.runner.send_stateless(message, destination, self._key(transport))
        except (OSError, ValueError, KeyError) as error:
            current_call_id.set(message.headers.get("call-id"))
            log.info("relay to %s:%d failed: %s", *destination, error)

    def _answer(self, request: Request, source: Address, transport: SipTransport, status: int) -> None:
        stamp_via(request, source)
        self.runner.send_stateless(make_response(request, status), source, transport.key)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < 10.0 and len(self.invites) < 50_000:
            return
        self._swept = now
        for branch in [b for b, (t, _) in self.invites.items() if now - t > INVITE_MEMORY]:
            del self.invites[branch]


class CallDispatchingSipActor(EdgeSipActor):
    """The edge SIP actor, relaying calls to the calls shards."""

    def init(self) -> None:
        super().init()
        addresses = [(t.key, t.local_address) for t in self.transports]
        self.relay = CallRelay(self.ctx, self.runner, addresses,
                               ShardDirectory(self.ctx.config.data_dir))

    def _on_message(self, message: Message, source: tuple[str, int], transport: SipTransport) -> None:
        if self.relay.intercept(message, source, transport):
            return
        super()._on_message(message, source, transport)

    def _no_call_handler(self, event: RequestReceived, credentials: Credentials | None = None) -> None:
        if event.request.method == "INVITE" and self.relay.dispatch_invite(event, credentials):
            return
        super()._no_call_handler(event, credentials)
