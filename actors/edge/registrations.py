"""Registrations as lightweight actors: one :class:`RegistrationActor` per AOR.

Each actor owns its AOR's bindings and the timer of the next expiry, writes every change
through to the store (:mod:`actors.edge.persistence`) before the REGISTER is answered, and
publishes ``reg_success``. They run under :class:`RegistrationSupervisor`
(``simple_one_for_one``, transient children: an actor that crashes is restarted and reloads its
bindings from the store; one whose last binding expired exits normally and is forgotten).
The supervisor restores every AOR this node had in the store when it starts, so a killed and
restarted edge process keeps its phones registered.

Actors are found by name in the process registry: ``aor:<user@realm>``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import gevent

from actors.edge.bindings import (
    Binding,
    RegisterOutcome,
    aor_key,
    apply_register,
    binding_doc_id,
    nat_target,
)
from actors.edge.context import EdgeContext
from actors.edge.credentials import Credentials
from actors.edge.mwi import MwiCounts, owner_counts, send_notify, wants_unsolicited
from actors.edge.persistence import REGISTRATIONS_DB, WRITER_NAME, WriteBindings, load_node_bindings
from actors.kernel import (
    Actor,
    ActorDead,
    ActorRef,
    CallTimeout,
    ReceiveTimeout,
    current_call_id,
    on,
    register,
    registered,
    unregister,
    whereis,
)
from bus import BusError
from bus.api.registration import reg_success
from protocols.sip import Request, ServerTransaction, generate_tag, make_response
from store import StoreError
from supervisors.api import start_child
from supervisors.core import ChildSpec, SupervisorFlags
from supervisors.local import Supervisor, SupervisorError

__all__ = [
    "FlushRegistration",
    "ListBindings",
    "MwiUpdate",
    "RegistrationActor",
    "RegistrationSupervisor",
    "SaveRegistration",
    "aor_actor_name",
    "dispatch_registration",
    "binding_fields",
    "registration_actors",
    "save_registration",
]

log = logging.getLogger("mirliton.edge.registrations")

SUPERVISOR_NAME = "edge.registrations"
_PREFIX = "aor:"


def aor_actor_name(aor: str) -> str:
    return _PREFIX + aor


def registration_actors(realm: str | None = None) -> list[tuple[str, ActorRef]]:
    """(aor, actor) of every live registration in this process, of one realm if given."""
    found = []
    suffix = None if realm is None else "@" + realm.lower()
    for name, ref in registered():
        if name.startswith(_PREFIX) and ref.is_alive:
            aor = name[len(_PREFIX):]
            if suffix is None or aor.endswith(suffix):
                found.append((aor, ref))
    return found


@dataclass(frozen=True)
class SaveRegistration:
    """An authenticated REGISTER for this AOR (call): the actor answers the transaction."""

    request: Request
    transaction: ServerTransaction
    source: tuple[str, int]
    transport: str  # Via transport token: "UDP", "TCP"
    credentials: Credentials | None  # None: a trusted source, not authenticated


@dataclass(frozen=True)
class ListBindings:
    """Call: the live bindings, as reg_query_resp Fields."""


@dataclass(frozen=True)
class FlushRegistration:
    """Drop every binding (reg_flush: device deleted, password changed)."""


@dataclass(frozen=True)
class MwiUpdate:
    """Messages waiting for this AOR (an ``mwi_update``): NOTIFY every live binding."""

    counts: MwiCounts
    call_id: str | None = None  # the call that changed the box, for the logs


@dataclass(frozen=True)
class _ExpiryDue:
    pass


@dataclass(frozen=True)
class _StopIfEmpty:
    pass


def binding_fields(
    ctx: EdgeContext, aor: str, binding: Binding, meta: dict[str, Any], now: float
) -> dict[str, Any]:
    """A binding as Kazoo's registrar fields (reg_query_resp ``Fields``, mirliton registrations)."""
    username, _, realm = aor.partition("@")
    return {
        "AOR": aor,
        "Username": meta.get("username") or username,
        "Realm": meta.get("realm") or realm,
        "Contact": nat_target(binding),
        "Original-Contact": binding.contact,
        "Expires": binding.remaining(now),
        "Source-IP": binding.source_ip,
        "Source-Port": binding.source_port,
        "Transport": binding.transport,
        "User-Agent": binding.user_agent,
        "Call-ID": binding.call_id,
        "Event-Timestamp": binding.registered_at,
        "Proxy-Path": ctx.proxy_uri,
        "Node": ctx.node,
        "Custom-Channel-Vars": dict(meta.get("custom_channel_vars") or {}),
    }


