"""MWI without phones: the ``mwi_update`` contract and its routing (bus/api/presence.py), the
RFC 3842 body the edge sends, and the callflow voicemail publishing ``mwi_update`` (the
callflow against a real local bus and embedded store, the test playing the calls shard)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gevent
import pytest

from actors.edge.mwi import MwiCounts, build_notify, dialog_tag, summary_body
from bus import Binding, BusValidationError, connect
from bus.api.presence import mwi_routing_key, mwi_update
from bus.messages import lookup
from bus.routing import topic_matcher
from store import new_doc_id
from tests.callflow.conftest import FakeShard, Harness, finished


def test_mwi_update_contract() -> None:
    msg = mwi_update.build(to="1001@a.example.com", messages_new=2, messages_saved=5,
                           call_id="c1")
    assert (msg["Event-Category"], msg["Event-Name"]) == ("presence", "mwi_update")
    assert mwi_update.exchange == "presence"
    assert lookup(msg) is mwi_update
    assert mwi_update.route(msg) == "mwi_updates.a%2Eexample%2Ecom.1001"
    with_urgent = mwi_update.build(to="sip:1001@a.b", messages_new=0, messages_saved=0,
                                   messages_urgent=1, messages_urgent_saved=0)
    assert mwi_update.route(with_urgent) == "mwi_updates.a%2Eb.1001"

    cases: list[tuple[dict[str, Any], str]] = [
        ({"messages_new": 1, "messages_saved": 0}, "To"),
        ({"to": "1001", "messages_new": 1, "messages_saved": 0}, "To"),
        ({"to": "1001@a.b", "messages_saved": 0}, "Messages-New"),
        ({"to": "1001@a.b", "messages_new": "1", "messages_saved": 0}, "Messages-New"),
        ({"to": "1001@a.b", "messages_new": True, "messages_saved": 0}, "Messages-New"),
        ({"to": "1001@a.b", "messages_new": 1, "messages_saved": -1}, "Messages-Saved"),
    ]
    for fields, field in cases:
        with pytest.raises(BusValidationError) as error:
            mwi_update.build(**fields)
        assert error.value.field == field, fields


def test_mwi_routing_keys_match_the_edge_bindings() -> None:
    key = mwi_routing_key("1001", "a.example.com")
    assert topic_matcher("mwi_updates.*.*")(key)
    assert topic_matcher("mwi_updates.a%2Eexample%2Ecom.*")(key)
    assert not topic_matcher("mwi_updates.b%2Eexample%2Ecom.*")(key)
    # A user with a dot stays one word.
    assert topic_matcher("mwi_updates.*.*")(mwi_routing_key("j.doe", "a.b"))


def test_mwi_update_over_the_local_bus(tmp_path: Path) -> None:
    bus = connect("local", node="test-mwi", data_dir=tmp_path)
    got: list[dict[str, Any]] = []
    try:
        consumer = bus.consume([Binding("presence", "mwi_updates.*.*")],
                               lambda msg, delivery: got.append(msg))
        bus.publish(mwi_update.build(to="1001@a.b", messages_new=1, messages_saved=0))
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            gevent.sleep(0.05)
        consumer.cancel()
    finally:
        bus.close()
    assert [(m["To"], m["Messages-New"], m["Messages-Saved"]) for m in got] == [("1001@a.b", 1, 0)]


def test_summary_body_is_rfc_3842() -> None:
    assert summary_body("1001", "a.b", MwiCounts(1, 0)) == (
        b"Messages-Waiting: yes\r\nMessage-Account: sip:1001@a.b\r\n"
        b"Voice-Message: 1/0 (0/0)\r\n")
    assert summary_body("1001", "a.b", MwiCounts(0, 3)).startswith(b"Messages-Waiting: no\r\n")


def test_the_unsolicited_notify_parses_back() -> None:
    from protocols.sip import Request, parse_message

    body = summary_body("1001", "a.b", MwiCounts(2, 1))
    notify = build_notify(request_uri="sip:1001@192.0.2.7:5062", from_uri="sip:1001@a.b",
                          from_tag="t1", to="<sip:1001@a.b>", call_id="c1", cseq=1,
                          local=("198.51.100.1", 5060), transport="TCP", body=body)
    parsed = parse_message(bytes(notify))
    assert isinstance(parsed, Request)
    assert parsed.method == "NOTIFY" and str(parsed.uri) == "sip:1001@192.0.2.7:5062"
    headers = parsed.headers
    assert (headers.get("event"), headers.get("subscription-state"), parsed.content_type) == (
        "message-summary", "active", "application/simple-message-summary")
    assert parsed.via.transport == "TCP" and str(parsed.via.branch).startswith("z9hG4bK")
    assert headers.get("contact") == "<sip:198.51.100.1:5060;transport=tcp>"
    assert parsed.body == body and parsed.content_length == len(body)


def test_notify_cseqs_grow() -> None:
    from actors.edge.mwi import _notify_cseq

    first, second = _notify_cseq(), _notify_cseq()
    assert 0 < first < second < 2**31


def test_dialog_tag_depends_on_the_dialog() -> None:
    tag = dialog_tag(b"s", "call", "ftag", "1001@a.b")
    assert tag == dialog_tag(b"s", "call", "ftag", "1001@a.b")
    assert tag != dialog_tag(b"s", "call", "other", "1001@a.b")
    assert tag != dialog_tag(b"t", "call", "ftag", "1001@a.b")


# -- the callflow voicemail publishes -----------------------------------------------------------


class MwiWatcher:
    def __init__(self, harness: Harness) -> None:
        self.seen: list[dict[str, Any]] = []
        self.consumer = harness.bus.consume([Binding("presence", "mwi_updates.#")],
                                            lambda msg, delivery: self.seen.append(msg))

    def wait(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            gevent.sleep(0.05)
        assert len(self.seen) >= count, self.seen
        return self.seen[:count]


def _owned_box(harness: Harness) -> tuple[str, str]:
    owner = harness.add_doc("user", {"first_name": "Box", "last_name": "Owner"})
    for username in ("1101", "1102"):
        harness.add_doc("device", {"name": f"phone {username}", "owner_id": owner,
                                   "sip": {"username": username, "password": "x"}})
    # Kazoo's mwi_unsolicited_updates false: that device's lamp is not driven from here.
    harness.add_doc("device", {"name": "quiet", "owner_id": owner,
                               "mwi_unsolicited_updates": False,
                               "sip": {"username": "1103", "password": "x"}})
    harness.add_doc("device", {"name": "someone else's", "owner_id": new_doc_id(),
                               "sip": {"username": "1199", "password": "x"}})
    box = harness.add_doc("vmbox", {"name": "Box 3001", "mailbox": "3001", "owner_id": owner,
                                    "skip_greeting": True, "pin": "4321"})
    return owner, box


def _counts(msgs: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    return {m["To"]: (m["Messages-New"], m["Messages-Saved"]) for m in msgs}


def test_compose_then_check_publish_mwi(harness: Harness) -> None:
    _, box = _owned_box(harness)
    watcher = MwiWatcher(harness)
    realm = harness.realm
    shard, ref = harness.start_call({"module": "voicemail",
                                     "data": {"id": box, "action": "compose"}})
    shard.played()  # beep
    shard.record(2.0, hangup=True)
    finished(ref)
    left = watcher.wait(3)
    assert _counts(left) == {f"1101@{realm}": (1, 0), f"1102@{realm}": (1, 0),
                             f"3001@{realm}": (1, 0)}
    assert {m["Call-ID"] for m in left} == {shard.call_id}

    # The message listened to in check: saved, and the lamps go off.
    shard2, ref2 = harness.start_call({"module": "voicemail",
                                       "data": {"id": box, "action": "check"}})
    _login(shard2, "4321")
    shard2.played()  # you have 1 new message, main menu
    shard2.collect("1")
    shard2.played()  # the message, to its end
    after_listen = watcher.wait(6)[3:]
    assert _counts(after_listen) == {f"1101@{realm}": (0, 1), f"1102@{realm}": (0, 1),
                                     f"3001@{realm}": (0, 1)}
    shard2.played()  # message menu
    shard2.collect("7")  # delete
    shard2.played()  # deleted
    after_delete = watcher.wait(9)[6:]
    assert set(_counts(after_delete).values()) == {(0, 0)}
    shard2.destroy()
    finished(ref2)
    watcher.consumer.cancel()


def _login(shard: FakeShard, pin: str) -> None:
    assert shard.played()["Media-Name"] == "/system_media/vm-enter_pass"
    shard.collect(pin, terminator="#")


def test_a_publish_failure_never_breaks_the_call(harness: Harness,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _, box = _owned_box(harness)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bus down")

    # Only mwi_update publishes fail: call commands still reach the shard.
    real_publish = harness.bus.publish

    def publish(msg: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if msg.get("Event-Name") == "mwi_update":
            broken()
        return real_publish(msg, *args, **kwargs)

    monkeypatch.setattr(harness.bus, "publish", publish)
    shard, ref = harness.start_call({"module": "voicemail",
                                     "data": {"id": box, "action": "compose"}})
    shard.played()  # beep
    shard.record(1.5, terminator="#")
    assert shard.played()["Media-Name"] == ["/system_media/vm-saved", "/system_media/vm-goodbye"]
    shard.expect("hangup")
    finished(ref)
