"""A calls shard's SIP face and bus face.

:class:`ShardSipActor` owns the shard's internal SIP listener (UDP on ``calls.listen_host``,
an ephemeral port unless ``calls.base_port`` is set, then ``base_port + shard``), its
transaction layer, and routes what arrives to the legs: a new INVITE starts an
:class:`~actors.calls.legs.ALeg` under the leg supervisor; requests inside a dialog, ACKs and
CANCELs go to the leg whose Call-ID they carry; responses to the leg that sent the request
(``transaction.context``). It also consumes the shard's Control-Queue on ``callctl`` (one
queue per shard, commands dispatched to legs by Call-ID) and answers ``channels_req``.

Once its listener is open it advertises the shard (:mod:`actors.calls.registry`) so the edge
can send calls here.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import gevent

from actors.calls.api import CHANNELS_ROUTING_KEY, channels_resp
from actors.calls.context import ShardContext
from actors.calls.legs import (
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
from bus import Binding, Delivery, Message
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
)
from protocols.sip.transport import TransactionRunner, UdpTransport
from supervisors.api import start_child
from supervisors.core import ChildSpec, SupervisorFlags
from supervisors.local import Supervisor, SupervisorError

__all__ = ["LegSupervisor", "ShardSipActor"]

log = logging.getLogger("mirliton.calls.shard")


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
            [Binding("callctl", ctx.control_queue), Binding("callmgr", CHANNELS_ROUTING_KEY)],
            self._on_bus,
        )
        advertise(ctx.config.data_dir, ShardInfo(ctx.shard, os.getpid(), ctx.host, ctx.port,
                                                 ctx.control_queue, ctx.node))
        log.info("calls shard %d: SIP on udp %s:%d, control queue %s", ctx.shard, ctx.host,
                 ctx.port, ctx.control_queue)

    def terminate(self, reason: Any) -> None:
        withdraw(self.ctx.config.data_dir, self.ctx.shard, os.getpid())
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
            log.info("command %s for unknown call %s dropped", msg.get("Application-Name"), call_id)
            return
        leg.send(Command(dict(msg)))
