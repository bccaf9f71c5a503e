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
waits for the next command.

Media: a call that only bridges passes SDP through (media flows between the phones). A call
that needs media here is *anchored*: ``answer`` (and any media command on a ringing call) opens
an RTP stream in the shard's engine and answers with its port; then ``play``/``tts``/
``tones``, ``play_and_collect_digits``/``collect_digits``, ``record``/``record_call``
(stored into the store before RECORD_STOP), ``send_dtmf`` and ``conference`` run on it, one
at a time in the command FIFO, each completing with CHANNEL_EXECUTE_COMPLETE; key presses are
DTMF events. A bridge from an anchored leg (or one asked for ``Media: process``, or with a
``record_call`` pending) anchors its B-legs too and relays between the two streams, playing
ringback meanwhile; re-INVITEs to an anchored leg are answered by the leg itself.

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
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.calls.api import conference_member_leave, conference_member_req
from actors.calls.causes import cause_for_status, status_for_cause
from actors.calls.context import ShardContext
from actors.calls.headers import ORIG_IP, ORIG_PORT, read_ccvs, strip_internal_headers
from actors.calls.media import MIN_STORED_SECONDS, MediaNotFound, store_recording
from actors.calls.metrics import CALL_ATTEMPTS, CALL_SETUP_SECONDS, CALLS_ACTIVE, ROUTE_REQ_SECONDS
from actors.calls.registry import pick_shard, read_shards
from actors.kernel import Actor, ActorRef, current_call_id
from actors.media import (
    DigitsCollected,
    DtmfReceived,
    MediaStream,
    MediaTimeout,
    PlaybackFinished,
    PortsExhausted,
    RecordingFinished,
    RecordingStarted,
    RemoteLatched,
)
from bus import BusError, RequestTimeout
from bus.api.call import call_event
from bus.api.registration import reg_query
from bus.api.route import route_req, route_win
from protocols.rtp.tones import RINGBACK, ToneGenerator, ToneSpec, ToneStep
from protocols.sdp import Answer, SdpParseError, SessionDescription
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
class _ParkTimeout:
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
    stream: MediaStream | None = None  # the B-leg's anchored media, to bridge with the A-leg's


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
_recording_ids = itertools.count(1)
_MEDIA_EVENTS = (DtmfReceived, PlaybackFinished, DigitsCollected, RecordingStarted,
                 RecordingFinished, RemoteLatched, MediaTimeout)
_ALL_DIGITS = "0123456789*#ABCD"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(slots=True)
class _Recording:
    """A recording running on the leg's stream, for its RECORD_STOP."""

    application: str  # record | record_call
    command: dict[str, Any]
    op_id: int
    media_name: str


@dataclass(slots=True)
class _Collect:
    """A play_and_collect_digits in progress."""

    command: dict[str, Any]
    prompt: list[Any]
    failed: list[Any]
    tries_left: int
    op_id: int = 0
    phase: str = "play"


def _terminators(msg: dict[str, Any], default: str = "") -> str:
    value = msg.get("Terminators")
    if value is None:
        return default
    return "".join(str(t) for t in value if str(t) in _ALL_DIGITS)


