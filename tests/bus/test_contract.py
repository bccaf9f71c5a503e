"""The bus contract: one suite, run unchanged on ``local`` and on ``amqp`` (real RabbitMQ).

Pub/sub and request/response run between two OS processes (tests/bus/peer.py); the rest
between two connections of this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest

from bus import (
    Binding,
    Bus,
    BusError,
    BusValidationError,
    PublishNotConfirmed,
    RequestTimeout,
    lookup,
    metrics,
)
from bus.api import authn, call, conf, dialplan, registration, route
from tests.bus.conftest import Peer

Spawn = Callable[[dict[str, Any]], Peer]


def _event(name: str, call_id: str, **fields: Any) -> dict[str, Any]:
    return call.call_event[name].build(call_id=call_id, **fields)


def _received_keys(lines: list[dict[str, Any]]) -> list[str]:
    return [line["routing_key"] for line in lines if "msg" in line]


def test_topic_wildcards_across_processes(
    make_bus: Callable[..., Bus], spawn_peer: Spawn, unique: str
) -> None:
    mine, other = f"call-{unique}.a", f"other-{unique}"
    peer = spawn_peer(
        {
            "role": "subscribe",
            "bindings": [
                ["callevt", f"call.*.{mine.replace('.', '%2E')}"],
                ["callevt", "call.CHANNEL_DESTROY.*"],
                ["registrar", f"registration.#.{unique}"],
                ["registrar", f"registration.success.*.{unique}-x"],
            ],
        }
    )
    bus = make_bus()
    bus.publish(_event("CHANNEL_CREATE", mine))  # call.*.<mine>
    bus.publish(_event("CHANNEL_CREATE", other))  # nothing
    bus.publish(_event("CHANNEL_DESTROY", other))  # call.CHANNEL_DESTROY.*
    bus.publish(_event("DTMF", mine, dtmf_digit="5"))  # call.*.<mine>
    # "#" matches zero or more words, "*" exactly one.
    bus.publish(registration.reg_flush.build(realm=unique))  # registration.flush.<u>: # = 1 word
    bus.publish(
        registration.reg_success.build(
            contact="sip:a@b",
            event_timestamp=1,
            expires=60,
            realm="r.example",
            username=f"{unique}-x",
        )
    )  # registration.success.r%2Eexample.<u>-x matches the "*" binding
    bus.publish(
        registration.reg_query.build(realm=f"{unique}.z", username="u")
    )  # registration.query.<u>%2Ez.u: no binding
    bus.publish(_event("CHANNEL_ANSWER", mine))  # sentinel, last
    lines = peer.read_until(lambda line: line.get("msg", {}).get("Event-Name") == "CHANNEL_ANSWER")
    destroy_keys = [k for k in _received_keys(lines) if k.startswith("call.CHANNEL_DESTROY.")]
    others = [k for k in _received_keys(lines) if not k.startswith("call.CHANNEL_DESTROY.")]
    assert f"call.CHANNEL_DESTROY.{other}" in destroy_keys
    assert others == [
        f"call.CHANNEL_CREATE.call-{unique}%2Ea",
        f"call.DTMF.call-{unique}%2Ea",
        f"registration.flush.{unique}",
        f"registration.success.r%2Eexample.{unique}-x",
        f"call.CHANNEL_ANSWER.call-{unique}%2Ea",
    ]
    assert lines[0]["msg"]["Node"] == "test"


def test_hash_matches_zero_words(make_bus: Callable[..., Bus], unique: str) -> None:
    subscriber, publisher = make_bus("sub"), make_bus("pub")
    got: list[str] = []
    subscriber.consume(
        [Binding("configuration", f"doc_edited.{unique}.#")], lambda m, d: got.append(d.routing_key)
    )
    publisher.publish(conf.doc_edited.build(id="d1", database=unique, type="device"))
    publisher.publish(conf.doc_created.build(id="d2", database=unique, type="device"))
    _wait_for(lambda: len(got) >= 1)
    gevent.sleep(0.2)
    assert got == [f"doc_edited.{unique}.device.d1"]


def test_direct_and_fanout(make_bus: Callable[..., Bus], unique: str) -> None:
    a, b, publisher = make_bus("a"), make_bus("b"), make_bus("p")
    got_a: list[dict[str, Any]] = []
    got_b: list[dict[str, Any]] = []
    a.consume(
        [Binding("callctl", f"ctl-{unique}-a"), Binding("nodes")], lambda m, d: got_a.append(m)
    )
    b.consume(
        [Binding("callctl", f"ctl-{unique}-b"), Binding("nodes")], lambda m, d: got_b.append(m)
    )
    publisher.publish(dialplan.answer.build(call_id=unique), routing_key=f"ctl-{unique}-a")
    publisher.publish(
        dialplan.play.build(call_id=unique, media_name="tone", insert_at="now"),
        routing_key=f"ctl-{unique}-b",
    )
    publisher.publish(
        {
            "Event-Category": "nodes",
            "Event-Name": "advertise",
            "App-Name": "t",
            "App-Version": "1",
            "Msg-ID": unique,
            "Node": f"fanout-{unique}",
            "Expires": 1000,
        },
        routing_key="any.key.at.all",
    )

    def mine(got: list[dict[str, Any]]) -> list[str]:
        return [
            m.get("Application-Name") or m["Event-Name"]
            for m in got
            if m.get("Call-ID") == unique or m.get("Node") == f"fanout-{unique}"
        ]

    _wait_for(lambda: len(mine(got_a)) >= 2 and len(mine(got_b)) >= 2)
    gevent.sleep(0.1)
    assert mine(got_a) == ["answer", "advertise"]
    assert mine(got_b) == ["play", "advertise"]


def test_named_queue_is_shared_across_processes(
    make_bus: Callable[..., Bus], spawn_peer: Spawn, unique: str
) -> None:
    queue = f"shared-{unique}"
    binding = ["callmgr", f"route.req.audio.{unique}"]
    peer = spawn_peer({"role": "subscribe", "bindings": [binding], "queue": queue})
    bus = make_bus()
    local: list[str] = []
    bus.consume([Binding(*binding)], lambda m, d: local.append(m["Call-ID"]), queue=queue)
    for n in range(20):
        bus.publish(
            route.route_req.build(
                call_id=f"c{n}", From="a", to="b", request="sip:1@x", account_id=unique
            )
        )
    _wait_for(lambda: len(local) >= 1)
    remote: list[str] = []
    deadline = time.monotonic() + 10
    while len(local) + len(remote) < 20 and time.monotonic() < deadline:
        try:
            line = peer.read(timeout=max(0.1, deadline - time.monotonic()))
        except AssertionError:
            break
        remote.append(line["msg"]["Call-ID"])
    assert sorted(local + remote, key=lambda c: int(c[1:])) == [f"c{n}" for n in range(20)]
    assert local and remote, (local, remote)


def _authn_request(realm: str, user: str = "alice") -> dict[str, Any]:
    return authn.authn_req.build(
        method="REGISTER",
        auth_realm=realm,
        auth_user=user,
        From=f"sip:{user}@{realm}",
        to=f"sip:{user}@{realm}",
    )


def test_targeted_request_response_across_processes(
    make_bus: Callable[..., Bus], spawn_peer: Spawn, unique: str
) -> None:
    realm = f"{unique}.example.com"
    spawn_peer(
        {"role": "respond", "bindings": [["callmgr", f"authn.req.{realm.replace('.', '%2E')}"]]}
    )
    bus = make_bus()
    request = _authn_request(realm)
    reply = bus.request(request, timeout=5)
    assert reply["Event-Name"] == "authn_resp"
    assert reply["Auth-Password"] == "secret"
    assert reply["Auth-Username"] == "alice"
    assert reply["Node"] == "peer"
    # Many requests in flight at once each get their own reply.
    users = [f"u{n}" for n in range(20)]
    jobs = [gevent.spawn(bus.request, _authn_request(realm, user), timeout=5) for user in users]
    gevent.joinall(jobs, raise_error=True)
    assert [job.value["Auth-Username"] for job in jobs] == users


def test_request_timeout(make_bus: Callable[..., Bus], unique: str) -> None:
    bus = make_bus()
    before = metrics.REQUEST_TIMEOUTS._value.get()
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as raised:
        bus.request(_authn_request(f"nobody-{unique}"), timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 2
    assert raised.value.timeout == 0.3
    assert metrics.REQUEST_TIMEOUTS._value.get() == before + 1


def test_late_reply_never_reaches_a_later_request(
    make_bus: Callable[..., Bus], spawn_peer: Spawn, unique: str
) -> None:
    realm = f"late-{unique}"
    # The responder answers its first request after 0.8 s, the next ones at once.
    spawn_peer(
        {"role": "respond", "bindings": [["callmgr", f"authn.req.{realm}"]], "delays": [0.8]}
    )
    bus = make_bus()
    with pytest.raises(RequestTimeout):
        bus.request(_authn_request(realm, "first"), timeout=0.3)
    reply = bus.request(_authn_request(realm, "second"), timeout=5)
    assert reply["Auth-Username"] == "second"
    gevent.sleep(0.2)


def test_collect(make_bus: Callable[..., Bus], spawn_peer: Spawn, unique: str) -> None:
    realm = f"collect-{unique}"
    spec = {"role": "respond", "bindings": [["callmgr", f"authn.req.{realm}"]]}
    spawn_peer({**spec, "replies": [{"Auth-Password": "p1"}, {"Auth-Password": "p2"}]})
    spawn_peer({**spec, "replies": [{"Auth-Password": "p3", "_after": 0.1}]})
    bus = make_bus()
    replies = bus.collect(_authn_request(realm), timeout=1.0)
    assert sorted(r["Auth-Password"] for r in replies) == ["p1", "p2", "p3"]
    started = time.monotonic()
    early = bus.collect(_authn_request(realm), timeout=5.0, until=lambda rs: len(rs) >= 2)
    assert len(early) >= 2
    assert time.monotonic() - started < 4
    assert bus.collect(_authn_request(f"none-{unique}"), timeout=0.2) == []


def test_defer_response(make_bus: Callable[..., Bus], spawn_peer: Spawn, unique: str) -> None:
    realm = f"defer-{unique}"
    spawn_peer(
        {
            "role": "respond",
            "bindings": [["callmgr", f"authn.req.{realm}"]],
            "replies": [
                {"Auth-Password": "deferred", "Defer-Response": True},
                {"Auth-Password": "direct", "_after": 0.2},
            ],
        }
    )
    only_deferred = f"defer-only-{unique}"
    spawn_peer(
        {
            "role": "respond",
            "bindings": [["callmgr", f"authn.req.{only_deferred}"]],
            "replies": [{"Auth-Password": "deferred", "Defer-Response": True}],
        }
    )
    bus = make_bus()
    # A deferred reply waits while a direct one may still come.
    assert bus.request(_authn_request(realm), timeout=3)["Auth-Password"] == "direct"
    # With nothing else before the timeout, the deferred reply is the answer.
    started = time.monotonic()
    reply = bus.request(_authn_request(only_deferred), timeout=0.5)
    assert reply["Auth-Password"] == "deferred"
    assert time.monotonic() - started >= 0.45


def test_validation_on_build() -> None:
    with pytest.raises(BusValidationError) as missing:
        route.route_req.build(From="a", to="b", request="sip:1@x")
    assert missing.value.field == "Call-ID"
    with pytest.raises(BusValidationError) as bad_value:
        route.route_resp.build(method="teleport")
    assert bad_value.value.field == "Method"
    with pytest.raises(BusValidationError) as bad_type:
        registration.reg_success.build(
            contact="c", event_timestamp=1, expires="soon", realm="r", username="u"
        )
    assert bad_type.value.field == "Expires"
    with pytest.raises(BusValidationError) as bad_insert:
        dialplan.hangup.build(call_id="c", insert_at="middle")
    assert bad_insert.value.field == "Insert-At"
    with pytest.raises(BusValidationError) as endpoint:
        dialplan.bridge.build(call_id="c", endpoints=[{"To-User": "1"}])
    assert endpoint.value.field == "Endpoints[0].Invite-Format"
    with pytest.raises(BusValidationError) as unknown:
        dialplan.answer.build(call_id="c", colour="blue")
    assert unknown.value.field == "colour"


def test_validation_on_publish(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    message = _event("CHANNEL_CREATE", "x")
    del message["App-Name"]
    with pytest.raises(BusValidationError) as raised:
        bus.publish(message)
    assert raised.value.field == "App-Name"


def test_validation_on_receive(
    make_bus: Callable[..., Bus], spawn_peer: Spawn, unique: str
) -> None:
    peer = spawn_peer({"role": "subscribe", "bindings": [["callevt", f"call.*.{unique}"]]})
    bus = make_bus()
    invalid = _event("CHANNEL_EXECUTE_COMPLETE", unique, application_name="play")
    del invalid["Application-Name"]
    bus.publish(invalid, validate=False)
    bus.publish({**_event("CHANNEL_CREATE", unique), "Billing-Seconds": "ten"}, validate=False)
    bus.publish(_event("CHANNEL_ANSWER", unique))
    lines = peer.read_until(lambda line: "msg" in line)
    assert [line.get("invalid") for line in lines] == ["Application-Name", "Billing-Seconds", None]
    assert lines[-1]["msg"]["Event-Name"] == "CHANNEL_ANSWER"


def test_invalid_reply_is_not_an_answer(
    make_bus: Callable[..., Bus], spawn_peer: Spawn, unique: str
) -> None:
    realm = f"invalid-{unique}"
    spawn_peer(
        {
            "role": "respond",
            "bindings": [["callmgr", f"authn.req.{realm}"]],
            "replies": [
                {"Auth-Method": "telepathy", "Auth-Password": "x", "_invalid": True},
                {"Auth-Password": "valid", "_after": 0.1},
            ],
        }
    )
    bus = make_bus()
    assert bus.request(_authn_request(realm), timeout=3)["Auth-Password"] == "valid"


def test_targeted_message_without_request_goes_to_its_handler(
    make_bus: Callable[..., Bus], unique: str
) -> None:
    app, call_control = make_bus("app"), make_bus("ecallmgr")
    wins: list[dict[str, Any]] = []
    app.on_targeted([("dialplan", "route_win")], lambda m, d: wins.append(m))
    call_control.publish(
        route.route_win.build(call_id=unique, control_queue=f"ctl-{unique}"),
        routing_key=app.server_id,
    )
    _wait_for(lambda: bool(wins))
    assert wins[0]["Control-Queue"] == f"ctl-{unique}"


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.01)


def test_confirmed_publish(make_bus: Callable[..., Bus], unique: str) -> None:
    subscriber, publisher = make_bus("sub"), make_bus("pub")
    got: list[str] = []
    subscriber.consume(
        [Binding("callevt", f"call.*.{unique}")], lambda m, d: got.append(m["Event-Name"])
    )
    publisher.publish(_event("CHANNEL_CREATE", unique), confirm=True)
    _wait_for(lambda: got == ["CHANNEL_CREATE"])
    # Nobody bound: a confirmed publish is not accepted by any queue.
    started = time.monotonic()
    with pytest.raises(PublishNotConfirmed):
        publisher.publish(_event("CHANNEL_CREATE", f"nobody-{unique}"), confirm=True, timeout=0.5)
    assert time.monotonic() - started < 3


def test_metrics_count_published_and_consumed(make_bus: Callable[..., Bus], unique: str) -> None:
    subscriber, publisher = make_bus("sub"), make_bus("pub")
    published = metrics.PUBLISHED.labels("callevt", "CHANNEL_HOLD")
    consumed = metrics.CONSUMED.labels("callevt", "CHANNEL_HOLD")
    invalid = metrics.DROPPED.labels("invalid")
    before = (published._value.get(), consumed._value.get(), invalid._value.get())
    got: list[str] = []
    subscriber.consume(
        [Binding("callevt", f"call.*.{unique}")],
        lambda m, d: got.append(m["Event-Name"]),
        on_invalid=lambda error, body, delivery: got.append(f"invalid {error.field}"),
    )
    publisher.publish(_event("CHANNEL_HOLD", unique))
    publisher.publish(_event("CHANNEL_HOLD", unique))
    publisher.publish({**_event("CHANNEL_HOLD", unique), "Timestamp": "noon"}, validate=False)
    _wait_for(lambda: len(got) == 3)
    assert got == ["CHANNEL_HOLD", "CHANNEL_HOLD", "invalid Timestamp"]
    assert published._value.get() == before[0] + 3
    assert consumed._value.get() == before[1] + 2
    assert invalid._value.get() == before[2] + 1


def test_bindings_added_and_removed_on_a_live_consumer(
    make_bus: Callable[..., Bus], unique: str
) -> None:
    """Per-call interest on one queue (gen_listener:add_binding / rm_binding)."""
    calls, publisher = make_bus("calls"), make_bus("pub")
    got: list[str] = []
    consumer = calls.consume([], lambda m, d: got.append(m["Call-ID"]))
    call_ids = [f"{unique}-{n}" for n in range(30)]
    for call_id in call_ids:
        consumer.add_binding(Binding("callevt", f"call.*.{call_id}"))
    for call_id in call_ids:
        publisher.publish(_event("CHANNEL_CREATE", call_id))
    _wait_for(lambda: len(got) == 30)
    for call_id in call_ids[:20]:
        consumer.remove_binding(Binding("callevt", f"call.*.{call_id}"))
    got.clear()
    for call_id in call_ids:
        publisher.publish(_event("CHANNEL_DESTROY", call_id))
    _wait_for(lambda: len(got) == 10)
    gevent.sleep(0.2)
    assert got == call_ids[20:]


def test_every_declared_type_routes_as_kazoo() -> None:
    """Routing keys of the declared types, as kazoo.md section 4 lists them."""
    from bus.api import offnet
    from bus.messages import message_types

    examples = {
        "route_req": (
            route.route_req.build(call_id="c", From="f", to="t", request="sip:100@a.b"),
            "route.req.audio.a%2Eb.100",
        ),
        "route_req with account": (
            route.route_req.build(
                call_id="c",
                From="f",
                to="t",
                request="sip:1@x",
                custom_channel_vars={"Account-ID": "acc"},
            ),
            "route.req.audio.acc",
        ),
        "authn_req": (_authn_request("a.b"), "authn.req.a%2Eb"),
        "reg_success": (
            registration.reg_success.build(
                contact="c", event_timestamp=1.5, expires=300, realm="a.b", username="u"
            ),
            "registration.success.a%2Eb.u",
        ),
        "reg_query": (registration.reg_query.build(realm="a.b"), "registration.query.a%2Eb.*"),
        "reg_flush": (registration.reg_flush.build(realm="a.b"), "registration.flush.a%2Eb"),
        "call event": (
            _event("CHANNEL_BRIDGE", "c.1", other_leg_call_id="c2"),
            "call.CHANNEL_BRIDGE.c%2E1",
        ),
        "doc_deleted": (
            conf.doc_deleted.build(id="d", database="account/ab/cd/ef", type="device"),
            "doc_deleted.account/ab/cd/ef.device.d",
        ),
        "offnet_req": (
            offnet.offnet_req.build(
                application_name="bridge", resource_type="audio", to_did="+15550100"
            ),
            "offnet.resource.req",
        ),
    }
    for label, (message, key) in examples.items():
        msg_type = lookup(message)
        assert msg_type is not None, label
        assert msg_type.route(message) == key, label
    exchanges = {t.name: t.exchange for t in message_types()}
    assert exchanges["route_req"] == exchanges["authn_req"] == "callmgr"
    assert (
        exchanges["route_resp"] == exchanges["route_win"] == exchanges["authn_resp"] == "targeted"
    )
    assert exchanges["reg_success"] == "registrar"
    assert exchanges["channel_destroy"] == "callevt"
    assert exchanges["dialplan.bridge"] == "callctl"
    assert exchanges["doc_edited"] == "configuration"
    assert exchanges["advertise"] == "nodes"
    for name in (
        "answer",
        "hangup",
        "respond",
        "play",
        "tts",
        "record",
        "bridge",
        "play_and_collect_digits",
        "send_dtmf",
        "set",
        "park",
        "conference",
    ):
        assert exchanges[f"dialplan.{name}"] == "callctl"


def test_a_targeted_handler_may_itself_make_requests(
    make_bus: Callable[..., Bus], spawn_peer: Spawn, unique: str
) -> None:
    """route_win handling that asks something (e.g. the callee's registration) must not
    block the reply it waits for: both arrive on the same Server-ID queue."""
    realm = f"nested-{unique}"
    spawn_peer({"role": "respond", "bindings": [["callmgr", f"authn.req.{realm}"]]})
    app, call_control = make_bus("app"), make_bus("ecallmgr")
    answers: list[str] = []

    def on_route_win(msg: dict[str, Any], _delivery: Any) -> None:
        answers.append(
            app.request(_authn_request(realm, msg["Call-ID"]), timeout=5)["Auth-Username"]
        )

    app.on_targeted([("dialplan", "route_win")], on_route_win)
    call_control.publish(
        route.route_win.build(call_id=unique, control_queue="ctl"), routing_key=app.server_id
    )
    _wait_for(lambda: answers == [unique])


def test_exchanges_beyond_kazoos_and_undeclared_message_types(
    make_bus: Callable[..., Bus], unique: str
) -> None:
    subscriber, publisher = make_bus("sub"), make_bus("pub")
    exchange = f"tasks-{unique}"
    for bus in (subscriber, publisher):
        bus.declare_exchange(exchange, "direct")
    got: list[dict[str, Any]] = []
    subscriber.consume([Binding(exchange, "run")], lambda m, d: got.append(m))
    # A type nobody declared still needs a valid envelope, and says where it goes.
    task = {
        "Event-Category": "tasks",
        "Event-Name": "run",
        "App-Name": "tests",
        "App-Version": "1",
        "Msg-ID": unique,
        "Task": "rebuild",
    }
    with pytest.raises(BusValidationError):
        publisher.publish(task)
    with pytest.raises(BusValidationError) as missing:
        publisher.publish({**task, "Msg-ID": ""}, exchange=exchange, routing_key="run")
    assert missing.value.field == "Msg-ID"
    publisher.publish(task, exchange=exchange, routing_key="run")
    _wait_for(lambda: len(got) == 1)
    assert got[0]["Task"] == "rebuild"
    with pytest.raises(BusError):
        publisher.declare_exchange(exchange, "topic")
    with pytest.raises(BusError):
        publisher.publish(task, exchange=f"nowhere-{unique}", routing_key="run")


def test_many_processes_publish_to_each_other_at_once(spawn_peer: Spawn, unique: str) -> None:
    """Four processes each publish 2,000 events that all four consume: every process gets
    every message of every sender (no deadlock between writers, nothing lost)."""
    senders, count = 4, 2000
    peers = [
        spawn_peer(
            {
                "role": "chatter",
                "node": f"chatter{n}",
                "call_id": unique,
                "count": count,
                "expect": senders * count,
            }
        )
        for n in range(senders)
    ]
    for peer in peers:
        assert peer.process.stdin is not None
        peer.process.stdin.write("go\n")
        peer.process.stdin.flush()
    for peer in peers:
        result = peer.read(timeout=60)
        assert result["received"] == senders * count
        assert result["from"] == {f"chatter{n}": count for n in range(senders)}


def test_tap_prints_what_goes_by(
    make_bus: Callable[..., Bus], bus_url: str, data_dir: Any, unique: str
) -> None:
    import json
    import sys

    import gevent.subprocess

    from tests.bus.conftest import ROOT

    tap = gevent.subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bus.tap",
            "--url",
            bus_url,
            "--data-dir",
            str(data_dir),
            "--count",
            "2",
            f"callevt:call.*.{unique}",
        ],
        cwd=ROOT,
        stdout=gevent.subprocess.PIPE,
        text=True,
    )
    bus = make_bus()
    try:
        # The tap binds after it starts: publish until it has seen two messages.
        with gevent.Timeout(30):
            while tap.poll() is None:
                bus.publish(_event("CHANNEL_CREATE", unique))
                bus.publish(
                    {**_event("CHANNEL_ANSWER", unique), "Billing-Seconds": "x"}, validate=False
                )
                gevent.sleep(0.1)
        assert tap.stdout is not None
        lines = [json.loads(line) for line in tap.stdout.read().splitlines()]
    finally:
        if tap.poll() is None:
            tap.kill()
    # Two consecutive deliveries: one valid event and one invalid, in either order.
    assert len(lines) == 2
    valid = next(line for line in lines if "message" in line)
    invalid = next(line for line in lines if "invalid" in line)
    assert valid["message"]["Event-Name"] == "CHANNEL_CREATE"
    assert valid["routing_key"] == f"call.CHANNEL_CREATE.{unique}"
    assert invalid["invalid"] == "Billing-Seconds"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[1, 2]", "<message>"),
        (b"not json", "<body>"),
        (b"\xff\xfe", "<body>"),
        (b'{"Event-Name": 3}', "Event-Category"),
    ],
)
def test_garbage_on_the_wire_is_invalid_not_fatal(
    make_bus: Callable[..., Bus], unique: str, body: bytes, field: str
) -> None:
    bus = make_bus()
    got: list[str] = []
    consumer = bus.consume(
        [Binding("callevt", f"call.*.{unique}")],
        lambda m, d: got.append(m["Event-Name"]),
        on_invalid=lambda error, raw, d: got.append(f"invalid {error.field}"),
    )
    # What a foreign or broken publisher could put on the wire, then a valid message.
    consumer.push("callevt", f"call.X.{unique}", body)
    bus.publish(_event("CHANNEL_CREATE", unique))
    _wait_for(lambda: len(got) == 2)
    assert got == [f"invalid {field}", "CHANNEL_CREATE"]