class RegistrationActor(Actor):
    def __init__(self, ctx: EdgeContext, aor: str) -> None:
        self.ctx = ctx
        self.aor = aor
        self.doc_id = binding_doc_id(ctx.node, aor)
        self.bindings: dict[str, Binding] = {}
        self.meta: dict[str, Any] = {}
        self._timer: Any = None
        self._timer_due = 0.0
        self._published: dict[str, float] = {}  # binding uri -> when reg_success last went out

    def init(self) -> None:
        # A second actor for the same AOR fails here (ValueError): the caller finds the first.
        register(aor_actor_name(self.aor), self.ref)
        doc = self.ctx.restored.pop(self.aor, None)
        if doc is None:
            # A restart after a crash: the store has what this AOR held.
            try:
                doc = self.ctx.store.open_or_none(REGISTRATIONS_DB, self.doc_id)
            except StoreError as error:
                log.error("AOR %s: cannot read its bindings: %s", self.aor, error)
                doc = None
        now = time.time()
        if doc is not None:
            self.meta = {k: doc.get(k) for k in ("realm", "username", "custom_channel_vars")}
            for raw in doc.get("bindings", []):
                binding = Binding.from_doc(raw)
                if binding.expires_at > now:
                    self.bindings[binding.uri] = binding
        self.ctx.bindings_changed(len(self.bindings))
        self._arm_timer(now)

    def terminate(self, reason: Any) -> None:
        self.ctx.bindings_changed(-len(self.bindings))
        self.bindings = {}

    # -- requests ---------------------------------------------------------------------------

    @on(SaveRegistration)
    def on_save(self, save: SaveRegistration) -> str:
        request = save.request
        current_call_id.set(request.call_id)
        now = time.time()
        outcome = apply_register(
            self.bindings,
            request.contacts,
            request.expires,
            call_id=request.call_id,
            cseq=request.cseq.num,
            source=save.source,
            transport=save.transport,
            user_agent=request.headers.get("user-agent") or "",
            now=now,
            limits=self.ctx.limits,
        )
        if outcome.status != 200:
            response = make_response(request, outcome.status, outcome.reason, to_tag=generate_tag())
            if outcome.status == 423:
                response.headers.add("Min-Expires", str(self.ctx.limits.minimum))
            log.info("REGISTER %s from %s:%d: %d %s", self.aor, *save.source, outcome.status,
                     outcome.reason)
            self.ctx.respond_briefly(save.transaction, response)
            self._stop_if_empty()
            return "answered"
        before = len(self.bindings)
        self.bindings = {b.uri: b for b in outcome.bindings}
        if save.credentials is not None:
            self.meta = {
                "realm": save.credentials.realm,
                "username": save.credentials.username,
                "custom_channel_vars": dict(save.credentials.custom_channel_vars),
            }
        self.ctx.bindings_changed(len(self.bindings) - before)
        if request.contacts:
            # A new, removed or moved binding is written before the 200 (a restarted edge
            # must know every phone it accepted); a refresh of an unchanged binding only moves
            # its expiry and is written behind, in the writer's next batch.
            self._persist(wait=outcome.changed)
        response = make_response(request, 200, "OK", to_tag=generate_tag())
        for binding in self.bindings.values():
            response.headers.add("Contact", f"<{binding.uri}>;expires={binding.remaining(now)}")
        self.ctx.respond_briefly(save.transaction, response)
        if outcome.removed:
            for binding in outcome.removed:
                self._published.pop(binding.uri, None)
        if outcome.removed or outcome.added:
            log.info("REGISTER %s from %s:%d: %d binding(s) (+%d -%d)", self.aor, *save.source,
                     len(self.bindings), len(outcome.added), len(outcome.removed))
        self._publish_success(save, outcome, now)
        if outcome.added and save.credentials is not None and save.credentials.owner_id:
            # A phone's first registration learns the counts at once; the store reads run
            # in a greenlet of their own, the actor goes on with the next REGISTER.
            gevent.spawn(self._initial_mwi, outcome.added, save.credentials, request.call_id)
        self._arm_timer(now)
        self._stop_if_empty()
        return "answered"

    @on(ListBindings)
    def on_list(self, _: ListBindings) -> list[dict[str, Any]]:
        now = time.time()
        return [
            binding_fields(self.ctx, self.aor, b, self.meta, now)
            for b in self.bindings.values()
            if b.expires_at > now
        ]

    @on(FlushRegistration)
    def on_flush(self, _: FlushRegistration) -> str:
        log.info("AOR %s flushed (%d binding(s))", self.aor, len(self.bindings))
        self.ctx.bindings_changed(-len(self.bindings))
        self.bindings = {}
        self._persist()
        self._stop_if_empty()
        return "flushed"

    @on(MwiUpdate)
    def on_mwi(self, update: MwiUpdate) -> None:
        current_call_id.set(update.call_id)
        now = time.time()
        for binding in self.bindings.values():
            if binding.expires_at > now:
                send_notify(self.ctx, self.aor, binding, update.counts, self.meta.get("realm"))

    def _initial_mwi(self, added: tuple[Binding, ...], credentials: Credentials,
                     call_id: str) -> None:
        current_call_id.set(call_id)  # a new greenlet starts with a context of its own
        try:
            if not wants_unsolicited(self.ctx, credentials.account_id, credentials.device_id):
                return
            counts = owner_counts(self.ctx, credentials.account_id, credentials.owner_id)
            if counts is None:
                return
            for binding in added:
                current = self.bindings.get(binding.uri)  # still there (maybe refreshed)
                if current is not None:
                    send_notify(self.ctx, self.aor, current, counts, credentials.realm)
        except Exception:  # noqa: BLE001 - a lamp must never cost a registration
            log.exception("AOR %s: initial MWI failed", self.aor)

    @on(_ExpiryDue)
    def on_expiry(self, _: _ExpiryDue) -> None:
        self._timer = None
        self._timer_due = 0.0
        now = time.time()
        expired = [uri for uri, b in self.bindings.items() if b.expires_at <= now]
        for uri in expired:
            current_call_id.set(self.bindings[uri].call_id)  # the REGISTER that made it
            log.info("AOR %s: binding %s expired", self.aor, uri)
            del self.bindings[uri]
        if expired:
            self.ctx.bindings_changed(-len(expired))
            self._persist()
        self._arm_timer(now)
        self._stop_if_empty()

    # -- internals ---------------------------------------------------------------------------

    def _arm_timer(self, now: float) -> None:
        if not self.bindings:
            return
        due = min(b.expires_at for b in self.bindings.values())
        if self._timer is not None:
            if self._timer_due <= due:
                return  # fires first and re-arms for what is then due (refreshes only delay)
            self.cancel_timer(self._timer)
        self._timer_due = due
        self._timer = self.send_after(max(0.0, due - now) + 0.01, _ExpiryDue())

    def _stop_if_empty(self) -> None:
        # Decided after the current call has had its reply (a stop inside a call handler
        # would leave the caller with ActorDead and the REGISTER handled twice).
        if not self.bindings:
            self.ref.send(_StopIfEmpty())

    @on(_StopIfEmpty)
    def on_stop_if_empty(self, _: _StopIfEmpty) -> None:
        # REGISTERs already queued here are handled first: they may add a binding, and a
        # REGISTER sent (not called) to an actor that then exits would be lost.
        while not self.bindings:
            try:
                pending = self.receive(SaveRegistration, timeout=0)
            except ReceiveTimeout:
                break
            self.on_save(pending)
        if not self.bindings:
            # Unregister first: a REGISTER arriving from now on starts a fresh actor, and
            # one already queued here fails its call with ActorDead and is retried there.
            unregister(aor_actor_name(self.aor))
            self.stop()

    def _persist(self, wait: bool = True) -> None:
        username, _, realm = self.aor.partition("@")
        doc: dict[str, Any] | None = None
        if self.bindings:
            doc = {
                "pvt_type": "registration",
                "node": self.ctx.node,
                "aor": self.aor,
                "realm": self.meta.get("realm") or realm,
                "username": self.meta.get("username") or username,
                "custom_channel_vars": self.meta.get("custom_channel_vars") or {},
                "bindings": [b.to_doc() for b in self.bindings.values()],
            }
        write = WriteBindings(self.doc_id, doc, urgent=wait)
        writer = whereis(WRITER_NAME)
        if writer is None:
            log.error("AOR %s: no binding writer, change not persisted", self.aor)
            return
        writer.send(write)
        if not wait:
            return
        try:
            write.done.get(timeout=10.0)
        except Exception as error:  # noqa: BLE001 - availability first: the phone stays registered
            log.error("AOR %s: bindings not persisted: %s", self.aor, error)

    def _publish_success(self, save: SaveRegistration, outcome: RegisterOutcome, now: float) -> None:
        request = save.request
        username, _, realm = self.aor.partition("@")
        for contact in request.contacts:
            if contact.is_star:
                continue
            binding = self.bindings.get(str(contact.uri))  # type: ignore[union-attr]
            if binding is None:
                continue  # an unregistration
            last = self._published.get(binding.uri)
            if not outcome.changed and last is not None and now - last < binding.remaining(now) / 2:
                # A refresh of an unchanged binding soon after the last announcement: those
                # who cache registrations (Kazoo's ecallmgr) need one every half expiry at
                # most, and a phone refreshing every few seconds must not flood the bus.
                continue
            self._published[binding.uri] = now
            ccvs = dict(self.meta.get("custom_channel_vars") or {})
            try:
                self.ctx.bus.publish(reg_success.build({
                    "Contact": nat_target(binding),
                    "Original-Contact": binding.contact,
                    "Event-Timestamp": now,
                    "Expires": binding.remaining(now),
                    "Realm": self.meta.get("realm") or realm,
                    "Username": self.meta.get("username") or username,
                    "Call-ID": request.call_id,
                    "First-Registration": outcome.first_registration,
                    "User-Agent": binding.user_agent or None,
                    "Source-IP": binding.source_ip,
                    "Source-Port": binding.source_port,
                    "Proxy-Path": self.ctx.proxy_uri or None,
                    "Proxy-Protocol": binding.transport.lower(),
                    "Custom-Channel-Vars": ccvs or None,
                }), validate=False)  # built (and validated) just above
            except BusError as error:
                log.warning("reg_success for %s not published: %s", self.aor, error)


