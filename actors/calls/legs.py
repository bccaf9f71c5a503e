"""Call legs: the two halves of a B2BUA call, one lightweight actor each (FreeSWITCH channels
driven by ecallmgr_call_control).

:class:`ALeg` is the caller's INVITE, received from the edge. It publishes ``route_req`` with
Kazoo's fields, takes the first non-deferred ``route_resp`` (none within
``calls.route_timeout``: ``604``), sends ``route_win`` with the shard's Control-Queue, then runs
the call-control commands it is sent one at a time from a FIFO (``Insert-At`` head, tail,
flush or now) and publishes the call events.

:class:`BLeg` is one INVITE the A-leg's ``bridge`` sends to an endpoint's registered contact
(through the edge, which proxies it with Record-Route). The A-leg owns the bridge: it starts
B-legs for every target at once (simultaneous) or endpoint after endpoint (single), each with
its own delay and timeout; relays ringing and early media; answers itself with the first B-leg
that answers, cancels the others and bridges the two; or, when every B-leg failed, reports the
failure (``CHANNEL_EXECUTE_COMPLETE`` of ``bridge`` with Hangup-Cause and ``sip:<code>``) and
waits for the next command. SDP goes through unchanged: media flows between the phones.

Once bridged, re-INVITE, UPDATE and INFO from either side are relayed to the other through its
own dialog (hold/unhold), and a BYE from either side ends both legs (Kazoo's
hangup_after_bridge). Every leg publishes CHANNEL_DESTROY with Hangup-Cause/Code, durations and
Other-Leg-Call-ID when it ends; that event is the CDR.

Legs are temporary children of the shard's ``simple_one_for_one`` leg supervisor: a crash ends
that leg only (it publishes its CHANNEL_DESTROY from ``terminate``). Each sets
``current_call_id`` so every log line names its call.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from actors.calls.causes import cause_for_status, status_for_cause
from actors.calls.context import ShardContext
from actors.calls.headers import ORIG_IP, ORIG_PORT, read_ccvs, strip_internal_headers
from actors.calls.metrics import CALL_ATTEMPTS, CALL_SETUP_SECONDS, CALLS_ACTIVE, ROUTE_REQ_SECONDS
from actors.kernel import Actor, ActorRef, current_call_id
from bus import BusError, RequestTimeout
from bus.api.call import call_event
from bus.api.registration import reg_query
from bus.api.route import route_req, route_win
from protocols.sip import (
    AckReceived,
    CancelReceived,
    ClientTransaction,
    Dialog,
    DialogError,
    Request,
    RequestReceived,
    Response,
    ServerTransaction,
    generate_call_id,
    generate_tag,
    make_response,
    new_via,
    next_hop,
)
from protocols.sip.uri import URI

__all__ = [
    "ALeg",
    "BLeg",
    "BridgeTarget",
    "Command",
    "InDialogRequest",
    "SipAck",
    "SipCancel",
    "SipResponse",
    "SipTimeout",
]

log = logging.getLogger("mirliton.calls.legs")

GREGORIAN_OFFSET = 62167219200


# -- messages a leg receives ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InDialogRequest:
    event: RequestReceived


@dataclass(frozen=True, slots=True)
class SipAck:
    event: AckReceived


@dataclass(frozen=True, slots=True)
class SipCancel:
    event: CancelReceived


@dataclass(frozen=True, slots=True)
class SipResponse:
    response: Response
    transaction: ClientTransaction


@dataclass(frozen=True, slots=True)
class SipTimeout:
    transaction: Any
    reason: str = "timeout"


@dataclass(frozen=True, slots=True)
class Command:
    """A call-control command (kapi_dialplan) from the Control-Queue."""

    msg: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Route:
    pass


@dataclass(frozen=True, slots=True)
class _Retransmit2xx:
    pass


@dataclass(frozen=True, slots=True)
class _Dial:
    pass


@dataclass(frozen=True, slots=True)
class _NoAnswer:
    pass


@dataclass(frozen=True, slots=True)
class _BridgeTimeout:
    generation: int


@dataclass(frozen=True, slots=True)
class _StartGroup:
    generation: int
    group: int


# B-leg -> A-leg
@dataclass(frozen=True, slots=True)
class BProgress:
    leg: ActorRef
    call_id: str
    status: int
    body: bytes
    content_type: str | None


@dataclass(frozen=True, slots=True)
class BAnswered:
    leg: ActorRef
    call_id: str
    body: bytes
    content_type: str | None
    callee_name: str
    callee_number: str


@dataclass(frozen=True, slots=True)
class BFailed:
    leg: ActorRef
    call_id: str
    status: int
    cause: str


@dataclass(frozen=True, slots=True)
class PeerHangup:
    """The other leg of a bridge ended."""

    leg: ActorRef
    cause: str


# A-leg -> B-leg
@dataclass(frozen=True, slots=True)
class CancelLeg:
    cause: str


@dataclass(frozen=True, slots=True)
class Bridged:
    peer: ActorRef
    peer_call_id: str


# either way, once bridged
@dataclass(frozen=True, slots=True)
class Relay:
    method: str
    body: bytes
    content_type: str | None
    origin: ActorRef
    token: int


@dataclass(frozen=True, slots=True)
class RelayAnswer:
    token: int
    status: int
    reason: str
    body: bytes
    content_type: str | None


@dataclass(frozen=True, slots=True)
class BridgeTarget:
    """One contact to ring: the URI, the proxy to send it through, its timeout and delay."""

    uri: str
    proxy: str | None
    timeout: float
    delay: float
    to_user: str
    to_realm: str
    ccvs: dict[str, Any] = field(default_factory=dict)


_tokens = itertools.count(1)


def _gregorian(ts: float) -> int:
    return int(ts) + GREGORIAN_OFFSET


def _display(name_addr: Any) -> tuple[str, str]:
    number = name_addr.uri.user or ""
    name = (getattr(name_addr, "display", None) or "").strip().strip('"')
    return name or number, number


class CallLeg(Actor):
    """What both halves share: identity, timestamps, events, dialog relays and the end."""

    direction = "inbound"

    def __init__(self, ctx: ShardContext) -> None:
        self.ctx = ctx
        self.call_id = ""
        self.created = time.time()
        self.answered_at: float | None = None
        self.ccvs: dict[str, Any] = {}
        self.caller_name = ""
        self.caller_number = ""
        self.callee_name = ""
        self.callee_number = ""
        self.from_uri = ""
        self.to_uri = ""
        self.request_uri = ""
        self.user_agent = ""
        self.other_leg: str | None = None
        self.peer: ActorRef | None = None
        self.dialog: Dialog | None = None
        self.ended = False
        # token -> server transaction waiting for the peer's answer to a relayed request
        self.relayed_in: dict[int, ServerTransaction] = {}
        # client transaction -> (origin leg, token) of a request relayed out
        self.relayed_out: dict[ClientTransaction, tuple[ActorRef, int]] = {}
        self._registered = False

    # -- bookkeeping ---------------------------------------------------------------------------

    def _register(self) -> None:
        current_call_id.set(self.call_id)
        self.ctx.legs[self.call_id] = self.ref
        self._registered = True
        CALLS_ACTIVE.inc()
        self._update_channel()

    def _update_channel(self, **extra: Any) -> None:
        row = self.ctx.channels.setdefault(self.call_id, {})
        row.update({
            "call_id": self.call_id,
            "direction": self.direction,
            "state": "answered" if self.answered_at else "ringing",
            "caller_id_number": self.caller_number,
            "callee_id_number": self.callee_number,
            "other_leg_call_id": self.other_leg,
            "account_id": self.ccvs.get("Account-ID"),
            "created": self.created,
            "answered": self.answered_at,
            "shard": self.ctx.shard,
            "node": self.ctx.node,
            **extra,
        })

    def event(self, name: str, **fields: Any) -> None:
        msg: dict[str, Any] = {
            "Call-ID": self.call_id,
            "Call-Direction": self.direction,
            "Caller-ID-Name": self.caller_name,
            "Caller-ID-Number": self.caller_number,
            "Callee-ID-Name": self.callee_name,
            "Callee-ID-Number": self.callee_number,
            "From": self.from_uri,
            "To": self.to_uri,
            "Request": self.request_uri,
            "Custom-Channel-Vars": dict(self.ccvs),
            "Timestamp": _gregorian(time.time()),
            "Channel-State": "answered" if self.answered_at else "ringing",
        }
        if self.other_leg:
            msg["Other-Leg-Call-ID"] = self.other_leg
        if self.ccvs.get("Account-ID"):
            msg["Account-ID"] = self.ccvs["Account-ID"]
        msg.update({k: v for k, v in fields.items() if v is not None})
        self.ctx.publish(call_event[name].build(msg))

    def snapshot(self) -> dict[str, Any]:
        """What a CHANNEL_DESTROY needs, for the dialog journal (:mod:`actors.calls.journal`)."""
        return {
            "call_id": self.call_id, "direction": self.direction, "ccvs": dict(self.ccvs),
            "caller_name": self.caller_name, "caller_number": self.caller_number,
            "callee_name": self.callee_name, "callee_number": self.callee_number,
            "from": self.from_uri, "to": self.to_uri, "request": self.request_uri,
            "user_agent": self.user_agent, "other_leg": self.other_leg,
            "created": self.created, "answered": self.answered_at,
        }

    def journal_up(self) -> None:
        if self.dialog is not None and self.ctx.journal is not None:
            self.ctx.journal.up(self.dialog, self.snapshot())

    def finish(self, cause: str, code: str) -> None:
        """Publish CHANNEL_DESTROY (the CDR) and exit."""
        if self.ended:
            return
        self.publish_destroy(cause, code)
        self.stop()

    def publish_destroy(self, cause: str, code: str) -> None:
        self.ended = True
        if self.answered_at is not None and self.ctx.journal is not None:
            self.ctx.journal.down(self.call_id)
        now = time.time()
        duration = max(0, round(now - self.created))
        billing = max(0, round(now - self.answered_at)) if self.answered_at else 0
        ringing = max(0, round((self.answered_at or now) - self.created))
        disposition = "ANSWER" if self.answered_at else cause
        destroy = call_event["CHANNEL_DESTROY"].build({
            "Call-ID": self.call_id,
            "Call-Direction": self.direction,
            "Caller-ID-Name": self.caller_name,
            "Caller-ID-Number": self.caller_number,
            "Callee-ID-Name": self.callee_name,
            "Callee-ID-Number": self.callee_number,
            "From": self.from_uri,
            "To": self.to_uri,
            "Request": self.request_uri,
            "Custom-Channel-Vars": {**self.ccvs, "Media-Server": self.ctx.media_server},
            "Timestamp": _gregorian(now),
            "Hangup-Cause": cause,
            "Hangup-Code": code,
            "Disposition": disposition,
            "Duration-Seconds": duration,
            "Billing-Seconds": billing,
            "Ringing-Seconds": ringing,
            **({"Other-Leg-Call-ID": self.other_leg} if self.other_leg else {}),
            **({"Account-ID": self.ccvs["Account-ID"]} if self.ccvs.get("Account-ID") else {}),
            "User-Agent": self.user_agent,
            "Created-Timestamp": _gregorian(self.created),
            "Answered-Timestamp": _gregorian(self.answered_at) if self.answered_at else None,
        })
        destroy = {k: v for k, v in destroy.items() if v is not None}
        # Confirmed: the CDR must reach the broker (a queue took it) before the leg is gone.
        if not self.ctx.publish(destroy, confirm=True, timeout=5.0):
            self.ctx.publish(destroy)
        log.info("%s leg ended: %s (%s) after %ds, billed %ds", self.direction, cause, code,
                 duration, billing)

    def release_transactions(self) -> None:
        """Forget this leg in the transactions it started: the transaction layer keeps a
        transaction (and a timer entry pointing at it, e.g. Timer C) for up to minutes after
        its end, and through ``context`` it would keep the whole leg alive that long."""
        for transaction in [*self.relayed_out, getattr(self, "invite_tx", None),
                            getattr(self, "reoffer", None)]:
            if isinstance(transaction, ClientTransaction):
                transaction.context = None
        self.relayed_out.clear()
        self.relayed_in.clear()

    def terminate(self, reason: Any) -> None:
        self.release_transactions()
        if self._registered:
            CALLS_ACTIVE.dec()
            if self.ctx.legs.get(self.call_id) == self.ref:
                del self.ctx.legs[self.call_id]
            self.ctx.channels.pop(self.call_id, None)
        if not self.ended and self.call_id:
            # A crash or a shutdown: the call is lost, but its record is not.
            try:
                self._abort()
            finally:
                cause = "NORMAL_UNSPECIFIED" if reason in ("shutdown", "normal") else "CRASH"
                self.publish_destroy(cause, "sip:500")

    def _abort(self) -> None:
        """Best effort when the leg dies without a proper end: hang up the phone."""
        if self.dialog is not None and not self.dialog.terminated:
            self.send_in_dialog("BYE")
        if self.peer is not None:
            self.peer.send(PeerHangup(self.ref, "NORMAL_CLEARING"))

    # -- SIP helpers ---------------------------------------------------------------------------

    def via(self) -> Any:
        return new_via("UDP", self.ctx.host, self.ctx.port)

    def send_request(self, request: Request, *, track: bool = True) -> ClientTransaction | None:
        runner = self.ctx.runner
        if runner is None:
            return None
        destination, transport = next_hop(request)
        if transport not in ("UDP",):
            transport = "UDP"  # the shard's only listener; the edge takes it on from there
        transaction = runner.send_request(request, destination, transport)
        if track:
            transaction.context = self.ref
        return transaction

    def send_in_dialog(self, method: str, body: bytes = b"", content_type: str | None = None,
                       *, track: bool = False) -> ClientTransaction | None:
        if self.dialog is None or self.dialog.terminated:
            return None
        try:
            request = self.dialog.create_request(method, via=self.via(), body=body,
                                                 content_type=content_type)
        except DialogError:
            return None
        if method == "BYE":
            self.dialog.terminate()
        return self.send_request(request, track=track)

    def send_ack(self, ack: Request) -> None:
        runner = self.ctx.runner
        if runner is not None:
            destination, _ = next_hop(ack)
            runner.send_stateless(ack, destination, "UDP")

    # -- in-dialog requests (both legs) --------------------------------------------------------

    def on_in_dialog(self, msg: InDialogRequest) -> None:
        event = msg.event
        request = event.request
        if self.dialog is None or not self.dialog.matches_request(request):
            self.ctx.respond(event.transaction, make_response(request, 481))
            return
        rejection = self.dialog.receive_request(request)
        if rejection is not None:
            self.ctx.respond(event.transaction, make_response(request, rejection))
            return
        method = request.method
        if method == "BYE":
            self.ctx.respond(event.transaction, make_response(request, 200))
            self.on_remote_bye()
        elif method in ("INVITE", "UPDATE", "INFO") and self.peer is not None:
            token = next(_tokens)
            self.relayed_in[token] = event.transaction
            self.peer.send(Relay(method, request.body, request.content_type, self.ref, token))
            if method == "INVITE":
                self.ctx.respond(event.transaction, make_response(request, 100))
        elif method in ("INFO", "OPTIONS", "NOTIFY"):
            self.ctx.respond(event.transaction, make_response(request, 200))
        else:
            self.ctx.respond(event.transaction, make_response(request, 488 if method in (
                "INVITE", "UPDATE") else 405))

    def on_relay(self, msg: Relay) -> None:
        transaction = self.send_in_dialog(msg.method, msg.body, msg.content_type, track=True)
        if transaction is None:
            msg.origin.send(RelayAnswer(msg.token, 481, "Call/Transaction Does Not Exist", b"", None))
            return
        self.relayed_out[transaction] = (msg.origin, msg.token)

    def on_relay_answer(self, msg: RelayAnswer) -> None:
        transaction = self.relayed_in.pop(msg.token, None)
        if transaction is None:
            return
        response = make_response(transaction.request, msg.status, msg.reason)
        if 200 <= msg.status < 300 and transaction.request.method in ("INVITE", "UPDATE"):
            response.headers.add("Contact", self.ctx.contact)
        if msg.body:
            if msg.content_type:
                response.headers.add("Content-Type", msg.content_type)
            response.body = msg.body
        self.ctx.respond(transaction, response)
        if transaction.request.method == "INVITE" and 200 <= msg.status < 300:
            self.event("CHANNEL_UNHOLD" if b"sendonly" not in msg.body else "CHANNEL_HOLD")

    def relayed_response(self, response: Response, transaction: ClientTransaction) -> bool:
        """A response to a request relayed out: hand it back to its origin."""
        pending = self.relayed_out.get(transaction)
        if pending is None:
            return False
        if response.status < 200:
            return True
        del self.relayed_out[transaction]
        if self.dialog is not None:
            self.dialog.receive_response(transaction.request, response)
            if transaction.request.method == "INVITE" and response.status < 300:
                self.send_ack(self.dialog.create_ack(transaction.request, via=self.via()))
        origin, token = pending
        origin.send(RelayAnswer(token, response.status, response.reason, response.body,
                                response.content_type))
        return True

    def on_remote_bye(self) -> None:
        raise NotImplementedError


# -- the A-leg -----------------------------------------------------------------------------------


@dataclass
class _BridgeState:
    command: dict[str, Any]
    generation: int
    groups: list[list[BridgeTarget]]
    next_group: int = 0
    legs: dict[ActorRef, str] = field(default_factory=dict)
    failures: list[tuple[int, str]] = field(default_factory=list)
    winner: ActorRef | None = None
    winner_call_id: str | None = None
    ringing_sent: bool = False
    cancelling: str | None = None


class ALeg(CallLeg):
    """The caller's half: route_req, commands, and the bridge to B-legs."""

    direction = "inbound"

    def __init__(self, ctx: ShardContext, event: RequestReceived) -> None:
        super().__init__(ctx)
        self.invite = event.request
        self.invite_tx = event.transaction
        self.source = event.source
        self.local_tag = generate_tag()
        self.commands: deque[dict[str, Any]] = deque()
        self.current: dict[str, Any] | None = None
        self.bridge: _BridgeState | None = None
        self._generations = itertools.count(1)
        self.retransmission: Any = None
        self.final_sent = False
        self.progress_sent = 0
        self.routed = False
        self.outbound_caller: tuple[str, str] | None = None
        self.reoffer: ClientTransaction | None = None

    def init(self) -> None:
        request = self.invite
        self.call_id = request.call_id
        self.ccvs = dict(read_ccvs(request))
        orig_ip = request.headers.get(ORIG_IP) or self.source[0]
        orig_port = request.headers.get(ORIG_PORT) or str(self.source[1])
        strip_internal_headers(request)
        self.orig_ip, self.orig_port = orig_ip, int(orig_port) if orig_port.isdigit() else 0
        self.caller_name, self.caller_number = _display(request.from_)
        self.callee_number = request.uri.user or ""
        self.callee_name = self.callee_number
        self.from_uri = f"{request.from_.uri.user or ''}@{request.from_.uri.host}"
        self.to_uri = f"{request.to.uri.user or ''}@{request.to.uri.host}"
        self.request_uri = f"{request.uri.user or ''}@{self.ccvs.get('Realm') or request.uri.host}"
        self.user_agent = request.headers.get("user-agent") or ""
        self._register()
        self.event("CHANNEL_CREATE")
        self.ref.send(_Route())

    # -- routing -------------------------------------------------------------------------------

    def handle_cast(self, msg: Any) -> None:
        if isinstance(msg, _Route):
            self.route()
        elif isinstance(msg, Command):
            self.on_command(msg.msg)
        elif isinstance(msg, InDialogRequest):
            self.on_in_dialog(msg)
        elif isinstance(msg, SipAck):
            if self.retransmission is not None and self.retransmission.ack_received(
                    msg.event.request):
                self.retransmission = None  # let the 200 OK go: held calls are many
        elif isinstance(msg, SipCancel):
            self.on_cancel()
        elif isinstance(msg, _Retransmit2xx):
            self.retransmit_2xx()
        elif isinstance(msg, BProgress):
            self.on_b_progress(msg)
        elif isinstance(msg, BAnswered):
            self.on_b_answered(msg)
        elif isinstance(msg, BFailed):
            self.on_b_failed(msg)
        elif isinstance(msg, PeerHangup):
            self.on_peer_hangup(msg)
        elif isinstance(msg, _BridgeTimeout):
            self.on_bridge_timeout(msg)
        elif isinstance(msg, _StartGroup):
            if self.bridge is not None and self.bridge.generation == msg.generation:
                self.start_group(msg.group)
        elif isinstance(msg, Relay):
            self.on_relay(msg)
        elif isinstance(msg, RelayAnswer):
            self.on_relay_answer(msg)
        elif isinstance(msg, SipResponse):
            if msg.transaction is not None and msg.transaction is self.reoffer:
                self.on_reoffer_response(msg.response)
            else:
                self.relayed_response(msg.response, msg.transaction)
        elif isinstance(msg, SipTimeout):
            pending = self.relayed_out.pop(msg.transaction, None)
            if pending is not None:
                pending[0].send(RelayAnswer(pending[1], 408, "Request Timeout", b"", None))
        else:
            log.debug("A-leg: ignoring %r", msg)

    def route(self) -> None:
        request = self.invite
        ccvs = {k: v for k, v in self.ccvs.items() if k not in ("Realm", "Username")}
        msg = route_req.build({
            "Call-ID": self.call_id,
            "From": self.from_uri,
            "To": self.to_uri,
            "Request": self.request_uri,
            "Call-Direction": "inbound",
            "Caller-ID-Name": self.caller_name,
            "Caller-ID-Number": self.caller_number,
            "Custom-Channel-Vars": ccvs,
            "From-Tag": request.from_.tag or "",
            "Orig-IP": self.orig_ip,
            "Orig-Port": self.orig_port,
            "User-Agent": self.user_agent,
            "Resource-Type": "audio",
            "Media": "bypass",
            "Switch-Hostname": self.ctx.node,
            "Switch-Nodename": self.ctx.media_server,
        })
        started = time.monotonic()
        try:
            reply = self.ctx.bus.request(msg, timeout=self.ctx.config.calls.route_timeout)
        except RequestTimeout:
            ROUTE_REQ_SECONDS.observe(time.monotonic() - started)
            log.info("no route_resp for %s within %.1fs", self.request_uri,
                     self.ctx.config.calls.route_timeout)
            CALL_ATTEMPTS.labels(result="no_route").inc()
            self.reject(604, "No Available Handlers", "NO_ROUTE_DESTINATION")
            return
        except BusError as error:
            log.warning("route_req failed: %s", error)
            CALL_ATTEMPTS.labels(result="error").inc()
            self.reject(503, "Service Unavailable", "NORMAL_TEMPORARY_FAILURE")
            return
        ROUTE_REQ_SECONDS.observe(time.monotonic() - started)
        if self.ended:
            return
        method = reply.get("Method")
        if method == "error":
            code = int(str(reply.get("Route-Error-Code") or "500").strip() or 500)
            CALL_ATTEMPTS.labels(result="failed").inc()
            self.reject(code, str(reply.get("Route-Error-Message") or "") or None,
                        cause_for_status(code))
            return
        self.ccvs.update(reply.get("Custom-Channel-Vars") or {})
        self.routed = True
        server_id = reply.get("Server-ID")
        if server_id:
            self.ctx.publish(route_win.build({
                "Call-ID": self.call_id,
                "Control-Queue": self.ctx.control_queue,
                "Custom-Channel-Vars": dict(self.ccvs),
            }), exchange="targeted", routing_key=str(server_id))
        if method == "bridge" and reply.get("Routes"):
            self.on_command({"Application-Name": "bridge", "Call-ID": self.call_id,
                             "Endpoints": reply["Routes"]})
        if reply.get("Pre-Park") == "ring_ready":
            self.send_provisional(180)

    # -- responses to the caller ---------------------------------------------------------------

    def _response(self, status: int, reason: str | None = None, body: bytes = b"",
                  content_type: str | None = None) -> Response:
        response = make_response(self.invite, status, reason, to_tag=self.local_tag)
        for record_route in self.invite.headers.get_all("record-route"):
            response.headers.add("Record-Route", record_route)
        if status > 100 and status < 300:
            response.headers.add("Contact", self.ctx.contact)
        if body:
            response.headers.add("Content-Type", content_type or "application/sdp")
            response.body = body
        return response

    def send_provisional(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        if self.final_sent or self.ended:
            return
        self.ctx.respond(self.invite_tx, self._response(status, None, body, content_type))
        self.progress_sent = max(self.progress_sent, status)

    def reject(self, status: int, reason: str | None, cause: str) -> None:
        if not self.final_sent:
            self.final_sent = True
            self.ctx.respond(self.invite_tx, self._response(status, reason))
        self.finish(cause, f"sip:{status}")

    def answer(self, body: bytes, content_type: str | None) -> bool:
        if self.final_sent:
            return self.answered_at is not None
        self.final_sent = True
        response = self._response(200, None, body, content_type)
        try:
            self.dialog = Dialog.create_uas(self.invite, response)
        except DialogError as error:
            log.warning("cannot answer: %s", error)
            self.ctx.respond(self.invite_tx, self._response(500))
            return False
        self.ctx.respond(self.invite_tx, response)
        self.answered_at = time.time()
        CALL_SETUP_SECONDS.observe(self.answered_at - self.created)
        CALL_ATTEMPTS.labels(result="answered").inc()
        from protocols.sip.dialog import AnswerRetransmission

        reliable = self.invite_tx.reliable
        self.retransmission = AnswerRetransmission(response, time.monotonic(), reliable=reliable)
        self.send_after(0.5, _Retransmit2xx())
        self.event("CHANNEL_ANSWER")
        self._update_channel()
        return True

    def set_peer(self, peer: ActorRef, peer_call_id: str) -> None:
        self.peer = peer
        self.other_leg = peer_call_id
        self.journal_up()

    def on_reoffer_response(self, response: Response) -> None:
        """The caller's answer to the re-INVITE that gave it the callee's media."""
        if response.status < 200 or self.dialog is None or self.reoffer is None:
            return
        self.dialog.receive_response(self.reoffer.request, response)
        if response.status < 300:
            self.send_ack(self.dialog.create_ack(self.reoffer.request, via=self.via()))
        else:
            log.warning("caller refused the bridged media (%d): hanging up", response.status)
            self.hangup("INCOMPATIBLE_DESTINATION")

    def retransmit_2xx(self) -> None:
        retransmission = self.retransmission
        if retransmission is None or retransmission.acked or self.ended:
            return
        response = retransmission.handle_timer(time.monotonic())
        if response is not None:
            self.ctx.respond(self.invite_tx, response)
        if retransmission.timed_out:
            log.warning("no ACK for our 200 OK: hanging up")
            self.hangup("RECOVERY_ON_TIMER_EXPIRE")
            return
        deadline = retransmission.get_timer()
        if deadline is not None:
            self.send_after(max(0.0, deadline - time.monotonic()), _Retransmit2xx())

    # -- commands ------------------------------------------------------------------------------

    def on_command(self, msg: dict[str, Any]) -> None:
        if self.ended:
            return
        insert_at = msg.get("Insert-At") or "tail"
        if msg.get("Application-Name") == "queue":
            for command in msg.get("Commands") or []:
                self.on_command({**command, "Call-ID": self.call_id, "Insert-At": "tail"})
            return
        if insert_at == "now":
            self.execute(msg)
            return
        if insert_at == "flush":
            self.commands.clear()
            self.commands.append(msg)
        elif insert_at == "head":
            self.commands.appendleft(msg)
        else:
            self.commands.append(msg)
        self.advance()

    def advance(self) -> None:
        while self.current is None and self.commands and not self.ended:
            self.execute(self.commands.popleft())

    def execute(self, msg: dict[str, Any]) -> None:
        application = str(msg.get("Application-Name") or "")
        handler = getattr(self, f"cmd_{application}", None)
        self.event("CHANNEL_EXECUTE", **{"Application-Name": application})
        if handler is None:
            self.event("CHANNEL_EXECUTE_ERROR", **{"Application-Name": application,
                                                   "Application-Response": "unsupported"})
            return
        done = handler(msg)
        if done and not self.ended:
            self.complete(application, "SUCCESS")

    def complete(self, application: str, response: str, **fields: Any) -> None:
        self.event("CHANNEL_EXECUTE_COMPLETE", **{"Application-Name": application,
                                                  "Application-Response": response, **fields})

    def cmd_answer(self, msg: dict[str, Any]) -> bool:
        if self.answered_at is None:
            self.answer(_inactive_answer(self.invite.body, self.ctx.host), "application/sdp")
        return True

    def cmd_ring(self, msg: dict[str, Any]) -> bool:
        self.send_provisional(180)
        return True

    def cmd_progress(self, msg: dict[str, Any]) -> bool:
        self.send_provisional(183)
        return True

    def cmd_park(self, msg: dict[str, Any]) -> bool:
        return True

    def cmd_noop(self, msg: dict[str, Any]) -> bool:
        return True

    def cmd_set(self, msg: dict[str, Any]) -> bool:
        self.ccvs.update({k: v for k, v in (msg.get("Custom-Channel-Vars") or {}).items()
                          if v is not None})
        for key in [k for k, v in (msg.get("Custom-Channel-Vars") or {}).items() if v is None]:
            self.ccvs.pop(key, None)
        self._update_channel()
        return True

    def cmd_respond(self, msg: dict[str, Any]) -> bool:
        code = int(str(msg.get("Response-Code") or "486"))
        reason = msg.get("Response-Message") or None
        if code < 200:
            self.send_provisional(code)
            return True
        if self.answered_at is not None:
            return True
        CALL_ATTEMPTS.labels(result="failed").inc()
        self.complete("respond", "SUCCESS")
        self.reject(code, reason, cause_for_status(code))
        return False

    def cmd_hangup(self, msg: dict[str, Any]) -> bool:
        cause = str(msg.get("Hangup-Cause") or "NORMAL_CLEARING")
        if msg.get("Other-Leg-Only"):
            if self.peer is not None:
                self.peer.send(CancelLeg(cause))
            return True
        self.complete("hangup", "SUCCESS")
        self.hangup(cause)
        return False

    def hangup(self, cause: str) -> None:
        self.cancel_bridge(cause)
        if self.peer is not None:
            self.peer.send(CancelLeg(cause))
            self.event("CHANNEL_UNBRIDGE")
        if self.answered_at is not None:
            self.send_in_dialog("BYE")
            self.finish(cause, "sip:200")
        else:
            status = status_for_cause(cause)
            if self.answered_at is None and not self.final_sent:
                CALL_ATTEMPTS.labels(result="failed").inc()
            self.reject(status, None, cause)

    # -- the bridge ----------------------------------------------------------------------------

    def cmd_bridge(self, msg: dict[str, Any]) -> bool:
        if self.peer is not None:
            self.complete("bridge", "ALREADY_BRIDGED")
            return True
        endpoints = [e for e in msg.get("Endpoints") or [] if isinstance(e, dict)]
        strategy = msg.get("Dial-Endpoint-Method") or "simultaneous"
        # The caller id the callees see (set_cid): the bridge's, else the caller's own.
        self.outbound_caller = (
            str(msg.get("Outbound-Caller-ID-Name") or msg.get("Caller-ID-Name") or self.caller_name),
            str(msg.get("Outbound-Caller-ID-Number") or msg.get("Caller-ID-Number")
                or self.caller_number),
        )
        default_timeout = float(msg.get("Timeout") or self.ctx.config.calls.bridge_timeout)
        groups: list[list[BridgeTarget]] = []
        for endpoint in endpoints:
            targets = self.resolve(endpoint, default_timeout)
            if targets:
                groups.append(targets)
        if not groups:
            self.bridge_failed(480, "USER_NOT_REGISTERED", msg)
            return False
        if strategy == "simultaneous":
            groups = [[t for group in groups for t in group]]
        generation = next(self._generations)
        self.bridge = _BridgeState(msg, generation, groups)
        self.current = msg
        if strategy == "simultaneous" and msg.get("Timeout"):
            self.send_after(float(msg["Timeout"]), _BridgeTimeout(generation))
        self.start_group(0)
        return False

    def resolve(self, endpoint: dict[str, Any], default_timeout: float) -> list[BridgeTarget]:
        """The contacts an endpoint reaches: its Route, or its registrations (reg_query)."""
        timeout = float(endpoint.get("Endpoint-Timeout") or default_timeout)
        delay = float(endpoint.get("Endpoint-Delay") or 0)
        user = str(endpoint.get("To-User") or endpoint.get("To-Username") or "")
        realm = str(endpoint.get("To-Realm") or self.ccvs.get("Realm") or "")
        ccvs = dict(endpoint.get("Custom-Channel-Vars") or {})
        if endpoint.get("Invite-Format") == "route" and endpoint.get("Route"):
            return [BridgeTarget(str(endpoint["Route"]), None, timeout, delay, user, realm, ccvs)]
        if not user or not realm:
            return []
        contacts = self.ctx.contacts.get(realm, user)
        if contacts is None:
            try:
                replies = self.ctx.bus.collect(
                    reg_query.build(realm=realm, username=user, fields=["Contact", "Proxy-Path"]),
                    timeout=self.ctx.config.calls.reg_query_timeout,
                    until=lambda rs: any(r.get("Fields") for r in rs),
                )
            except BusError as error:
                log.warning("reg_query for %s@%s failed: %s", user, realm, error)
                return []
            contacts = [(str(f["Contact"]), f.get("Proxy-Path")) for r in replies
                        for f in r.get("Fields") or [] if f.get("Contact")]
            if contacts:
                self.ctx.contacts.put(realm, user, contacts)
        targets = [BridgeTarget(contact, proxy, timeout, delay, user, realm, ccvs)
                   for contact, proxy in contacts]
        if not targets:
            log.info("%s@%s has no registered contact", user, realm)
        return targets

    def start_group(self, index: int) -> None:
        bridge = self.bridge
        if bridge is None or self.ended:
            return
        bridge.next_group = index + 1
        for target in bridge.groups[index]:
            leg = BLeg(self.ctx, self.ref, self, target)
            ref = self.ctx.start_leg(leg) if self.ctx.start_leg is not None else None
            if ref is None:
                bridge.failures.append((503, "NORMAL_TEMPORARY_FAILURE"))
                continue
            bridge.legs[ref] = leg.call_id
        if not bridge.legs:
            self.group_done()

    def on_b_progress(self, msg: BProgress) -> None:
        bridge = self.bridge
        if bridge is None or msg.leg not in bridge.legs or self.answered_at is not None:
            return
        if msg.body and self.progress_sent < 183:
            self.send_provisional(183, msg.body, msg.content_type)
            self.event("CHANNEL_PROGRESS_MEDIA", **{"Other-Leg-Call-ID": msg.call_id})
        elif self.progress_sent < 180:
            self.send_provisional(180)
            self.event("CHANNEL_PROGRESS", **{"Other-Leg-Call-ID": msg.call_id})

    def on_b_answered(self, msg: BAnswered) -> None:
        bridge = self.bridge
        if bridge is None or msg.leg not in bridge.legs or bridge.winner is not None or self.ended:
            msg.leg.send(CancelLeg("LOSE_RACE"))
            return
        bridge.winner = msg.leg
        bridge.winner_call_id = msg.call_id
        for other in list(bridge.legs):
            if other != msg.leg:
                other.send(CancelLeg("LOSE_RACE"))
        if self.answered_at is None:
            if not self.answer(msg.body, msg.content_type):
                msg.leg.send(CancelLeg("NORMAL_TEMPORARY_FAILURE"))
                return
        else:
            # Answered before (an answer command): offer the callee's media to the caller.
            self.reoffer = self.send_in_dialog("INVITE", msg.body,
                                               msg.content_type or "application/sdp", track=True)
        self.callee_name, self.callee_number = msg.callee_name, msg.callee_number
        self.set_peer(msg.leg, msg.call_id)
        msg.leg.send(Bridged(self.ref, self.call_id))
        self.event("CHANNEL_BRIDGE", **{"Other-Leg-Call-ID": msg.call_id})
        self._update_channel()

    def on_b_failed(self, msg: BFailed) -> None:
        bridge = self.bridge
        if bridge is None or msg.leg not in bridge.legs:
            return
        del bridge.legs[msg.leg]
        bridge.failures.append((msg.status, msg.cause))
        if bridge.winner is None and not bridge.legs:
            self.group_done()

    def group_done(self) -> None:
        bridge = self.bridge
        if bridge is None:
            return
        if bridge.cancelling is None and bridge.next_group < len(bridge.groups):
            self.start_group(bridge.next_group)
            return
        status, cause = _pick_failure(bridge.failures, bridge.cancelling)
        self.bridge = None
        self.bridge_failed(status, cause, bridge.command)

    def bridge_failed(self, status: int, cause: str, command: dict[str, Any]) -> None:
        self.current = None
        if self.ended:
            return
        self.complete("bridge", cause, **{"Hangup-Cause": cause, "Hangup-Code": f"sip:{status}",
                                          "Disposition": cause})
        self.advance()

    def on_bridge_timeout(self, msg: _BridgeTimeout) -> None:
        bridge = self.bridge
        if bridge is not None and bridge.generation == msg.generation and bridge.winner is None:
            self.cancel_bridge("NO_ANSWER")

    def cancel_bridge(self, cause: str) -> None:
        bridge = self.bridge
        if bridge is None or bridge.winner is not None:
            return
        bridge.cancelling = cause
        for leg in list(bridge.legs):
            leg.send(CancelLeg(cause))
        if not bridge.legs:
            self.group_done()

    def on_peer_hangup(self, msg: PeerHangup) -> None:
        if msg.leg != self.peer:
            return
        self.peer = None
        self.event("CHANNEL_UNBRIDGE")
        if self.current is not None and self.current.get("Application-Name") == "bridge":
            self.complete("bridge", "SUCCESS")
            self.current = None
        self.bridge = None
        # Kazoo's hangup_after_bridge: the caller is hung up when the callee hangs up.
        self.hangup(msg.cause)

    # -- the caller's side of the dialog -------------------------------------------------------

    def on_cancel(self) -> None:
        if self.final_sent or self.ended:
            return
        CALL_ATTEMPTS.labels(result="cancelled").inc()
        self.cancel_bridge("ORIGINATOR_CANCEL")
        self.final_sent = True
        self.ctx.respond(self.invite_tx, self._response(487))
        self.finish("ORIGINATOR_CANCEL", "sip:487")

    def on_remote_bye(self) -> None:
        if self.peer is not None:
            self.peer.send(CancelLeg("NORMAL_CLEARING"))
            self.event("CHANNEL_UNBRIDGE")
            self.peer = None
        if self.current is not None and self.current.get("Application-Name") == "bridge":
            self.complete("bridge", "SUCCESS")
        self.finish("NORMAL_CLEARING", "sip:200")


def _pick_failure(failures: list[tuple[int, str]], cancelling: str | None) -> tuple[int, str]:
    """The failure a bridge reports: the cancel reason (NO_ANSWER when the bridge timed out),
    else the most telling callee answer (busy and rejected before the rest)."""
    if cancelling:  # the legs were cancelled: 487 is their last SIP status (FreeSWITCH's too)
        return 487, cancelling
    if not failures:
        return 480, "NO_ANSWER"
    ranked = sorted(failures, key=lambda f: {"USER_BUSY": 0, "CALL_REJECTED": 1}.get(f[1], 5))
    return ranked[0]


def _inactive_answer(offer: bytes, host: str) -> bytes:
    """An SDP answer that accepts the caller's first audio codec with media inactive: the call
    is answered but no media flows until it is bridged (media anchoring is a later issue)."""
    payload = "0"
    for line in offer.decode("latin-1").splitlines():
        if line.startswith("m=audio"):
            parts = line.split()
            if len(parts) > 3:
                payload = parts[3]
            break
    session = int(time.time())
    return (
        "v=0\r\n"
        f"o=mirliton {session} {session} IN IP4 {host}\r\n"
        "s=mirliton\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio 9 RTP/AVP {payload}\r\n"
        "a=inactive\r\n"
    ).encode()


# -- the B-leg -----------------------------------------------------------------------------------


class BLeg(CallLeg):
    """One INVITE to one contact, on behalf of an A-leg's bridge."""

    direction = "outbound"

    def __init__(self, ctx: ShardContext, a_ref: ActorRef, a_leg: ALeg, target: BridgeTarget) -> None:
        super().__init__(ctx)
        self.a_ref = a_ref
        self.a_call_id = a_leg.call_id
        self.target = target
        self.offer = a_leg.invite.body
        self.offer_type = a_leg.invite.content_type or "application/sdp"
        self.call_id = generate_call_id()
        self.other_leg = a_leg.call_id
        self.caller_name, self.caller_number = a_leg.outbound_caller or (
            a_leg.caller_name, a_leg.caller_number)
        self.callee_number = target.to_user
        self.callee_name = target.to_user
        self.from_uri = a_leg.from_uri
        self.to_uri = f"{target.to_user}@{target.to_realm}"
        self.request_uri = self.to_uri
        self.ccvs = {
            **{k: v for k, v in a_leg.ccvs.items() if k in ("Account-ID", "Realm")},
            **target.ccvs,
        }
        self.ccvs.setdefault("Account-ID", a_leg.ccvs.get("Account-ID"))
        self.invite: Request | None = None
        self.invite_tx: ClientTransaction | None = None
        self.cancel_cause: str | None = None
        self.bridged = False
        self.provisional = False

    def init(self) -> None:
        self._register()
        if self.target.delay > 0:
            self.send_after(self.target.delay, _Dial())
        else:
            self.ref.send(_Dial())

    def handle_cast(self, msg: Any) -> None:
        if isinstance(msg, _Dial):
            self.dial()
        elif isinstance(msg, SipResponse):
            if msg.transaction is None:
                if self.dialog is not None:  # a 200 OK retransmitted after its transaction
                    ack = self.dialog.ack_for(msg.response)
                    if ack is not None:
                        self.send_ack(ack)
            elif msg.transaction is self.invite_tx:
                self.on_invite_response(msg.response)
            else:
                self.relayed_response(msg.response, msg.transaction)
        elif isinstance(msg, SipTimeout):
            if msg.transaction is self.invite_tx:
                self.fail(408, self.cancel_cause or "RECOVERY_ON_TIMER_EXPIRE")
            else:
                pending = self.relayed_out.pop(msg.transaction, None)
                if pending is not None:
                    pending[0].send(RelayAnswer(pending[1], 408, "Request Timeout", b"", None))
        elif isinstance(msg, _NoAnswer):
            if self.answered_at is None:
                self.cancel("NO_ANSWER")
        elif isinstance(msg, CancelLeg | PeerHangup):
            if self.answered_at is None:
                self.cancel(msg.cause)
            else:
                self.bridged = False
                self.send_in_dialog("BYE")
                self.finish(msg.cause, "sip:200")
        elif isinstance(msg, Bridged):
            self.peer = msg.peer
            self.bridged = True
            self.event("CHANNEL_BRIDGE", **{"Other-Leg-Call-ID": msg.peer_call_id})
        elif isinstance(msg, InDialogRequest):
            self.on_in_dialog(msg)
        elif isinstance(msg, Relay):
            self.on_relay(msg)
        elif isinstance(msg, RelayAnswer):
            self.on_relay_answer(msg)
        elif isinstance(msg, SipAck):
            pass
        else:
            log.debug("B-leg: ignoring %r", msg)

    def dial(self) -> None:
        if self.ended:
            return
        target = self.target
        try:
            uri = URI.parse(target.uri)
        except ValueError:
            self.fail(484, "INVALID_NUMBER_FORMAT")
            return
        request = Request("INVITE", uri)
        headers = request.headers
        headers.add("Via", self.via())
        if target.proxy:
            proxy = target.proxy if target.proxy.startswith("<") else f"<{target.proxy};lr>"
            headers.add("Route", proxy)
        headers.add("Max-Forwards", "70")
        caller = self.caller_number or "anonymous"
        name = self.caller_name.replace('"', "")
        headers.add("From", f'"{name}" <sip:{caller}@{target.to_realm}>;tag={generate_tag()}')
        headers.add("To", f"<sip:{target.to_user}@{target.to_realm}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self.ctx.contact)
        headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO")
        headers.add("User-Agent", "mirliton")
        if self.offer:
            headers.add("Content-Type", self.offer_type)
            request.body = self.offer
        self.invite = request
        self.invite_tx = self.send_request(request)
        self.event("CHANNEL_CREATE")
        self.send_after(target.timeout, _NoAnswer())

    def on_invite_response(self, response: Response) -> None:
        status = response.status
        if status < 200:
            if status == 100:
                return
            self.provisional = True
            self.event("CHANNEL_PROGRESS_MEDIA" if response.body else "CHANNEL_PROGRESS")
            if self.cancel_cause is None:
                self.a_ref.send(BProgress(self.ref, self.call_id, status, response.body,
                                          response.content_type))
            return
        if status < 300:
            self.on_answered(response)
            return
        self.fail(status, self.cancel_cause or cause_for_status(status))

    def on_answered(self, response: Response) -> None:
        assert self.invite is not None
        if self.dialog is not None:
            ack = self.dialog.ack_for(response)
            if ack is not None:
                self.send_ack(ack)  # a retransmitted 200 OK
            return
        try:
            self.dialog = Dialog.create_uac(self.invite, response)
        except DialogError as error:
            log.warning("unusable 2xx: %s", error)
            self.fail(502, "NETWORK_OUT_OF_ORDER")
            return
        self.send_ack(self.dialog.create_ack(self.invite, via=self.via()))
        self.answered_at = time.time()
        self.event("CHANNEL_ANSWER")
        self._update_channel()
        self.journal_up()
        if self.cancel_cause is not None or not self.a_ref.is_alive:
            # Answered while being cancelled (the race CANCEL loses): hang up at once.
            self.send_in_dialog("BYE")
            self.finish(self.cancel_cause or "LOSE_RACE", "sip:200")
            return
        name, number = _display(response.to)
        self.a_ref.send(BAnswered(self.ref, self.call_id, response.body, response.content_type,
                                  name or self.callee_name, number or self.callee_number))

    def cancel(self, cause: str) -> None:
        if self.cancel_cause is not None or self.ended:
            return
        self.cancel_cause = cause
        runner = self.ctx.runner
        if self.invite_tx is None:
            # Still waiting for its delay: it never rang.
            self.fail(487, cause)
            return
        if runner is not None and not self.invite_tx.terminated:
            runner.cancel(self.invite_tx)

    def fail(self, status: int, cause: str) -> None:
        if self.ended:
            return
        self.a_ref.send(BFailed(self.ref, self.call_id, status, cause))
        self.finish(cause, f"sip:{status}")

    def on_remote_bye(self) -> None:
        if self.bridged and self.peer is not None:
            self.peer.send(PeerHangup(self.ref, "NORMAL_CLEARING"))
        self.bridged = False
        self.peer = None
        self.event("CHANNEL_UNBRIDGE")
        self.finish("NORMAL_CLEARING", "sip:200")

    def _abort(self) -> None:
        if self.answered_at is None and self.invite_tx is not None and self.ctx.runner is not None:
            if not self.invite_tx.terminated:
                self.ctx.runner.cancel(self.invite_tx)
            self.a_ref.send(BFailed(self.ref, self.call_id, 500, "NORMAL_TEMPORARY_FAILURE"))
            return
        super()._abort()
