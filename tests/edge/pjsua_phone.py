"""A real SIP phone for the edge tests: pjsua2 (PyPI ``pjsua2-python``), run as its own
process so that a pjsip crash can never take pytest down.

    python tests/edge/pjsua_phone.py --registrar 127.0.0.1:5060 --realm a.test \\
        --user 1000 --password secret [--transport tcp] [--hold 30] [--keep]

Headless and single-threaded (null audio device, ``threadCnt = 0``, ``mainThreadOnly``,
events pumped with ``libHandleEvents``). Prints one JSON object per line on stdout (other lines are pjsip's):
``{"event": "registration", "code": 200, "expires": 600, ...}`` for every registration state
change, then ``{"event": "done"}``. Exits after ``--hold`` seconds or when stdin is closed,
unregistering first unless ``--keep`` (the binding must outlive the phone process).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from typing import Any

import pjsua2 as pj

__all__: list[str] = []


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Phone(pj.Account):  # type: ignore[misc]
    def onRegState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        info = self.getInfo()
        emit(event="registration", code=int(prm.code), reason=str(prm.reason),
             expires=int(info.regExpiresSec), active=bool(info.regIsActive))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--registrar", required=True, help="host:port of the edge")
    parser.add_argument("--realm", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--bind", default="127.0.0.1", help="local address of the phone")
    parser.add_argument("--expires", type=int, default=600)
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument("--keep", action="store_true", help="exit without unregistering")
    parser.add_argument("--stdin", action="store_true", help="also stop when stdin is closed")
    args = parser.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = "pjsua2-mirliton-test"
    config.logConfig.level = 0
    config.logConfig.consoleLevel = 0
    ep.libInit(config)
    transport_config = pj.TransportConfig()
    transport_config.port = 0
    transport_config.boundAddress = args.bind
    transport_config.publicAddress = args.bind
    kind = pj.PJSIP_TRANSPORT_TCP if args.transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
    ep.transportCreate(kind, transport_config)
    ep.libStart()
    ep.audDevManager().setNullDev()

    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:{args.user}@{args.realm}"
    suffix = ";transport=tcp" if args.transport == "tcp" else ""
    account_config.regConfig.registrarUri = f"sip:{args.registrar}{suffix}"
    account_config.regConfig.timeoutSec = args.expires
    account_config.regConfig.retryIntervalSec = 0  # no automatic retry: one attempt per run
    account_config.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", args.user, 0, args.password)
    )
    phone = Phone()
    phone.create(account_config)

    deadline = time.monotonic() + args.hold
    stdin_open = args.stdin
    while time.monotonic() < deadline:
        ep.libHandleEvents(50)
        if stdin_open:
            ready, _, _ = select.select([sys.stdin], [], [], 0)
            if ready and not os.read(sys.stdin.fileno(), 4096):
                stdin_open = False
                break
    if args.keep:
        emit(event="done", unregistered=False)
        sys.stdout.flush()
        os._exit(0)  # no un-REGISTER: as if the phone lost power
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end and not phone.getInfo().regIsActive:
            ep.libHandleEvents(50)  # a registration still in progress cannot be undone
        phone.setRegistration(False)
        end = time.monotonic() + 3.0
        while time.monotonic() < end and phone.getInfo().regIsActive:
            ep.libHandleEvents(50)
    except pj.Error:
        pass
    emit(event="done", unregistered=True)
    del phone
    ep.libDestroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
