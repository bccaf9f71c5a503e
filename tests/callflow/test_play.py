"""play, tts, collect_dtmf: the commands they send and where they go next."""

from __future__ import annotations

from typing import Any

import pytest

from actors.callflow import actions
from actors.callflow.call import ALL_DTMF, Call
from store.kazoo import encode_db_name
from tests.callflow.conftest import Harness, finished


def test_play_answers_then_plays_a_media_document_and_continues(harness: Harness) -> None:
    media_id = harness.add_doc("media", {"name": "welcome", "media_source": "upload"})
    shard, ref = harness.start_call({
        "module": "play", "data": {"id": media_id},
        "children": {"_": {"module": "play", "data": {"id": "vm-goodbye", "terminators": []}}}})
    shard.expect("answer")
    play = shard.played()
    assert play["Media-Name"] == f"/{encode_db_name(harness.account_db)}/{media_id}"
    assert play["Terminators"] == list(ALL_DTMF)
    second = shard.played()
    assert second["Media-Name"] == "/system_media/vm-goodbye"
    assert second["Terminators"] == []
    shard.expect("hangup")
    finished(ref)


def test_a_terminator_stops_play_and_the_flow_goes_on(harness: Harness) -> None:
    shard, ref = harness.start_call({
        "module": "play", "data": {"id": "tone_stream://%(1000,0,440)", "answer": False},
        "children": {"_": {"module": "hangup", "data": {}}}})
    play = shard.expect("play", skip=())
    assert play["Media-Name"] == "tone_stream://%(1000,0,440)"
    shard.complete("play", "5")
    shard.expect("hangup")
    finished(ref)
    assert "answer" not in shard.names()


def test_tts_speaks_the_text(harness: Harness) -> None:
    shard, ref = harness.start_call({"module": "tts", "data": {
        "text": "Hello there", "language": "en-us", "terminators": ["#"]}})
    tts = shard.played(application="tts")
    assert (tts["Text"], tts["Language"], tts["Terminators"]) == ("Hello there", "en-us", ["#"])
    shard.expect("hangup")
    finished(ref)


def test_caller_hanging_up_during_play_ends_the_executor_without_hangup(harness: Harness) -> None:
    shard, ref = harness.start_call({"module": "play", "data": {"id": "vm-goodbye"}})
    shard.expect("play")
    shard.destroy()
    finished(ref)
    assert "hangup" not in shard.names()


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A test action that notes the call's KVS."""
    seen: list[dict[str, Any]] = []

    def handle(data: dict[str, Any], call: Call) -> str | None:
        seen.append(dict(call.kvs))
        return None

    monkeypatch.setitem(actions.ACTIONS, "probe", handle)
    return seen


def test_collect_dtmf_keeps_the_digits_under_the_collection_name(
        harness: Harness, probe: list[dict[str, Any]]) -> None:
    shard, ref = harness.start_call({
        "module": "collect_dtmf", "data": {"max_digits": 4, "timeout": 3000,
                                           "interdigit_timeout": 1500,
                                           "collection_name": "pin", "media_id": "vm-enter_pass"},
        "children": {"_": {"module": "probe", "data": {}}}})
    prompt = shard.played("3")  # a key stopped the prompt: it is the first digit collected
    assert prompt["Media-Name"] == "/system_media/vm-enter_pass"
    collect = shard.collect("3412")
    assert (collect["Maximum-Digits"], collect["Timeout"], collect["Interdigit-Timeout"],
            collect["Terminators"]) == (4, 3000, 1500, ["#"])
    shard.expect("hangup")
    finished(ref)
    assert probe == [{"dtmf_collections": {"pin": "3412"}}]
