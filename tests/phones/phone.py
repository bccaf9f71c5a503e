"""A real SIP phone for the tests: pjsua2 (PyPI ``pjsua2-python``) in a process of its own, so
that a pjsip crash never takes pytest down. Driven by tests/phones/__init__.py's ``Phone``.

    python tests/phones/phone.py --edge 127.0.0.1:5060 --realm a.test --user 1001 \\
        --password secret --tone 440 --loop-tone --record /tmp/a.wav [--answer-after 1]
    python tests/phones/phone.py --registrar 127.0.0.1:5060 --realm a.test --user 1000 \\
        --password secret [--transport tcp] [--lifetime 30] [--keep]
    python tests/phones/phone.py --record /tmp/heard.wav --tone 440 --tone-seconds 3

Headless and single-threaded (null audio device, ``threadCnt = 0``, ``mainThreadOnly``,
events pumped with ``libHandleEvents``), PCMU only.

- Registration: with ``--registrar HOST:PORT`` it registers with digest (``--expires``) over
  ``--transport`` from ``--bind``; ``--edge HOST:PORT`` is the same and makes the edge its
  outbound proxy too. Without either it only makes calls (to SIP URIs). On the way out it
  unregisters, unless ``--keep`` (as if it lost power: no BYE, no un-REGISTER).
- Voicemail lamp: every ``message-summary`` NOTIFY pjsua takes is an ``mwi`` event:
  unsolicited ones (pjsua answers them 200 itself) and, with ``--subscribe``
  (``--subscribe-expires``), those of its own SUBSCRIBE.
- Incoming calls ring (180, or 183 with SDP with ``--early-media``) and are answered after
  ``--answer-after`` seconds, rejected with ``--reject CODE``, or left ringing (``-1``).
- Audio: ``--loop-tone`` plays a ``--tone`` Hz sine into every call, looped; the ``stream``
  command plays ``--tone-seconds`` of it once (``"loop": true``: looped). ``--record`` records
  what the phone hears (``--close-record-on-hangup``: closed, ``recorded``, once the first call
  ends). ``--clock-rate`` sets the conference bridge's rate.

Commands, one JSON object per line on stdin: ``{"cmd": "call", "uri": "sip:1002@a.test"}``,
``answer``, ``hangup``, ``hold``, ``unhold``, ``{"cmd": "dtmf", "digits": "12#"}`` (RFC 4733),
``stream``, ``quit``; closing stdin quits, so does ``--lifetime`` (``--hold``) seconds.
Output, one JSON object per line on stdout (each with ``t``): ``ready``, ``registration``
(``code``, ``reason``, ``expires``, ``active``), ``incoming``, ``state`` (``state``, ``code``,
``reason``, ``call_id``, ``duration``), ``media`` (``active``, ``status``), ``dtmf``
(``digit``, each RFC 4733 key press received), ``mwi`` (``body``, ``state``, ``call_id``,
``subscription_state``, ``source``), ``streamed``, ``recorded``, ``error``
(``where``, ``message``), ``done`` (``unregistered``).
"""

from __future__ import annotations

import argparse
import gc
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


def write_tone(path: str, frequency: float, seconds: float, rate: int = 8000) -> None:
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
        self.audio: Any = None  # the audio of the last call whose media went active
        self.looped: Any = None  # --loop-tone's player
        self.player: Any = None  # the stream command's
        self.recorder: Any = None
        self.stream_ends: float | None = None
        self.disconnected = False

    def tone(self, seconds: float) -> str:
        path = os.path.join(self.args.workdir,
                            f"phone-tone-{os.getpid()}-{int(self.args.tone)}-{seconds:g}.wav")
        if not os.path.exists(path):
            write_tone(path, self.args.tone, seconds)
        return path


