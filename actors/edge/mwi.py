"""Message-waiting indication at the edge (Kazoo's omnipresence + Kamailio presence, RFC 3842).

- ``mwi_update`` (bus/api/presence.py) for an AOR this edge holds bindings of becomes an
  unsolicited NOTIFY ``Event: message-summary`` to each registered contact of the AOR (Kazoo
  sends unsolicited MWI NOTIFYs to registered devices too; most phones take them). It is a new
  out-of-dialog request of the edge, sent where a proxied INVITE to that phone goes: the
  address the REGISTER came from (its NAT address) over the same transport (on TCP, the
  phone's own connection).
- A new binding gets the current counts at once (the lamp is right from the first
  registration): the boxes of the device's owner, read from the store.
- A SUBSCRIBE to ``message-summary`` is answered 200 and followed by one NOTIFY with the
  current counts. The edge keeps no subscription state: later changes reach the phone as
  unsolicited NOTIFYs to its registered contacts, and a refresh (an in-dialog SUBSCRIBE) is
  recognised by its To-tag, an HMAC of the dialog the edge made, so nothing else can read a
  box's counts without authenticating.

Everything here runs in the edge process; sending goes through the SIP actor's
:class:`~protocols.sip.transport.TransactionRunner` (``ctx.runner``), whose NOTIFY client
transactions end on their own (answers are logged by the SIP actor).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import gevent

from actors.callflow.lookup import ensure_type_index
from actors.edge.bindings import Binding, aor_key
from actors.edge.context import EdgeContext
from actors.edge.credentials import Credentials
from actors.edge.metrics import MWI_NOTIFIES
from actors.kernel import current_call_id
from protocols.sip import (
    ClientTransaction,
    Request,
    RequestReceived,
    ResponseReceived,
    TransactionTimeout,
    generate_call_id,
    generate_tag,
    make_response,
    new_via,
)
from protocols.sip.transaction import Address
from store import StoreError
from store.kazoo import account_db_name, is_soft_deleted
from store.voicemail import count_messages

__all__ = [
    "CONTENT_TYPE",
    "EVENT",
    "MwiCounts",
    "MwiSubscriptions",
    "build_notify",
    "counts_from_update",
    "dialog_tag",
    "is_mwi_subscribe",
    "local_address",
    "mailbox_counts",
    "on_client_event",
    "owner_counts",
    "send_notify",
    "summary_body",
    "wants_unsolicited",
]

log = logging.getLogger("mirliton.edge.mwi")

EVENT = "message-summary"
CONTENT_TYPE = "application/simple-message-summary"


@dataclass(frozen=True, slots=True)
class MwiCounts:
    new: int
    saved: int
    urgent: int = 0
    urgent_saved: int = 0


def summary_body(user: str, realm: str, counts: MwiCounts) -> bytes:
    """The RFC 3842 body: ``Voice-Message: new/saved (urgent_new/urgent_saved)``."""
    waiting = "yes" if counts.new > 0 else "no"
    return (
        f"Messages-Waiting: {waiting}\r\n"
        f"Message-Account: sip:{user}@{realm}\r\n"
        f"Voice-Message: {counts.new}/{counts.saved} "
        f"({counts.urgent}/{counts.urgent_saved})\r\n"
    ).encode()


def local_address(ctx: EdgeContext, transport: str) -> tuple[str, Address] | None:
    """(listener key, address to put in Via/Contact) of the edge's listener of ``transport``."""
    for key, (host, port) in ctx.sip_listeners:
        if key.partition(":")[0] == transport.upper():
            return key, (("127.0.0.1" if host in ("0.0.0.0", "::") else host), port)
    return None


def build_notify(
    *,
    request_uri: str,
    from_uri: str,
    from_tag: str,
    to: str,
    call_id: str,
    cseq: int,
    local: Address,
    transport: str,
    body: bytes,
    state: str = "active",
    routes: Iterable[str] = (),
) -> Request:
    host, port = local
    via = new_via(transport, host, port)
    request = Request("NOTIFY", request_uri, [
        ("Via", str(via)),
        ("Max-Forwards", "70"),
        ("From", f"<{from_uri}>;tag={from_tag}"),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} NOTIFY"),
        ("Contact", f"<sip:{host}:{port}{';transport=tcp' if transport == 'TCP' else ''}>"),
        ("Event", EVENT),
        ("Subscription-State", state),
        ("Content-Type", CONTENT_TYPE),
    ], body)
    for route in routes:
        request.headers.add("Route", route)
    return request


