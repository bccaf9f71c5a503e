"""Voicemail end to end (issue 9's acceptance): a real node (edge, registrar, callflow, calls
with media), real pjsua2 phones registered through the edge.

A caller reaches a box: the greeting plays (the phone hears non-silent audio); the caller's
phone sends a 440 Hz tone for 3 s of recording and hangs up; the box then holds a message
whose audio lasts 3 s +/- 0.5 s with its dominant frequency at 440 Hz +/- 10 Hz. The owner
dials the check number, enters the PIN by RFC 4733 DTMF, asks for the new messages and hears
the 440 Hz tone.

The test follows the call through the bus (``python -m bus.tap`` in a process of its own:
the commands sent to the shards' Control-Queues and the call events), so it acts when the
platform is ready for it rather than after guessed delays; every wait is generous.
"""

from __future__ import annotations

import json
import queue
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.calls.conftest import (
    PBX,
    Phone,
    calls_amqp_url,  # noqa: F401 - the amqp platform's fixture
    start_pbx,
    stop_pbx,
    wait_until,
)
from tests.foundation.nodeutil import REPO

pytestmark = pytest.mark.timeout(600)

CALLER, OWNER = "1001", "1002"
MAILBOX, CHECK = "3001", "3097"
PIN = "4567"
TONE = 440.0

__all__ = ["PLATFORMS", "BusTap", "audio_samples", "heard_frequency", "install_prompts_for",
           "rms", "start_platform", "unique_realm"]

# Each platform test runs on the embedded defaults (local bus, embedded store) and on
# RabbitMQ + the suite's CouchDB-API server.
PLATFORMS = ["embedded", pytest.param("amqp+couchdb", marks=[pytest.mark.amqp,
                                                             pytest.mark.couchdb])]


# -- helpers shared with test_platform_ivr.py ------------------------------------------------


