"""menu (Kazoo's cf_menu): greeting, digits to children, invalid entries and retries,
silence and the timeout branch, the exit after the retries, extensions (hunt)."""

from __future__ import annotations

from typing import Any

from actors.callflow.call import ALL_DTMF
from tests.callflow.conftest import FakeShard, Harness, finished


def _menu(harness: Harness, **fields: Any) -> str:
    greeting = harness.add_doc("media", {"name": "ivr greeting", "media_source": "upload"})
    return harness.add_doc("menu", {"name": "main", "media": {"greeting": greeting}, **fields})


def _branch(media: str) -> dict[str, Any]:
    return {"module": "play", "data": {"id": media, "answer": False, "terminators": []}}


def _flow(menu_id: str, children: dict[str, Any]) -> dict[str, Any]:
    return {"module": "menu", "data": {"id": menu_id}, "children": children}


def _took(shard: FakeShard, media: str) -> None:
    assert shard.played()["Media-Name"] == f"/system_media/{media}"


def test_a_digit_takes_its_branch_at_once(harness: Harness) -> None:
    menu_id = _menu(harness)
    shard, ref = harness.start_call(_flow(menu_id, {"1": _branch("vm-saved"),
                                                    "2": _branch("vm-deleted")}))
    shard.expect("answer")
    greeting = shard.played("1")  # pressed during the greeting
    assert greeting["Terminators"] == list(ALL_DTMF)
    collect = shard.collect("1")
    assert (collect["Maximum-Digits"], collect["Timeout"]) == (1, 10000)
    _took(shard, "vm-saved")  # no second collect: nothing longer starts with "1"
    shard.expect("hangup")
    finished(ref)


def test_an_invalid_entry_plays_the_invalid_prompt_and_retries(harness: Harness) -> None:
    menu_id = _menu(harness, hunt=False)
    shard, ref = harness.start_call(_flow(menu_id, {"1": _branch("vm-saved"),
                                                    "2": _branch("vm-deleted")}))
    shard.played()
    shard.collect("9")
    _took(shard, "menu-invalid_entry")
    shard.expect("flush_dtmf", skip=("answer", "set"))
    shard.played()  # the greeting again
    shard.collect("2")
    _took(shard, "vm-deleted")
    shard.expect("hangup")
    finished(ref)


def test_silence_takes_the_timeout_branch(harness: Harness) -> None:
    menu_id = _menu(harness, timeout=2000)
    shard, ref = harness.start_call(_flow(menu_id, {"1": _branch("vm-saved"),
                                                    "timeout": _branch("menu-no_entry")}))
    shard.played()
    assert shard.collect("")["Timeout"] == 2000
    _took(shard, "menu-no_entry")
    shard.expect("hangup")
    finished(ref)


def test_out_of_retries_plays_the_exit_prompt_then_the_default_branch(harness: Harness) -> None:
    menu_id = _menu(harness, retries=2, hunt=False)
    shard, ref = harness.start_call(_flow(menu_id, {"1": _branch("vm-saved"),
                                                    "_": _branch("vm-goodbye")}))
    shard.played()
    shard.collect("")  # silence, no timeout child: a try
    shard.played()
    shard.collect("5")  # invalid: the second try
    _took(shard, "menu-invalid_entry")
    _took(shard, "menu-exit")
    _took(shard, "vm-goodbye")
    shard.expect("hangup")
    finished(ref)


def test_out_of_retries_without_a_default_branch_hangs_up(harness: Harness) -> None:
    menu_id = _menu(harness, retries=1, media={"exit_media": False})
    shard, ref = harness.start_call(_flow(menu_id, {"1": _branch("vm-saved")}))
    shard.collect("")  # no greeting (the menu's media has none)
    shard.expect("hangup")
    finished(ref)
    assert "play" not in shard.names()  # and no exit prompt


def test_longer_keys_are_collected_digit_by_digit(harness: Harness) -> None:
    menu_id = _menu(harness, hunt=False, interdigit_timeout=1500)
    shard, ref = harness.start_call(_flow(menu_id, {"1": _branch("vm-saved"),
                                                    "12": _branch("vm-deleted")}))
    shard.played()
    shard.collect("1")
    more = shard.collect("2")
    assert (more["Timeout"], more["Maximum-Digits"]) == (1500, 1)
    _took(shard, "vm-deleted")
    shard.expect("hangup")
    finished(ref)


def test_hunt_dials_an_extension_of_the_account(harness: Harness) -> None:
    menu_id = _menu(harness, max_extension_length=3)
    harness.add_doc("callflow", {"numbers": ["201"], "flow": _branch("vm-pin_set")})
    shard, ref = harness.start_call(_flow(menu_id, {"1": _branch("vm-saved")}))
    shard.played()
    shard.collect("2")
    shard.collect("0")
    shard.collect("1")
    _took(shard, "menu-transferring_call")
    _took(shard, "vm-pin_set")
    shard.expect("hangup")
    finished(ref)