def send_notify(ctx: EdgeContext, aor: str, binding: Binding, counts: MwiCounts,
                realm: str | None = None) -> bool:
    """An unsolicited NOTIFY to one registered contact; False when it could not be sent."""
    runner = ctx.runner
    listener = local_address(ctx, binding.transport)
    if runner is None or listener is None:
        log.warning("MWI for %s: no %s listener to send from", aor, binding.transport)
        return False
    key, local = listener
    user, _, aor_realm = aor.partition("@")
    realm = realm or aor_realm
    uri = f"sip:{user}@{realm}"
    # The Request-URI is the contact as the phone registered it (what it recognises as its
    # own); the datagram goes where the REGISTER came from, as for a proxied INVITE.
    request = build_notify(
        request_uri=binding.uri, from_uri=uri, from_tag=generate_tag(), to=f"<{uri}>",
        call_id=generate_call_id(local[0]), cseq=1, local=local,
        transport=key.partition(":")[0], body=summary_body(user, realm, counts),
    )
    destination = (binding.source_ip, binding.source_port)
    try:
        runner.send_request(request, destination, key)
    except (OSError, ValueError, KeyError) as error:
        log.warning("MWI NOTIFY for %s to %s:%d not sent: %s", aor, *destination, error)
        return False
    MWI_NOTIFIES.labels(kind="unsolicited").inc()
    log.info("MWI NOTIFY %s %d/%d to %s:%d (%s)", aor, counts.new, counts.saved, *destination,
             binding.transport)
    return True


def wants_unsolicited(ctx: EdgeContext, account_id: str | None, device_id: str | None) -> bool:
    """False for a device with Kazoo's ``mwi_unsolicited_updates: false`` (its lamp is driven
    by its own SUBSCRIBE, or not at all)."""
    if not account_id or not device_id:
        return True
    try:
        device = ctx.store.open_or_none(account_db_name(account_id), device_id)
    except StoreError as error:
        log.warning("MWI: cannot read device %s: %s", device_id, error)
        return True
    return device is None or device.get("mwi_unsolicited_updates") is not False


def owner_counts(ctx: EdgeContext, account_id: str | None, owner_id: str | None,
                 ) -> MwiCounts | None:
    """The counts of every box the device's owner has (None: no owner, or no box)."""
    if not account_id or not owner_id:
        return None
    store = ctx.store
    db = account_db_name(account_id)
    try:
        ensure_type_index(store, db)
        boxes = [b for b in store.find_all(db, {"pvt_type": "vmbox", "owner_id": owner_id})
                 if not is_soft_deleted(b)]
        if not boxes:
            return None
        new = saved = 0
        for box in boxes:
            box_new, box_saved = count_messages(store, account_id, str(box["_id"]))
            new += box_new
            saved += box_saved
    except StoreError as error:
        log.warning("MWI: cannot count the messages of owner %s: %s", owner_id, error)
        return None
    return MwiCounts(new, saved)


def dialog_tag(secret: bytes, call_id: str, from_tag: str, aor: str) -> str:
    """The edge's To-tag for a SUBSCRIBE dialog: an HMAC of the dialog, so a refresh is
    recognised (and trusted) without any state kept."""
    mac = hmac.new(secret, f"{call_id}|{from_tag}|{aor}".encode(), hashlib.sha256)
    return "mwi" + mac.hexdigest()[:20]


def counts_from_update(msg: dict[str, Any]) -> MwiCounts:
    return MwiCounts(int(msg["Messages-New"]), int(msg["Messages-Saved"]),
                     int(msg.get("Messages-Urgent") or 0),
                     int(msg.get("Messages-Urgent-Saved") or 0))



# -- SUBSCRIBE message-summary ------------------------------------------------------------------

MAX_SUBSCRIPTION = 3600  # s granted at most (Kamailio's presence max_expires)
DEFAULT_SUBSCRIPTION = 3600  # s when the SUBSCRIBE names none (RFC 3842 leaves it to us)
# NOTIFY CSeqs of the edge's stateless dialogs: tenths of a second since this epoch (June
# 2025; below 2^31 until 2031), so each NOTIFY of a dialog - from this edge, a restarted one
# or another one - has a higher CSeq than the last without a counter per dialog; within this
# process they also always grow (a clock stepped back, two NOTIFYs in a tenth of a second).
_CSEQ_EPOCH = 1_750_000_000
_last_cseq = 0


def is_mwi_subscribe(request: Request) -> bool:
    event = (request.headers.get("event") or "").partition(";")[0].strip().lower()
    return request.method == "SUBSCRIBE" and event == EVENT


def _notify_cseq() -> int:
    global _last_cseq
    _last_cseq = max(_last_cseq + 1, int((time.time() - _CSEQ_EPOCH) * 10)) % 2**31
    return _last_cseq


