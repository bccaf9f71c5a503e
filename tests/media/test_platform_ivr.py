"""An IVR end to end (issue 9's acceptance): a menu with 1 -> device A, 2 -> voicemail and a
timeout branch, on a real node with pjsua2 phones registered through the edge.

- DTMF 1 (RFC 4733) from the caller reaches A: A rings, answers, and each phone hears the
  other's tone through the shard (the call was answered for the menu, so its media is anchored
  there and the bridge relays it);
- an invalid digit plays the invalid prompt and the menu starts again, where 2 reaches the
  voicemail box's greeting;
- silence takes the timeout branch.

The test follows the call on the bus (tests/media/platform.py's BusTap) and
acts when the shard has been told what to do; no assertion depends on timing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.calls.conftest import PBX, Phone
from tests.media.platform import (
    PLATFORMS,
    BusTap,
    audio_samples,
    dial,
    heard_frequency,
    platform_pbx,
)

pytestmark = pytest.mark.timeout(600)

CALLER, AGENT = "1001", "2001"
MENU, MAILBOX = "4000", "3001"
TONE_CALLER, TONE_AGENT = 440.0, 1000.0
GREETING = "system-press_1_to_listen"


def _setup(pbx: PBX) -> None:
    box = pbx.add_doc("vmbox", {"name": "Sales box", "mailbox": MAILBOX, "pin": "1234"})
    menu = pbx.add_doc("menu", {"name": "Main menu", "retries": 3, "timeout": 4000,
                                "hunt": False, "media": {"greeting": GREETING}})
    pbx.add_callflow([MENU], {
        "module": "menu", "data": {"id": menu},
        "children": {
            "1": {"module": "device", "data": {"id": pbx.devices[AGENT], "timeout": 30}},
            "2": {"module": "voicemail", "data": {"id": box, "action": "compose"}},
            "timeout": {"module": "play", "data": {"id": "menu-no_entry"}},
        }})


@pytest.fixture(scope="module", params=PLATFORMS)
def pbx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PBX]:
    yield from platform_pbx(request, tmp_path_factory, "ivr", 44000, [CALLER, AGENT], _setup)


def _dial_menu(pbx: PBX, tap: BusTap, phones: list[Phone], tmp_path: Path) -> tuple[Phone, int, str]:
    caller, mark, greeting = dial(pbx, tap, phones, tmp_path, CALLER, MENU, tone=TONE_CALLER,
                                  prompt=GREETING)
    return caller, mark, str(greeting["Call-ID"])


def test_digit_1_reaches_device_a(pbx: PBX, tap: BusTap, phones: list[Phone],
                                  tmp_path: Path) -> None:
    agent = Phone(pbx, AGENT, tmp_path, tone=TONE_AGENT, answer_after=1.0)
    phones.append(agent)
    agent.registered()
    caller, mark, call_id = _dial_menu(pbx, tap, phones, tmp_path)
    caller.send(cmd="dtmf", digits="1")
    tap.event("DTMF", after=mark, **{"Call-ID": call_id, "DTMF-Digit": "1"})
    agent.incoming(timeout=60)
    agent.state("CONFIRMED", timeout=60)
    tap.event("CHANNEL_BRIDGE", after=mark, timeout=60, **{"Call-ID": call_id})
    time.sleep(3.0)  # talk a while: both recordings hold each other's tone
    caller.send(cmd="hangup")
    caller.state("DISCONNECTED", timeout=30)
    agent.state("DISCONNECTED", timeout=30)
    caller.stop()
    agent.stop()
    assert caller.recording is not None and agent.recording is not None
    heard, rate = audio_samples(agent.recording.read_bytes())
    assert heard_frequency(heard, rate, TONE_CALLER), "A did not hear the caller"
    heard, rate = audio_samples(caller.recording.read_bytes())
    assert heard_frequency(heard, rate, TONE_AGENT), "the caller did not hear A"


def test_invalid_digit_retries_then_2_reaches_voicemail(pbx: PBX, tap: BusTap,
                                                        phones: list[Phone],
                                                        tmp_path: Path) -> None:
    caller, mark, call_id = _dial_menu(pbx, tap, phones, tmp_path)
    caller.send(cmd="dtmf", digits="9")
    invalid = tap.command("play", media="menu-invalid_entry", after=mark)
    assert invalid["Call-ID"] == call_id
    again = tap.command("play", media=GREETING, after=tap.messages.index(invalid, mark) + 1)
    assert again["Call-ID"] == call_id
    caller.send(cmd="dtmf", digits="2")
    greeting = tap.command("play", media="vm-not_available", after=mark, timeout=60)
    assert greeting["Call-ID"] == call_id
    caller.send(cmd="hangup")
    caller.state("DISCONNECTED", timeout=30)


def test_silence_takes_the_timeout_branch(pbx: PBX, tap: BusTap, phones: list[Phone],
                                          tmp_path: Path) -> None:
    caller, mark, call_id = _dial_menu(pbx, tap, phones, tmp_path)
    no_entry = tap.command("play", media="menu-no_entry", after=mark, timeout=90)
    assert no_entry["Call-ID"] == call_id
    assert not [m for m in tap.messages[mark:] if m.get("Application-Name") == "play"
                and "menu-invalid_entry" in str(m.get("Media-Name"))]
    caller.state("DISCONNECTED", timeout=60)  # the flow ends after the prompt: hung up
