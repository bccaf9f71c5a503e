"""Media in the call legs: the calls shard anchors a call's RTP when a command needs it and
runs the media commands, driven over the bus by the test in the callflow app's place. Real
pjsua2 phones through a real node (2 calls shards); audio checked by FFT.

- ``answer`` puts the shard's own RTP port in the 200 OK; ``play`` of a tone and of a system
  prompt is heard by the phone; a terminator digit stops a prompt and is reported;
- ``collect_digits`` and ``play_and_collect_digits`` get RFC 4733 key presses (a digit
  pressed during the prompt counts), DTMF call events for each;
- ``record`` with ``Media-Transfer-Destination`` stores the caller's audio (3 s, 440 Hz) in
  the store before RECORD_STOP; a hangup during a recording still stores it, and its
  RECORD_STOP comes before the CHANNEL_DESTROY;
- a ``bridge`` after an ``answer`` anchors the callee too: both phones hear each other
  through the shard;
- ``conference``: three phones on whichever shards, each hears the other two, not itself;
- ``kill -9`` of the shard during a recording: the phone is hung up, the call recorded as
  lost, and the recording is stored whole or not at all (a partial file is dropped).
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.calls.conftest import PBX, Phone, dominant_frequency, start_pbx, stop_pbx, wait_until
from tests.calls.fake_app import FakeApp, complete

pytestmark = pytest.mark.timeout(300)

REALM = "media.example.com"
ROLES_WITHOUT_CALLFLOW = ["ops", "registrar", "edge", "cdr", "calls"]
PARK_TIMEOUT = 8.0


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    pbx = start_pbx(tmp_path_factory.mktemp("media"), roles=ROLES_WITHOUT_CALLFLOW,
                    MIRLITON_CALLS__PARK_TIMEOUT=str(PARK_TIMEOUT))
    try:
        pbx.provision(REALM, ["1001", "1002", "1003", "2001"])
        yield pbx
    finally:
        stop_pbx(pbx)


def _event(name: str) -> Any:
    return lambda e: e.get("Event-Name") == name


def _routed_call(pbx: PBX, app: FakeApp, phone: Phone, number: str = "5000") -> str:
    phone.registered()
    phone.call(number, REALM)
    call_id = str(phone.state("CALLING")["call_id"])
    wait_until(lambda: app.routed(call_id), timeout=10, what="route_win")
    return call_id


def _answered(pbx: PBX, app: FakeApp, phone: Phone) -> str:
    call_id = _routed_call(pbx, app, phone)
    app.command(call_id, "answer")
    phone.state("CONFIRMED")
    phone.wait_for(lambda e: e.get("event") == "media" and e.get("active"), what="media")
    return call_id


def _hang_up(phone: Phone, app: FakeApp, call_id: str) -> dict[str, Any]:
    phone.send(cmd="hangup")
    phone.state("DISCONNECTED")
    return app.wait(call_id, _event("CHANNEL_DESTROY"), "the call's end")[0]


def test_answer_anchors_and_play_is_heard(pbx: PBX, app: FakeApp, tmp_path: Path,
                                         phones: list[Phone]) -> None:
    caller = Phone(pbx, "1001", tmp_path)
    phones.append(caller)
    call_id = _answered(pbx, app, caller)
    app.command(call_id, "play", **{"Media-Name": "tone_stream://L=1;%(3000,0,1000)"})
    done = app.wait(call_id, complete("play"), "the tone played", timeout=30)[0]
    assert done["Application-Response"] == "FILE PLAYED"
    # A prompt that does not exist is reported, and the call goes on.
    app.command(call_id, "play", **{"Media-Name": "/system_media/no-such-prompt"})
    missing = app.wait(call_id, complete("play"), "the missing prompt", count=2)[1]
    assert missing["Application-Response"] == "FILE NOT PLAYED"
    _hang_up(caller, app, call_id)
    caller.stop()
    assert caller.recording is not None
    frequency, share = dominant_frequency(caller.recording)
    assert abs(frequency - 1000) < 15 and share > 0.3, (frequency, share)


def test_digits_are_collected_and_reported(pbx: PBX, app: FakeApp, tmp_path: Path,
                                          phones: list[Phone]) -> None:
    caller = Phone(pbx, "1001", tmp_path, record=False)
    phones.append(caller)
    call_id = _answered(pbx, app, caller)

    app.command(call_id, "collect_digits", **{"Maximum-Digits": 4, "Terminators": ["#"],
                                              "Timeout": 20000, "Interdigit-Timeout": 5000})
    caller.send(cmd="dtmf", digits="42#")
    collected = app.wait(call_id, complete("collect_digits"), "the digits", timeout=30)[0]
    assert collected["Application-Response"] == "42"
    assert collected["Terminator"] == "#"
    digits = [e["DTMF-Digit"] for e in app.seen(call_id, _event("DTMF"))]
    assert digits == ["4", "2", "#"]

    # A key pressed during the prompt stops it and is the first digit collected.
    app.command(call_id, "play_and_collect_digits", **{
        "Media-Name": "tone_stream://%(1000,0,600)", "Minimum-Digits": 2,
        "Maximum-Digits": 2, "Timeout": 10000, "Terminators": ["#"], "Media-Tries": 2,
        "Digits-Regex": "\\d+"})
    app.wait(call_id, _event("CHANNEL_EXECUTE"), "the collect started", count=2)
    caller.send(cmd="dtmf", digits="78")
    got = app.wait(call_id, complete("play_and_collect_digits"), "two digits", timeout=30)[0]
    assert got["Application-Response"] == "78"

    # Nothing pressed: every try times out, the answer is empty.
    app.command(call_id, "play_and_collect_digits", **{
        "Media-Name": "silence_stream://200", "Minimum-Digits": 1, "Maximum-Digits": 1,
        "Timeout": 500, "Terminators": ["#"], "Media-Tries": 2, "Digits-Regex": "\\d+"})
    empty = app.wait(call_id, complete("play_and_collect_digits"), "the timeout",
                     count=2, timeout=30)[1]
    assert empty["Application-Response"] == ""
    _hang_up(caller, app, call_id)


def _stored_audio(pbx: PBX, db: str, doc_id: str, name: str, path: Path) -> Path:
    with pbx.store() as store:
        data, content_type = store.get_attachment(db, doc_id, name)
    assert content_type == "audio/wav"
    path.write_bytes(data)
    return path


def test_record_stores_the_callers_audio(pbx: PBX, app: FakeApp, tmp_path: Path,
                                        phones: list[Phone]) -> None:
    from store.kazoo import encode_db_name, modb_doc_id, modb_name

    caller = Phone(pbx, "1001", tmp_path, tone=440.0, record=False)
    phones.append(caller)
    call_id = _answered(pbx, app, caller)
    db, doc_id = modb_name(pbx.account_id), modb_doc_id()
    destination = f"store://{encode_db_name(db)}/{doc_id}"
    app.command(call_id, "record", **{"Media-Name": "message.wav", "Time-Limit": 3,
                                      "Media-Transfer-Destination": destination})
    stop = app.wait(call_id, _event("RECORD_STOP"), "the recording's end", timeout=30)[0]
    assert app.seen(call_id, _event("RECORD_START"))
    assert stop["Media-Stored"] is True and stop["Reason"] == "time_limit"
    assert 2500 <= stop["Length"] <= 3500, stop
    app.wait(call_id, complete("record"), "the record command's end")
    audio = _stored_audio(pbx, db, doc_id, "message.wav", tmp_path / "stored.wav")
    with wave.open(str(audio)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert abs(wav.getnframes() / 8000 - 3.0) <= 0.5
    frequency, _ = dominant_frequency(audio, skip=0.0)
    assert abs(frequency - 440) <= 10, frequency

    # A hangup during a recording: stored all the same, reported before the call's end.
    doc_id = modb_doc_id()
    app.command(call_id, "record", **{
        "Media-Name": "cut.wav", "Time-Limit": 60,
        "Media-Transfer-Destination": f"store://{encode_db_name(db)}/{doc_id}"})
    app.wait(call_id, _event("RECORD_START"), "the second recording", count=2)
    wait_until(lambda: len(app.seen(call_id, _event("RECORD_START"))) >= 2, timeout=5)
    import time

    time.sleep(2.0)  # some audio to keep
    destroy = _hang_up(caller, app, call_id)
    events = app.seen(call_id, lambda e: True)
    stops = [e for e in events if e.get("Event-Name") == "RECORD_STOP"]
    assert len(stops) == 2 and stops[1]["Media-Stored"] is True, stops
    assert events.index(stops[1]) < events.index(destroy)
    _stored_audio(pbx, db, doc_id, "cut.wav", tmp_path / "cut.wav")


def test_bridge_after_answer_is_anchored_both_ways(pbx: PBX, app: FakeApp, tmp_path: Path,
                                                   phones: list[Phone]) -> None:
    caller = Phone(pbx, "1001", tmp_path, tone=440.0)
    callee = Phone(pbx, "2001", tmp_path, tone=660.0, answer_after=0.5)
    phones += [caller, callee]
    callee.registered()
    call_id = _answered(pbx, app, caller)
    app.command(call_id, "bridge", Endpoints=[{"Invite-Format": "contact", "To-User": "2001",
                                              "To-Realm": REALM, "Endpoint-Timeout": 20}])
    app.wait(call_id, _event("CHANNEL_BRIDGE"), "the bridge")
    callee.state("CONFIRMED")
    import time

    time.sleep(3.0)
    callee.send(cmd="hangup")
    callee.state("DISCONNECTED")
    caller.state("DISCONNECTED")
    caller.stop()
    callee.stop()
    assert caller.recording is not None and callee.recording is not None
    heard_by_callee, _ = dominant_frequency(callee.recording, skip=0.5)
    assert abs(heard_by_callee - 440) <= 10, heard_by_callee
    # The caller heard our ringback (440 + 480 Hz) until the answer, then the callee.
    heard_by_caller, _ = dominant_frequency(caller.recording, skip=1.5)
    assert abs(heard_by_caller - 660) <= 10, heard_by_caller


def _has_frequency(path: Path, frequency: float, share: float = 0.05) -> bool:
    """Whether ``frequency`` holds at least ``share`` of the recording's energy."""
    import struct

    import numpy as np

    data = path.read_bytes()
    rate = struct.unpack_from("<I", data, 24)[0]  # pjsua records at its clock rate (16 kHz)
    start = data.find(b"data", 12) + 8
    raw = data[start:]
    samples = np.frombuffer(raw[: len(raw) // 2 * 2], dtype=np.int16).astype(np.float64)
    if len(samples) < rate // 2:
        return False
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    spectrum[0] = 0.0
    bin_hz = rate / len(samples)
    index = int(round(frequency / bin_hz))
    window = spectrum[max(0, index - int(5 / bin_hz) - 1): index + int(5 / bin_hz) + 2].sum()
    return bool(window / (spectrum.sum() or 1.0) >= share)


def test_conference_across_shards(pbx: PBX, app: FakeApp, tmp_path: Path,
                                  phones: list[Phone]) -> None:
    tones = {"1001": 440.0, "1002": 660.0, "1003": 880.0}
    members = {user: Phone(pbx, user, tmp_path, tone=tone) for user, tone in tones.items()}
    phones += list(members.values())
    call_ids = {user: _answered(pbx, app, phone) for user, phone in members.items()}
    # A conference is mixed by one shard; pick a room whose shard is not every member's,
    # so that at least one member joins from another shard.
    from actors.calls.registry import pick_shard, read_shards

    held = {row["call_id"]: row["shard"] for row in pbx.calls()}
    member_shards = {held[call_id] for call_id in call_ids.values()}
    shards = read_shards(pbx.node.data_dir)
    assert len(shards) == 2
    room = next(f"room-{n}" for n in range(100)
                if member_shards != {pick_shard(shards, f"conference:room-{n}").shard})  # type: ignore[union-attr]
    for user in members:
        app.command(call_ids[user], "conference", **{"Conference-ID": room})
        joined = app.wait(call_ids[user], complete("conference"), f"{user} joined")[0]
        assert joined["Application-Response"] == "JOINED"
    import time

    time.sleep(PARK_TIMEOUT + 1.0)  # in a conference: never hung up for want of commands
    for phone in members.values():
        phone.send(cmd="hangup")
        phone.state("DISCONNECTED")
        phone.stop()
    for user, phone in members.items():
        assert phone.recording is not None
        others = [tone for other, tone in tones.items() if other != user]
        for tone in others:
            assert _has_frequency(phone.recording, tone), f"{user} did not hear {tone} Hz"
        assert not _has_frequency(phone.recording, tones[user], share=0.02), (
            f"{user} heard itself")


def test_kill_9_of_the_shard_during_a_recording(pbx: PBX, app: FakeApp, tmp_path: Path,
                                                phones: list[Phone]) -> None:
    import os
    import signal
    import time

    from store import NotFound
    from store.kazoo import encode_db_name, modb_doc_id, modb_name

    caller = Phone(pbx, "1001", tmp_path, record=False)
    phones.append(caller)
    call_id = _answered(pbx, app, caller)
    db, doc_id = modb_name(pbx.account_id), modb_doc_id()
    app.command(call_id, "record", **{
        "Media-Name": "killed.wav", "Time-Limit": 60,
        "Media-Transfer-Destination": f"store://{encode_db_name(db)}/{doc_id}"})
    app.wait(call_id, _event("RECORD_START"), "the recording started")
    time.sleep(2.0)
    shard = next(int(r["shard"]) for r in pbx.calls() if r["call_id"] == call_id)
    recordings = pbx.node.data_dir / "recordings" / f"shard{shard}"
    assert list(recordings.glob("*.wav.part")), "no partial recording on disk"
    old = int(pbx.node.child("calls", f"shard{shard}")["pid"])
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        child = pbx.node.child("calls", f"shard{shard}")
        return bool(child.get("pid") and child["pid"] != old and child.get("state") == "running")

    wait_until(restarted, timeout=30, what="the shard restarted")
    caller.state("DISCONNECTED")  # the successor hangs up what the killed shard held
    assert pbx.cdr(call_id)["hangup_cause"] == "NORMAL_TEMPORARY_FAILURE"
    assert not list(recordings.glob("*.part")), "the partial recording was left behind"
    assert not app.seen(call_id, _event("RECORD_STOP"))
    with pbx.store() as store:
        try:
            doc = store.get(db, doc_id)
        except NotFound:
            doc = None
        if doc is not None:  # stored only whole
            data, _ = store.get_attachment(db, doc_id, "killed.wav")
            (tmp_path / "check.wav").write_bytes(data)
            with wave.open(str(tmp_path / "check.wav")) as wav:
                assert wav.getnframes() > 0


def test_a_routed_call_nobody_commands_is_hung_up(pbx: PBX, app: FakeApp, tmp_path: Path,
                                                  phones: list[Phone]) -> None:
    """The app that won the route died before its first command: the call does not ring
    forever (FreeSWITCH's park_timeout)."""
    caller = Phone(pbx, "1002", tmp_path, record=False)
    phones.append(caller)
    call_id = _routed_call(pbx, app, caller)
    ended = caller.state("DISCONNECTED", timeout=PARK_TIMEOUT + 20)
    assert ended["code"] == 408
    destroy = app.wait(call_id, _event("CHANNEL_DESTROY"), "the call's end")[0]
    assert destroy["Hangup-Cause"] == "RECOVERY_ON_TIMER_EXPIRE"


def test_an_answered_call_its_app_left_is_hung_up(pbx: PBX, app: FakeApp, tmp_path: Path,
                                                  phones: list[Phone]) -> None:
    """Answered, a prompt played, then nothing more (the callflow process died mid-menu):
    hung up once nothing has run for the park timeout; a call in a bridge or a conference
    is never hung up this way (see the conference test, which outlasts it)."""
    caller = Phone(pbx, "1002", tmp_path, record=False)
    phones.append(caller)
    call_id = _answered(pbx, app, caller)
    app.command(call_id, "play", **{"Media-Name": "silence_stream://500"})
    app.wait(call_id, complete("play"), "the prompt")
    caller.state("DISCONNECTED", timeout=PARK_TIMEOUT + 20)
    destroy = app.wait(call_id, _event("CHANNEL_DESTROY"), "the call's end")[0]
    assert destroy["Hangup-Cause"] == "RECOVERY_ON_TIMER_EXPIRE"