class PhoneCall(pj.Call):  # type: ignore[misc]
    def __init__(self, phone: Phone, account: Any, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.phone = phone

    def onCallState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        info = self.getInfo()
        emit(event="state", state=info.stateText, code=int(info.lastStatusCode),
             reason=str(info.lastReason), call_id=str(info.callIdString),
             duration=float(info.connectDuration.sec + info.connectDuration.msec / 1000.0))
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.phone.disconnected = True

    def onDtmfDigit(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        emit(event="dtmf", digit=str(prm.digit))

    def onCallMediaState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = MEDIA_STATUS.get(media.status, str(media.status))
            if media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(index)
                self.phone.audio = audio
                if self.phone.looped is not None:
                    self.phone.looped.startTransmit(audio)
                if self.phone.recorder is not None:
                    audio.startTransmit(self.phone.recorder)
            emit(event="media", active=status == "active", status=status,
                 state=info.stateText, call_id=str(info.callIdString))


class PhoneAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, phone: Phone) -> None:
        super().__init__()
        self.phone = phone
        self.reg_events = 0

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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edge", default="", help="host:port of the edge: registrar and proxy")
    parser.add_argument("--registrar", default="", help="host:port of the registrar only")
    parser.add_argument("--realm", default="127.0.0.1")
    parser.add_argument("--user", default="phone")
    parser.add_argument("--password", default="")
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--bind", default="127.0.0.1", help="local address of the phone")
    parser.add_argument("--expires", type=int, default=600)
    parser.add_argument("--keep", action="store_true", help="exit without unregistering")
    parser.add_argument("--subscribe", action="store_true", help="SUBSCRIBE to message-summary")
    parser.add_argument("--subscribe-expires", type=int, default=600,
                        help="pjsua refreshes the subscription 5 s before it ends")
    parser.add_argument("--tone", type=float, default=440.0)
    parser.add_argument("--loop-tone", action="store_true", help="play the tone into every call")
    parser.add_argument("--tone-seconds", type=float, default=3.0, help="of the stream command")
    parser.add_argument("--record", default="")
    parser.add_argument("--close-record-on-hangup", action="store_true")
    parser.add_argument("--answer-after", type=float, default=-1.0)
    parser.add_argument("--reject", type=int, default=0)
    parser.add_argument("--early-media", action="store_true", help="ring with 183 and SDP")
    parser.add_argument("--clock-rate", type=int, default=0, help="0: pjsua's default")
    parser.add_argument("--user-agent", default="")
    parser.add_argument("--workdir", default="/tmp")
    parser.add_argument("--lifetime", "--hold", type=float, default=300.0)
    parser.add_argument("--stdin", action="store_true", help="ignored: closing stdin always quits")
    return parser.parse_args()


def start_endpoint(args: argparse.Namespace) -> Any:
    ep = pj.Endpoint()
    ep.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = args.user_agent or f"pjsua2-phone-{args.user}"
    config.uaConfig.mwiUnsolicitedEnabled = True
    config.logConfig.level = 0
    config.logConfig.consoleLevel = 0
    config.medConfig.noVad = True
    if args.clock_rate:
        config.medConfig.clockRate = args.clock_rate
        config.medConfig.sndClockRate = args.clock_rate
    ep.libInit(config)
    transport_config = pj.TransportConfig()
    transport_config.port = 0
    transport_config.boundAddress = args.bind
    transport_config.publicAddress = args.bind
    kind = pj.PJSIP_TRANSPORT_TCP if args.transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
    ep.transportCreate(kind, transport_config)
    ep.libStart()
    ep.audDevManager().setNullDev()
    for codec in ep.codecEnum2():
        ep.codecSetPriority(codec.codecId, 255 if codec.codecId.startswith("PCMU") else 0)
    return ep


def create_account(phone: Phone) -> PhoneAccount:
    args = phone.args
    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:{args.user}@{args.realm}"
    registrar = args.registrar or args.edge
    if registrar:
        suffix = ";transport=tcp" if args.transport == "tcp" else ""
        account_config.regConfig.registrarUri = f"sip:{registrar}{suffix}"
        account_config.regConfig.timeoutSec = args.expires
        account_config.regConfig.retryIntervalSec = 0  # no automatic retry: one attempt a run
        account_config.sipConfig.authCreds.append(
            pj.AuthCredInfo("digest", "*", args.user, 0, args.password))
    if args.edge:
        account_config.sipConfig.proxies.append(f"sip:{args.edge}{suffix};lr")
    account_config.mwiConfig.enabled = args.subscribe
    account_config.mwiConfig.expirationSec = args.subscribe_expires
    account_config.natConfig.sdpNatRewriteUse = 0
    account_config.natConfig.viaRewriteUse = 0
    account_config.natConfig.contactRewriteUse = 0
    account = PhoneAccount(phone)
    account.create(account_config)
    return account


def active_calls(phone: Phone) -> list[PhoneCall]:
    calls = [call for call in phone.calls if call.isActive()]
    if not phone.calls:
        raise RuntimeError("no call")
    return calls


def run_command(phone: Phone, account: PhoneAccount, command: dict[str, Any]) -> bool:
    """Carries out one command; False once the phone should quit."""
    name = command.get("cmd")
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
        for call in active_calls(phone):
            call.setHold(pj.CallOpParam())
    elif name == "unhold":
        for call in active_calls(phone):
            op = pj.CallOpParam(True)
            op.opt.flag = pj.PJSUA_CALL_UNHOLD
            call.reinvite(op)
    elif name == "dtmf":
        for call in active_calls(phone):
            call.dialDtmf(str(command["digits"]))  # RFC 4733 when offered
    elif name == "stream":
        if phone.audio is None:
            raise RuntimeError("no active media")
        loop = bool(command.get("loop"))
        phone.player = pj.AudioMediaPlayer()
        phone.player.createPlayer(phone.tone(phone.args.tone_seconds),
                                  0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
        phone.player.startTransmit(phone.audio)
        if not loop:  # the player stops at its end; say so once it has played it
            phone.stream_ends = time.monotonic() + phone.args.tone_seconds + 0.1
    elif name == "quit":
        return False
    return True


def pump(phone: Phone) -> None:
    """What is due between two event pumps: delayed answers, the end of a stream, closing the
    recording of a call that ended."""
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
    if phone.disconnected and phone.args.close_record_on_hangup and phone.recorder is not None:
        # Closed as soon as the call is over: left open while pjsua tears the call down, the
        # recorder is not always destroyed (no WAV header) at exit.
        phone.audio = None
        phone.recorder = None
        gc.collect()
        emit(event="recorded")
    if phone.stream_ends is not None and now >= phone.stream_ends:
        phone.stream_ends = None
        emit(event="streamed")


def leave(ep: Any, phone: Phone, account: PhoneAccount) -> bool:
    """Hang up, then unregister; True when a registration was undone."""
    unregistered = False
    try:
        for call in phone.calls:
            if call.isActive():
                call.hangup(pj.CallOpParam())
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            ep.libHandleEvents(20)
        if phone.args.registrar or phone.args.edge:
            end = time.monotonic() + 3.0
            while time.monotonic() < end and not account.getInfo().regIsActive:
                ep.libHandleEvents(20)  # a registration still in progress cannot be undone
            if account.getInfo().regIsActive:
                # No stale contact left for the next test. regIsActive drops as soon as the
                # un-REGISTER is asked for: wait for its answer (after the edge's challenge).
                answered = account.reg_events
                account.setRegistration(False)
                unregistered = True
                end = time.monotonic() + 5.0
                while time.monotonic() < end and account.reg_events == answered:
                    ep.libHandleEvents(20)
    except pj.Error:
        pass
    return unregistered


def main() -> int:
    args = parse_args()
    phone = Phone(args)
    ep = start_endpoint(args)
    if args.loop_tone:
        phone.looped = pj.AudioMediaPlayer()
        phone.looped.createPlayer(phone.tone(5.0), 0)
    if args.record:
        phone.recorder = pj.AudioMediaRecorder()
        phone.recorder.createRecorder(args.record)
    account = create_account(phone)
    emit(event="ready")

    deadline = time.monotonic() + args.lifetime
    buffer = b""
    running = True
    while running and time.monotonic() < deadline:
        ep.libHandleEvents(10)
        pump(phone)
        ready, _, _ = select.select([sys.stdin], [], [], 0)
        if not ready:
            continue
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            break
        buffer += chunk
        while running and b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if not line.strip():
                continue
            command = json.loads(line)
            try:
                running = run_command(phone, account, command)
            except (pj.Error, RuntimeError) as error:
                message = error.info() if isinstance(error, pj.Error) else str(error)
                emit(event="error", where=command.get("cmd"), message=str(message))
    if args.keep:
        emit(event="done", unregistered=False)
        os._exit(0)  # no BYE, no un-REGISTER: as if the phone lost power
    unregistered = leave(ep, phone, account)
    # The recorder writes its WAV header when destroyed.
    phone.recorder = None
    phone.player = None
    phone.looped = None
    phone.audio = None
    gc.collect()
    ep.libHandleEvents(20)
    emit(event="done", unregistered=unregistered)
    sys.stdout.flush()
    # pjsua2 objects must not outlive the library; leaving fast avoids its teardown asserts.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