class BusTap:
    """``python -m bus.tap`` on the node's bus: every call event and every command sent to
    the node's calls shards, as JSON lines read by a thread."""

    def __init__(self, pbx: PBX) -> None:
        from actors.calls.registry import read_shards

        shards = wait_until(lambda: read_shards(pbx.node.data_dir), timeout=60,
                            what="the calls shards")
        bindings = ["callevt:call.*.*"] + [f"callctl:{s.control_queue}" for s in shards]
        env = {**pbx.node.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bus.tap", "--url", env.get("MIRLITON_BUS__URL", "local"),
             "--data-dir", str(pbx.node.data_dir), *bindings],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO, env=env)
        self.messages: list[dict[str, Any]] = []
        self._lines: queue.Queue[None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._probe(pbx)

    def _probe(self, pbx: PBX) -> None:
        """Return once the tap is bound: a probe event published here comes through."""
        import gevent

        from bus import connect
        from bus.api.call import call_event

        probe = f"tap-probe-{uuid.uuid4().hex[:8]}"
        bus = connect(pbx.node.env.get("MIRLITON_BUS__URL", "local"), node=probe,
                      data_dir=pbx.node.data_dir)
        try:
            deadline = time.monotonic() + 60
            while not any(m.get("Call-ID") == probe for m in self.messages):
                assert time.monotonic() < deadline, "the bus tap never saw its probe"
                bus.publish(call_event["CHANNEL_CREATE"].build({"Call-ID": probe}))
                gevent.sleep(0.5)
        finally:
            bus.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "message" in entry:
                self.messages.append(entry["message"])
                self._lines.put(None)

    def wait(self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 60.0,
             after: int = 0, what: str = "message") -> dict[str, Any]:
        """The first message from index ``after`` on that ``predicate`` accepts."""
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            while seen < len(self.messages):
                msg = self.messages[seen]
                seen += 1
                if predicate(msg):
                    return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = [(m.get("Event-Name"), m.get("Application-Name"))
                         for m in self.messages[after:]][-40:]
                raise AssertionError(f"no {what} within {timeout}s; last: {names}")
            try:
                self._lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                pass

    def command(self, application: str, *, media: str | None = None, after: int = 0,
                timeout: float = 60.0) -> dict[str, Any]:
        """A command sent to a shard (optionally one whose Media-Name mentions ``media``)."""
        def match(m: dict[str, Any]) -> bool:
            if m.get("Event-Name") != "command" or m.get("Application-Name") != application:
                return False
            return media is None or media in json.dumps(m.get("Media-Name", ""))
        return self.wait(match, timeout=timeout, after=after, what=f"{application} {media or ''}")

    def event(self, name: str, *, after: int = 0, timeout: float = 60.0,
              **fields: Any) -> dict[str, Any]:
        return self.wait(lambda m: m.get("Event-Name") == name and all(
            m.get(k) == v for k, v in fields.items()), timeout=timeout, after=after, what=name)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def unique_realm(name: str) -> str:
    """A realm of this run only: a CouchDB server may outlive one run, realms are unique."""
    return f"{name}-{uuid.uuid4().hex[:6]}.example.com"


def start_platform(request: pytest.FixtureRequest, base: Path, rtp_ports: int) -> PBX:
    """A node with one calls shard on the platform ``request.param`` names; RTP ports from
    ``rtp_ports`` (a range of its own per test module)."""
    backends: dict[str, str] = {}
    if request.param == "amqp+couchdb":
        backends = {"bus_url": request.getfixturevalue("calls_amqp_url"),
                    "store_url": request.getfixturevalue("couchdb_url")}
    return start_pbx(base, shards=1, MIRLITON_MEDIA__RTP_PORT_MIN=str(rtp_ports),
                     MIRLITON_MEDIA__RTP_PORT_MAX=str(rtp_ports + 999), **backends)


def install_prompts_for(pbx: PBX) -> None:
    """The system prompts, rendered into the node's store (espeak-ng + sox)."""
    from actors.media.prompts import install_prompts

    with pbx.store() as store:
        install_prompts(store)


def audio_samples(data: bytes) -> tuple[np.ndarray, int]:
    """(mono int16 samples, rate) of a WAV, tolerating the unfinished header pjsua leaves
    when it was not destroyed cleanly."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return np.zeros(0, dtype=np.int16), 8000
    channels = struct.unpack_from("<H", data, 22)[0]
    rate = struct.unpack_from("<I", data, 24)[0]
    start = data.find(b"data", 12) + 8
    raw = data[start:]
    raw = raw[:len(raw) - len(raw) % (2 * channels)]
    samples = np.frombuffer(raw, dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels)[:, 0]
    return samples, int(rate)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    spectrum[0] = 0.0
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def heard_frequency(samples: np.ndarray, rate: int, frequency: float,
                    tolerance: float = 10.0) -> bool:
    """Some 1 s stretch of what a phone heard (prompts around it) is dominated by
    ``frequency``."""
    window = rate
    for start in range(0, max(0, len(samples) - window) + 1, rate // 4):
        chunk = samples[start:start + window]
        if rms(chunk) < 300:
            continue
        if abs(dominant_frequency(chunk, rate) - frequency) <= tolerance:
            return True
    return False


# -- the platform -----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=PLATFORMS)
def pbx(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    pbx = start_platform(request, tmp_path_factory.mktemp("vm"), 43000)
    try:
        pbx.provision(unique_realm("vm"), [CALLER, OWNER])
        owner = pbx.add_user("Owner", [OWNER])
        box = pbx.add_doc("vmbox", {"name": "Owner's box", "mailbox": MAILBOX, "owner_id": owner,
                                    "pin": PIN, "require_pin": True})
        pbx.add_callflow([MAILBOX], {"module": "voicemail",
                                     "data": {"id": box, "action": "compose"}})
        pbx.add_callflow([CHECK], {"module": "voicemail", "data": {"id": box, "action": "check"}})
        pbx.devices["box"] = box
        install_prompts_for(pbx)
        yield pbx
    finally:
        stop_pbx(pbx)


@pytest.fixture
def tap(pbx: PBX) -> Iterator[BusTap]:
    t = BusTap(pbx)
    yield t
    t.stop()


@pytest.fixture
def phones() -> Iterator[list[Phone]]:
    made: list[Phone] = []
    yield made
    for phone in made:
        phone.stop()


def _messages(pbx: PBX) -> list[dict[str, Any]]:
    from store.voicemail import list_messages

    with pbx.store() as store:
        return list_messages(store, pbx.account_id, pbx.devices["box"])


def test_leave_a_message_then_the_owner_hears_it(pbx: PBX, tap: BusTap, phones: list[Phone],
                                                 tmp_path: Path) -> None:
    from store.voicemail import message_audio

    before = len(_messages(pbx))
    caller = Phone(pbx, CALLER, tmp_path, tone=TONE)
    phones.append(caller)
    caller.registered()
    mark = len(tap.messages)
    caller.call(MAILBOX, pbx.realm)
    caller.state("CONFIRMED", timeout=30)
    greeting = tap.command("play", media="vm-not_available", after=mark)
    call_id = str(greeting["Call-ID"])
    started = tap.event("RECORD_START", after=mark, timeout=90, **{"Call-ID": call_id})
    time.sleep(3.0)  # the phone's tone goes into the recording; then the caller hangs up
    caller.send(cmd="hangup")
    caller.state("DISCONNECTED", timeout=30)
    stop = tap.event("RECORD_STOP", after=mark, timeout=60, **{"Call-ID": call_id})
    assert stop["Media-Name"] == started["Media-Name"] and stop["Media-Stored"] is True
    caller.stop()
    assert caller.recording is not None
    heard, rate = audio_samples(caller.recording.read_bytes())
    loudest = max((rms(heard[i:i + rate // 2]) for i in range(0, len(heard), rate // 2)),
                  default=0.0)
    assert loudest > 300, "the caller heard no greeting"

    messages = wait_until(lambda: _messages(pbx)[before:] or None, timeout=30,
                          what="the message")
    assert len(messages) == 1
    message = messages[0]
    meta = message["metadata"]
    assert meta["folder"] == "new" and meta["caller_id_number"] == CALLER
    with pbx.store() as store:
        audio, content_type = message_audio(store, pbx.account_id, message["_id"])
    samples, rate = audio_samples(audio)
    seconds = len(samples) / rate
    assert abs(seconds - 3.0) <= 0.5, f"the message lasts {seconds:.2f} s"
    frequency = dominant_frequency(samples, rate)
    assert abs(frequency - TONE) <= 10, f"the message's dominant frequency is {frequency:.1f} Hz"

    # The owner checks the box: PIN by RFC 4733, "1" for the new messages, hears the tone.
    owner = Phone(pbx, OWNER, tmp_path, tone=1000.0)
    phones.append(owner)
    owner.registered()
    mark = len(tap.messages)
    owner.call(CHECK, pbx.realm)
    owner.state("CONFIRMED", timeout=30)
    pin_prompt = tap.command("play", media="vm-enter_pass", after=mark)
    check_id = str(pin_prompt["Call-ID"])
    owner.send(cmd="dtmf", digits=f"{PIN}#")
    tap.command("play", media="vm-main_menu", after=mark, timeout=60)
    owner.send(cmd="dtmf", digits="1")
    played = tap.command("play", media=message["_id"], after=mark, timeout=60)
    assert played["Call-ID"] == check_id
    tap.command("play", media="vm-message_menu", after=mark, timeout=60)
    owner.send(cmd="hangup")
    owner.state("DISCONNECTED", timeout=30)
    owner.stop()
    assert owner.recording is not None
    heard, rate = audio_samples(owner.recording.read_bytes())
    assert heard_frequency(heard, rate, TONE), "the owner did not hear the message"
    # Listened to: the message moved to the saved folder.
    listened = wait_until(lambda: next((m for m in _messages(pbx) if m["_id"] == message["_id"]
                                        and m["metadata"]["folder"] == "saved"), None),
                          timeout=30, what="the message saved")
    assert listened["metadata"]["length"] > 0
