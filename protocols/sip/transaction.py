"""RFC 3261 section 17 transactions, sans-I/O.

Feed it parsed messages (:meth:`TransactionLayer.receive`) and the current time; read back
events (:meth:`TransactionLayer.next_event`) and messages to put on the wire
(:meth:`TransactionLayer.datagrams_to_send`); ask :meth:`TransactionLayer.get_timer` when to
call :meth:`TransactionLayer.handle_timer` next. Nothing here touches a socket or a clock.

State machines (RFC 3261 figures 5-8, with the RFC 6026 "Accepted" state for INVITE 2xx so
that 2xx retransmissions reach the TU on the client side and retransmitted INVITEs are
absorbed on the server side)::

    client INVITE:      Calling -> Proceeding -> Completed (D) -> Terminated
                              \\-> Accepted (M) -> Terminated
    client non-INVITE:  Trying -> Proceeding -> Completed (K) -> Terminated
    server INVITE:      Proceeding -> Completed (G, H) -> Confirmed (I) -> Terminated
                                  \\-> Accepted (L) -> Terminated
    server non-INVITE:  Trying -> Proceeding -> Completed (J) -> Terminated

Timers (RFC 3261 table 4; A, E, G are retransmissions and never run over reliable transports,
D, I, J, K are zero over reliable transports):

    A  INVITE request retransmit     initially T1, doubling
    B  INVITE transaction timeout    64*T1
    C  (RFC 3261 16.6, here for UACs too) no final response after a provisional: > 3 min,
       re-armed by each provisional; on expiry the layer CANCELs and Timer B ends it
    D  wait time for response retransmits   > 32 s for UDP, 0 for reliable
    E  non-INVITE request retransmit initially T1, doubling, capped at T2 (T2 in Proceeding)
    F  non-INVITE transaction timeout 64*T1
    G  INVITE response retransmit    initially T1, doubling, capped at T2
    H  wait time for ACK receipt     64*T1
    I  wait time for ACK retransmits T4 for UDP, 0 for reliable
    J  wait time for non-INVITE request retransmits  64*T1 for UDP, 0 for reliable
    K  wait time for response retransmits  T4 for UDP, 0 for reliable
    L  (RFC 6026) wait time for accepted INVITE request retransmits  64*T1
    M  (RFC 6026) wait time for retransmission of 2xx to INVITE      64*T1

With ``tu_guards`` (default) server transactions also run C (INVITE: 408 when the TU stays
silent that long after its last provisional) and F (non-INVITE: dropped after 64*T1 without a
final response), so a TU that never answers cannot leak transactions.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import os
import weakref
from collections import deque
from dataclasses import dataclass, field

from protocols.sip.errors import SipParseError
from protocols.sip.headers import Via
from protocols.sip.message import Message, Request, Response, generate_tag, make_response

__all__ = [
    "MAGIC_COOKIE",
    "RELIABLE_TRANSPORTS",
    "Address",
    "AckReceived",
    "CancelReceived",
    "ClientTransaction",
    "Event",
    "Outgoing",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "StrayResponse",
    "TimerConfig",
    "Transaction",
    "TransactionLayer",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportError",
    "build_cancel",
    "build_non_2xx_ack",
    "is_reliable",
    "key_with_method",
    "new_branch",
    "new_via",
    "stamp_via",
    "via_response_address",
]

# RFC 3261 8.1.1.7: branches of RFC 3261 implementations start with this cookie.
MAGIC_COOKIE = "z9hG4bK"
RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "WS", "WSS"})

Address = tuple[str, int]

# Fewer stale timer entries than this are never worth a heap rebuild.
_COMPACT_MIN_STALE = 64


def is_reliable(transport: str) -> bool:
    """``transport`` is a Via transport token ("UDP", "TCP") or a listener key that starts with
    one ("UDP:7000" when a node has several UDP listeners)."""
    return transport.partition(":")[0].upper() in RELIABLE_TRANSPORTS


def new_branch() -> str:
    """A fresh RFC 3261 branch: magic cookie plus 96 random bits (unique in space and time)."""
    return MAGIC_COOKIE + os.urandom(12).hex()


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 timer base values in seconds (table 4); tests shrink them, RFC defaults here."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    # Timer D must be at least 32 s on unreliable transports (17.1.1.2).
    timer_d_unreliable: float = 32.0
    # Longest wait for a final response once a provisional arrived (RFC 3261 16.6 Timer C,
    # "greater than 3 minutes"); then the layer CANCELs. None: wait for the TU forever.
    timer_c: float | None = 181.0

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H, J (unreliable), L and M."""
        return 64 * self.t1