class RegistrationSupervisor(Supervisor):
    """simple_one_for_one over RegistrationActor; restores this node's AORs when it starts."""

    def __init__(self, ctx: EdgeContext) -> None:
        super().__init__(
            [ChildSpec("registration", lambda aor: RegistrationActor(ctx, aor), restart="transient",
                       shutdown=5.0)],
            SupervisorFlags("simple_one_for_one", intensity=100, period=10.0),
            name="registrations",
        )
        self.ctx = ctx

    def init(self) -> None:
        super().init()
        register(SUPERVISOR_NAME, self.ref)
        now = time.time()
        try:
            docs = load_node_bindings(self.ctx.store, self.ctx.node)
        except StoreError as error:
            log.error("cannot restore registrations: %s", error)
            docs = []
        restored = 0
        for doc in docs:
            if not any(b.get("expires_at", 0) > now for b in doc.get("bindings", [])):
                continue
            aor = str(doc["aor"])
            self.ctx.restored[aor] = doc
            try:
                self._op_start_child((aor,))
                restored += 1
            except Exception as error:  # noqa: BLE001 - one bad document must not stop the rest
                log.error("cannot restore AOR %s: %s", aor, error)
        if docs:
            log.info("restored %d registration(s) of %d stored", restored, len(docs))
        self._changed()


