"""The call as the callflow actions see it (Kazoo's kapps_call + kapps_call_command).

Commands go to the call's Control-Queue on ``callctl``; call events come back to the
executor's mailbox (:class:`CallEvent`). Blocking helpers (``bridge``, ``play``, ``collect_digits``,
``record``, ...) wait for them with a selective receive, as Kazoo's ``b_*`` commands do; a
CHANNEL_DESTROY of the call while waiting raises :class:`CallEnded`, which ends the executor.

The shard runs a call's commands one at a time, in order, and completes each with a
CHANNEL_EXECUTE_COMPLETE naming its application. A blocking helper first drops the
completions (and key presses) still queued from commands nobody waited for (``answer``,
``set``, ``flush_dtmf``), then sends its command and takes the first completion of *its*
application: since every blocking command is waited for before the next one is sent, that
completion can only be its own. Digits are collected in the shard (``collect_digits``), so the
DTMF events in the mailbox are informative only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bus.api.dialplan import COMMANDS
from bus.messages import Message
from store import NotFound, Store
from store.kazoo import ACCOUNTS_DB, account_db_name

if TYPE_CHECKING:
    from actors.callflow.executor import CallflowExecutor

__all__ = ["ALL_DTMF", "BridgeResult", "Call", "CallEnded", "CallEvent", "Collected",
           "Recorded"]

log = logging.getLogger("mirliton.callflow.call")

# Kazoo's ?ANY_DIGIT: the keys that may stop a prompt.
ALL_DTMF = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#")
# The longest a prompt, tone or message may take before we give up on its completion (a
# message is at most 500 s by default); the wait also ends at once when the call goes away.
MEDIA_WAIT = 1800.0
# Events left over from commands nobody waits for; dropped before each blocking command.
_STALE_EVENTS = frozenset({"CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_EXECUTE_ERROR",
                           "DTMF", "RECORD_START"})
_DONE_EVENTS = ("CHANNEL_EXECUTE_COMPLETE", "CHANNEL_EXECUTE_ERROR")


class CallEnded(Exception):
    """The caller's leg is gone (CHANNEL_DESTROY)."""


@dataclass(frozen=True, slots=True)
class CallEvent:
    msg: Message


@dataclass(frozen=True, slots=True)
class BridgeResult:
    ok: bool
    cause: str = ""
    code: str = ""

    @property
    def sip_code(self) -> str | None:
        return self.code if self.code.startswith("sip:") else None


@dataclass(frozen=True, slots=True)
class Collected:
    """Digits the shard collected; ``reason`` max_digits | terminator | timeout | error."""

    digits: str
    terminator: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Recorded:
    """A finished recording (RECORD_STOP): ``stored`` when the shard saved it at its
    destination; ``length_ms``; the key that ended it, if one did."""

    media_name: str
    stored: bool
    length_ms: int = 0
    terminator: str | None = None
    reason: str = ""
    silence_terminated: bool = False
    destination: str = ""


