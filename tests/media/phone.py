"""A real phone for the media tests: pjsua2 (PyPI ``pjsua2-python``) in a process of its own,
so that a pjsip crash never takes pytest down.

    python tests/media/phone.py --record /tmp/heard.wav --tone 440 --tone-seconds 3

Headless and single-threaded (null audio device, ``threadCnt = 0``, ``mainThreadOnly``,
events pumped with ``libHandleEvents``), PCMU only, 8 kHz conference bridge. It records
everything it hears in a call to ``--record``.

Commands, one JSON object per line on stdin: ``{"cmd": "call", "uri": "sip:..."}``,
``{"cmd": "stream"}`` (play a ``--tone`` Hz sine of ``--tone-seconds`` once into the call;
``{"event": "streamed"}`` when the player reaches its end), ``{"cmd": "dtmf", "digits":
"1234"}`` (RFC 4733), ``{"cmd": "hangup"}``, ``{"cmd": "quit"}``; closing stdin quits.
Output, one JSON object per line on stdout: ``ready``, ``state`` (``state``, ``code``),
``media``, ``streamed``, ``dtmf`` (``digit``, each RFC 4733 key press received),
``recorded`` (the call ended and ``--record`` is complete), ``error``, ``done``.
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


class Phone:
    def __init__(self) -> None:
        self.call: PhoneCall | None = None
        self.audio: Any = None
        self.recorder: Any = None
        self.player: Any = None
        self.stream_ends: float | None = None
        self.disconnected = False


class PhoneCall(pj.Call):  # type: ignore[misc]
    def __init__(self, phone: Phone, account: Any) -> None:
        super().__init__(account)
        self.phone = phone

    def onCallState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        info = self.getInfo()
        emit(event="state", state=info.stateText, code=int(info.lastStatusCode))
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.phone.disconnected = True

    def onDtmfDigit(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        emit(event="dtmf", digit=str(prm.digit))

    def onCallMediaState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 API
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.phone.audio = self.getAudioMedia(index)
                if self.phone.recorder is not None:
                    self.phone.audio.startTransmit(self.phone.recorder)
                emit(event="media")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", required=True)
    parser.add_argument("--tone", type=float, default=440.0)
    parser.add_argument("--tone-seconds", type=float, default=3.0)
    parser.add_argument("--workdir", default="/tmp")
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args()

    phone = Phone()
    ep = pj.Endpoint()
    ep.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = "pjsua2-media-test"
    config.logConfig.level = 0
    config.logConfig.consoleLevel = 0
    config.medConfig.noVad = True
    config.medConfig.clockRate = 8000
    config.medConfig.sndClockRate = 8000
    ep.libInit(config)
    transport_config = pj.TransportConfig()
    transport_config.port = 0
    transport_config.boundAddress = "127.0.0.1"
    transport_config.publicAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport_config)
    ep.libStart()
    ep.audDevManager().setNullDev()
    for codec in ep.codecEnum2():
        ep.codecSetPriority(codec.codecId, 255 if codec.codecId.startswith("PCMU") else 0)

    tone = os.path.join(args.workdir, f"media-phone-tone-{os.getpid()}.wav")
    write_tone(tone, args.tone, args.tone_seconds)
    phone.recorder = pj.AudioMediaRecorder()
    phone.recorder.createRecorder(args.record)

    account_config = pj.AccountConfig()
    account_config.idUri = "sip:phone@127.0.0.1"
    account_config.natConfig.sdpNatRewriteUse = 0
    account_config.natConfig.viaRewriteUse = 0
    account_config.natConfig.contactRewriteUse = 0
    account = pj.Account()
    account.create(account_config)
    emit(event="ready")

    deadline = time.monotonic() + args.lifetime
    buffer = b""
    running = True
    while running and time.monotonic() < deadline:
        ep.libHandleEvents(10)
        if phone.disconnected and phone.recorder is not None:
            # Close the recording as soon as the call is over: left open while pjsua tears
            # the call down, the recorder is not always destroyed (no WAV header) at exit.
            phone.audio = None
            phone.recorder = None
            gc.collect()
            emit(event="recorded")
        if phone.stream_ends is not None and time.monotonic() >= phone.stream_ends:
            phone.stream_ends = None
            emit(event="streamed")
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
                    phone.call = PhoneCall(phone, account)
                    phone.call.makeCall(command["uri"], pj.CallOpParam(True))
                elif name == "stream":
                    if phone.audio is None:
                        raise RuntimeError("no active media")
                    phone.player = pj.AudioMediaPlayer()
                    phone.player.createPlayer(tone, pj.PJMEDIA_FILE_NO_LOOP)
                    phone.player.startTransmit(phone.audio)
                    # The player stops at its end (NO_LOOP); say so once it has played it.
                    phone.stream_ends = time.monotonic() + args.tone_seconds + 0.1
                elif name == "dtmf":
                    if phone.call is None:
                        raise RuntimeError("no call")
                    phone.call.dialDtmf(command["digits"])
                elif name == "hangup":
                    if phone.call is not None and phone.call.isActive():
                        phone.call.hangup(pj.CallOpParam())
                elif name == "quit":
                    running = False
            except (pj.Error, RuntimeError) as error:
                message = error.info() if isinstance(error, pj.Error) else str(error)
                emit(event="error", where=name, message=str(message))
    try:
        if phone.call is not None and phone.call.isActive():
            phone.call.hangup(pj.CallOpParam())
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            ep.libHandleEvents(20)
    except pj.Error:
        pass
    # The recorder writes its WAV header when destroyed.
    phone.recorder = None
    phone.player = None
    phone.audio = None
    phone.call = None
    gc.collect()
    ep.libHandleEvents(20)
    emit(event="done")
    sys.stdout.flush()
    # pjsua2 objects must not outlive the library; leaving fast avoids its teardown asserts.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