class TransactionState(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to put on the wire. ``transaction`` is None for stateless sends (ACK for 2xx,
    stateless error responses); the transport adapter reports failures back with
    :meth:`TransactionLayer.transport_failed`."""

    data: bytes
    destination: Address
    transport: str
    message: Message
    transaction: Transaction | None = None


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU. ``transaction`` is the server transaction to answer through
    (:meth:`TransactionLayer.respond`)."""

    request: Request
    transaction: ServerTransaction
    source: Address
    transport: str


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK that matched no INVITE server transaction in Completed state: the ACK for a 2xx,
    which belongs to the dialog (RFC 3261 17.2.1/13.3.1.4), or a stray one."""

    request: Request
    source: Address
    transport: str
    transaction: ServerTransaction | None = None  # the Accepted INVITE transaction, if any


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL (its own non-INVITE server transaction, already answered 200 by the layer when
    it matched, 481 otherwise - RFC 3261 9.2). ``invite_transaction`` is the INVITE server
    transaction it cancels, or None; the TU answers that INVITE with 487 if still pending."""

    request: Request
    transaction: ServerTransaction
    invite_transaction: ServerTransaction | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    response: Response
    transaction: ClientTransaction


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response matching no client transaction (e.g. a 2xx retransmission after Timer M);
    a dialog may still want it to re-send its ACK."""

    response: Response
    source: Address
    transport: str


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Client side: Timer B/F (no final response: treat as 408), or Timer C (no final response
    minutes after a provisional: the layer has sent a CANCEL). Server side: Timer H (no ACK for
    our final response), or with ``tu_guards`` Timer F (the TU never answered a non-INVITE:
    the transaction is dropped) and Timer C (the TU never answered an INVITE: the layer sent
    408)."""

    transaction: Transaction
    timer: str


@dataclass(frozen=True, slots=True)
class TransportError:
    transaction: Transaction
    reason: str


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    transaction: Transaction


# (deadline, sequence, weak reference to the transaction, timer name)
_HeapEntry = tuple[float, int, "weakref.ReferenceType[Transaction]", str]

Event = (
    RequestReceived
    | AckReceived
    | CancelReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | TransportError
    | TransactionTerminated
)


# -- message helpers --------------------------------------------------------------------------


def _branch(message: Message) -> str:
    via = message.top_via  # not message.vias: the Vias below the top one are not parsed
    return (via.branch or "") if via is not None else ""


def _is_rfc3261_branch(branch: str) -> bool:
    # RFC 4475 3.1.2.x "badbranch": the cookie alone is not an RFC 3261 branch.
    return branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE)


def _sent_by(message: Message) -> str:
    return message.via.sent_by.lower()


def _cseq(message: Message) -> tuple[int, str]:
    cseq = message.cseq
    return cseq.num, cseq.method


_RESPONSE_MANDATORY = ("from", "to", "call-id", "cseq")
_HEADERS_COPIED_TO_CANCEL = ("from", "to", "call-id")


