"""RFC 3261 section 12 dialogs, sans-I/O: dialog state, in-dialog request construction, and the
UAS 2xx retransmission of RFC 3261 13.3.1.4.

A :class:`Dialog` is created on the UAC side from the INVITE (or other dialog-creating request)
and a 1xx-with-To-tag (early) or 2xx (confirmed) response, and on the UAS side from the request
and the response we send. It builds in-dialog requests (BYE, re-INVITE, UPDATE, INFO, ACK for a
2xx) with the right Request-URI, Route set and CSeq, follows target refreshes, and checks the
remote CSeq of requests it receives.

The dialog does not add a Via: pass ``via=`` (e.g. :func:`protocols.sip.transaction.new_via`)
or add one before handing the request to the transaction layer.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from protocols.sip.headers import NameAddr, Via
from protocols.sip.message import Message, Request, Response
from protocols.sip.parser import parse_message
from protocols.sip.transaction import Address, TimerConfig
from protocols.sip.uri import URI

__all__ = [
    "CONTACT_METHODS",
    "TARGET_REFRESH_METHODS",
    "is_reliable_provisional",
    "AnswerRetransmission",
    "Dialog",
    "DialogError",
    "DialogId",
    "DialogState",
    "Dialogs",
    "next_hop",
    "uri_hop",
]

# Methods that refresh the remote target (RFC 3261 12.2: re-INVITE; RFC 3311 UPDATE; RFC 6665
# SUBSCRIBE/NOTIFY; RFC 3515 REFER) and therefore carry our Contact.
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
CONTACT_METHODS = TARGET_REFRESH_METHODS
# 19.1.1 table 1: URI parameters and headers that may not appear in a Request-URI.
_NOT_IN_REQUEST_URI = ("method",)
_MAX_CSEQ = 2**31 - 1


class DialogError(ValueError):
    """The messages given cannot create or continue this dialog."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """RFC 3261 12: Call-ID, local tag and remote tag identify a dialog."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def for_incoming_request(cls, request: Request) -> DialogId:
        """Our tag is in To, theirs in From (12.2.2)."""
        return cls(request.call_id, request.to.tag or "", request.from_.tag or "")

    @classmethod
    def for_incoming_response(cls, response: Response) -> DialogId:
        """A response to our request: our tag is in From, theirs in To."""
        return cls(response.call_id, response.from_.tag or "", response.to.tag or "")


def _without_tag(name_addr: NameAddr) -> NameAddr:
    clone = name_addr.copy()
    clone.tag = None
    return clone


def _contact_uri(message: Message) -> str | None:
    contact = message.contact
    return str(contact.uri) if contact is not None else None


def _record_routes(message: Message) -> list[NameAddr]:
    """The Record-Route values, parsed here rather than through ``message.record_routes``,
    which would cache them in the message: a call leg keeps its INVITE for the whole call,
    and the dialog keeps the routes (as text) already."""
    return [NameAddr.parse(value, "record-route")
            for value in message.headers.get_all("record-route")]


def _is_secure(request: Request, transport: str | None) -> bool:
    # 12.1.1/12.1.2: secure when the request was sent over TLS and the R-URI is a SIPS URI.
    return request.uri.scheme == "sips" and (transport or "").upper() == "TLS"


