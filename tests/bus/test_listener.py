"""gen_listener: responders by Event-Category/Event-Name, as a plain listener and as an actor
whose handler crash is an actor crash."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest

from actors.kernel import Crash, Down, spawn
from bus import Binding, Bus, Delivery, Message, RequestTimeout
from bus.api import authn, call, route
from bus.listener import BusMessage, Listener, ListenerActor


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.01)


def test_listener_dispatches_by_category_and_name(
    make_bus: Callable[..., Bus], unique: str
) -> None:
    listening, publisher = make_bus("l"), make_bus("p")
    seen: list[tuple[str, str]] = []
    listener = Listener(
        listening,
        bindings=[Binding("callevt", f"call.*.{unique}")],
        responders={
            ("call_event", "CHANNEL_ANSWER"): lambda m, d: seen.append(("answer", m["Call-ID"])),
            ("call_event", "*"): lambda m, d: seen.append(("any", m["Event-Name"])),
        },
    ).start()
    publisher.publish(call.call_event["CHANNEL_CREATE"].build(call_id=unique))
    publisher.publish(call.call_event["CHANNEL_ANSWER"].build(call_id=unique))
    _wait_for(lambda: len(seen) >= 2)
    assert seen == [("any", "CHANNEL_CREATE"), ("answer", unique)]
    listener.stop()


class RouteResponder(ListenerActor):
    """The shape of callflow's route listener: answers route_req, receives route_win."""

    responders = {
        ("dialplan", "route_req"): "on_route_req",
        ("dialplan", "route_win"): "on_route_win",
    }
    targeted = True

    def __init__(self, bus: Bus, realm: str, wins: list[Message]) -> None:
        super().__init__(bus, bindings=[Binding("callmgr", f"route.req.audio.{realm}.*")])
        self.wins = wins

    def on_route_req(self, msg: Message, _delivery: Delivery) -> None:
        if msg["Call-ID"] == "crash":
            raise RuntimeError("boom")
        self.reply(msg, route.route_resp.build(method="park"))

    def on_route_win(self, msg: Message, _delivery: Delivery) -> None:
        self.wins.append(msg)


def test_listener_actor_request_response_and_targeted(
    make_bus: Callable[..., Bus], unique: str
) -> None:
    app, call_control = make_bus("app"), make_bus("ecallmgr")
    wins: list[Message] = []
    ref = spawn(RouteResponder(app, unique, wins))
    request = route.route_req.build(call_id="c1", From="a", to="b", request=f"sip:100@{unique}")
    reply = call_control.request(request, timeout=5)
    assert reply["Method"] == "park"
    # route_win goes to the Server-ID of the winning route_resp.
    assert reply["Server-ID"] == app.server_id
    call_control.publish(
        route.route_win.build(call_id="c1", control_queue="ctl"), routing_key=reply["Server-ID"]
    )
    _wait_for(lambda: bool(wins))
    assert wins[0]["Control-Queue"] == "ctl"
    ref.stop()


def test_a_responder_exception_crashes_the_actor(make_bus: Callable[..., Bus], unique: str) -> None:
    app, call_control = make_bus("app"), make_bus("ecallmgr")
    wins: list[Message] = []
    ref = spawn(RouteResponder(app, unique, wins))
    downs: list[Any] = []

    class Monitor(ListenerActor):
        def init(self) -> None:
            self.monitor(ref)

        def handle_info(self, msg: Any) -> None:
            if isinstance(msg, Down):
                downs.append(msg)

    monitor = spawn(Monitor(app))
    crash = route.route_req.build(call_id="crash", From="a", to="b", request=f"sip:1@{unique}")
    call_control.publish(crash)
    _wait_for(lambda: bool(downs))
    assert isinstance(downs[0].reason, Crash)
    assert "boom" in downs[0].reason.error
    assert not ref.is_alive
    # Its bindings went with it: a restarted instance binds again and answers.
    restarted = spawn(RouteResponder(app, unique, wins))
    ok = route.route_req.build(call_id="c2", From="a", to="b", request=f"sip:1@{unique}")
    assert call_control.request(ok, timeout=5)["Method"] == "park"
    restarted.stop()
    monitor.stop()