class MwiSubscriptions:
    """Answers SUBSCRIBEs to ``message-summary`` (already authenticated by the SIP actor):
    200, then one NOTIFY in the new dialog with the current counts."""

    def __init__(self, ctx: EdgeContext, secret: bytes) -> None:
        self.ctx = ctx
        # A key of its own: the nonce secret is not used as is for another purpose.
        self.secret = hashlib.sha256(b"mirliton-mwi-dialog\0" + secret).digest()

    def subscribe(self, event: RequestReceived, credentials: Credentials | None) -> None:
        request = event.request
        current_call_id.set(request.call_id)
        to_uri = request.to.uri
        aor = aor_key(to_uri.user, to_uri.host)
        from_tag = request.from_.tag or ""
        tag = dialog_tag(self.secret, request.call_id, from_tag, aor)
        if request.to.tag is not None and request.to.tag != tag:
            self._answer(event, 481)  # not a dialog of ours (or of another edge's secret)
            return
        if credentials is not None and (to_uri.host or "").lower() != credentials.realm.lower():
            self._answer(event, 403, "Forbidden - Another Realm")
            return
        contact = request.contact
        if contact is None or not from_tag:
            self._answer(event, 400, "Bad Request - No Contact or From Tag")
            return
        expires = request.expires
        expires = DEFAULT_SUBSCRIPTION if expires is None else min(expires, MAX_SUBSCRIPTION)
        listener = local_address(self.ctx, event.transport.partition(":")[0])
        if listener is None:
            self._answer(event, 500)
            return
        key, local = listener
        response = make_response(request, 200, "OK", to_tag=tag)
        response.headers.add("Expires", str(expires))
        suffix = ";transport=tcp" if key.startswith("TCP") else ""
        response.headers.add("Contact", f"<sip:{local[0]}:{local[1]}{suffix}>")
        self.ctx.respond(event.transaction, response)
        log.info("SUBSCRIBE %s from %s:%d: %s for %d s", EVENT, *event.source, aor, expires)
        # The counts come from the store: read in a greenlet of their own, never in the
        # listener's.
        gevent.spawn(self._notify, event, credentials, tag, expires, key, local)

    def _answer(self, event: RequestReceived, status: int, reason: str | None = None) -> None:
        self.ctx.respond(event.transaction,
                         make_response(event.request, status, reason, to_tag=generate_tag()))

    def _counts(self, request: Request, credentials: Credentials | None) -> MwiCounts:
        if credentials is None:
            return MwiCounts(0, 0)  # a trusted source: no account to look in
        user = request.to.uri.user or ""
        if user.lower() == credentials.username.lower():
            counts = owner_counts(self.ctx, credentials.account_id, credentials.owner_id)
            if counts is not None:
                return counts
        # Another user of the account, or a device without an owner's box: a box whose
        # mailbox number is the user (a shared box watched by a key of a phone).
        return mailbox_counts(self.ctx, credentials.account_id, user) or MwiCounts(0, 0)

    def _notify(self, event: RequestReceived, credentials: Credentials | None, tag: str,
                expires: int, key: str, local: Address) -> None:
        request = event.request
        current_call_id.set(request.call_id)
        runner = self.ctx.runner
        contact = request.contact
        if runner is None or contact is None:
            return
        try:
            counts = self._counts(request, credentials)
        except Exception:  # noqa: BLE001 - the phone still gets a NOTIFY, with nothing waiting
            log.exception("SUBSCRIBE %s: counting the messages failed", EVENT)
            counts = MwiCounts(0, 0)
        to_uri = request.to.uri
        user, realm = to_uri.user or "", to_uri.host or ""
        state = f"active;expires={expires}" if expires else "terminated;reason=timeout"
        notify = build_notify(
            request_uri=str(contact.uri),
            from_uri=str(to_uri), from_tag=tag, to=str(request.from_),
            call_id=request.call_id, cseq=_notify_cseq(), local=local,
            transport=key.partition(":")[0], body=summary_body(user, realm, counts),
            state=state,
            # The SUBSCRIBE's Record-Route is the dialog's route set (none through this edge:
            # the NOTIFY goes straight back where the SUBSCRIBE came from).
            routes=[str(r) for r in request.record_routes],
        )
        try:
            runner.send_request(notify, event.source, key)
        except (OSError, ValueError, KeyError) as error:
            log.warning("MWI NOTIFY to %s:%d not sent: %s", *event.source, error)
            return
        MWI_NOTIFIES.labels(kind="dialog").inc()
        log.info("MWI NOTIFY %s@%s %d/%d in dialog to %s:%d", user, realm, counts.new,
                 counts.saved, *event.source)


def mailbox_counts(ctx: EdgeContext, account_id: str | None, mailbox: str) -> MwiCounts | None:
    """The counts of the account's box numbered ``mailbox`` (None: no such box)."""
    if not account_id or not mailbox:
        return None
    store = ctx.store
    db = account_db_name(account_id)
    try:
        ensure_type_index(store, db)
        for box in store.find_all(db, {"pvt_type": "vmbox", "mailbox": mailbox}):
            if not is_soft_deleted(box):
                new, saved = count_messages(store, account_id, str(box["_id"]))
                return MwiCounts(new, saved)
    except StoreError as error:
        log.warning("MWI: cannot count the messages of box %s: %s", mailbox, error)
    return None


def on_client_event(event: Any) -> None:
    """What became of a NOTIFY the edge sent (its answer or its silence), for the logs."""
    if isinstance(event, ResponseReceived):
        response = event.response
        if response.status < 200 or response.method != "NOTIFY":
            return
        current_call_id.set(response.call_id)
        if response.status >= 300:
            log.info("MWI NOTIFY answered %d %s", response.status, response.reason)
    elif isinstance(event, TransactionTimeout) and isinstance(event.transaction, ClientTransaction):
        request = event.transaction.request
        if request.method == "NOTIFY":
            current_call_id.set(request.call_id)
            log.info("MWI NOTIFY to %s:%d: no answer", *event.transaction.peer)

