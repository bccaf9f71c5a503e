"""A bus endpoint in its own OS process, driven by the contract tests.

    python -m tests.bus.peer URL DATA_DIR SPEC_JSON

SPEC: {"role": "subscribe" | "respond" | "node" | "chatter", "bindings": [[exchange, key], ...],
       "queue": name|null, "replies": [...], "delays": [...]}
A "node" peer runs a NodesService named SPEC["node"] advertising every SPEC["interval"] s
and keeping its list in SPEC["snapshot"].
Prints one JSON object per line on stdout: {"ready": true} once bound, then for "subscribe"
{"msg": ..., "exchange": ..., "routing_key": ...} or {"invalid": field} per delivery. A
"respond" peer answers each request with every reply in "replies" (Title-Case fields merged
onto an authn_resp; "Auth-Username" echoes the request's Auth-User), sleeping "delays"[i]
seconds before answering the i-th request; a reply with "_invalid" is sent unvalidated.
A "chatter" peer binds callevt ``call.*.SPEC["call_id"]``; on a "go" line it publishes
SPEC["count"] events there, and once it has received SPEC["expect"] it prints
{"received": n, "from": {node: n}}.
It exits when stdin closes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import gevent
import gevent.fileobject

from bus import Binding, connect
from bus.api.authn import authn_resp
from bus.api.call import call_event
from bus.nodes import NodeInfo, NodesService


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    url, data_dir, spec_json = sys.argv[1:4]
    spec = json.loads(spec_json)
    bus = connect(url, node=spec.get("node", "peer"), data_dir=data_dir)
    bindings = [Binding(exchange, key) for exchange, key in spec.get("bindings", [])]
    requests_seen = [0]

    def on_invalid(error: Any, _body: bytes, delivery: Any) -> None:
        emit({"invalid": error.field, "routing_key": delivery.routing_key})

    def on_message(msg: dict[str, Any], delivery: Any) -> None:
        emit({"msg": msg, "exchange": delivery.exchange, "routing_key": delivery.routing_key})

    def on_request(msg: dict[str, Any], _delivery: Any) -> None:
        index = requests_seen[0]
        requests_seen[0] += 1
        delays = spec.get("delays", [])
        if index < len(delays) and delays[index]:
            gevent.sleep(delays[index])
        for reply in spec.get("replies", [{}]):
            reply = dict(reply)
            pause = reply.pop("_after", 0)
            if pause:
                gevent.sleep(pause)
            if reply.pop("_invalid", False):
                response = {
                    "Event-Category": "directory",
                    "Event-Name": "authn_resp",
                    "App-Name": "peer",
                    "App-Version": "1",
                    "Msg-ID": msg["Msg-ID"],
                    **reply,
                }
                bus.publish(
                    response,
                    exchange="targeted",
                    routing_key=msg["Server-ID"],
                    validate=False,
                )
                continue
            fields = {
                "Auth-Method": "password",
                "Auth-Password": "secret",
                "Auth-Username": msg.get("Auth-User"),
                **reply,
            }
            bus.reply(msg, authn_resp.build(fields))

    if spec["role"] == "chatter":
        heard: dict[str, int] = {}
        total = [0]

        def on_chat(msg: dict[str, Any], _delivery: Any) -> None:
            heard[msg["Node"]] = heard.get(msg["Node"], 0) + 1
            total[0] += 1
            if total[0] == spec["expect"]:
                emit({"received": total[0], "from": heard})

        bus.consume([Binding("callevt", f"call.*.{spec['call_id']}")], on_chat)

        def chatter() -> None:
            event = call_event["DTMF"].build(call_id=spec["call_id"], dtmf_digit="1")
            for number in range(spec["count"]):
                bus.publish(event)
                if number % 100 == 99:
                    gevent.sleep(0)

    if spec["role"] == "node":
        NodesService(
            bus,
            NodeInfo(spec["node"], "1.0", ("calls", "edge"), zone="z1"),
            interval=spec["interval"],
            snapshot_path=spec["snapshot"],
        ).start()
    elif spec["role"] != "chatter":
        callback = on_request if spec["role"] == "respond" else on_message
        bus.consume(bindings, callback, queue=spec.get("queue"), on_invalid=on_invalid)
    emit({"ready": True})
    stdin = gevent.fileobject.FileObject(sys.stdin, "r")
    while True:
        line = stdin.readline()
        if not line:
            break
        if line.strip() == "go" and spec["role"] == "chatter":
            gevent.spawn(chatter)
    bus.close()


if __name__ == "__main__":
    main()
