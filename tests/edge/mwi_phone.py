"""A real SIP phone watching its voicemail lamp: pjsua2 (PyPI ``pjsua2-python``) in a process
of its own, so that a pjsip crash never takes pytest down.

    python tests/edge/mwi_phone.py --edge 127.0.0.1:5060 --realm a.test --user 1000 \\
        --password secret [--transport tcp] [--subscribe [--subscribe-expires 600]] \\
        [--lifetime 120]

It registers through the edge (its registrar and outbound proxy) and prints one JSON object
per line on stdout: ``{"event": "registration", "code": 200, ...}`` for every registration
state change, ``{"event": "mwi", "body": "...", "state": N, "call_id": "..."}`` for every
``message-summary`` NOTIFY pjsua takes - unsolicited ones (pjsua answers them 200 itself and
calls ``Account.onMwiInfo``, ``UaConfig.mwiUnsolicitedEnabled`` being on by default) and, with
``--subscribe``, those of its own SUBSCRIBE (``AccountConfig.mwiConfig``) - then
``{"event": "done"}``. Headless and single-threaded (null audio device, ``threadCnt = 0``,
events pumped with ``libHandleEvents``); closing stdin quits, unregistering first.
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
    print(json.dumps({**fields, "t": time.time()}), flush=True)


class Phone(pj.Account):  # type: ignore[misc]
    reg_events = 0

    def onRegState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        self.reg_events += 1
        info = self.getInfo()
        emit(event="registration", code=int(prm.code), reason=str(prm.reason),
             expires=int(info.regExpiresSec), active=bool(info.regIsActive))

    def onMwiInfo(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        whole = str(prm.rdata.wholeMsg).replace("\r\n", "\n")
        head, _, body = whole.partition("\n\n")
        headers = {}
        for line in head.split("\n")[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        emit(event="mwi", body=body, state=int(prm.state),
             call_id=headers.get("call-id", headers.get("i", "")),
             subscription_state=headers.get("subscription-state", ""),
             source=str(prm.rdata.srcAddress))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edge", required=True, help="host:port of the edge")
    parser.add_argument("--realm", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--subscribe", action="store_true", help="SUBSCRIBE to message-summary")
    parser.add_argument("--subscribe-expires", type=int, default=600,
                        help="pjsua refreshes the subscription 5 s before it ends")
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = "pjsua2-mirliton-mwi"
    config.uaConfig.mwiUnsolicitedEnabled = True
    config.logConfig.level = 0
    config.logConfig.consoleLevel = 0
    ep.libInit(config)
    transport_config = pj.TransportConfig()
    transport_config.port = 0
    transport_config.boundAddress = "127.0.0.1"
    transport_config.publicAddress = "127.0.0.1"
    kind = pj.PJSIP_TRANSPORT_TCP if args.transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
    ep.transportCreate(kind, transport_config)
    ep.libStart()
    ep.audDevManager().setNullDev()

    suffix = ";transport=tcp" if args.transport == "tcp" else ""
    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:{args.user}@{args.realm}"
    account_config.regConfig.registrarUri = f"sip:{args.edge}{suffix}"
    account_config.regConfig.timeoutSec = 600
    account_config.regConfig.retryIntervalSec = 0
    account_config.sipConfig.proxies.append(f"sip:{args.edge}{suffix};lr")
    account_config.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", args.user, 0, args.password))
    account_config.natConfig.viaRewriteUse = 0
    account_config.natConfig.contactRewriteUse = 0
    account_config.mwiConfig.enabled = args.subscribe
    account_config.mwiConfig.expirationSec = args.subscribe_expires
    phone = Phone()
    phone.create(account_config)

    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        ep.libHandleEvents(20)
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
    try:
        if phone.getInfo().regIsActive:
            # No stale contact left for the next test. regIsActive drops as soon as the
            # un-REGISTER is asked for: wait for its answer (after the edge's challenge).
            answered = phone.reg_events
            phone.setRegistration(False)
            end = time.monotonic() + 5.0
            while time.monotonic() < end and phone.reg_events == answered:
                ep.libHandleEvents(20)
    except pj.Error:
        pass
    emit(event="done")
    sys.stdout.flush()
    # pjsua2 objects must not outlive the library; leaving fast avoids its teardown asserts.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
