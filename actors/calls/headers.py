"""The headers the edge adds to the INVITEs it relays to a calls shard (Kazoo's Kamailio puts
``X-AUTH-*`` headers that FreeSWITCH turns into Custom-Channel-Vars).

``X-Mirliton-CCV-<Name>: <value>`` carries one Custom-Channel-Var of the authorizing device
(Account-ID, Authorizing-ID, Authorizing-Type, Owner-ID, Username, Realm) and
``X-Mirliton-Orig-IP`` / ``-Orig-Port`` where the call came from. The edge strips any such
header a phone sent before adding its own, so they cannot be forged from outside; the shard
strips them again before anything leaves it.
"""

from __future__ import annotations

from protocols.sip import Request

__all__ = ["CCV_PREFIX", "ORIG_IP", "ORIG_PORT", "read_ccvs", "strip_internal_headers"]

CCV_PREFIX = "X-Mirliton-CCV-"
ORIG_IP = "X-Mirliton-Orig-IP"
ORIG_PORT = "X-Mirliton-Orig-Port"
_PREFIX_KEY = "x-mirliton-"


def read_ccvs(request: Request) -> dict[str, str]:
    ccvs: dict[str, str] = {}
    prefix = CCV_PREFIX.lower()
    for name, value in request.headers:
        if name.lower().startswith(prefix):
            ccvs[name[len(prefix):]] = value.strip()
    return ccvs


def strip_internal_headers(request: Request) -> None:
    names = {name for name, _ in request.headers if name.lower().startswith(_PREFIX_KEY)}
    for name in names:
        request.headers.remove(name)
