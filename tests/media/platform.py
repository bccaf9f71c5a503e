"""What the platform tests (tests/media/test_platform_*.py) share: a node with one calls shard
with media, on the embedded defaults or on RabbitMQ + the suite's CouchDB-API server
(``PLATFORMS``), provisioned with an account, devices and the system prompts
(``platform_pbx``); ``python -m bus.tap`` following its calls (``BusTap``); reading and
judging what a phone or a recording heard."""

from __future__ import annotations

import json
import queue
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

from tests.calls.conftest import PBX, Phone, backends, start_pbx, stop_pbx, wait_until
from tests.foundation.nodeutil import REPO, terminate
from tests.phones import wav_samples

__all__ = ["PLATFORMS", "BusTap", "audio_samples", "dial", "dominant_frequency",
           "heard_frequency", "install_prompts_for", "platform_pbx", "rms", "start_platform",
           "unique_realm"]

# Each platform test runs on the embedded defaults (local bus, embedded store) and on
# RabbitMQ + the suite's CouchDB-API server.
PLATFORMS = ["embedded", pytest.param("amqp+couchdb", marks=[pytest.mark.amqp,
                                                             pytest.mark.couchdb])]


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
        terminate(self.proc)


def unique_realm(name: str) -> str:
    """A realm of this run only: a CouchDB server may outlive one run, realms are unique."""
    return f"{name}-{uuid.uuid4().hex[:6]}.example.com"


def start_platform(request: pytest.FixtureRequest, base: Path, rtp_ports: int) -> PBX:
    """A node with one calls shard on the platform ``request.param`` names; RTP ports from
    ``rtp_ports`` (a range of its own per test module)."""
    return start_pbx(base, shards=1, MIRLITON_MEDIA__RTP_PORT_MIN=str(rtp_ports),
                     MIRLITON_MEDIA__RTP_PORT_MAX=str(rtp_ports + 999), **backends(request))


def platform_pbx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 name: str, rtp_ports: int, usernames: list[str],
                 setup: Callable[[PBX], None]) -> Iterator[PBX]:
    """A module's ``pbx`` fixture: the platform (``start_platform``) with an account of a
    realm of its own and a device for each of ``usernames``; ``setup`` adds what the module
    tests; then the system prompts."""
    pbx = start_platform(request, tmp_path_factory.mktemp(name), rtp_ports)
    try:
        pbx.provision(unique_realm(name), usernames)
        setup(pbx)
        install_prompts_for(pbx)
        yield pbx
    finally:
        stop_pbx(pbx)


def install_prompts_for(pbx: PBX) -> None:
    """The system prompts, rendered into the node's store (espeak-ng + sox)."""
    from actors.media.prompts import install_prompts

    with pbx.store() as store:
        install_prompts(store)


def dial(pbx: PBX, tap: BusTap, phones: list[Phone], workdir: Path, user: str, number: str,
         *, tone: float, prompt: str) -> tuple[Phone, int, dict[str, Any]]:
    """A phone of ``user`` (sending a ``tone`` Hz sine) registers, dials ``number`` and is
    answered: the phone, the tap's mark before the call and the shard's play command of
    ``prompt``."""
    phone = Phone(pbx, user, workdir, tone=tone)
    phones.append(phone)
    phone.registered()
    mark = len(tap.messages)
    phone.call(number, pbx.realm)
    phone.state("CONFIRMED", timeout=30)
    return phone, mark, tap.command("play", media=prompt, after=mark)


def audio_samples(data: bytes) -> tuple[np.ndarray, int]:
    """(mono int16 samples, rate) of a WAV, tolerating the unfinished header pjsua leaves
    when it was not destroyed cleanly."""
    read = wav_samples(data)
    return read if read is not None else (np.zeros(0, dtype=np.int16), 8000)


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