def build_cancel(invite: Request) -> Request:
    """RFC 3261 9.1: same Request-URI, Call-ID, To, From, CSeq number and the single top Via
    (same branch) as the INVITE; CSeq method CANCEL; the INVITE's Route headers."""
    cancel = Request("CANCEL", invite.uri.copy())
    headers = cancel.headers
    headers.add("Via", invite.headers.get_all("via")[0])
    for name in _HEADERS_COPIED_TO_CANCEL:
        value = invite.headers.get(name)
        if value is not None:
            headers.add(name.title(), value)
    headers.add("CSeq", f"{invite.cseq.num} CANCEL")
    for route in invite.headers.get_all("route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    return cancel


def build_non_2xx_ack(invite: Request, response: Response) -> Request:
    """RFC 3261 17.1.1.3: the ACK a client INVITE transaction sends for a 300-699 response:
    Request-URI, Call-ID, From, CSeq number and top Via of the INVITE, To of the response,
    the INVITE's Route headers, CSeq method ACK."""
    ack = Request("ACK", invite.uri.copy())
    headers = ack.headers
    headers.add("Via", invite.headers.get_all("via")[0])
    headers.add("From", invite.headers.get("from"))
    headers.add("To", response.headers.get("to"))
    headers.add("Call-ID", invite.headers.get("call-id"))
    headers.add("CSeq", f"{invite.cseq.num} ACK")
    for route in invite.headers.get_all("route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    return ack


def via_response_address(via: Via, source: Address) -> Address:
    """RFC 3261 18.2.2 with RFC 3581 rport, for unreliable transports: ``received`` (or the
    source address when rport asks for it) and the rport / sent-by port (default 5060)."""
    if via.has_rport:
        return (via.received or source[0], via.rport or source[1])
    return (via.received or via.host, via.port or 5060)


def stamp_via(request: Request, source: Address) -> None:
    """Record where a request really came from in its top Via: ``received`` when the source IP
    differs from sent-by (RFC 3261 18.2.1), and with RFC 3581 ``rport`` the source port plus
    ``received`` always. Responses copy the Via, so the client learns its public address."""
    via = request.via
    host = via.host[1:-1] if via.host.startswith("[") else via.host
    changed = False
    if via.has_rport and via.rport is None:
        via.params["rport"] = str(source[1])
        via.params["received"] = source[0]
        changed = True
    elif host != source[0] and via.received != source[0]:
        via.params["received"] = source[0]
        changed = True
    if changed:
        request.headers.set_first("Via", via)


def new_via(transport: str, host: str, port: int | None, *, rport: bool = True) -> Via:
    """A Via for a request we originate, with a fresh branch (and an empty rport, RFC 3581,
    so NATed replies find their way back)."""
    params: dict[str, str | None] = {"branch": new_branch()}
    if rport:
        params["rport"] = None
    return Via(transport.upper(), host, port, params)


# -- transactions ------------------------------------------------------------------------------


@dataclass(eq=False, slots=True, weakref_slot=True)
class Transaction:
    """State shared by the four kinds. ``key`` is what the layer indexes it under.

    The layer holds a transaction only while it is not terminated (its timer heap refers to
    it weakly), so once terminated it lives exactly as long as the TU keeps it."""

    key: tuple[str, ...]
    request: Request
    transport: str
    peer: Address
    state: TransactionState
    created_at: float
    timers: dict[str, float] = field(default_factory=dict)
    # Per-retransmission-timer current interval (A/E/G double on each firing).
    intervals: dict[str, float] = field(default_factory=dict)
    # The response the layer may have to repeat (server: the last one sent, for a
    # retransmitted request; client: the non-2xx final one). None when it has no further use
    # for it (after a 2xx to INVITE, once terminated), so a transaction kept by a TU for a
    # whole call does not keep its messages too.
    last_response: Response | None = None
    # Free slot for the TU (call leg, registrar) to hang its own context on.
    context: object = None

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    @property
    def reliable(self) -> bool:
        return is_reliable(self.transport)

    @property
    def terminated(self) -> bool:
        return self.state is TransactionState.TERMINATED

    @property
    def branch(self) -> str:
        return _branch(self.request)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.branch} {self.state.value}>"


@dataclass(eq=False, repr=False, slots=True)
class ClientTransaction(Transaction):
    ack: Request | None = None  # the ACK we built for a non-2xx final response (17.1.1.3)
    cancel_requested: bool = False  # CANCEL waits for a provisional response (RFC 3261 9.1)
    cancel_transaction: ClientTransaction | None = None
    provisional_received: bool = False


@dataclass(eq=False, repr=False, slots=True)
class ServerTransaction(Transaction):
    # For RFC 2543 matching of the ACK: the To tag of the response we sent.
    response_to_tag: str | None = None
    cancelled: bool = False


class TransactionLayer:
    """All client and server transactions of one SIP endpoint (edge, call leg, tests)."""

    def __init__(
        self,
        timers: TimerConfig | None = None,
        *,
        auto_trying: bool = True,
        symmetric_responses: bool = True,
        answer_cancel: bool = True,
        stamp_received: bool = True,
        tu_guards: bool = True,
    ) -> None:
        self.timers = timers or TimerConfig()
        # RFC 3261 17.2.1: a 100 Trying unless the TU answers within 200 ms; sans-I/O we cannot
        # know that, so by default the layer sends it at once (what Kamailio's tm does).
        self.auto_trying = auto_trying
        # Send responses back to the packet's source address (rport-style, like Kamailio's
        # force_rport) rather than to Via sent-by; needed for phones behind NAT.
        self.symmetric_responses = symmetric_responses
        self.answer_cancel = answer_cancel
        # Add received/rport to the top Via of requests we receive (see stamp_via).
        self.stamp_received = stamp_received
        # Server transactions whose TU never answers would live forever (a crashed handler, a
        # lost bus reply). With guards on, a non-INVITE gets no more than 64*T1 (the client's
        # Timer F has long fired) and an INVITE no more than Timer C after the last
        # provisional, after which the layer answers 408 itself.
        self.tu_guards = tu_guards
        self._client: dict[tuple[str, ...], ClientTransaction] = {}
        self._server: dict[tuple[str, ...], ServerTransaction] = {}
        self._events: deque[Event] = deque()
        self._outgoing: deque[Outgoing] = deque()
        # (deadline, sequence, weak reference to the transaction, timer name). Cancelling a
        # timer only forgets it in ``transaction.timers``; its heap entry goes stale and is
        # dropped when it reaches the top or when stale entries are the majority. The weak
        # reference is what lets an ended transaction go at once: a cancelled Timer C would
        # otherwise keep an answered INVITE, its messages and its TU context for 3 minutes.
        self._timer_heap: list[_HeapEntry] = []
        self._stale_entries = 0
        self._sequence = itertools.count()

    # -- outputs --------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        """Drain all pending events."""
        drained = list(self._events)
        self._events.clear()
        return drained

    def datagrams_to_send(self) -> list[Outgoing]:
        """Drain all pending outgoing messages."""
        drained = list(self._outgoing)
        self._outgoing.clear()
        return drained

    def get_timer(self) -> float | None:
        """The earliest deadline at which :meth:`handle_timer` must be called, or None."""
        heap = self._timer_heap
        while heap:
            deadline, _, reference, name = heap[0]
            transaction = reference()
            if transaction is not None and transaction.timers.get(name) == deadline:
                return deadline
            heapq.heappop(heap)  # cancelled or rescheduled: drop the stale entry
            self._forget_stale()
        return None

    def handle_timer(self, now: float) -> None:
        heap = self._timer_heap
        while heap and heap[0][0] <= now:
            deadline, _, reference, name = heapq.heappop(heap)
            transaction = reference()
            if transaction is None or transaction.timers.get(name) != deadline:
                self._forget_stale()
                continue
            del transaction.timers[name]
            self._fire(transaction, name, now)

    # -- introspection --------------------------------------------------------------------

    @property
    def client_transactions(self) -> list[ClientTransaction]:
        return list(self._client.values())

    @property
    def server_transactions(self) -> list[ServerTransaction]:
        return list(self._server.values())

    def find_server_transaction(self, request: Request) -> ServerTransaction | None:
        """The server transaction a request (or its retransmission) belongs to (17.2.3); None
        also when the request lacks what matching needs (Via, and for RFC 2543 requests From,
        Call-ID, CSeq)."""
        try:
            if request.top_via is None:
                return None
            return self._server.get(self._server_key(request))
        except SipParseError:
            return None

    # -- client side ----------------------------------------------------------------------

    def send_request(
        self, request: Request, destination: Address, transport: str, now: float
    ) -> ClientTransaction:
        """Start a client transaction. The request's top Via must carry an RFC 3261 branch
        (see :func:`new_branch`); ACK is not sent through a transaction (use
        :meth:`send_stateless`)."""
        if request.method == "ACK":
            raise ValueError("ACK is sent with send_stateless, not in a client transaction")
        branch = _branch(request)
        if not _is_rfc3261_branch(branch):
            raise ValueError(f"request needs a Via branch starting with {MAGIC_COOKIE}")
        key = (branch, request.method)
        if key in self._client:
            raise ValueError(f"client transaction {key} already exists")
        invite = request.method == "INVITE"
        transaction = ClientTransaction(
            key=key,
            request=request,
            transport=transport.upper(),
            peer=destination,
            state=TransactionState.CALLING if invite else TransactionState.TRYING,
            created_at=now,
        )
        self._client[key] = transaction
        self._emit(transaction, request)
        t1 = self.timers.t1
        if not transaction.reliable:
            retransmit = "A" if invite else "E"
            transaction.intervals[retransmit] = t1
            self._schedule(transaction, retransmit, now + t1)
        self._schedule(transaction, "B" if invite else "F", now + self.timers.timeout)
        return transaction

    def cancel(self, transaction: ClientTransaction, now: float) -> None:
        """Cancel an INVITE client transaction (RFC 3261 9.1). The CANCEL goes out once a
        provisional response has arrived; after a final response it is not sent at all."""
        if not transaction.is_invite or transaction.cancel_requested:
            return
        transaction.cancel_requested = True
        if transaction.state is TransactionState.PROCEEDING:
            self._send_cancel(transaction, now)

    def _send_cancel(self, transaction: ClientTransaction, now: float) -> None:
        cancel = build_cancel(transaction.request)
        transaction.cancel_transaction = self.send_request(
            cancel, transaction.peer, transaction.transport, now
        )

    def send_stateless(self, message: Message, destination: Address, transport: str) -> None:
        """Send outside any transaction: ACK for a 2xx (RFC 3261 13.2.2.4), or a stateless
        response."""
        self._outgoing.append(Outgoing(message.to_bytes(), destination, transport.upper(), message))

    # -- server side ----------------------------------------------------------------------

    def respond(self, transaction: ServerTransaction, response: Response, now: float) -> None:
        """Send a response through a server transaction (the TU's only way to answer)."""
        if transaction.terminated:
            raise ValueError(f"{transaction!r} is terminated")
        status = response.status
        state = transaction.state
        if state is TransactionState.ACCEPTED and 200 <= status < 300:
            # RFC 6026 7.1: 2xx retransmissions (by the TU, 13.3.1.4) pass straight through.
            self._emit(transaction, response)
            return
        if state not in (TransactionState.TRYING, TransactionState.PROCEEDING):
            raise ValueError(f"cannot send {status} in state {state.value}")
        transaction.last_response = response
        if transaction.key[0] == "2543":
            # Only RFC 2543 ACK matching needs our To tag; parsing To costs time otherwise.
            to_tag = response.to.tag
            if to_tag:
                transaction.response_to_tag = to_tag
        self._emit(transaction, response)
        if status < 200:
            transaction.state = TransactionState.PROCEEDING
            if "C" in transaction.timers and self.timers.timer_c is not None:
                self._schedule(transaction, "C", now + self.timers.timer_c)
            return
        self._cancel_timer(transaction, "C")
        self._cancel_timer(transaction, "F")
        if transaction.is_invite:
            if status < 300:
                # RFC 6026 7.1: Accepted; the 2xx is retransmitted by the TU (dialog), not us,
                # and a retransmitted INVITE is absorbed: the layer has no use for the 2xx
                # for the 64*T1 the transaction lingers (a held call's 200 OK and its SDP).
                transaction.state = TransactionState.ACCEPTED
                transaction.last_response = None
                self._schedule(transaction, "L", now + self.timers.timeout)
                return
            transaction.state = TransactionState.COMPLETED
            if not transaction.reliable:
                transaction.intervals["G"] = self.timers.t1
                self._schedule(transaction, "G", now + self.timers.t1)
            self._schedule(transaction, "H", now + self.timers.timeout)
            return
        transaction.state = TransactionState.COMPLETED
        self._schedule(
            transaction, "J", now + (0.0 if transaction.reliable else self.timers.timeout)
        )

    # -- input ----------------------------------------------------------------------------

    def receive(self, message: Message, source: Address, transport: str, now: float) -> None:
        """Feed a parsed message that arrived from ``source`` over ``transport``.

        The parser accepts messages that lack mandatory headers (the TU's validation answers
        those, e.g. with ``validate_request``); one the layer cannot match for want of a Via,
        From, Call-ID or CSeq is dropped here rather than raising into the transport.
        """
        transport = transport.upper()
        try:
            if isinstance(message, Response):
                self._receive_response(message, source, transport, now)
            elif isinstance(message, Request):
                self._receive_request(message, source, transport, now)
        except SipParseError:
            return

    def transport_failed(self, outgoing: Outgoing, reason: str, now: float) -> None:
        """The adapter could not deliver ``outgoing`` (connection refused, ICMP unreachable):
        the transaction ends with a TransportError event (RFC 3261 17.1.4/17.2.4)."""
        transaction = outgoing.transaction
        if transaction is None or transaction.terminated:
            return
        self._events.append(TransportError(transaction, reason))
        self._terminate(transaction)

    # -- internals: receiving -------------------------------------------------------------

    def _receive_response(
        self, response: Response, source: Address, transport: str, now: float
    ) -> None:
        # 17.1.3: match on top Via branch and CSeq method. A response without the headers
        # RFC 3261 8.1.1 makes mandatory (and every TU reads) is dropped here.
        headers = response.headers
        if response.top_via is None or not all(name in headers for name in _RESPONSE_MANDATORY):
            return
        key = (_branch(response), _cseq(response)[1])
        transaction = self._client.get(key)
        if transaction is None or transaction.terminated:
            self._events.append(StrayResponse(response, source, transport))
            return
        status = response.status
        state = transaction.state
        if transaction.is_invite:
            self._invite_client_response(transaction, response, status, state, now)
        else:
            self._non_invite_client_response(transaction, response, status, state, now)

    def _invite_client_response(
        self,
        transaction: ClientTransaction,
        response: Response,
        status: int,
        state: TransactionState,
        now: float,
    ) -> None:
        if status < 200:
            if state in (TransactionState.CALLING, TransactionState.PROCEEDING):
                if state is TransactionState.CALLING:
                    # 17.1.1.2: Timer B only guards the Calling state.
                    self._cancel_timer(transaction, "B")
                transaction.state = TransactionState.PROCEEDING
                transaction.provisional_received = True
                self._cancel_timer(transaction, "A")
                # In Proceeding, Timer C (re-armed by every provisional, 16.6 step 11) bounds
                # the wait so a forgotten transaction cannot live forever; the TU's own ring
                # timeout is usually shorter.
                if self.timers.timer_c is not None and transaction.cancel_transaction is None:
                    self._schedule(transaction, "C", now + self.timers.timer_c)
                self._events.append(ResponseReceived(response, transaction))
                if transaction.cancel_requested and transaction.cancel_transaction is None:
                    self._send_cancel(transaction, now)
            return
        if status < 300:
            if state in (TransactionState.CALLING, TransactionState.PROCEEDING):
                transaction.state = TransactionState.ACCEPTED
                self._cancel_timer(transaction, "A")
                self._cancel_timer(transaction, "B")
                self._cancel_timer(transaction, "C")
                self._schedule(transaction, "M", now + self.timers.timeout)
                self._events.append(ResponseReceived(response, transaction))
            elif state is TransactionState.ACCEPTED:
                # RFC 6026 7.2: 2xx retransmissions (or 2xx from other forks) go to the TU,
                # which re-sends its ACK.
                self._events.append(ResponseReceived(response, transaction))
            return
        if state in (TransactionState.CALLING, TransactionState.PROCEEDING):
            transaction.state = TransactionState.COMPLETED
            self._cancel_timer(transaction, "A")
            self._cancel_timer(transaction, "B")
            self._cancel_timer(transaction, "C")
            transaction.last_response = response
            transaction.ack = build_non_2xx_ack(transaction.request, response)
            self._emit(transaction, transaction.ack)
            self._schedule(
                transaction,
                "D",
                now + (0.0 if transaction.reliable else self.timers.timer_d_unreliable),
            )
            self._events.append(ResponseReceived(response, transaction))
        elif state is TransactionState.COMPLETED and transaction.ack is not None:
            # 17.1.1.2: a retransmitted final response gets the same ACK, and is not passed up.
            self._emit(transaction, transaction.ack)

    def _non_invite_client_response(
        self,
        transaction: ClientTransaction,
        response: Response,
        status: int,
        state: TransactionState,
        now: float,
    ) -> None:
        if state not in (TransactionState.TRYING, TransactionState.PROCEEDING):
            return  # Completed: absorb retransmitted responses
        if status < 200:
            transaction.state = TransactionState.PROCEEDING
            self._events.append(ResponseReceived(response, transaction))
            return
        transaction.state = TransactionState.COMPLETED
        transaction.last_response = response
        self._cancel_timer(transaction, "E")
        self._cancel_timer(transaction, "F")
        self._schedule(transaction, "K", now + (0.0 if transaction.reliable else self.timers.t4))
        self._events.append(ResponseReceived(response, transaction))

    def _server_key(self, request: Request) -> tuple[str, ...]:
        """17.2.3: branch + sent-by + method (ACK matches INVITE). For RFC 2543 branches the
        key is the request's identifying fields; the To tag is compared separately because an
        ACK carries the tag of our response while the INVITE had none."""
        method = "INVITE" if request.method == "ACK" else request.method
        branch = _branch(request)
        if _is_rfc3261_branch(branch):
            return ("3261", branch, _sent_by(request), method)
        number, _ = _cseq(request)
        return (
            "2543",
            str(request.uri),
            request.from_.tag or "",
            request.call_id,
            str(number),
            str(request.via),
            method,
        )

    def _receive_request(
        self, request: Request, source: Address, transport: str, now: float
    ) -> None:
        if request.top_via is None:
            return  # the message layer validates; without a Via we cannot even answer
        if self.stamp_received:
            stamp_via(request, source)
        key = self._server_key(request)
        transaction = self._server.get(key)
        if transaction is not None and not _is_rfc3261_branch(_branch(request)):
            # RFC 2543 matching: an INVITE retransmission has the INVITE's To tag, an ACK the
            # To tag of our response.
            expected = (
                transaction.response_to_tag
                if request.method == "ACK"
                else (transaction.request.to.tag or None)
            )
            if (request.to.tag or None) != expected:
                transaction = None
        if request.method == "ACK":
            self._receive_ack(request, transaction, source, transport, now)
            return
        if transaction is not None:
            self._retransmitted_request(transaction)
            return
        invite = request.method == "INVITE"
        transaction = ServerTransaction(
            key=key,
            request=request,
            transport=transport,
            peer=self._response_destination(request, source, transport),
            state=TransactionState.PROCEEDING if invite else TransactionState.TRYING,
            created_at=now,
        )
        self._server[key] = transaction
        if request.method == "CANCEL":
            self._receive_cancel(request, transaction, now)
            return
        if self.tu_guards:
            if not invite:
                self._schedule(transaction, "F", now + self.timers.timeout)
            elif self.timers.timer_c is not None:
                self._schedule(transaction, "C", now + self.timers.timer_c)
        if invite and self.auto_trying:
            self.respond(transaction, make_response(request, 100), now)
        self._events.append(RequestReceived(request, transaction, source, transport))

    def _receive_ack(
        self,
        ack: Request,
        transaction: ServerTransaction | None,
        source: Address,
        transport: str,
        now: float,
    ) -> None:
        if transaction is not None and transaction.state is TransactionState.COMPLETED:
            transaction.state = TransactionState.CONFIRMED
            self._cancel_timer(transaction, "G")
            self._cancel_timer(transaction, "H")
            self._schedule(
                transaction, "I", now + (0.0 if transaction.reliable else self.timers.t4)
            )
            return
        if transaction is not None and transaction.state is TransactionState.CONFIRMED:
            return  # retransmitted ACK, absorbed
        # ACK for a 2xx: end-to-end, belongs to the dialog (with the accepted transaction when
        # it still exists; ACKs for 2xx carry a new branch so usually it does not match).
        accepted = (
            transaction
            if transaction is not None and transaction.state is TransactionState.ACCEPTED
            else None
        )
        self._events.append(AckReceived(ack, source, transport, accepted))

    def _retransmitted_request(self, transaction: ServerTransaction) -> None:
        # 17.2.1 / 17.2.2: resend the last response; in Trying (nothing sent yet) and Accepted
        # (the TU retransmits its 2xx itself) the retransmission is just absorbed.
        if (
            transaction.state
            in (
                TransactionState.PROCEEDING,
                TransactionState.COMPLETED,
            )
            and transaction.last_response is not None
        ):
            self._emit(transaction, transaction.last_response)

    def _receive_cancel(self, cancel: Request, transaction: ServerTransaction, now: float) -> None:
        # 9.2: the CANCEL matches the INVITE server transaction with the same key but method
        # INVITE (for RFC 2543 requests: same Request-URI, Call-ID, From tag, CSeq number, Via).
        invite_key = key_with_method(transaction.key, "INVITE")
        invite = self._server.get(invite_key)
        if invite is not None and invite.terminated:
            invite = None
        if self.answer_cancel:
            status = 200 if invite is not None else 481
            self.respond(transaction, make_response(cancel, status), now)
        if invite is not None:
            invite.cancelled = True
        self._events.append(CancelReceived(cancel, transaction, invite))

    def _response_destination(self, request: Request, source: Address, transport: str) -> Address:
        """RFC 3261 18.2.2 / RFC 3581: where responses go."""
        if self.symmetric_responses or is_reliable(transport):
            return source
        return via_response_address(request.via, source)

    # -- internals: timers ----------------------------------------------------------------

    def _schedule(self, transaction: Transaction, name: str, deadline: float) -> None:
        if name in transaction.timers:
            self._stale_entries += 1  # re-armed (Timer C on each provisional): old entry stale
        transaction.timers[name] = deadline
        # weakref.ref without a callback is cached per object: no new allocation per timer.
        entry = (deadline, next(self._sequence), weakref.ref(transaction), name)
        heapq.heappush(self._timer_heap, entry)

    def _cancel_timer(self, transaction: Transaction, name: str) -> None:
        if transaction.timers.pop(name, None) is not None:
            self._stale_entries += 1
            self._compact_timers()

    def _forget_stale(self) -> None:
        if self._stale_entries > 0:
            self._stale_entries -= 1

    def _compact_timers(self) -> None:
        """Rebuild the heap without its stale entries once they are the majority (as asyncio
        does for cancelled handles): thousands of answered calls each leave a cancelled Timer C
        that would otherwise sit there for 3 minutes."""
        heap = self._timer_heap
        if self._stale_entries < _COMPACT_MIN_STALE or self._stale_entries * 2 < len(heap):
            return
        live = []
        for entry in heap:
            transaction = entry[2]()
            if transaction is not None and transaction.timers.get(entry[3]) == entry[0]:
                live.append(entry)
        heapq.heapify(live)
        heap[:] = live  # in place: handle_timer may be iterating over this very list
        self._stale_entries = 0

    def _fire(self, transaction: Transaction, name: str, now: float) -> None:
        timers = self.timers
        if name in ("A", "E", "G"):
            interval = transaction.intervals[name]
            if name == "A":
                self._emit(transaction, transaction.request)
                interval *= 2
            elif name == "E":
                self._emit(transaction, transaction.request)
                # 17.1.2.2: doubling up to T2 in Trying, always T2 once in Proceeding.
                if transaction.state is TransactionState.PROCEEDING:
                    interval = timers.t2
                else:
                    interval = min(interval * 2, timers.t2)
            else:
                assert transaction.last_response is not None
                self._emit(transaction, transaction.last_response)
                interval = min(interval * 2, timers.t2)
            transaction.intervals[name] = interval
            self._schedule(transaction, name, now + interval)
            return
        if name == "C" and isinstance(transaction, ServerTransaction):
            # The TU never sent a final response (tu_guards): answer 408 on its behalf.
            self._events.append(TransactionTimeout(transaction, "C"))
            previous = transaction.last_response
            to_tag = previous.to.tag if previous is not None and previous.status > 100 else None
            timeout = make_response(transaction.request, 408, to_tag=to_tag or generate_tag())
            self.respond(transaction, timeout, now)
            return
        if name == "C":
            # No final response in time: tell the TU, CANCEL, and give the CANCEL/487 exchange
            # 64*T1 before the transaction ends with Timer B.
            assert isinstance(transaction, ClientTransaction)
            self._events.append(TransactionTimeout(transaction, "C"))
            self.cancel(transaction, now)
            self._schedule(transaction, "B", now + timers.timeout)
            return
        if name in ("B", "F", "H"):
            self._events.append(TransactionTimeout(transaction, name))
        self._terminate(transaction)

    def terminate(self, transaction: Transaction) -> None:
        """End a transaction now, whatever its state: no more retransmissions or timers, the
        layer forgets it (a retransmitted request then starts a new server transaction, a late
        response is a :class:`StrayResponse`) and a :class:`TransactionTerminated` event
        follows. For a TU that drops a request unanswered (the client retries) or that wants
        a final response remembered for less than Timer J/H. Idempotent."""
        self._terminate(transaction)

    def _terminate(self, transaction: Transaction) -> None:
        if transaction.terminated:
            return
        transaction.state = TransactionState.TERMINATED
        if transaction.timers:
            self._stale_entries += len(transaction.timers)
            transaction.timers.clear()
            self._compact_timers()
        # What only a live transaction needs: the response to repeat to a retransmitted
        # request, the ACK to repeat to a retransmitted final response. A TU often keeps the
        # transaction object for the length of a call; these need not live that long.
        transaction.last_response = None
        transaction.intervals.clear()
        if isinstance(transaction, ClientTransaction):
            transaction.ack = None
        if isinstance(transaction, ClientTransaction):
            if self._client.get(transaction.key) is transaction:
                del self._client[transaction.key]
        elif self._server.get(transaction.key) is transaction:
            del self._server[transaction.key]
        self._events.append(TransactionTerminated(transaction))

    # -- internals: output ----------------------------------------------------------------

    def _emit(self, transaction: Transaction, message: Message) -> None:
        self._outgoing.append(
            Outgoing(
                message.to_bytes(),
                transaction.peer,
                transaction.transport,
                message,
                transaction,
            )
        )


def key_with_method(key: tuple[str, ...], method: str) -> tuple[str, ...]:
    """The same transaction key for another method (CANCEL -> its INVITE)."""
    return (*key[:-1], method)
