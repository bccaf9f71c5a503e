"""A calls shard's SIP face and bus face.

:class:`ShardSipActor` owns the shard's internal SIP listener (UDP on ``calls.listen_host``,
an ephemeral port unless ``calls.base_port`` is set, then ``base_port + shard``), its
transaction layer, and routes what arrives to the legs: a new INVITE starts an
:class:`~actors.calls.legs.ALeg` under the leg supervisor; requests inside a dialog, ACKs and
CANCELs go to the leg whose Call-ID they carry; responses to the leg that sent the request
(``transaction.context``). It also consumes the shard's Control-Queue on ``callctl`` (one
queue per shard, commands dispatched to legs by Call-ID) and answers ``channels_req``.

Once its listener and its leg supervisor are up the shard is advertised
(:mod:`actors.calls.registry`) so the edge can send calls here. Calls a killed predecessor
left up are ended first (:mod:`actors.calls.journal`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import gevent

from actors.calls.api import CHANNELS_ROUTING_KEY, channels_resp, conference_member_resp
from actors.calls.context import ShardContext
from actors.calls.journal import DialogJournal, bye_request, restore_dialog
from actors.calls.legs import (
    GREGORIAN_OFFSET,
    ALeg,
    Command,
    InDialogRequest,
    SipAck,
    SipCancel,
    SipResponse,
    SipTimeout,
)
from actors.calls.registry import ShardInfo, advertise, withdraw
from actors.kernel import Actor, ActorRef, current_call_id
from actors.media import MediaTimeout, PortsExhausted
from bus import Binding, Delivery, Message
from bus.api.call import call_event
from protocols.sip import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionLayer,
    TransactionTimeout,
    TransportError,
    make_response,
    new_via,
    next_hop,
)
from protocols.sip.transport import TransactionRunner, UdpTransport
from supervisors.api import start_child
from supervisors.core import ChildSpec, SupervisorFlags
from supervisors.local import Supervisor, SupervisorError

__all__ = ["LegSupervisor", "ShardSipActor"]

log = logging.getLogger("mirliton.calls.shard")

# A remote conference member's relay sends the phone's RTP all the time: this long without
# a packet means the leg that asked for it is gone.
REMOTE_MEMBER_RTP_TIMEOUT = 30.0


class LegSupervisor(Supervisor):
    """simple_one_for_one over call legs: temporary children (a crashed leg is never
    restarted; its call ends, nothing else does)."""

    def __init__(self, ctx: ShardContext) -> None:
        super().__init__(
            [ChildSpec("leg", lambda leg: leg, restart="temporary", shutdown=2.0)],
            SupervisorFlags("simple_one_for_one", intensity=0, period=1.0),
            name="legs",
        )
        self.ctx = ctx

    def init(self) -> None:
        super().init()
        self.ctx.leg_supervisor = self.ref
        # Started after the SIP actor (and stopped before it, so legs can still say BYE):
        # from here the shard takes calls, so the edge may learn of it.
        ctx = self.ctx
        advertise(ctx.config.data_dir, ShardInfo(ctx.shard, os.getpid(), ctx.host, ctx.port,
                                                 ctx.control_queue, ctx.node))
        if ctx.end_leftovers is not None:
            ctx.end_leftovers()
            ctx.end_leftovers = None

    def terminate(self, reason: Any) -> None:
        withdraw(self.ctx.config.data_dir, self.ctx.shard, os.getpid())
        super().terminate(reason)
        self.ctx.leg_supervisor = None


class ShardSipActor(Actor):
    def __init__(self, ctx: ShardContext) -> None:
        self.ctx = ctx
        self.transport: UdpTransport | None = None
        self.consumer: Any = None

    def init(self) -> None:
        ctx = self.ctx
        cfg = ctx.config.calls
        port = cfg.base_port + ctx.shard if cfg.base_port else 0
        layer = TransactionLayer()
        layer.auto_trying = True
        self.runner = TransactionRunner(layer, self._on_event)
        self.transport = UdpTransport(cfg.listen_host, port, self.runner.on_message).start()
        self.runner.add_transport(self.transport)
        self.runner.start()
        ctx.runner = self.runner
        ctx.host, ctx.port = self.transport.local_address
        ctx.control_queue = f"calls.{ctx.node}.{ctx.shard}.{os.getpid()}"
        ctx.start_leg = self._start_leg
        self.consumer = ctx.bus.consume(
            [Binding("callctl", ctx.control_queue), Binding("callmgr", CHANNELS_ROUTING_KEY),
             Binding("registrar", "registration.success.#"),
             Binding("registrar", "registration.flush.#")],
            self._on_bus,
        )
        log.info("calls shard %d: SIP on udp %s:%d, control queue %s", ctx.shard, ctx.host,
                 ctx.port, ctx.control_queue)
        ctx.journal = DialogJournal(ctx.config.data_dir, ctx.shard)
        leftovers = ctx.journal.take_leftovers()
        # Run once the shard is advertised: the edge relays shards' requests only.
        ctx.end_leftovers = lambda: self.end_leftover_calls(leftovers)

    def end_leftover_calls(self, leftovers: list[dict[str, Any]]) -> None:
        """BYE to every dialog a killed predecessor left up, and its CHANNEL_DESTROY."""
        now = time.time()
        for entry in leftovers:
            leg, info = entry["leg"], entry.get("event") or {}
            current_call_id.set(leg["call_id"])
            try:
                dialog = restore_dialog(leg)
                bye = bye_request(dialog, new_via("UDP", self.ctx.host, self.ctx.port))
                destination, _ = next_hop(bye)
                self.runner.send_request(bye, destination, "UDP")
            except (ValueError, KeyError, OSError) as error:
                log.warning("cannot end leftover dialog: %s", error)
            created = float(info.get("created") or now)
            answered = float(info.get("answered") or now)
            destroy = {
                "Call-ID": leg["call_id"], "Call-Direction": info.get("direction", "inbound"),
                "Caller-ID-Name": info.get("caller_name", ""),
                "Caller-ID-Number": info.get("caller_number", ""),
                "Callee-ID-Name": info.get("callee_name", ""),
                "Callee-ID-Number": info.get("callee_number", ""),
                "From": info.get("from", ""), "To": info.get("to", ""),
                "Request": info.get("request", ""),
                "Custom-Channel-Vars": {**(info.get("ccvs") or {}),
                                        "Media-Server": self.ctx.media_server},
                "Timestamp": int(now) + GREGORIAN_OFFSET,
                "Hangup-Cause": "NORMAL_TEMPORARY_FAILURE", "Hangup-Code": "sip:503",
                "Disposition": "ANSWER",
                "Duration-Seconds": max(0, round(now - created)),
                "Billing-Seconds": max(0, round(now - answered)),
                "Ringing-Seconds": max(0, round(answered - created)),
                "User-Agent": info.get("user_agent", ""),
            }
            if info.get("other_leg"):
                destroy["Other-Leg-Call-ID"] = info["other_leg"]
            account = (info.get("ccvs") or {}).get("Account-ID")
            if account:
                destroy["Account-ID"] = account
            log.warning("ending a call left up by a killed shard")
            self.ctx.publish(call_event["CHANNEL_DESTROY"].build(destroy), confirm=True,
                             timeout=5.0)
        current_call_id.set(None)

    def terminate(self, reason: Any) -> None:
        if self.ctx.journal is not None:
            self.ctx.journal.close()
            self.ctx.journal = None
        if self.consumer is not None:
            try:
                self.consumer.cancel()
            except Exception:  # noqa: BLE001 - the bus may be closing already
                pass
        self.runner.stop()
        if self.transport is not None:
            self.transport.close()
        self.ctx.runner = None

    def handle_cast(self, msg: Any) -> None:
        log.debug("shard SIP actor: ignoring %r", msg)

    # -- legs ----------------------------------------------------------------------------------

    def _start_leg(self, leg: Actor) -> ActorRef | None:
        sup = self.ctx.leg_supervisor
        if sup is None:
            return None
        try:
            ref: ActorRef = start_child(sup, (leg,))
            return ref
        except SupervisorError as error:
            log.error("cannot start a call leg: %s", error)
            return None

    def _new_call(self, event: RequestReceived) -> None:
        current_call_id.set(event.request.call_id)
        if self._start_leg(ALeg(self.ctx, event)) is None:
            self.ctx.respond(event.transaction, make_response(event.request, 503))

    # -- SIP events ----------------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        legs = self.ctx.legs
        if isinstance(event, RequestReceived):
            request = event.request
            leg = legs.get(request.call_id)
            if request.to.tag is None and request.method == "INVITE":
                if leg is None:
                    gevent.spawn(self._new_call, event)
                else:
                    self.ctx.respond(event.transaction, make_response(request, 482))
            elif leg is not None:
                leg.send(InDialogRequest(event))
            else:
                self.ctx.respond(event.transaction, make_response(request, 481))
        elif isinstance(event, ResponseReceived):
            ref = event.transaction.context
            if isinstance(ref, ActorRef):
                ref.send(SipResponse(event.response, event.transaction))
        elif isinstance(event, AckReceived):
            leg = legs.get(event.request.call_id)
            if leg is not None:
                leg.send(SipAck(event))
        elif isinstance(event, CancelReceived):
            leg = legs.get(event.request.call_id)
            if leg is not None:
                leg.send(SipCancel(event))
            elif event.invite_transaction is not None and not event.invite_transaction.terminated:
                invite = event.invite_transaction.request
                self.ctx.respond(event.invite_transaction, make_response(invite, 487))
        elif isinstance(event, StrayResponse):
            leg = legs.get(event.response.call_id)
            if leg is not None and event.response.status < 300:
                leg.send(SipResponse(event.response, None))  # type: ignore[arg-type]
        elif isinstance(event, TransactionTimeout | TransportError):
            ref = getattr(event.transaction, "context", None)
            if isinstance(ref, ActorRef):
                ref.send(SipTimeout(event.transaction, type(event).__name__))

    # -- bus -----------------------------------------------------------------------------------

    def _on_bus(self, msg: Message, delivery: Delivery) -> None:
        if msg.get("Event-Category") == "conference":
            self._on_conference(msg)
            return
        if msg.get("Event-Name") in ("reg_success", "reg_flush"):
            self.ctx.contacts.forget(str(msg.get("Realm") or ""), msg.get("Username"))
            return
        if msg.get("Event-Name") == "channels_req":
            account = msg.get("Account-ID")
            rows = [dict(row) for row in self.ctx.channels.values()
                    if not account or row.get("account_id") == account]
            try:
                self.ctx.bus.reply(msg, channels_resp.build(channels=rows))
            except Exception as error:  # noqa: BLE001 - a listing must not kill the shard
                log.warning("cannot answer channels_req: %s", error)
            return
        call_id = msg.get("Call-ID")
        leg = self.ctx.legs.get(str(call_id)) if call_id else None
        if leg is None:
            current_call_id.set(str(call_id) if call_id else None)
            log.info("command %s for unknown call %s dropped", msg.get("Application-Name"), call_id)
            return
        leg.send(Command(dict(msg)))

    # -- conferences other shards' legs join through this one ---------------------------------

    def _on_conference(self, msg: Message) -> None:
        ctx = self.ctx
        member = str(msg.get("Member-ID") or "")
        current_call_id.set(member or None)
        if msg.get("Event-Name") == "member_leave":
            stream = ctx.remote_members.pop(member, None)
            if stream is not None:
                stream.close()
                log.info("remote member left conference %s", msg.get("Conference-ID"))
            return
        if msg.get("Event-Name") != "member_req" or ctx.media is None:
            return
        old = ctx.remote_members.pop(member, None)
        if old is not None:
            old.close()

        def on_event(event: Any) -> None:
            # The asking shard went away without saying so (killed): its relay stopped.
            held = ctx.remote_members.get(member)
            if isinstance(event, MediaTimeout) and held is not None and held.id == event.stream_id:
                del ctx.remote_members[member]
                held.close()
                log.info("remote conference member %s timed out", member)

        try:
            stream = ctx.media.open_stream(owner=on_event, latch=False,
                                           rtp_timeout=REMOTE_MEMBER_RTP_TIMEOUT)
        except PortsExhausted as error:
            log.error("no RTP port for a remote conference member: %s", error)
            return
        stream.set_remote(str(msg["Media-Host"]), int(msg["Media-Port"]), codec="PCMU",
                          payload_type=0, telephone_event_pt=101)
        conference = ctx.media.conference(str(msg["Conference-ID"]))
        conference.join(stream)
        conference.set_flags(stream, mute=bool(msg.get("Mute")), deaf=bool(msg.get("Deaf")))
        ctx.remote_members[member] = stream
        log.info("remote member joined conference %s", msg.get("Conference-ID"))
        try:
            ctx.bus.reply(msg, conference_member_resp.build({
                "Media-Host": stream.local_address[0], "Media-Port": stream.local_port}))
        except Exception as error:  # noqa: BLE001 - the asking leg gives up and hangs up
            log.warning("cannot answer a conference member request: %s", error)
            ctx.remote_members.pop(member, None)
            stream.close()
