"""Registrations (kapi_registration) on the ``registrar`` exchange."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.messages import MessageType, declare
from bus.routing import encode_key_word

__all__ = ["reg_flush", "reg_query", "reg_query_resp", "reg_success"]


def _realm_user(prefix: str) -> Any:
    def key(msg: Mapping[str, Any]) -> str:
        # No Username asks about the whole realm; "*" is a literal word here, which matches
        # consumers bound with "registration.query.<realm>.*".
        user = msg.get("Username") or "*"
        user_word = user if user == "*" else encode_key_word(user)
        return f"{prefix}.{encode_key_word(msg['Realm'])}.{user_word}"

    return key


reg_success = declare(
    MessageType(
        name="reg_success",
        category="directory",
        event="reg_success",
        exchange="registrar",
        routing_key=_realm_user("registration.success"),
        required=("Contact", "Event-Timestamp", "Expires", "Realm", "Username"),
        optional=(
            "Call-ID",
            "First-Registration",
            "User-Agent",
            "Original-Contact",
            "Proxy-Path",
            "Proxy-IP",
            "Proxy-Port",
            "Proxy-Protocol",
            "Source-IP",
            "Source-Port",
            "Custom-Channel-Vars",
        ),
        types={
            "Event-Timestamp": (int, float),
            "Expires": int,
            "First-Registration": bool,
            "Proxy-Port": int,
            "Source-Port": int,
            "Custom-Channel-Vars": dict,
        },
    )
)

reg_query = declare(
    MessageType(
        name="reg_query",
        category="directory",
        event="reg_query",
        exchange="registrar",
        routing_key=_realm_user("registration.query"),
        required=("Realm",),
        optional=("Username", "Fields", "Count-Only"),
        types={"Fields": list, "Count-Only": bool},
    )
)

reg_query_resp = declare(
    MessageType(
        name="reg_query_resp",
        category="directory",
        event="reg_query_resp",
        exchange="targeted",
        optional=("Fields", "Count", "Registrar-Age"),
        types={"Fields": list, "Count": int, "Registrar-Age": int},
    )
)

reg_flush = declare(
    MessageType(
        name="reg_flush",
        category="directory",
        event="reg_flush",
        exchange="registrar",
        routing_key=lambda msg: f"registration.flush.{encode_key_word(msg['Realm'])}",
        required=("Realm",),
        optional=("Username",),
    )
)
