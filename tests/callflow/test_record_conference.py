"""record_call (a call_recording document in the month database, the shard recording into
it) and conference (by id, number and PIN; the executor hands the call off)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import gevent
import pytest

from store.kazoo import modb_name
from tests.callflow.conftest import Harness, finished


def test_record_call_start_and_stop(harness: Harness) -> None:
    shard, ref = harness.start_call({
        "module": "record_call", "data": {"action": "start", "time_limit": 120},
        "children": {"_": {"module": "play", "data": {"id": "vm-goodbye", "answer": False},
                           "children": {"_": {"module": "record_call",
                                              "data": {"action": "stop"}}}}}},
        ccvs={"Owner-ID": "u1"})
    start = shard.expect("record_call")
    assert (start["Record-Action"], start["Time-Limit"]) == ("start", 120)
    destination = str(start["Media-Transfer-Destination"])
    db_encoded, recording_id = destination.removeprefix("store://").rsplit("/", 1)
    assert unquote(db_encoded) == modb_name(harness.account_id)
    doc = harness.store.get(modb_name(harness.account_id), recording_id)
    assert (doc["pvt_type"], doc["call_id"], doc["owner_id"]) == (
        "call_recording", shard.call_id, "u1")
    shard.event("RECORD_START", **{"Media-Name": start["Media-Name"]})
    shard.complete("record_call")
    shard.played()
    stop = shard.expect("record_call")
    assert (stop["Record-Action"], stop["Media-Name"]) == ("stop", start["Media-Name"])
    shard.complete("record_call")  # the stop completes at once, the recording is stored after
    shard.store_recording(destination, str(start["Media-Name"]), b"RIFF....WAVE")
    shard.event("RECORD_STOP", **{"Media-Name": start["Media-Name"], "Length": 4200,
                                  "Media-Stored": True})
    shard.expect("hangup")
    finished(ref)
    doc = harness.store.get(modb_name(harness.account_id), recording_id)
    assert doc["duration_ms"] == 4200 and start["Media-Name"] in doc["_attachments"]


@pytest.mark.parametrize("refusal", ["CHANNEL_EXECUTE_ERROR", "FAILURE"])
def test_record_call_that_never_starts_leaves_no_document(harness: Harness,
                                                          refusal: str) -> None:
    shard, ref = harness.start_call({"module": "record_call", "data": {"action": "start"}})
    start = shard.expect("record_call")
    if refusal == "FAILURE":
        shard.complete("record_call", "FAILURE", Reason="already_recording")
    else:
        shard.event(refusal, **{"Application-Name": "record_call",
                                "Application-Response": "unsupported"})
    shard.expect("hangup")
    finished(ref)
    recording_id = str(start["Media-Transfer-Destination"]).rsplit("/", 1)[1]
    assert harness.store.open_or_none(modb_name(harness.account_id), recording_id) is None


def _conference(harness: Harness, **fields: Any) -> str:
    return harness.add_doc("conference", {"name": "standup", **fields})


def test_conference_by_id_joins_and_hands_off(harness: Harness) -> None:
    conference_id = _conference(harness)
    shard, ref = harness.start_call({"module": "conference", "data": {"id": conference_id}})
    shard.expect("answer")
    assert shard.played()["Media-Name"] == "/system_media/conf-welcome"
    join = shard.expect("conference")
    assert join["Conference-ID"] == f"{harness.account_id}-{conference_id}"
    assert (join["Moderator"], join["Mute"], join["Deaf"]) == (False, False, False)
    shard.complete("conference", "JOINED")
    finished(ref)
    assert "hangup" not in shard.names()  # the call stays in the conference


def test_conference_by_number_and_moderator_pin(harness: Harness) -> None:
    conference_id = _conference(harness, conference_numbers=["777"],
                                member={"pins": ["1111"], "join_muted": True},
                                moderator={"pins": ["9999"]})
    shard, ref = harness.start_call({"module": "conference", "data": {
        "welcome_prompt": {"play": False}}})
    assert shard.played()["Media-Name"] == "/system_media/conf-enter_conf_number"
    shard.collect("123", terminator="#")
    assert shard.played()["Media-Name"] == "/system_media/conf-bad_conf"
    shard.played()
    shard.collect("777", terminator="#")
    assert shard.played()["Media-Name"] == "/system_media/conf-enter_conf_pin"
    shard.collect("9999", terminator="#")
    join = shard.expect("conference")
    assert join["Conference-ID"] == f"{harness.account_id}-{conference_id}"
    assert (join["Moderator"], join["Mute"]) == (True, False)
    shard.complete("conference", "JOINED")
    finished(ref)


def test_a_member_pin_joins_muted_and_a_failed_join_hangs_up(harness: Harness) -> None:
    conference_id = _conference(harness, member={"pins": ["1111"], "join_muted": True})
    shard, ref = harness.start_call({"module": "conference", "data": {"id": conference_id}})
    shard.played()
    shard.collect("1111", terminator="#")
    shard.played()  # welcome
    join = shard.expect("conference")
    assert (join["Moderator"], join["Mute"]) == (False, True)
    shard.complete("conference", "ERROR")
    shard.expect("hangup")
    finished(ref)


def test_stale_completions_are_not_taken_for_new_ones(harness: Harness) -> None:
    """Completions of commands nobody waited for (answer, set, a stray play) and key presses
    are dropped before the next blocking command, which waits for its own."""
    shard, ref = harness.start_call({"module": "collect_dtmf", "data": {},
                                     "children": {"_": {"module": "play",
                                                        "data": {"id": "vm-saved"}}}})
    shard.expect("collect_digits")
    shard.complete("play", "FILE PLAYED")  # stray: arrives while collect_digits runs
    shard.dtmf("5")
    shard.complete("collect_digits", "5", Reason="max_digits")
    play = shard.expect("play")
    assert play["Media-Name"] == "/system_media/vm-saved"
    gevent.sleep(0.5)
    assert ref.is_alive, "the stray completion was taken for the play's"
    shard.complete("play", "FILE PLAYED")
    shard.expect("hangup")
    finished(ref)