def dispatch_registration(ctx: EdgeContext, save: SaveRegistration, aor: str) -> None:
    """Hand an authenticated REGISTER to its AOR's actor, which answers it. Never blocks: an
    AOR without an actor gets one started from a greenlet of its own."""
    ref = whereis(aor_actor_name(aor))
    if ref is not None:
        ref.send(save)
        return
    gevent.spawn(save_registration, ctx, save, aor)


def save_registration(ctx: EdgeContext, save: SaveRegistration, aor: str) -> None:
    """Hand an authenticated REGISTER to its AOR's actor, starting one if needed (from a
    request greenlet: this waits for the actor)."""
    for _ in range(5):
        ref = whereis(aor_actor_name(aor))
        if ref is None:
            sup = whereis(SUPERVISOR_NAME)
            if sup is None:
                break
            try:
                ref = start_child(sup, (aor,))
            except SupervisorError:
                continue  # started by a concurrent REGISTER: found by name on the next turn
        try:
            ref.call(save, timeout=15.0)
            return
        except ActorDead:
            continue  # it was exiting (its last binding went): the next turn starts a new one
        except CallTimeout:
            log.error("AOR %s: registration actor did not answer", aor)
            return
    log.error("AOR %s: no registration actor could take the REGISTER", aor)
    ctx.abandon(save.transaction)


__all__ += ["aor_key"]