@dataclass
class Call:
    executor: CallflowExecutor
    store: Store
    bus: Any
    call_id: str
    control_queue: str
    account_id: str
    request_number: str
    ccvs: dict[str, Any]
    caller_id_name: str
    caller_id_number: str
    capture_group: str | None = None
    capture_groups: dict[str, str] = field(default_factory=dict)
    kvs: dict[str, Any] = field(default_factory=dict)
    bridged: bool = False
    ended: bool = False
    # The call went into a conference: it lives on in the shard, the executor hands off.
    in_conference: bool = False
    # CHANNEL_DESTROY was taken from the mailbox (e.g. while a recording was being stored):
    # the next wait raises CallEnded.
    destroyed: bool = False
    # The current node's children (Kazoo's cf_exe:attempt): actions that branch on keys they
    # choose (menu) look here.
    children: dict[str, Any] = field(default_factory=dict)
    # Application-Response of the last play/tts/tones.
    last_response: str = ""
    _account: dict[str, Any] | None = None

    # -- documents -----------------------------------------------------------------------------

    @property
    def account_db(self) -> str:
        return account_db_name(self.account_id)

    @property
    def account(self) -> dict[str, Any]:
        if self._account is None:
            try:
                self._account = self.store.get(ACCOUNTS_DB, self.account_id)
            except NotFound:
                self._account = {}
        return self._account

    @property
    def realm(self) -> str:
        return str(self.account.get("realm") or "")

    def open_doc(self, doc_id: str) -> dict[str, Any] | None:
        try:
            return self.store.get(self.account_db, doc_id)
        except NotFound:
            return None

    # -- key-value store (Kazoo's kapps_call kvs) ------------------------------------------------

    def set_dtmf_collection(self, name: str, digits: str) -> None:
        """Kazoo's set_dtmf_collection: ``kvs["dtmf_collections"][name]``."""
        self.kvs.setdefault("dtmf_collections", {})[name] = digits

    def dtmf_collection(self, name: str = "default") -> str | None:
        value = (self.kvs.get("dtmf_collections") or {}).get(name)
        return None if value is None else str(value)

    # -- commands ------------------------------------------------------------------------------

    def command(self, application: str, **fields: Any) -> None:
        msg = COMMANDS[application].build({"Call-ID": self.call_id, **fields})
        self.bus.publish(msg, routing_key=self.control_queue)

    def answer(self) -> None:
        self.command("answer")

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        self.command("hangup", **{"Hangup-Cause": cause})
        self.ended = True

    def respond(self, code: int | str, message: str | None = None) -> None:
        fields: dict[str, Any] = {"Response-Code": str(code)}
        if message:
            fields["Response-Message"] = message
        self.command("respond", **fields)

    def set_channel_vars(self, ccvs: dict[str, Any]) -> None:
        self.ccvs.update(ccvs)
        self.command("set", **{"Custom-Channel-Vars": ccvs, "Custom-Call-Vars": {}})

    # -- media (Kazoo's b_play, b_tts, b_tones, b_prompt_and_collect_digits, b_record, ...) ------

    def _prompt(self, application: str, fields: dict[str, Any],
                terminators: Iterable[str] | None) -> str | None:
        fields["Terminators"] = list(terminators or [])
        msg = self.execute(application, **fields)
        response = str((msg or {}).get("Application-Response") or "")
        if msg is not None and msg.get("Event-Name") == "CHANNEL_EXECUTE_ERROR":
            response = "FILE NOT PLAYED"
        if response == "FILE NOT PLAYED":
            log.warning("%s not played: %s", application,
                        fields.get("Media-Name") or fields.get("Text") or "tones")
        self.last_response = response
        return response if len(response) == 1 and response in ALL_DTMF else None

    def play(self, media: str | Sequence[str], terminators: Iterable[str] | None = None, *,
             language: str | None = None, loop_count: int | None = None,
             endless: bool = False) -> str | None:
        """Play a media (a list plays as one prompt); the key that stopped it, else None
        (``last_response`` tells FILE PLAYED from FILE NOT PLAYED)."""
        names = [media] if isinstance(media, str) else list(media)
        fields: dict[str, Any] = {"Media-Name": names[0] if len(names) == 1 else names}
        if language:
            fields["Language"] = language
        if loop_count and loop_count > 1:
            fields["Loop-Count"] = int(loop_count)
        if endless:
            fields["Endless-Playback"] = True
        return self._prompt("play", fields, terminators)

    def tts(self, text: str, terminators: Iterable[str] | None = None, *,
            language: str | None = None, voice: str | None = None) -> str | None:
        fields: dict[str, Any] = {"Text": text}
        if language:
            fields["Language"] = language
        if voice:
            fields["Voice"] = voice
        return self._prompt("tts", fields, terminators)

    def tones(self, tones: list[dict[str, Any]], terminators: Iterable[str] | None = None) -> str | None:
        return self._prompt("tones", {"Tones": tones}, terminators)

    def play_collect(self, media: str | Sequence[str], *, min_digits: int = 1,
                     max_digits: int = 1, timeout_ms: int = 5000,
                     terminators: Iterable[str] = ("#",), tries: int = 1,
                     regex: str = r"\d+", failed_media: str | None = None) -> str:
        """Kazoo's b_play_and_collect_digits: the digits, "" when the tries ran out."""
        fields: dict[str, Any] = {
            "Media-Name": media if isinstance(media, str) else list(media),
            "Minimum-Digits": min_digits, "Maximum-Digits": max_digits,
            "Timeout": int(timeout_ms), "Terminators": list(terminators),
            "Media-Tries": tries, "Digits-Regex": regex}
        if failed_media:
            fields["Failed-Media-Name"] = failed_media
        msg = self.execute("play_and_collect_digits", **fields)
        if msg is None or msg.get("Event-Name") == "CHANNEL_EXECUTE_ERROR":
            return ""
        return str(msg.get("Application-Response") or "")

    def collect_digits(self, max_digits: int, *, timeout_ms: int = 5000,
                       interdigit_ms: int = 2000,
                       terminators: Iterable[str] = ("#",)) -> Collected:
        """Collect key presses in the shard (digits pressed during the prompt before count
        first). ``timeout_ms`` waits for the first digit, ``interdigit_ms`` for the next."""
        wait = (timeout_ms + interdigit_ms * max(1, max_digits)) / 1000.0 + 30.0
        msg = self.execute("collect_digits", timeout=wait, **{
            "Maximum-Digits": int(max_digits), "Timeout": int(timeout_ms),
            "Interdigit-Timeout": int(interdigit_ms), "Terminators": list(terminators)})
        if msg is None or msg.get("Event-Name") == "CHANNEL_EXECUTE_ERROR":
            return Collected("", None, "error")
        return Collected(str(msg.get("Application-Response") or ""),
                         msg.get("Terminator") or None, str(msg.get("Reason") or ""))

    def flush_dtmf(self) -> None:
        """Forget the keys pressed so far (before a question that wants fresh ones). The
        shard runs commands in order, so nothing needs to wait for it."""
        self.command("flush_dtmf")

    def send_dtmf(self, digits: str) -> None:
        self.command("send_dtmf", DTMFs=digits)

    def record(self, media_name: str, destination: str, *, time_limit: int = 500,
               terminators: Iterable[str] = ("#",), silence_hits: int | None = None,
               silence_threshold: int | None = None) -> Recorded | None:
        """Record the caller into ``destination`` (``store://<db>/<doc>``, attachment
        ``media_name``); the RECORD_STOP, or None when nothing was recorded.

        When the caller hangs up while recording, the shard stores the audio and publishes
        RECORD_STOP before CHANNEL_DESTROY: this returns the recording and the *next* wait
        raises CallEnded, so the caller of ``record`` can still save what was recorded."""
        fields: dict[str, Any] = {
            "Media-Name": media_name, "Media-Transfer-Destination": destination,
            "Time-Limit": int(time_limit), "Terminators": list(terminators)}
        if silence_hits is not None:
            fields["Silence-Hits"] = int(silence_hits)
        if silence_threshold is not None:
            fields["Silence-Threshold"] = int(silence_threshold)
        self.purge_stale()
        self.command("record", **fields)
        done = self._done("record")

        def stop_or_done(m: Message) -> bool:
            return (m.get("Event-Name") == "RECORD_STOP" and m.get("Media-Name") == media_name
                    ) or done(m)

        msg = self.wait_event(stop_or_done, time_limit + MEDIA_WAIT)
        if msg is not None and msg.get("Event-Name") != "RECORD_STOP":
            # Completed without a RECORD_STOP first: give a late one a moment.
            log.warning("record of %s completed before its RECORD_STOP", media_name)
            msg = self._wait_quietly(lambda m: m.get("Event-Name") == "RECORD_STOP"
                                     and m.get("Media-Name") == media_name, 5.0)
            return self._recorded(msg, media_name)
        if msg is None:
            return None
        # The completion follows the RECORD_STOP; the call may end in between.
        self._wait_quietly(done, 30.0)
        return self._recorded(msg, media_name)

    def _wait_quietly(self, predicate: Any, timeout: float) -> Message | None:
        """wait_event, but a CHANNEL_DESTROY only marks the call destroyed (the next wait
        raises): what was already received still gets handled."""
        try:
            return self.wait_event(predicate, timeout)
        except CallEnded:
            return None

    @staticmethod
    def _recorded(msg: Message | None, media_name: str) -> Recorded | None:
        if msg is None:
            return None
        return Recorded(media_name=str(msg.get("Media-Name") or media_name),
                        stored=bool(msg.get("Media-Stored")),
                        length_ms=int(msg.get("Length") or 0),
                        terminator=msg.get("Terminator") or None,
                        reason=str(msg.get("Reason") or ""),
                        silence_terminated=bool(msg.get("Silence-Terminated")),
                        destination=str(msg.get("Media-Transfer-Destination") or ""))

    def record_call_start(self, media_name: str, destination: str, *,
                          time_limit: int = 3600) -> bool:
        """Start recording both parties (Kazoo's record_call start); True when the shard took
        it. It does not wait for RECORD_START: on a call not answered yet the shard starts
        recording once the bridge to come gives it media. The recording goes on after the
        callflow hands the call off; the shard stores it when it is stopped or the call ends."""
        msg = self.execute("record_call", timeout=30.0, **{
            "Record-Action": "start", "Media-Name": media_name, "Time-Limit": int(time_limit),
            "Media-Transfer-Destination": destination})
        return msg is not None and msg.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE" and str(
            msg.get("Application-Response") or "SUCCESS").upper() == "SUCCESS"

    def record_call_stop(self, media_name: str | None = None) -> Recorded | None:
        """Stop the call's recording: its RECORD_STOP (the shard stores it first), or None."""
        fields: dict[str, Any] = {"Record-Action": "stop"}
        if media_name:
            fields["Media-Name"] = media_name

        def stopped(m: Message) -> bool:
            return m.get("Event-Name") == "RECORD_STOP" and (
                not media_name or m.get("Media-Name") == media_name)

        done = self.execute("record_call", timeout=30.0, **fields)
        if done is None or done.get("Event-Name") == "CHANNEL_EXECUTE_ERROR":
            return None
        # The stop completes at once; storing the recording takes a moment more.
        return self._recorded(self._wait_quietly(stopped, 60.0), media_name or "")

    def conference(self, conference_id: str, *, moderator: bool = False, mute: bool = False,
                   deaf: bool = False) -> bool:
        """Join the conference's mix; True when joined. The call then stays in the shard's
        conference until it hangs up: the executor hands off and exits."""
        msg = self.execute("conference", timeout=60.0, **{
            "Conference-ID": conference_id, "Moderator": moderator, "Mute": mute,
            "Deaf": deaf})
        joined = msg is not None and msg.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE" and str(
            msg.get("Application-Response") or "").upper() == "JOINED"
        if joined:
            self.in_conference = True
        else:
            log.warning("could not join conference %s: %s", conference_id,
                        (msg or {}).get("Application-Response"))
        return joined

    def bridge(self, endpoints: list[dict[str, Any]], *, timeout: float | None = None,
               strategy: str = "simultaneous", wait: float = 600.0) -> BridgeResult:
        if not endpoints:
            return BridgeResult(False, "USER_NOT_REGISTERED", "sip:480")
        fields: dict[str, Any] = {
            "Endpoints": endpoints,
            "Dial-Endpoint-Method": strategy,
            "Caller-ID-Name": self.caller_id_name,
            "Caller-ID-Number": self.caller_id_number,
        }
        if timeout:
            fields["Timeout"] = int(timeout)
        self.purge_stale()
        self.command("bridge", **fields)
        while True:
            msg = self.wait_event(lambda m: m.get("Event-Name") == "CHANNEL_BRIDGE" or (
                m.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE"
                and m.get("Application-Name") == "bridge"), wait)
            if msg is None:
                return BridgeResult(False, "NO_ANSWER", "sip:480")
            if msg["Event-Name"] == "CHANNEL_BRIDGE":
                self.bridged = True
                return BridgeResult(True, "SUCCESS")
            return BridgeResult(False, str(msg.get("Application-Response") or msg.get(
                "Hangup-Cause") or "NORMAL_TEMPORARY_FAILURE"), str(msg.get("Hangup-Code") or ""))

    # -- events --------------------------------------------------------------------------------

    def wait_event(self, predicate: Any, timeout: float) -> Message | None:
        """The next event of this call that ``predicate`` accepts; CallEnded on its destroy."""
        from actors.kernel import ReceiveTimeout

        if self.destroyed:
            raise CallEnded(self.call_id)

        def wanted(m: Any) -> bool:
            if not isinstance(m, CallEvent) or m.msg.get("Call-ID") != self.call_id:
                return False
            return m.msg.get("Event-Name") == "CHANNEL_DESTROY" or bool(predicate(m.msg))

        try:
            event: CallEvent = self.executor.receive(wanted, timeout)
        except ReceiveTimeout:
            return None
        if event.msg.get("Event-Name") == "CHANNEL_DESTROY":
            self.ended = self.destroyed = True
            raise CallEnded(self.call_id)
        return event.msg

    def purge_stale(self) -> int:
        """Drop this call's queued events of commands nobody waits for (see the module
        docstring); CHANNEL_DESTROY, CHANNEL_BRIDGE and RECORD_STOP stay."""
        from actors.kernel import ReceiveTimeout

        def stale(m: Any) -> bool:
            return (isinstance(m, CallEvent) and m.msg.get("Call-ID") == self.call_id
                    and m.msg.get("Event-Name") in _STALE_EVENTS)

        dropped = 0
        while True:
            try:
                self.executor.receive(stale, 0)
            except ReceiveTimeout:
                return dropped
            dropped += 1

    def _done(self, application: str) -> Any:
        def match(m: Message) -> bool:
            return m.get("Event-Name") in _DONE_EVENTS and m.get("Application-Name") == application
        return match

    def execute(self, application: str, timeout: float = MEDIA_WAIT, **fields: Any) -> Message | None:
        """Send a command and wait for its completion (None when none came in ``timeout``)."""
        self.purge_stale()
        self.command(application, **fields)
        msg = self.wait_event(self._done(application), timeout)
        if msg is None:
            log.warning("no completion of %s in %.0f s", application, timeout)
        elif msg.get("Event-Name") == "CHANNEL_EXECUTE_ERROR":
            log.warning("%s failed: %s", application, msg.get("Application-Response"))
        return msg
