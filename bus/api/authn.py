"""Authentication (kapi_authn): authn_req on callmgr ``authn.req.<realm>``, replies targeted."""

from __future__ import annotations

from bus.messages import MessageType, declare
from bus.routing import encode_key_word

__all__ = ["authn_err", "authn_req", "authn_resp"]

authn_req = declare(
    MessageType(
        name="authn_req",
        category="directory",
        event="authn_req",
        exchange="callmgr",
        routing_key=lambda msg: f"authn.req.{encode_key_word(msg['Auth-Realm'])}",
        required=("Method", "Auth-Realm", "Auth-User", "From", "To"),
        optional=(
            "Orig-IP",
            "Orig-Port",
            "Call-ID",
            "Auth-Nonce",
            "Auth-Response",
            "User-Agent",
            "Contact",
            "Expires",
            "Request",
        ),
        types={"Orig-Port": int, "Expires": int},
        description="Credentials for a SIP user (REGISTER/INVITE digest).",
    )
)

authn_resp = declare(
    MessageType(
        name="authn_resp",
        category="directory",
        event="authn_resp",
        exchange="targeted",
        required=("Auth-Method", "Auth-Password"),
        optional=(
            "Auth-Username",
            "Auth-Nonce",
            "Custom-Channel-Vars",
            "Expires",
            "Register-Overwrite-Notify",
            "Suppress-Unregister-Notifications",
        ),
        values={"Auth-Method": ("password", "ip", "a1-hash", "nonce", "gsm", "a3a8", "error")},
        types={
            "Custom-Channel-Vars": dict,
            "Expires": int,
            "Register-Overwrite-Notify": bool,
            "Suppress-Unregister-Notifications": bool,
        },
    )
)

authn_err = declare(
    MessageType(
        name="authn_err",
        category="directory",
        event="authn_err",
        exchange="targeted",
        optional=("Error-Message",),
        description="The user is unknown or disabled: the challenge must fail.",
    )
)