class Dialog:
    """One dialog's state (RFC 3261 12).

    A call holds its dialogs for as long as it lasts, so the addresses are kept as text (a
    few hundred bytes) rather than as parsed name-addr and URI objects (several KB): each
    read of ``local_uri``, ``remote_uri``, ``remote_target``, ``route_set`` or
    ``local_contact`` parses a fresh object (a copy: change the dialog by assigning, which
    takes a typed value or text). Building a request pastes the text straight in.
    """

    __slots__ = (
        "call_id",
        "local_tag",
        "remote_tag",
        "_local_uri",
        "_remote_uri",
        "_remote_target",
        "_route_set",
        "local_seq",
        "remote_seq",
        "is_uac",
        "state",
        "_local_contact",
        "secure",
        "_acks",
        "last_rseq",
        "context",
        "__weakref__",
    )

    call_id: str
    local_tag: str
    remote_tag: str
    local_seq: int | None
    remote_seq: int | None
    is_uac: bool  # the role we had in the transaction that created the dialog
    state: DialogState
    secure: bool
    # RFC 3262: RSeq of the last reliable provisional response we PRACKed, per INVITE CSeq.
    last_rseq: dict[int, int]
    # Free slot for the owner (call leg) to keep its context.
    context: object

    def __init__(
        self,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: NameAddr | str,  # From for requests we send (without tag)
        remote_uri: NameAddr | str,  # To for requests we send (without tag)
        remote_target: URI | str,
        route_set: Iterable[NameAddr | str],
        local_seq: int | None,
        remote_seq: int | None,
        is_uac: bool,
        state: DialogState,
        local_contact: NameAddr | str | None = None,
        secure: bool = False,
        context: object = None,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.is_uac = is_uac
        self.state = state
        self.local_contact = local_contact
        self.secure = secure
        # The ACK we sent for each 2xx to INVITE, by CSeq, as wire bytes, so a retransmitted
        # 2xx gets the same ACK (13.2.2.4).
        self._acks: dict[int, bytes] = {}
        self.last_rseq = {}
        self.context = context

    # -- addresses, kept as text ----------------------------------------------------------------
    @property
    def local_uri(self) -> NameAddr:
        return NameAddr.parse(self._local_uri)

    @local_uri.setter
    def local_uri(self, value: NameAddr | str) -> None:
        self._local_uri = _name_addr_text(value)

    @property
    def remote_uri(self) -> NameAddr:
        return NameAddr.parse(self._remote_uri)

    @remote_uri.setter
    def remote_uri(self, value: NameAddr | str) -> None:
        self._remote_uri = _name_addr_text(value)

    @property
    def remote_target(self) -> URI:
        return URI.parse(self._remote_target)

    @remote_target.setter
    def remote_target(self, value: URI | str) -> None:
        self._remote_target = str(value)

    @property
    def route_set(self) -> list[NameAddr]:
        return [NameAddr.parse(route) for route in self._route_set]

    @route_set.setter
    def route_set(self, value: Iterable[NameAddr | str]) -> None:
        self._route_set = tuple(_name_addr_text(route) for route in value)

    @property
    def local_contact(self) -> NameAddr | None:
        text = self._local_contact
        return None if text is None else NameAddr.parse(text, "contact")

    @local_contact.setter
    def local_contact(self, value: NameAddr | str | None) -> None:
        self._local_contact = None if value is None else _name_addr_text(value)

    @property
    def acks(self) -> dict[int, Request]:
        """The ACKs kept for 2xx retransmissions, by CSeq number (parsed copies)."""
        return {number: _parse_request(data) for number, data in self._acks.items()}

    def __repr__(self) -> str:
        return (
            f"<Dialog {self.call_id} local={self.local_tag} remote={self.remote_tag} "
            f"{self.state.value}>"
        )

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def create_uac(
        cls, request: Request, response: Response, *, transport: str | None = None
    ) -> Dialog:
        """UAC side (12.1.2), from the request we sent and a 101-299 response with a To tag."""
        if not 101 <= response.status <= 299:
            raise DialogError(f"a {response.status} does not create a dialog")
        remote_tag = response.to.tag
        if not remote_tag:
            raise DialogError("response without To tag creates no dialog")
        local_tag = request.from_.tag
        if not local_tag:
            raise DialogError("request without From tag")
        remote_target = _contact_uri(response)
        if remote_target is None:
            if response.status >= 200:
                raise DialogError("2xx without Contact")
            # An early dialog from a 1xx without Contact still needs somewhere to send
            # PRACK/UPDATE; the Request-URI is the best we know until the 2xx arrives.
            remote_target = str(request.uri)
        contact = request.contact
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(response.to),
            remote_target=remote_target,
            # 12.1.2: the Record-Route list of the response, in reverse order.
            route_set=reversed(_record_routes(response)),
            local_seq=request.cseq.num,
            remote_seq=None,
            is_uac=True,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            local_contact=contact,
            secure=_is_secure(request, transport),
        )

    @classmethod
    def create_uas(
        cls, request: Request, response: Response, *, transport: str | None = None
    ) -> Dialog:
        """UAS side (12.1.1), from the request received and our 101-299 response to it (which
        carries our To tag and Contact)."""
        if not 101 <= response.status <= 299:
            raise DialogError(f"a {response.status} does not create a dialog")
        local_tag = response.to.tag
        if not local_tag:
            raise DialogError("our response needs a To tag")
        remote_target = _contact_uri(request)
        if remote_target is None:
            raise DialogError("dialog-creating request without Contact")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",  # RFC 2543 peers may send no From tag
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=remote_target,
            # 12.1.1: the Record-Route list of the request, in order.
            route_set=_record_routes(request),
            local_seq=None,
            remote_seq=request.cseq.num,
            is_uac=False,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            local_contact=response.contact,
            secure=_is_secure(request, transport),
        )

    # -- state updates ------------------------------------------------------------------------

    def matches_request(self, request: Request) -> bool:
        return DialogId.for_incoming_request(request) == self.id

    def matches_response(self, response: Response) -> bool:
        return DialogId.for_incoming_response(response) == self.id

    def update_from_dialog_response(self, response: Response) -> None:
        """A further response to the request that created this (UAC) dialog: a 2xx confirms an
        early dialog and fixes the route set (12.1.2 computes it from the 2xx); any 1xx/2xx
        with a Contact refreshes the remote target; a final error ends an early dialog."""
        if not self.matches_response(response):
            raise DialogError("response belongs to another dialog")
        status = response.status
        if status >= 300:
            if self.state is DialogState.EARLY:
                self.state = DialogState.TERMINATED
            return
        target = _contact_uri(response)
        if target is not None:
            self.remote_target = target
        if status >= 200 and self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED
            self.route_set = reversed(_record_routes(response))

    def confirm(self) -> None:
        """UAS side: we sent the 2xx for an early dialog."""
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def receive_request(self, request: Request) -> int | None:
        """Check and account an in-dialog request we received (12.2.2).

        Returns None when it may be processed, or the status to reject it with: 500 for an
        out-of-order CSeq. ACK and CANCEL reuse the INVITE's CSeq and skip the check. A target
        refresh request with a Contact updates the remote target.
        """
        if request.method in ("ACK", "CANCEL"):
            return None
        number = request.cseq.num
        if self.remote_seq is not None and number < self.remote_seq:
            return 500
        self.remote_seq = number
        if request.method in TARGET_REFRESH_METHODS:
            target = _contact_uri(request)
            if target is not None:
                self.remote_target = target
        if request.method == "BYE":
            self.state = DialogState.TERMINATED
        return None

    def receive_response(self, request: Request, response: Response) -> None:
        """Account the response to an in-dialog request we sent (12.2.1.2): a 2xx to a target
        refresh takes the new Contact; 481 and 408 end the dialog."""
        status = response.status
        if status in (481, 408):
            self.state = DialogState.TERMINATED
            return
        if 200 <= status < 300:
            if request.method in TARGET_REFRESH_METHODS:
                target = _contact_uri(response)
                if target is not None:
                    self.remote_target = target
            if request.method == "BYE":
                self.state = DialogState.TERMINATED

    # -- building requests --------------------------------------------------------------------

    def next_local_seq(self) -> int:
        """12.2.1.1: one more than the last, or a random start when we never sent one (UAS)."""
        if self.local_seq is None:
            self.local_seq = secrets.randbelow(2**16) + 1
        else:
            self.local_seq = (self.local_seq + 1) % _MAX_CSEQ or 1
        return self.local_seq

    def _request_uri_and_routes(self) -> tuple[URI, list[str]]:
        """12.2.1.1: loose routing keeps the remote target as Request-URI and sends the route
        set as Route; a strict first hop (no ``lr``) goes into the Request-URI instead, and the
        remote target becomes the last Route."""
        routes = self._route_set
        if not routes:
            return self.remote_target, []
        first = NameAddr.parse(routes[0]).uri
        if first.lr:
            return self.remote_target, list(routes)
        request_uri = first
        for name in _NOT_IN_REQUEST_URI:
            request_uri.params.pop(name, None)
        request_uri.headers = []
        rest = list(routes[1:])
        rest.append(f"<{self._remote_target}>")
        return request_uri, rest

    def _build(
        self,
        method: str,
        cseq: int,
        *,
        via: Via | str | None,
        body: bytes,
        content_type: str | None,
        extra_headers: Iterable[tuple[str, str]],
    ) -> Request:
        request_uri, routes = self._request_uri_and_routes()
        request = Request(method, request_uri)
        headers = request.headers
        if via is not None:
            headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        # The kept texts are name-addrs in <> form without a tag: the tag is appended.
        headers.add("From", f"{self._local_uri};tag={self.local_tag}")
        remote = self._remote_uri
        headers.add("To", f"{remote};tag={self.remote_tag}" if self.remote_tag else remote)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        for route in routes:
            headers.add("Route", route)
        if method in CONTACT_METHODS and self._local_contact is not None:
            headers.add("Contact", self._local_contact)
        for name, value in extra_headers:
            headers.add(name, value)
        if body:
            if content_type is not None:
                headers.add("Content-Type", content_type)
            request.body = body
        return request

    def create_request(
        self,
        method: str,
        *,
        via: Via | str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """A new in-dialog request (BYE, re-INVITE, UPDATE, INFO, ...) with the next CSeq."""
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"use create_ack / transaction.build_cancel for {method}")
        if self.terminated:
            raise DialogError("dialog is terminated")
        return self._build(
            method,
            self.next_local_seq(),
            via=via,
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
        )

    def create_ack(
        self,
        invite: Request,
        *,
        via: Via | str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """The ACK for a 2xx to ``invite`` (13.2.2.4): CSeq number of the INVITE, method ACK,
        the INVITE's credentials, sent end to end (new branch, no transaction). Kept so a
        retransmitted 2xx can be answered with :meth:`ack_for`."""
        credentials = [
            (name, value)
            for name, value in invite.headers
            if name.lower() in ("authorization", "proxy-authorization")
        ]
        ack = self._build(
            "ACK",
            invite.cseq.num,
            via=via,
            body=body,
            content_type=content_type,
            extra_headers=credentials,
        )
        self._acks[invite.cseq.num] = ack.to_bytes()
        return ack

    def ack_for(self, response: Response) -> Request | None:
        """The ACK already sent for this 2xx (by CSeq), to re-send on a retransmission: a
        copy parsed from the bytes kept, identical on the wire."""
        data = self._acks.get(response.cseq.num)
        return None if data is None else _parse_request(data)

    def next_hop(self, *, default_transport: str = "UDP") -> tuple[Address, str]:
        """Where this dialog's requests go (8.1.2): the first route set element if any (with a
        strict router it is also the Request-URI), else the remote target."""
        routes = self._route_set
        uri = NameAddr.parse(routes[0]).uri if routes else self.remote_target
        return uri_hop(uri, default_transport=default_transport)

    def create_prack(self, response: Response, *, via: Via | str | None = None) -> Request | None:
        """RFC 3262 7.2: the PRACK for a reliable provisional response (``Require: 100rel``
        and an RSeq), or None when none is due: not reliable, a retransmission, or out of
        order (the first RSeq is taken as is; later ones must be exactly one higher, 4).

        ``RAck = response-num SP CSeq-num SP Method`` echoes the RSeq and the CSeq."""
        if not is_reliable_provisional(response):
            return None
        rseq_text = response.headers.get("RSeq") or ""
        rseq = int(rseq_text.strip())
        cseq = response.cseq
        last = self.last_rseq.get(cseq.num)
        if last is not None and rseq != last + 1:
            return None
        self.last_rseq[cseq.num] = rseq
        return self.create_request(
            "PRACK", via=via, extra_headers=[("RAck", f"{rseq} {cseq.num} {cseq.method}")]
        )


def _name_addr_text(value: NameAddr | str) -> str:
    """A name-addr as kept by a dialog: always the ``<uri>`` form, so ";tag=" can follow."""
    return str(NameAddr.parse(value) if isinstance(value, str) else value)


def _parse_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def is_reliable_provisional(response: Response) -> bool:
    """A 101-199 response sent reliably (RFC 3262: ``Require: 100rel`` and a valid RSeq)."""
    if not 101 <= response.status <= 199:
        return False
    if "100rel" not in (token.strip().lower() for token in response.require):
        return False
    rseq = (response.headers.get("RSeq") or "").strip()
    # RSeq = "RSeq" HCOLON response-num; response-num = 1*DIGIT (1 to 2**31 - 1)
    return rseq.isdigit() and 1 <= int(rseq) < 2**31


def uri_hop(uri: URI, *, default_transport: str = "UDP") -> tuple[Address, str]:
    """((host, port), transport) to reach ``uri`` without DNS (RFC 3263 reduced to what a node
    on a known network needs): ``maddr``, ``port`` and ``transport`` parameters honoured; sips
    means TLS; default port 5060 (5061 for TLS)."""
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else default_transport)).upper()
    host = uri.maddr or uri.host
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = uri.port or (5061 if transport == "TLS" else 5060)
    return (host, port), transport


