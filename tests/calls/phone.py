"""A real SIP phone for the call tests: pjsua2 (PyPI ``pjsua2-python``) in a process of its
own, so that a pjsip crash never takes pytest down.

    python tests/calls/phone.py --edge 127.0.0.1:5060 --realm a.test --user 1001 \\
        --password secret --tone 440 --record /tmp/a.wav [--answer-after 1] [--reject 486]

Headless and single-threaded (null audio device, ``threadCnt = 0``, ``mainThreadOnly``,
events pumped with ``libHandleEvents``). It registers through the edge (which is also its
outbound proxy), plays a sine tone of ``--tone`` Hz into every call and records what it hears
to ``--record``. Incoming calls ring (180) and are answered after ``--answer-after`` seconds,
rejected with ``--reject CODE``, or left ringing with ``--answer-after -1``.

Commands, one JSON object per line on stdin: ``{"cmd": "call", "uri": "sip:1002@a.test"}``,
``{"cmd": "hangup"}``, ``{"cmd": "answer"}``, ``{"cmd": "hold"}``, ``{"cmd": "unhold"}``,
``{"cmd": "quit"}``; closing stdin quits. ``--early-media`` rings with 183 and SDP.
Output, one JSON object per line on stdout: ``registration``, ``incoming``, ``state`` (with
``state``, ``code``, ``call_id``), ``media``, ``done``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import struct
import sys
import time
import wave
from typing import Any

import pjsua2 as pj

__all__: list[str] = []


def emit(**fields: Any) -> None:
    print(json.dumps({**fields, "t": time.time()}), flush=True)


def write_tone(path: str, frequency: float, seconds: float = 5.0, rate: int = 8000) -> None:
    frames = bytearray()
    for n in range(int(seconds * rate)):
        frames += struct.pack("<h", int(12000 * math.sin(2 * math.pi * frequency * n / rate)))
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))


MEDIA_STATUS = {
    pj.PJSUA_CALL_MEDIA_NONE: "none",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "active",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local_hold",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold",
    pj.PJSUA_CALL_MEDIA_ERROR: "error",
}


class Phone:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.calls: list[PhoneCall] = []
        self.pending_answer: list[tuple[float, PhoneCall]] = []
        self.player: Any = None
        self.recorder: Any = None


class PhoneCall(pj.Call):  # type: ignore[misc]
    def __init__(self, phone: Phone, account: Any, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.phone = phone
        self.connected = False

    def onCallState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        info = self.getInfo()
        emit(event="state", state=info.stateText, code=int(info.lastStatusCode),
             reason=str(info.lastReason), call_id=str(info.callIdString),
             duration=float(info.connectDuration.sec + info.connectDuration.msec / 1000.0))

    def onCallMediaState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = MEDIA_STATUS.get(media.status, str(media.status))
            if media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(index)
                if self.phone.player is not None:
                    self.phone.player.startTransmit(audio)
                if self.phone.recorder is not None:
                    audio.startTransmit(self.phone.recorder)
            emit(event="media", active=status == "active", status=status,
                 state=info.stateText, call_id=str(info.callIdString))


class PhoneAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, phone: Phone) -> None:
        super().__init__()
        self.phone = phone

    def onRegState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        info = self.getInfo()
        emit(event="registration", code=int(prm.code), expires=int(info.regExpiresSec))

    def onIncomingCall(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        call = PhoneCall(self.phone, self, prm.callId)
        self.phone.calls.append(call)
        info = call.getInfo()
        emit(event="incoming", call_id=str(info.callIdString), remote=str(info.remoteUri))
        args = self.phone.args
        op = pj.CallOpParam()
        if args.reject:
            op.statusCode = args.reject
            call.answer(op)
            return
        op.statusCode = 183 if args.early_media else 180
        call.answer(op)
        if args.answer_after >= 0:
            self.phone.pending_answer.append((time.monotonic() + args.answer_after, call))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edge", required=True, help="host:port of the edge")
    parser.add_argument("--realm", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--tone", type=float, default=440.0)
    parser.add_argument("--record", default="")
    parser.add_argument("--answer-after", type=float, default=-1.0)
    parser.add_argument("--reject", type=int, default=0)
    parser.add_argument("--early-media", action="store_true", help="ring with 183 and SDP")
    parser.add_argument("--workdir", default="/tmp")
    parser.add_argument("--lifetime", type=float, default=300.0)
    args = parser.parse_args()

    phone = Phone(args)
    ep = pj.Endpoint()
    ep.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = f"pjsua2-calls-{args.user}"
    config.logConfig.level = 0
    config.logConfig.consoleLevel = 0
    config.medConfig.noVad = True
    ep.libInit(config)
    transport_config = pj.TransportConfig()
    transport_config.port = 0
    transport_config.boundAddress = "127.0.0.1"
    transport_config.publicAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport_config)
    ep.libStart()
    ep.audDevManager().setNullDev()
    for codec in ep.codecEnum2():
        priority = 255 if codec.codecId.startswith("PCMU") else 0
        ep.codecSetPriority(codec.codecId, priority)

    tone = os.path.join(args.workdir, f"tone-{args.user}-{int(args.tone)}.wav")
    write_tone(tone, args.tone)
    phone.player = pj.AudioMediaPlayer()
    phone.player.createPlayer(tone, 0)
    if args.record:
        phone.recorder = pj.AudioMediaRecorder()
        phone.recorder.createRecorder(args.record)

    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:{args.user}@{args.realm}"
    account_config.regConfig.registrarUri = f"sip:{args.edge}"
    account_config.regConfig.timeoutSec = 600
    account_config.regConfig.retryIntervalSec = 0
    account_config.sipConfig.proxies.append(f"sip:{args.edge};lr")
    account_config.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", args.user, 0,
                                                              args.password))
    account_config.natConfig.sdpNatRewriteUse = 0
    account_config.natConfig.viaRewriteUse = 0
    account_config.natConfig.contactRewriteUse = 0
    account = PhoneAccount(phone)
    account.create(account_config)

    deadline = time.monotonic() + args.lifetime
    buffer = b""
    running = True
    while running and time.monotonic() < deadline:
        ep.libHandleEvents(20)
        now = time.monotonic()
        for due, call in list(phone.pending_answer):
            if now >= due:
                phone.pending_answer.remove((due, call))
                op = pj.CallOpParam()
                op.statusCode = 200
                try:
                    call.answer(op)
                except pj.Error as error:
                    emit(event="error", where="answer", message=str(error.info()))
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if not ready:
            continue
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if not line.strip():
                continue
            command = json.loads(line)
            name = command.get("cmd")
            try:
                if name == "call":
                    call = PhoneCall(phone, account)
                    phone.calls.append(call)
                    call.makeCall(command["uri"], pj.CallOpParam(True))
                elif name == "hangup":
                    for call in phone.calls:
                        if call.isActive():
                            call.hangup(pj.CallOpParam())
                elif name == "answer":
                    for call in phone.calls:
                        if call.isActive() and not call.getInfo().state == pj.PJSIP_INV_STATE_CONFIRMED:
                            op = pj.CallOpParam()
                            op.statusCode = 200
                            call.answer(op)
                elif name == "hold":
                    for call in phone.calls:
                        if call.isActive():
                            call.setHold(pj.CallOpParam())
                elif name == "unhold":
                    for call in phone.calls:
                        if call.isActive():
                            op = pj.CallOpParam(True)
                            op.opt.flag = pj.PJSUA_CALL_UNHOLD
                            call.reinvite(op)
                elif name == "dtmf":
                    for call in phone.calls:
                        if call.isActive():
                            call.dialDtmf(str(command["digits"]))  # RFC 4733 when offered
                elif name == "quit":
                    running = False
            except pj.Error as error:
                emit(event="error", where=name, message=str(error.info()))
    try:
        for call in phone.calls:
            if call.isActive():
                call.hangup(pj.CallOpParam())
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            ep.libHandleEvents(20)
        if account.getInfo().regIsActive:
            account.setRegistration(False)  # no stale contact left for the next test
            end = time.monotonic() + 3.0
            while time.monotonic() < end and account.getInfo().regIsActive:
                ep.libHandleEvents(20)
    except pj.Error:
        pass
    # The recorder writes its WAV header when destroyed.
    phone.recorder = None
    phone.player = None
    import gc

    gc.collect()
    ep.libHandleEvents(20)
    emit(event="done")
    sys.stdout.flush()
    # pjsua2 objects must not outlive the library; leaving fast avoids its teardown asserts.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
