"""What the callflow app does on the bus, scripted by a test in its place: answers route_req
with park, takes route_win, sends commands to the Control-Queue and records the call events.
Real phones and a real node on the other side."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.foundation.nodeutil import wait_until

if TYPE_CHECKING:
    from tests.calls.conftest import PBX

__all__ = ["FakeApp", "complete"]


class FakeApp:
    """What the callflow app does on the bus, scripted by the test. Its bus lives in a thread
    of its own running a gevent hub, so it answers route_req while the test waits on phones."""

    def __init__(self, pbx: PBX) -> None:
        self.pbx = pbx
        self.events: list[dict[str, Any]] = []
        self.wins: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.outbox: queue.Queue[tuple[dict[str, Any], str] | None] = queue.Queue()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the fake app's bus did not start"

    def _run(self) -> None:
        import gevent

        from bus import Binding, connect
        from bus.api.route import route_resp

        bus = connect(self.pbx.node.env["MIRLITON_BUS__URL"], node="control-test",
                      data_dir=self.pbx.node.data_dir)

        def on_route_req(msg: dict[str, Any], delivery: Any) -> None:
            bus.reply(msg, route_resp.build({"Method": "park"}))

        def on_route_win(msg: dict[str, Any], delivery: Any) -> None:
            with self.lock:
                self.wins[str(msg["Call-ID"])] = msg

        def on_event(msg: dict[str, Any], delivery: Any) -> None:
            with self.lock:
                self.events.append(msg)

        bus.consume([Binding("callmgr", "route.req.#")], on_route_req)
        bus.on_targeted([("dialplan", "route_win")], on_route_win)
        bus.consume([Binding("callevt", "call.*.*")], on_event)
        self.ready.set()
        try:
            while True:
                try:
                    item = self.outbox.get_nowait()
                except queue.Empty:
                    gevent.sleep(0.01)
                    continue
                if item is None:
                    return
                bus.publish(item[0], routing_key=item[1])
        finally:
            bus.close()

    def command(self, call_id: str, application: str, **fields: Any) -> None:
        from bus.api.dialplan import COMMANDS

        with self.lock:
            win = self.wins[call_id]
        self.outbox.put((COMMANDS[application].build({"Call-ID": call_id, **fields}),
                         str(win["Control-Queue"])))

    def routed(self, call_id: str) -> bool:
        with self.lock:
            return call_id in self.wins

    def seen(self, call_id: str, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("Call-ID") == call_id and predicate(e)]

    def wait(self, call_id: str, predicate: Callable[[dict[str, Any]], bool], what: str,
             count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = wait_until(
            lambda: (lambda got: got if len(got) >= count else None)(self.seen(call_id, predicate)),
            timeout=timeout, interval=0.05, what=what)
        return found

    def close(self) -> None:
        self.outbox.put(None)
        self.thread.join(10)


def complete(application: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the CHANNEL_EXECUTE_COMPLETE of ``application``."""
    return lambda e: (e.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE"
                      and e.get("Application-Name") == application)
