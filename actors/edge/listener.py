"""The edge on the bus: answers ``reg_query`` and the registrations listing, handles
``reg_flush``, forgets cached credentials when device or account documents change, and hands
``mwi_update`` to the AOR's registration actor (which NOTIFYs its phones, actors/edge/mwi.py).

Every edge hears every ``mwi_update`` (``mwi_updates.*.*``, as each Kamailio's presence
module does): only the edge holding the AOR's bindings has anything to send, the others
find no actor and drop it."""

from __future__ import annotations

import logging
from typing import Any

from actors.edge.api import LIST_ROUTING_KEY, registrations_resp
from actors.edge.context import EdgeContext
from actors.edge.mwi import counts_from_update
from actors.edge.registrations import (
    FlushRegistration,
    ListBindings,
    MwiUpdate,
    aor_actor_name,
    registration_actors,
)
from actors.kernel import ActorDead, ActorRef, CallTimeout, current_call_id, whereis
from bus import Binding, Delivery, Message
from bus.api.presence import split_to
from bus.api.registration import reg_query_resp
from bus.listener import ListenerActor

__all__ = ["EdgeBusListener"]

log = logging.getLogger("mirliton.edge.bus")


def _bindings_of(ref: ActorRef) -> list[dict[str, Any]]:
    try:
        fields: list[dict[str, Any]] = ref.call(ListBindings(), timeout=5.0)
        return fields
    except (ActorDead, CallTimeout):
        return []


class EdgeBusListener(ListenerActor):
    bindings = (
        Binding("registrar", "registration.query.#"),
        Binding("registrar", "registration.flush.#"),
        Binding("registrar", LIST_ROUTING_KEY),
        Binding("configuration", "*.*.device.*"),
        Binding("configuration", "*.*.account.*"),
        Binding("presence", "mwi_updates.*.*"),
    )
    responders = {
        ("directory", "reg_query"): "on_reg_query",
        ("directory", "reg_flush"): "on_reg_flush",
        ("directory", "registrations_req"): "on_list",
        ("configuration", "*"): "on_doc_change",
        ("presence", "mwi_update"): "on_mwi_update",
    }

    def __init__(self, ctx: EdgeContext) -> None:
        super().__init__(ctx.bus)
        self.ctx = ctx

    def _targets(self, realm: str, username: str | None) -> list[tuple[str, ActorRef]]:
        if username:
            aor = f"{username.lower()}@{realm.lower()}"
            ref = whereis(aor_actor_name(aor))
            return [] if ref is None else [(aor, ref)]
        return registration_actors(realm)

    def on_reg_query(self, msg: Message, delivery: Delivery) -> None:
        fields: list[dict[str, Any]] = []
        for _, ref in self._targets(str(msg["Realm"]), msg.get("Username")):
            fields.extend(_bindings_of(ref))
        # Answered even when empty: "no registrations" must not look like "no registrar"
        # (crossbar collects the answers of every edge).
        wanted = msg.get("Fields")
        if wanted:
            fields = [{k: v for k, v in f.items() if k in wanted} for f in fields]
        if msg.get("Count-Only"):
            self.reply(msg, reg_query_resp.build(count=len(fields)))
        else:
            self.reply(msg, reg_query_resp.build(fields=fields, count=len(fields)))

    def on_reg_flush(self, msg: Message, delivery: Delivery) -> None:
        realm = str(msg["Realm"])
        username = msg.get("Username")
        self.ctx.credentials.forget_user(realm, username)
        if username:
            self.ctx.lockout.clear_user(str(username).lower())
        for aor, ref in self._targets(realm, username):
            log.info("reg_flush: %s", aor)
            try:
                ref.call(FlushRegistration(), timeout=10.0)
            except (ActorDead, CallTimeout):
                pass

    def on_list(self, msg: Message, delivery: Delivery) -> None:
        realm = msg.get("Realm")
        rows: list[dict[str, Any]] = []
        for _, ref in registration_actors(realm):
            rows.extend(_bindings_of(ref))
        self.reply(msg, registrations_resp.build(registrations=rows))

    def on_mwi_update(self, msg: Message, delivery: Delivery) -> None:
        current_call_id.set(msg.get("Call-ID"))  # the voicemail call that changed the box
        user, realm = split_to(str(msg["To"]))
        aor = f"{user.lower()}@{realm.lower()}"
        ref = whereis(aor_actor_name(aor))
        if ref is None:
            log.debug("mwi_update for %s: not registered here", aor)
            return
        # Sent, not called: the actor sends the NOTIFYs while this listener goes on.
        ref.send(MwiUpdate(counts_from_update(msg), msg.get("Call-ID")))

    def on_doc_change(self, msg: Message, delivery: Delivery) -> None:
        doc_type = msg.get("Type")
        doc_id = str(msg.get("ID", ""))
        cache = self.ctx.credentials
        if doc_type == "device":
            dropped = cache.forget_device(doc_id)
            if msg.get("Event-Name") == "doc_created":
                dropped += cache.forget_unknown()
        elif doc_type == "account":
            dropped = cache.forget_account(doc_id)
        else:
            return
        if dropped:
            log.info("%s of %s %s: %d cached credential(s) dropped", msg.get("Event-Name"),
                     doc_type, doc_id, dropped)