def _tone_pcm(spec: ToneSpec) -> Any:
    """A finite rendering of a tone (one cadence when it repeats forever), to play it in a
    sequence with prompts."""
    finite = spec if spec.repeat else ToneSpec(spec.steps, repeat=1, level=spec.level)
    generator = ToneGenerator(finite)
    frames: list[Any] = []
    while len(frames) < 3000:  # a minute at most
        frame = generator.next_frame()
        if frame is None:
            break
        frames.append(frame)
    return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)


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
        # Anchored media: the leg's RTP stream in the shard's engine (None: media flows
        # between the phones, SDP passed through).
        self.stream: MediaStream | None = None
        self.recording: _Recording | None = None
        self.closing = False  # tearing media down: complete what ran, start nothing new

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
        # Media first: a recording the hangup ended is stored and its RECORD_STOP published
        # before the CHANNEL_DESTROY, so whoever waits for it (voicemail) still gets it.
        self.teardown_media()
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
        elif method in ("INVITE", "UPDATE") and self.stream is not None:
            self.reanswer(event.transaction, request)
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

    # -- anchored media (both legs) ------------------------------------------------------------

    def reanswer(self, transaction: ServerTransaction, request: Request) -> None:
        """A re-INVITE or UPDATE to an anchored leg is answered here, with the same port: the
        phone moves or holds its side of the stream, the other party is not involved."""
        assert self.stream is not None
        if not request.body:
            # No offer (a session refresh): offer what we have; the ACK may answer it.
            response = make_response(request, 200)
            response.headers.add("Contact", self.ctx.contact)
            response.headers.add("Content-Type", "application/sdp")
            response.body = self.stream.offer_sdp().to_bytes()
            self.ctx.respond(transaction, response)
            return
        try:
            answer = self.stream.answer_sdp(request.body)
        except SdpParseError:
            self.ctx.respond(transaction, make_response(request, 400, "Bad SDP"))
            return
        if not isinstance(answer, Answer):
            self.ctx.respond(transaction, make_response(request, answer.status))
            return
        response = make_response(request, 200)
        response.headers.add("Contact", self.ctx.contact)
        response.headers.add("Content-Type", "application/sdp")
        response.body = answer.sdp.to_bytes()
        self.ctx.respond(transaction, response)
        held = answer.streams[0].remote_hold
        self.event("CHANNEL_HOLD" if held else "CHANNEL_UNHOLD")

    def open_stream(self) -> MediaStream | None:
        engine = self.ctx.media
        if engine is None:
            return None
        try:
            return engine.open_stream(owner=self.ref, rtp_timeout=None)
        except PortsExhausted as error:
            log.error("no RTP port for this call: %s", error)
            return None

    def on_media_event(self, event: Any) -> None:
        if self.stream is None or event.stream_id != self.stream.id:
            self.on_other_stream_event(event)
            return
        if isinstance(event, DtmfReceived):
            self.event("DTMF", **{"DTMF-Digit": event.digit, "DTMF-Duration": event.duration_ms})
        elif isinstance(event, RecordingStarted):
            recording = self.recording
            if recording is not None and recording.op_id == event.op_id:
                self.event("RECORD_START", **{"Media-Name": recording.media_name,
                                              "Application-Name": recording.application})
        elif isinstance(event, RecordingFinished):
            self.finish_recording(event)
        elif isinstance(event, PlaybackFinished | DigitsCollected):
            self.on_media_done(event)
        elif isinstance(event, MediaTimeout):
            log.info("no RTP for %.0fs", event.seconds)

    def on_other_stream_event(self, event: Any) -> None:
        """Events of a stream other than the leg's own (a conference relay)."""

    def on_media_done(self, event: PlaybackFinished | DigitsCollected) -> None:
        """A playback or a collect ended (commands run on A-legs only)."""

    def start_recording(self, application: str, msg: dict[str, Any], *,
                        both_directions: bool = False) -> bool:
        stream = self.stream
        recordings = self.ctx.recordings
        if stream is None or recordings is None:
            return False
        media_name = str(msg.get("Media-Name") or f"{application}-{next(_recording_ids)}.wav")
        safe_call = _UNSAFE.sub("_", self.call_id)[:80]
        path = recordings / f"{safe_call}-{next(_recording_ids)}-{_UNSAFE.sub('_', media_name)}"
        silence = msg.get("Silence-Hits")
        op = stream.record(
            path,
            time_limit=float(msg.get("Time-Limit") or 3600),
            terminators=_terminators(msg, "#") if application == "record" else "",
            silence_threshold=int(msg.get("Silence-Threshold") or 200),
            silence_seconds=float(silence) if silence else None,
            both_directions=both_directions,
        )
        self.recording = _Recording(application, msg, op, media_name)
        return True

    def finish_recording(self, event: RecordingFinished) -> None:
        recording = self.recording
        if recording is None or recording.op_id != event.op_id:
            return
        self.recording = None
        destination = recording.command.get("Media-Transfer-Destination")
        stored = False
        path = event.path
        if not event.discarded and path.exists():
            if destination and event.seconds >= MIN_STORED_SECONDS:
                try:
                    stored = store_recording(self.ctx.store, str(destination),
                                             recording.media_name, path)
                except ValueError as error:
                    log.warning("recording not stored: %s", error)
            if path.exists():
                path.unlink(missing_ok=True)
        fields: dict[str, Any] = {
            "Media-Name": recording.media_name,
            "Application-Name": recording.application,
            "Length": int(round(event.seconds * 1000)),
            "Silence-Terminated": event.reason == "silence",
            "Reason": event.reason,
            "Media-Stored": stored,
        }
        if event.digit:
            fields["Terminator"] = event.digit
        if destination:
            fields["Media-Transfer-Destination"] = str(destination)
        log.info("recording %s ended (%s) after %.1fs%s", recording.media_name, event.reason,
                 event.seconds, ", stored" if stored else "")
        self.event("RECORD_STOP", **fields)
        self.on_record_done(recording, event)

    def on_record_done(self, recording: _Recording, event: RecordingFinished) -> None:
        """The A-leg completes its ``record`` command here."""

    def teardown_media(self) -> None:
        stream = self.stream
        if stream is None:
            return
        self.stream = None
        self.closing = True
        for event in stream.close_now():
            if isinstance(event, RecordingFinished):
                self.finish_recording(event)
        self.teardown_extra_media()

    def teardown_extra_media(self) -> None:
        """Streams beyond the leg's own (the A-leg's conference relay)."""


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
    anchored: bool = False
    timer: Any = None  # the bridge's own timeout, cancelled once answered  # B-legs get streams of their own, bridged in the shard's engine