def test_bus_message_is_what_the_mailbox_receives(
    make_bus: Callable[..., Bus], unique: str
) -> None:
    app, other = make_bus("app"), make_bus("other")
    got: list[BusMessage] = []

    class Collector(ListenerActor):
        bindings = (Binding("callmgr", f"authn.req.{unique}"),)
        responders = {("*", "*"): "on_any"}

        def on_any(self, msg: Message, delivery: Delivery) -> None:
            got.append(BusMessage(msg, delivery))

    ref = spawn(Collector(app))
    other.publish(
        authn.authn_req.build(method="INVITE", auth_realm=unique, auth_user="u", From="f", to="t")
    )
    _wait_for(lambda: bool(got))
    assert got[0].delivery.exchange == "callmgr"
    assert got[0].delivery.routing_key == f"authn.req.{unique}"
    ref.stop()


@pytest.mark.parametrize("brutal", [False, True])
def test_stopped_actor_stops_consuming(
    make_bus: Callable[..., Bus], unique: str, brutal: bool
) -> None:
    app, other = make_bus("app"), make_bus("other")
    got: list[str] = []

    class Collector(ListenerActor):
        bindings = (Binding("callevt", f"call.*.{unique}"),)
        responders = {("call_event", "*"): "on_event"}

        def on_event(self, msg: Message, _delivery: Delivery) -> None:
            got.append(msg["Event-Name"])

    ref = spawn(Collector(app))
    other.publish(call.call_event["CHANNEL_CREATE"].build(call_id=unique))
    _wait_for(lambda: got == ["CHANNEL_CREATE"])
    if brutal:
        ref.kill()
    else:
        ref.stop()
    other.publish(call.call_event["CHANNEL_ANSWER"].build(call_id=unique))
    other.publish(call.call_event["CHANNEL_DESTROY"].build(call_id=unique))
    gevent.sleep(0.3)
    assert got == ["CHANNEL_CREATE"]


def test_a_supervisor_restarts_a_crashed_listener(
    make_bus: Callable[..., Bus], unique: str
) -> None:
    """Let it crash: the responder raises, the actor exits, its supervisor starts a fresh one
    that binds again and answers the next request."""
    from supervisors.core import ChildSpec, SupervisorFlags
    from supervisors.local import Supervisor

    app, call_control = make_bus("app"), make_bus("ecallmgr")
    wins: list[Message] = []
    supervisor = spawn(
        Supervisor(
            [ChildSpec("routes", lambda: RouteResponder(app, unique, wins))],
            SupervisorFlags("one_for_one", intensity=5, period=10.0),
            name="routes_sup",
        )
    )

    def request(call_id: str, timeout: float) -> Message:
        msg = route.route_req.build(call_id=call_id, From="a", to="b", request=f"sip:1@{unique}")
        return call_control.request(msg, timeout=timeout)

    assert request("c1", 5)["Method"] == "park"
    with pytest.raises(RequestTimeout):
        request("crash", 0.5)

    def children() -> list[dict[str, Any]]:
        return supervisor.call(("which_children",))[1]  # type: ignore[no-any-return]

    _wait_for(lambda: children()[0]["restarts"] == 1 and children()[0]["state"] == "running")
    assert "boom" in children()[0]["last_exit"]
    assert request("c2", 5)["Method"] == "park"
    supervisor.stop()


def test_listener_targeted_responders_and_stop(make_bus: Callable[..., Bus], unique: str) -> None:
    app, call_control = make_bus("app"), make_bus("ecallmgr")
    wins: list[str] = []
    listener = Listener(
        app,
        bindings=[],
        responders={("dialplan", "route_win"): lambda m, d: wins.append(m["Call-ID"])},
        targeted=True,
    ).start()
    win = route.route_win.build(call_id=unique, control_queue="ctl")
    call_control.publish(win, routing_key=app.server_id)
    _wait_for(lambda: wins == [unique])
    listener.stop()
    call_control.publish(win, routing_key=app.server_id)
    gevent.sleep(0.3)
    assert wins == [unique]
