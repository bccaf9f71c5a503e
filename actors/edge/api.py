"""Bus messages the edge adds to Kazoo's: a live listing of every registration it holds.

Kazoo has no "list all registrations" message (``reg_query`` is per realm); ``mirliton
registrations`` needs one, so it is declared here, next to its only producer and consumer.
"""

from __future__ import annotations

from bus.messages import MessageType, declare

__all__ = ["LIST_ROUTING_KEY", "registrations_req", "registrations_resp"]

LIST_ROUTING_KEY = "registration.list"

registrations_req = declare(
    MessageType(
        name="registrations_req",
        category="directory",
        event="registrations_req",
        exchange="registrar",
        routing_key=lambda msg: LIST_ROUTING_KEY,
        optional=("Realm",),
        description="Every binding held by the edges that hear it (mirliton registrations).",
    )
)

registrations_resp = declare(
    MessageType(
        name="registrations_resp",
        category="directory",
        event="registrations_resp",
        exchange="targeted",
        required=("Registrations",),
        types={"Registrations": list},
    )
)
