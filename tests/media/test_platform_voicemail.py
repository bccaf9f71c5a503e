"""Voicemail end to end (issue 9's acceptance): a real node (edge, registrar, callflow, calls
with media), real pjsua2 phones registered through the edge.

A caller reaches a box: the greeting plays (the phone hears non-silent audio); the caller's
phone sends a 440 Hz tone for 3 s of recording and hangs up; the box then holds a message
whose audio lasts 3 s +/- 0.5 s with its dominant frequency at 440 Hz +/- 10 Hz. The owner
dials the check number, enters the PIN by RFC 4733 DTMF, asks for the new messages and hears
the 440 Hz tone.

The test follows the call through the bus (tests/media/platform.py's BusTap: ``python -m
bus.tap`` in a process of its own, the commands sent to the shards' Control-Queues and the call
events), so it acts when the platform is ready for it rather than after guessed delays; every
wait is generous.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.calls.conftest import PBX, Phone, wait_until
from tests.media.platform import (
    PLATFORMS,
    BusTap,
    audio_samples,
    dial,
    dominant_frequency,
    heard_frequency,
    platform_pbx,
    rms,
)

pytestmark = pytest.mark.timeout(600)

CALLER, OWNER = "1001", "1002"
MAILBOX, CHECK = "3001", "3097"
PIN = "4567"
TONE = 440.0


def _setup(pbx: PBX) -> None:
    owner = pbx.add_user("Owner", [OWNER])
    box = pbx.add_doc("vmbox", {"name": "Owner's box", "mailbox": MAILBOX, "owner_id": owner,
                                "pin": PIN, "require_pin": True})
    pbx.add_callflow([MAILBOX], {"module": "voicemail", "data": {"id": box, "action": "compose"}})
    pbx.add_callflow([CHECK], {"module": "voicemail", "data": {"id": box, "action": "check"}})
    pbx.devices["box"] = box


@pytest.fixture(scope="module", params=PLATFORMS)
def pbx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    yield from platform_pbx(request, tmp_path_factory, "vm", 43000, [CALLER, OWNER], _setup)


def _messages(pbx: PBX) -> list[dict[str, Any]]:
    from store.voicemail import list_messages

    with pbx.store() as store:
        return list_messages(store, pbx.account_id, pbx.devices["box"])


def test_leave_a_message_then_the_owner_hears_it(pbx: PBX, tap: BusTap, phones: list[Phone],
                                                 tmp_path: Path) -> None:
    from store.voicemail import message_audio

    before = len(_messages(pbx))
    caller, mark, greeting = dial(pbx, tap, phones, tmp_path, CALLER, MAILBOX, tone=TONE,
                                  prompt="vm-not_available")
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
    owner, mark, pin_prompt = dial(pbx, tap, phones, tmp_path, OWNER, CHECK, tone=1000.0,
                                   prompt="vm-enter_pass")
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
