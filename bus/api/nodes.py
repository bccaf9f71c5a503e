"""Node heartbeats (kz_nodes ``advertise``) on the ``nodes`` fanout exchange."""

from __future__ import annotations

from bus.messages import MessageType, declare

__all__ = ["advertise"]

advertise = declare(
    MessageType(
        name="advertise",
        category="nodes",
        event="advertise",
        exchange="nodes",
        routing_key=lambda msg: "nodes.advertise",
        required=("Node", "Expires"),
        optional=(
            "Version",
            "Roles",
            "Zone",
            "Started",
            "Processes",
            "Used-Memory",
            "Load-Average",
            "Broker",
            "Registrations",
            "Channels",
        ),
        types={
            "Expires": int,
            "Version": str,
            "Roles": list,
            "Zone": str,
            "Started": (int, float),
            "Processes": int,
            "Used-Memory": int,
            "Load-Average": list,
            "Registrations": int,
            "Channels": int,
        },
        description="I am alive: who I am, what I run and how loaded I am; Expires in ms.",
    )
)
