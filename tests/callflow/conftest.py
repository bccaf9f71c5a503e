"""The callflow app against a real ``local`` bus and a real embedded store, with the test
playing the calls shard: it takes the commands from the call's Control-Queue and publishes the
events a shard would (completions, DTMF, RECORD_START/STOP with the audio stored where the
command said, CHANNEL_DESTROY)."""

from __future__ import annotations

import io
import uuid
import wave
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import gevent
import gevent.queue
import numpy as np

from actors.callflow.context import CallEventRouter, CallflowContext
from actors.callflow.executor import CallflowExecutor
from actors.callflow.lookup import CallflowCache, FlowMatch
from actors.kernel import ActorRef, spawn
from bus import Binding, Bus, connect
from bus.api.call import call_event
from mirliton.config import Config
from store import NotFound, Store, new_doc_id, open_store
from store.accounts import create_account
from store.kazoo import account_db_name, set_pvt_fields

__all__ = ["FakeShard", "Harness", "finished", "wav"]

# Commands a shard completes at once and tests rarely care about.
QUIET = ("answer", "set", "flush_dtmf", "noop")


def wav(seconds: float, frequency: float = 440.0, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * frequency * t) * 8000).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


class FakeShard:
    """One call as its shard would run it, driven step by step by the test."""

    def __init__(self, bus: Bus, store: Store, call_id: str) -> None:
        self.bus = bus
        self.store = store
        self.call_id = call_id
        self.control_queue = f"ctl-{uuid.uuid4().hex[:10]}"
        self.commands: gevent.queue.Queue[dict[str, Any]] = gevent.queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.consumer = bus.consume([Binding("callctl", self.control_queue)], self._on_command)

    def _on_command(self, msg: dict[str, Any], delivery: Any) -> None:
        self.seen.append(dict(msg))
        self.commands.put(dict(msg))
        application = msg.get("Application-Name")
        if application in QUIET:
            self.complete(str(application), "SUCCESS")

    # -- what the test sees -----------------------------------------------------------------

    def expect(self, application: str, timeout: float = 20.0,
               skip: tuple[str, ...] = QUIET) -> dict[str, Any]:
        """The next command that is not one of ``skip``; it must be ``application``."""
        while True:
            try:
                msg = self.commands.get(timeout=timeout)
            except gevent.queue.Empty:
                raise AssertionError(f"no {application} command in {timeout}s; "
                                     f"seen {[m.get('Application-Name') for m in self.seen]}") from None
            name = msg.get("Application-Name")
            if name in skip and name != application:
                continue
            assert name == application, f"expected {application}, got {name}: {msg}"
            return msg

    def names(self) -> list[str]:
        return [str(m.get("Application-Name")) for m in self.seen]

    # -- what the shard says ------------------------------------------------------------------

    def event(self, name: str, **fields: Any) -> None:
        self.bus.publish(call_event[name].build({"Call-ID": self.call_id, **fields}))

    def complete(self, application: str, response: str = "SUCCESS", **fields: Any) -> None:
        self.event("CHANNEL_EXECUTE_COMPLETE", **{"Application-Name": application,
                                                  "Application-Response": response, **fields})

    def played(self, response: str = "FILE PLAYED", application: str = "play") -> dict[str, Any]:
        """Take the next play (or tts/tones) and complete it."""
        msg = self.expect(application)
        self.complete(application, response)
        return msg

    def collect(self, digits: str, *, reason: str | None = None,
                terminator: str | None = None) -> dict[str, Any]:
        msg = self.expect("collect_digits")
        fields: dict[str, Any] = {"Reason": reason or ("max_digits" if digits else "timeout")}
        if terminator:
            fields["Terminator"] = terminator
            fields["Reason"] = "terminator"
        self.complete("collect_digits", digits, **fields)
        return msg

    def dtmf(self, digit: str) -> None:
        self.event("DTMF", **{"DTMF-Digit": digit, "DTMF-Duration": 100})

    def destroy(self, cause: str = "NORMAL_CLEARING") -> None:
        self.event("CHANNEL_DESTROY", **{"Hangup-Cause": cause})

    def store_recording(self, destination: str, name: str, audio: bytes) -> None:
        """Store a recording as the shard does: the attachment ``name`` on the document of
        ``store://<db>/<doc>``, creating the database and the document if missing."""
        assert destination.startswith("store://"), destination
        db_encoded, doc_id = destination.removeprefix("store://").rsplit("/", 1)
        db = unquote(db_encoded)
        self.store.create_db(db, exist_ok=True)
        try:
            rev: str | None = self.store.get(db, doc_id)["_rev"]
        except NotFound:
            rev = None
        self.store.put_attachment(db, doc_id, name, audio, content_type="audio/wav", rev=rev)

    def record(self, seconds: float = 3.0, *, hangup: bool = False, terminator: str | None = None,
               command: str = "record") -> dict[str, Any]:
        """Take the next record command and finish it: stored, RECORD_STOP, then either the
        caller's hangup (CHANNEL_DESTROY, no completion) or the completion."""
        msg = self.expect(command)
        name = str(msg["Media-Name"])
        destination = str(msg["Media-Transfer-Destination"])
        self.event("RECORD_START", **{"Media-Name": name, "Application-Name": command})
        self.store_recording(destination, name, wav(seconds))
        fields: dict[str, Any] = {
            "Media-Name": name, "Length": int(seconds * 1000), "Media-Stored": True,
            "Media-Transfer-Destination": destination, "Silence-Terminated": False,
            "Reason": "hangup" if hangup else ("terminator" if terminator else "time_limit"),
            "Application-Name": command}
        if terminator:
            fields["Terminator"] = terminator
        self.event("RECORD_STOP", **fields)
        if hangup:
            self.destroy()
        else:
            self.complete(command, "SUCCESS")
        return msg

    def close(self) -> None:
        self.consumer.cancel()