class ALeg(CallLeg):
    """The caller's half: route_req, commands, and the bridge to B-legs."""

    direction = "inbound"

    def __init__(self, ctx: ShardContext, event: RequestReceived) -> None:
        super().__init__(ctx)
        # The caller's INVITE and its transaction, until the 200 OK is ACKed (then dropped:
        # a held call keeps only its dialog); the offer stays for B-legs and anchoring.
        self.invite: Request | None = event.request
        self.invite_tx: ServerTransaction | None = event.transaction
        self.offer = event.request.body
        self.offer_type = event.request.content_type or "application/sdp"
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
        self.commanded = False  # a command came (the app that won the route is alive)
        self.idle_since = time.monotonic()  # when the last command ended with none queued
        self.park_timer: Any = None
        self.outbound_caller: tuple[str, str] | None = None
        self.reoffer: ClientTransaction | None = None
        self.bridge_ringing = False
        # Anchored media: the SDP the caller gets (our port), the offer a bodiless INVITE
        # got (its answer comes in the ACK), what plays, collects or records.
        self.local_sdp: bytes | None = None
        self.late_offer: SessionDescription | None = None
        self.media_op: tuple[str, int] | None = None
        self.collect: _Collect | None = None
        self.pending_record_call: dict[str, Any] | None = None
        self.conference_id: str | None = None
        self.relay: MediaStream | None = None  # to a conference mixed by another shard
        self.relay_queue: str | None = None

    def init(self) -> None:
        request = self.invite
        assert request is not None
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
                # Let the 200 OK and the INVITE go: held calls are many.
                self.retransmission = None
                self.invite = self.invite_tx = None
            self.on_ack_answer(msg.event.request)
        elif isinstance(msg, _MEDIA_EVENTS):
            self.on_media_event(msg)
        elif isinstance(msg, SipCancel):
            self.on_cancel()
        elif isinstance(msg, _Retransmit2xx):
            self.retransmit_2xx()
        elif isinstance(msg, _ParkTimeout):
            self.on_park_timeout()
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
        assert request is not None
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
        self.arm_park_timer()
        if method == "bridge" and reply.get("Routes"):
            self.on_command({"Application-Name": "bridge", "Call-ID": self.call_id,
                             "Endpoints": reply["Routes"]})
        if reply.get("Pre-Park") == "ring_ready":
            self.send_provisional(180)

    # -- responses to the caller ---------------------------------------------------------------

    def _response(self, status: int, reason: str | None = None, body: bytes = b"",
                  content_type: str | None = None) -> Response:
        assert self.invite is not None  # answers to the INVITE all come before its ACK
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
        if self.final_sent or self.ended or self.invite_tx is None:
            return
        self.ctx.respond(self.invite_tx, self._response(status, None, body, content_type))
        self.progress_sent = max(self.progress_sent, status)

    def reject(self, status: int, reason: str | None, cause: str) -> None:
        if not self.final_sent and self.invite_tx is not None:
            self.final_sent = True
            self.ctx.respond(self.invite_tx, self._response(status, reason))
        self.finish(cause, f"sip:{status}")

    def answer(self, body: bytes, content_type: str | None) -> bool:
        if self.final_sent or self.invite is None or self.invite_tx is None:
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
        # Journaled from the answer on (not only once bridged): a call in a prompt, a
        # voicemail or a conference is hung up and recorded by the shard's successor too.
        self.journal_up()
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
        if response is not None and self.invite_tx is not None:
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
        self.commanded = True
        if self.park_timer is not None:  # not idle: armed again when the FIFO runs dry
            self.cancel_timer(self.park_timer)
            self.park_timer = None
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
        while self.current is None and self.commands and not self.ended and not self.closing:
            self.execute(self.commands.popleft())
        if self.current is None and not self.commands and not self.ended:
            self.idle_since = time.monotonic()
            self.arm_park_timer()

    def arm_park_timer(self) -> None:
        if self.park_timer is not None:
            self.cancel_timer(self.park_timer)
        self.park_timer = self.send_after(self.ctx.config.calls.park_timeout, _ParkTimeout())

    def on_park_timeout(self) -> None:
        """Hang up a call its app has left: no command since route_win, or, once answered,
        nothing running, nothing queued and nothing coming for ``calls.park_timeout`` while
        the call is neither bridged nor in a conference (the callflow process died mid-menu;
        its successor does not know the call)."""
        self.park_timer = None
        if self.ended or self.current is not None or self.commands:
            return
        limit = self.ctx.config.calls.park_timeout
        if not self.commanded:
            log.warning("no command within %.0fs of route_win: hanging up", limit)
        elif (self.peer is not None or self.bridge is not None or self.conference_id is not None
              or time.monotonic() - self.idle_since < limit - 0.05):
            return
        else:
            log.warning("no command for %.0fs and nothing running: hanging up", limit)
        self.hangup("RECOVERY_ON_TIMER_EXPIRE")

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
            self.answer_anchored()
        return True

    # -- anchored media ------------------------------------------------------------------------

    def anchor(self) -> str | None:
        """Open the leg's stream and prepare the SDP the caller gets: an answer to its offer
        with our port (or, for an INVITE without SDP, our offer). None, or why not."""
        if self.stream is not None:
            return None
        stream = self.open_stream()
        if stream is None:
            return "no_media"
        offer = self.offer
        if not offer:
            sdp = stream.offer_sdp()
            self.late_offer = sdp
            self.local_sdp = sdp.to_bytes()
        else:
            try:
                answer = stream.answer_sdp(offer)
            except SdpParseError:
                answer = None
            if not isinstance(answer, Answer):
                stream.close()
                return "incompatible"
            self.local_sdp = answer.sdp.to_bytes()
        self.stream = stream
        return None

    def answer_anchored(self) -> bool:
        """Answer with the shard's media (prompts, recordings, conferences need it); without a
        media engine, answer with media inactive until a bridge brings the callee's."""
        if self.answered_at is not None:
            return self.stream is not None
        if self.ctx.media is None:
            self.answer(_inactive_answer(self.offer, self.ctx.host), "application/sdp")
            return False
        problem = self.anchor()
        if problem == "incompatible":
            log.info("the caller offered no codec we take: 488")
            self.reject(488, None, "INCOMPATIBLE_DESTINATION")
            return False
        if problem is not None:
            self.reject(503, None, "NORMAL_TEMPORARY_FAILURE")
            return False
        return self.answer(self.local_sdp or b"", "application/sdp")

    def on_ack_answer(self, ack: Request) -> None:
        """The caller's answer to the offer our 200 OK carried (its INVITE had no SDP)."""
        if self.late_offer is None or self.stream is None or not ack.body:
            return
        offer, self.late_offer = self.late_offer, None
        try:
            failure = self.stream.accept_answer_sdp(offer, ack.body)
        except SdpParseError:
            failure = True  # type: ignore[assignment]
        if failure is not None:
            log.warning("the caller's ACK answered our offer with nothing usable: hanging up")
            self.hangup("INCOMPATIBLE_DESTINATION")

    def media_stream(self, application: str) -> MediaStream | None:
        """The leg's stream for a media command, answering first when still ringing (as
        FreeSWITCH's apps that need media do); the command fails when the call is up with
        its media elsewhere (a bridge with media between the phones)."""
        if self.stream is None and self.answered_at is None and not self.final_sent:
            self.answer_anchored()
        if self.stream is None:
            if not self.ended:
                self.complete(application, "FAILURE", Reason="no_media")
            return None
        return self.stream

    def done(self, application: str, response: str, **fields: Any) -> None:
        """An asynchronous command ended: report it and run the next one."""
        self.current = None
        if self.ended:
            return
        self.complete(application, response, **fields)
        if not self.closing:
            self.advance()

    def resolve_media(self, names: Any, language: Any) -> list[Any]:
        library = self.ctx.library
        if library is None:
            raise MediaNotFound("no media library")
        items = [names] if isinstance(names, str) else list(names or [])
        if not items:
            raise MediaNotFound("no media named")
        return [library.resolve(str(name), str(language) if language else None)
                for name in items]

    @staticmethod
    def pcm_of(parts: list[Any]) -> Any:
        pieces = [_tone_pcm(p) if isinstance(p, ToneSpec) else p for p in parts]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)

    def start_output(self, application: str, parts: list[Any], msg: dict[str, Any]) -> bool:
        stream = self.stream
        assert stream is not None
        terminators = _terminators(msg)
        if len(parts) == 1 and isinstance(parts[0], ToneSpec):
            op = stream.tone(parts[0], terminators=terminators)
        else:
            loops = 0 if msg.get("Endless-Playback") else max(1, int(msg.get("Loop-Count") or 1))
            op = stream.play(self.pcm_of(parts), loops=loops, terminators=terminators)
        self.media_op = (application, op)
        self.current = msg
        return False

    def cmd_play(self, msg: dict[str, Any]) -> bool:
        if self.media_stream("play") is None:
            return False
        try:
            parts = self.resolve_media(msg.get("Media-Name"), msg.get("Language"))
        except MediaNotFound as error:
            log.warning("play: %s", error)
            self.complete("play", "FILE NOT PLAYED", Reason="not_found")
            return False
        return self.start_output("play", parts, msg)

    def cmd_tts(self, msg: dict[str, Any]) -> bool:
        if self.media_stream("tts") is None:
            return False
        library = self.ctx.library
        try:
            if library is None:
                raise MediaNotFound("no media library")
            pcm = library.tts(str(msg.get("Text") or ""), msg.get("Language"))
        except MediaNotFound as error:
            log.warning("tts: %s", error)
            self.complete("tts", "FILE NOT PLAYED", Reason="not_found")
            return False
        return self.start_output("tts", [pcm], msg)

    def cmd_tones(self, msg: dict[str, Any]) -> bool:
        if self.media_stream("tones") is None:
            return False
        steps: list[ToneStep] = []
        repeat = 1
        try:
            for tone in msg.get("Tones") or []:
                frequencies = tuple(float(f) for f in tone.get("Frequencies") or [])
                steps.append(ToneStep(frequencies, int(tone.get("Duration-ON") or 0),
                                      int(tone.get("Duration-OFF") or 0)))
                repeat = max(1, int(tone.get("Repeat") or 1))
        except (TypeError, ValueError, AttributeError):
            steps = []
        if not steps or all(step.on_ms + step.off_ms <= 0 for step in steps):
            self.complete("tones", "FAILURE", Reason="bad_tones")
            return False
        return self.start_output("tones", [ToneSpec(tuple(steps), repeat=repeat)], msg)

    def cmd_send_dtmf(self, msg: dict[str, Any]) -> bool:
        stream = self.media_stream("send_dtmf")
        if stream is None:
            return False
        try:
            op = stream.send_dtmf(str(msg.get("DTMFs") or ""),
                                  duration_ms=int(msg.get("Duration") or 100))
        except ValueError as error:
            self.complete("send_dtmf", "FAILURE", Reason=str(error))
            return False
        self.media_op = ("send_dtmf", op)
        self.current = msg
        return False

    def cmd_flush_dtmf(self, msg: dict[str, Any]) -> bool:
        if self.stream is not None:
            self.stream.flush_digits()
        return True

    def cmd_collect_digits(self, msg: dict[str, Any]) -> bool:
        stream = self.media_stream("collect_digits")
        if stream is None:
            return False
        first = max(0.1, int(msg.get("Timeout") or 5000) / 1000)
        between = max(0.1, int(msg.get("Interdigit-Timeout") or 3000) / 1000)
        op = stream.collect_dtmf(max_digits=max(1, int(msg.get("Maximum-Digits") or 1)),
                                 terminators=_terminators(msg, "#"), timeout=first,
                                 inter_digit_timeout=between)
        self.media_op = ("collect_digits", op)
        self.current = msg
        return False

    def cmd_play_and_collect_digits(self, msg: dict[str, Any]) -> bool:
        application = "play_and_collect_digits"
        if self.media_stream(application) is None:
            return False
        try:
            prompt = self.resolve_media(msg.get("Media-Name"), msg.get("Language"))
            failed = (self.resolve_media(msg.get("Failed-Media-Name"), msg.get("Language"))
                      if msg.get("Failed-Media-Name") else [])
        except MediaNotFound as error:
            log.warning("%s: %s", application, error)
            self.complete(application, "", Reason="not_found")
            return False
        self.collect = _Collect(msg, prompt, failed, max(1, int(msg.get("Media-Tries") or 1)))
        self.current = msg
        self.collect_prompt(self.collect, prompt)
        return False

    def collect_prompt(self, collect: _Collect, parts: list[Any]) -> None:
        assert self.stream is not None
        collect.phase = "play"
        # Any key stops the prompt; the key stays buffered as the first digit collected.
        collect.op_id = self.stream.play(self.pcm_of(parts), terminators=_ALL_DIGITS)

    def collect_digits_now(self, collect: _Collect) -> None:
        assert self.stream is not None
        msg = collect.command
        timeout = max(0.1, int(msg.get("Timeout") or 5000) / 1000)
        collect.phase = "collect"
        collect.op_id = self.stream.collect_dtmf(
            max_digits=max(1, int(msg.get("Maximum-Digits") or 1)),
            terminators=_terminators(msg, "#"), timeout=timeout, inter_digit_timeout=timeout)

    def on_collected(self, collect: _Collect, event: DigitsCollected) -> None:
        msg = collect.command
        digits = event.digits
        regex = str(msg.get("Digits-Regex") or "")
        try:
            matches = not regex or re.fullmatch(regex, digits) is not None
        except re.error:
            matches = True
        if digits and len(digits) >= int(msg.get("Minimum-Digits") or 1) and matches:
            self.collect = None
            self.done("play_and_collect_digits", digits)
            return
        collect.tries_left -= 1
        if collect.tries_left <= 0 or self.stream is None:
            self.collect = None
            self.done("play_and_collect_digits", "", Reason=event.reason)
            return
        self.collect_prompt(collect, [*collect.failed, *collect.prompt])

    def on_media_done(self, event: PlaybackFinished | DigitsCollected) -> None:
        collect = self.collect
        if collect is not None and event.op_id == collect.op_id:
            if isinstance(event, PlaybackFinished) and collect.phase == "play":
                if event.reason in ("done", "terminator"):
                    self.collect_digits_now(collect)
            elif isinstance(event, DigitsCollected) and collect.phase == "collect":
                self.on_collected(collect, event)
            return
        if self.media_op is None or self.media_op[1] != event.op_id:
            return
        application = self.media_op[0]
        self.media_op = None
        if isinstance(event, DigitsCollected):
            fields: dict[str, Any] = {"Reason": event.reason}
            if event.terminator:
                fields["Terminator"] = event.terminator
            self.done(application, event.digits, **fields)
            return
        if event.reason == "done":
            self.done(application, "FILE PLAYED")
        elif event.reason == "terminator" and event.digit:
            self.done(application, event.digit, Terminator=event.digit)
        else:
            self.done(application, "FILE NOT PLAYED", Reason=event.reason)

    def cmd_record(self, msg: dict[str, Any]) -> bool:
        if self.media_stream("record") is None:
            return False
        if self.recording is not None:
            self.complete("record", "FAILURE", Reason="already_recording")
            return False
        self.start_recording("record", msg)
        self.current = msg
        return False

    def on_record_done(self, recording: _Recording, event: RecordingFinished) -> None:
        if recording.application == "record" and self.current is recording.command:
            self.done("record", event.reason, **({"Terminator": event.digit}
                                                  if event.digit else {}))

    def cmd_record_call(self, msg: dict[str, Any]) -> bool:
        if msg.get("Record-Action") == "stop":
            self.pending_record_call = None
            if (self.stream is not None and self.recording is not None
                    and self.recording.application == "record_call"):
                self.stream.stop_record()
            return True
        if self.recording is not None:
            self.complete("record_call", "FAILURE", Reason="already_recording")
            return False
        if self.stream is not None:
            self.start_recording("record_call", msg, both_directions=True)
        elif self.answered_at is None:
            # Recorded once the call has media here: the bridge to come is anchored for it.
            self.pending_record_call = msg
        else:
            self.complete("record_call", "FAILURE", Reason="no_media")
            return False
        return True

    def cmd_conference(self, msg: dict[str, Any]) -> bool:
        stream = self.media_stream("conference")
        if stream is None or self.ctx.media is None:
            return False
        if self.peer is not None or self.conference_id is not None:
            self.complete("conference", "FAILURE", Reason="busy")
            return False
        conference_id = str(msg["Conference-ID"])
        mute, deaf = bool(msg.get("Mute")), bool(msg.get("Deaf"))
        owner = pick_shard(read_shards(self.ctx.config.data_dir), f"conference:{conference_id}")
        if owner is None or (owner.shard == self.ctx.shard and owner.pid == os.getpid()):
            conference = self.ctx.media.conference(conference_id)
            conference.join(stream)
            conference.set_flags(stream, mute=mute, deaf=deaf)
        else:
            if not self.join_remote_conference(owner.control_queue, conference_id, msg):
                self.complete("conference", "FAILURE", Reason="conference_unreachable")
                return False
        self.conference_id = conference_id
        log.info("joined conference %s", conference_id)
        self.complete("conference", "JOINED", **{"Conference-ID": conference_id})
        return False

    def join_remote_conference(self, queue: str, conference_id: str,
                               msg: dict[str, Any]) -> bool:
        """Reach a conference another shard mixes: a member stream there, a relay stream
        here sending to it, bridged with the caller's stream."""
        assert self.stream is not None and self.ctx.media is not None
        relay = self.open_stream()
        if relay is None:
            return False
        request = conference_member_req.build({
            "Conference-ID": conference_id, "Member-ID": self.call_id, "Call-ID": self.call_id,
            "Media-Host": relay.local_address[0], "Media-Port": relay.local_port,
            "Moderator": bool(msg.get("Moderator")), "Mute": bool(msg.get("Mute")),
            "Deaf": bool(msg.get("Deaf")),
        })
        try:
            reply = self.ctx.bus.request(request, routing_key=queue, timeout=3.0)
        except BusError as error:
            log.warning("conference %s: its shard did not answer: %s", conference_id, error)
            relay.close()
            return False
        relay.set_remote(str(reply["Media-Host"]), int(reply["Media-Port"]), codec="PCMU",
                         payload_type=0, telephone_event_pt=101)
        self.ctx.media.bridge(self.stream, relay)
        self.relay, self.relay_queue = relay, queue
        return True

    def teardown_extra_media(self) -> None:
        relay, self.relay = self.relay, None
        if relay is None:
            return
        relay.close()
        if self.relay_queue and self.conference_id:
            self.ctx.publish(conference_member_leave.build({
                "Conference-ID": self.conference_id, "Member-ID": self.call_id,
            }), routing_key=self.relay_queue)

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
        anchored = self.stream is not None or (
            self.answered_at is None and self.ctx.media is not None
            and (self.pending_record_call is not None or msg.get("Media") == "process"))
        if anchored and self.stream is None and self.anchor() is not None:
            log.warning("cannot anchor the bridge's media: passing it through")
            anchored = False
        self.bridge = _BridgeState(msg, generation, groups, anchored=anchored)
        self.current = msg
        if strategy == "simultaneous" and msg.get("Timeout"):
            self.bridge.timer = self.send_after(float(msg["Timeout"]), _BridgeTimeout(generation))
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
            leg = BLeg(self.ctx, self.ref, self, target, anchored=bridge.anchored)
            ref = self.ctx.start_leg(leg) if self.ctx.start_leg is not None else None
            if ref is None:
                bridge.failures.append((503, "NORMAL_TEMPORARY_FAILURE"))
                continue
            bridge.legs[ref] = leg.call_id
        if not bridge.legs:
            self.group_done()

    def on_b_progress(self, msg: BProgress) -> None:
        bridge = self.bridge
        if bridge is None or msg.leg not in bridge.legs:
            return
        if bridge.anchored:
            # The callee's early media stays with its B-leg: the caller hears our ringback.
            if self.answered_at is None and self.progress_sent < 180:
                if self.late_offer is None and self.local_sdp:
                    self.send_provisional(183, self.local_sdp, "application/sdp")
                    self.event("CHANNEL_PROGRESS_MEDIA", **{"Other-Leg-Call-ID": msg.call_id})
                else:
                    self.send_provisional(180)
                    self.event("CHANNEL_PROGRESS", **{"Other-Leg-Call-ID": msg.call_id})
            if (self.stream is not None and not self.stream.playing
                    and self.late_offer is None and not self.bridge_ringing):
                self.bridge_ringing = True
                self.stream.tone(RINGBACK)
            return
        if self.answered_at is not None:
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
        # Answered: the endpoints and the timer are done with (a held call keeps little).
        if bridge.timer is not None:
            self.cancel_timer(bridge.timer)
            bridge.timer = None
        bridge.groups = []
        bridge.command = self.current = {"Application-Name": "bridge"}
        for other in list(bridge.legs):
            if other != msg.leg:
                other.send(CancelLeg("LOSE_RACE"))
        if bridge.anchored and msg.stream is not None and self.stream is not None:
            if self.answered_at is None and not self.answer(self.local_sdp or b"",
                                                            "application/sdp"):
                msg.leg.send(CancelLeg("NORMAL_TEMPORARY_FAILURE"))
                return
            if self.bridge_ringing:
                self.bridge_ringing = False
                self.stream.stop_playback()
            assert self.ctx.media is not None
            self.ctx.media.bridge(self.stream, msg.stream)
            if self.pending_record_call is not None:
                pending, self.pending_record_call = self.pending_record_call, None
                self.start_recording("record_call", pending, both_directions=True)
        elif self.answered_at is None:
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
        if self.bridge_ringing and self.stream is not None:
            self.bridge_ringing = False
            self.stream.stop_playback()
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
        if self.final_sent or self.ended or self.invite_tx is None:
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
    is answered but no media flows until it is bridged (a shard without a media engine)."""
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

    def __init__(self, ctx: ShardContext, a_ref: ActorRef, a_leg: ALeg, target: BridgeTarget,
                 *, anchored: bool = False) -> None:
        super().__init__(ctx)
        self.anchored = anchored
        self.local_offer: SessionDescription | None = None
        self.a_ref = a_ref
        self.a_call_id = a_leg.call_id
        self.target = target
        self.offer = a_leg.offer
        self.offer_type = a_leg.offer_type
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
        self.no_answer_timer: Any = None
        # The INVITE transaction's key once answered (the INVITE itself is dropped then): a
        # retransmitted 200 OK still comes through that transaction and gets its ACK again.
        self.invite_key: tuple[str, ...] | None = None
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
            elif msg.transaction is self.invite_tx or (
                    self.invite_key is not None and msg.transaction.key == self.invite_key):
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
        elif isinstance(msg, _MEDIA_EVENTS):
            self.on_media_event(msg)
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
        if self.anchored:
            # Media anchored in the shard: the callee gets our port, not the caller's.
            stream = self.open_stream()
            if stream is None:
                self.fail(503, "NORMAL_TEMPORARY_FAILURE")
                return
            self.stream = stream
            self.local_offer = stream.offer_sdp()
            headers.add("Content-Type", "application/sdp")
            request.body = self.local_offer.to_bytes()
        elif self.offer:
            headers.add("Content-Type", self.offer_type)
            request.body = self.offer
        self.invite = request
        self.invite_tx = self.send_request(request)
        self.event("CHANNEL_CREATE")
        self.no_answer_timer = self.send_after(target.timeout, _NoAnswer())

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
        if self.dialog is not None:
            ack = self.dialog.ack_for(response)
            if ack is not None:
                self.send_ack(ack)  # a retransmitted 200 OK
            return
        assert self.invite is not None and self.invite_tx is not None
        try:
            self.dialog = Dialog.create_uac(self.invite, response)
        except DialogError as error:
            log.warning("unusable 2xx: %s", error)
            self.fail(502, "NETWORK_OUT_OF_ORDER")
            return
        self.send_ack(self.dialog.create_ack(self.invite, via=self.via()))
        if self.no_answer_timer is not None:
            self.cancel_timer(self.no_answer_timer)
            self.no_answer_timer = None
        self.invite_key = self.invite_tx.key
        self.invite = self.invite_tx = None
        if self.stream is not None and self.local_offer is not None:
            try:
                failure = self.stream.accept_answer_sdp(self.local_offer, response.body)
            except SdpParseError:
                failure = True  # type: ignore[assignment]
            if failure is not None:
                log.warning("the callee answered our offer with nothing usable")
                self.send_in_dialog("BYE")
                self.fail(488, "INCOMPATIBLE_DESTINATION")
                return
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
                                  name or self.callee_name, number or self.callee_number,
                                  self.stream))

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