def next_hop(request: Request, *, default_transport: str = "UDP") -> tuple[Address, str]:
    """Where to send a request (RFC 3261 8.1.2, loose routing): the top Route if any, else
    the Request-URI. For in-dialog requests use :meth:`Dialog.next_hop`, which also knows
    when the route set starts with a strict router (then the Request-URI is the next hop)."""
    routes = request.routes
    uri = routes[0].uri if routes else request.uri
    return uri_hop(uri, default_transport=default_transport)


class Dialogs:
    """The dialogs of one endpoint by :class:`DialogId` (forked early dialogs of one INVITE are
    separate entries: same Call-ID and local tag, different remote tags)."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def add(self, dialog: Dialog) -> Dialog:
        self._dialogs[dialog.id] = dialog
        return dialog

    def remove(self, dialog: Dialog) -> None:
        if self._dialogs.get(dialog.id) is dialog:
            del self._dialogs[dialog.id]

    def for_request(self, request: Request) -> Dialog | None:
        return self._dialogs.get(DialogId.for_incoming_request(request))

    def for_response(self, response: Response) -> Dialog | None:
        return self._dialogs.get(DialogId.for_incoming_response(response))

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))


class AnswerRetransmission:
    """RFC 3261 13.3.1.4: the UAS core re-sends its 2xx to an INVITE (unreliable transports)
    at T1, 2T1, ... capped at T2 until the ACK arrives, and gives up after 64*T1 (the dialog
    should then be ended with a BYE). Over reliable transports nothing is re-sent, but the ACK
    wait still times out.

    Sans-I/O: ``get_timer()``, ``handle_timer(now)`` returns the response to re-send (or None),
    ``timed_out`` tells the caller to give up.
    """

    def __init__(
        self, response: Response, now: float, *, reliable: bool, timers: TimerConfig | None = None
    ) -> None:
        self.response = response
        self.timers = timers or TimerConfig()
        self.reliable = reliable
        self.acked = False
        self.timed_out = False
        self._interval = self.timers.t1
        self._next_send: float | None = None if reliable else now + self._interval
        self._give_up = now + self.timers.timeout

    def get_timer(self) -> float | None:
        if self.acked or self.timed_out:
            return None
        if self._next_send is None:
            return self._give_up
        return min(self._next_send, self._give_up)

    def handle_timer(self, now: float) -> Response | None:
        if self.acked or self.timed_out:
            return None
        if now >= self._give_up:
            self.timed_out = True
            return None
        if self._next_send is not None and now >= self._next_send:
            self._interval = min(self._interval * 2, self.timers.t2)
            self._next_send = now + self._interval
            return self.response
        return None

    def ack_received(self, ack: Request) -> bool:
        """True when ``ack`` acknowledges this 2xx (same CSeq number), which stops it."""
        if ack.method == "ACK" and ack.cseq.num == self.response.cseq.num:
            self.acked = True
        return self.acked