class Harness:
    def __init__(self, data_dir: Path) -> None:
        self.bus = connect("local", node="test-callflow", data_dir=data_dir)
        self.store = open_store("embedded", data_dir)
        account = create_account(self.store, "Media Co", "media.example.com", "admin",
                                 "admin-secret-1")
        self.account_id = str(account["account_id"])
        self.realm = "media.example.com"
        config = Config.model_validate({"node": {"data_dir": str(data_dir), "name": "test"}})
        self.ctx = CallflowContext(config, self.bus, self.store, CallflowCache(self.store),
                                   CallEventRouter(self.bus))
        self.ctx.events.start()
        self.shards: list[FakeShard] = []

    @property
    def account_db(self) -> str:
        return account_db_name(self.account_id)

    def add_doc(self, pvt_type: str, doc: dict[str, Any]) -> str:
        saved = self.store.put(self.account_db, set_pvt_fields(
            {"_id": new_doc_id(), **doc}, pvt_type, self.account_id))
        return str(saved["_id"])

    def doc(self, doc_id: str) -> dict[str, Any]:
        return self.store.get(self.account_db, doc_id)

    def start_call(self, flow: dict[str, Any], *, number: str = "5000",
                   caller: str = "1001", ccvs: dict[str, Any] | None = None,
                   ) -> tuple[FakeShard, ActorRef]:
        call_id = f"cf-{uuid.uuid4().hex[:12]}"
        shard = FakeShard(self.bus, self.store, call_id)
        self.shards.append(shard)
        channel_vars = {"Account-ID": self.account_id, **(ccvs or {})}
        route_req = {"Call-ID": call_id, "Request": f"{number}@{self.realm}",
                     "Caller-ID-Name": f"Caller {caller}", "Caller-ID-Number": caller,
                     "Custom-Channel-Vars": channel_vars}
        route_win = {"Call-ID": call_id, "Control-Queue": shard.control_queue,
                     "Custom-Channel-Vars": channel_vars}
        ref = spawn(CallflowExecutor(self.ctx, route_req, route_win,
                                     FlowMatch({"flow": flow, "numbers": [number]})))
        return shard, ref

    def close(self) -> None:
        for shard in self.shards:
            shard.close()
        self.bus.close()
        self.store.close()


def finished(ref: ActorRef, timeout: float = 20.0) -> None:
    """The executor ended (normally)."""
    ref.join(timeout)
    assert not ref.is_alive, "the executor is still running"

