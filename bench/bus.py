"""Bus throughput and latency between two OS processes, on ``local`` and ``amqp``.

    python bench/bus.py [--json] [--transports local,amqp] [--messages N] [--requests N]
                        [--concurrency N]

One-way: this process publishes N call events (validated and encoded per publish, as in
production) to a child process consuming them; the rate is N over the time from the first
publish to the child's last receipt. Request/response: C greenlets here make requests that a
child answers (authn_req -> authn_resp over the child's reply to our Server-ID); the rate is
requests over the elapsed time, with p50/p99 latency in milliseconds; the same is measured
again with one request at a time (``sequential_*``).

With ``--json`` the last line printed is one JSON object. The amqp URL comes from
MIRLITON_BENCH_AMQP_URL or MIRLITON_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gevent  # noqa: E402
import gevent.fileobject  # noqa: E402
import gevent.subprocess  # noqa: E402

from bus import Binding, Bus, connect  # noqa: E402
from bus.api import authn, call  # noqa: E402

AMQP_URL = os.environ.get(
    "MIRLITON_BENCH_AMQP_URL",
    os.environ.get("MIRLITON_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --- the child process ------------------------------------------------------------------
def child(url: str, data_dir: str, role: str, key: str, count: int) -> None:
    bus = connect(url, node="bench-child", data_dir=data_dir)
    if role == "sink":
        received = [0]
        done = gevent.event.Event()

        def on_event(_msg: dict[str, Any], _delivery: Any) -> None:
            received[0] += 1
            if received[0] == count:
                done.set()

        bus.consume([Binding("callevt", f"call.*.{key}")], on_event)
        _emit({"ready": True})
        done.wait()
        _emit({"last": time.time(), "received": received[0]})
    else:
        reply_to = authn.authn_resp

        def on_request(msg: dict[str, Any], _delivery: Any) -> None:
            bus.reply(msg, reply_to.build(auth_method="password", auth_password="secret"))

        bus.consume([Binding("callmgr", f"authn.req.{key}")], on_request)
        _emit({"ready": True})
    stdin = gevent.fileobject.FileObject(sys.stdin, "r")
    while stdin.readline():
        pass
    bus.close()


# --- the measuring process --------------------------------------------------------------
class Child:
    def __init__(self, url: str, data_dir: str, role: str, key: str, count: int) -> None:
        self.process = gevent.subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                role,
                "--url",
                url,
                "--data-dir",
                data_dir,
                "--key",
                key,
                "--messages",
                str(count),
            ],
            stdin=gevent.subprocess.PIPE,
            stdout=gevent.subprocess.PIPE,
            text=True,
        )
        assert self.read(30) == {"ready": True}

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        with gevent.Timeout(timeout):
            line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench child exited ({self.process.poll()})")
        return json.loads(line)  # type: ignore[no-any-return]

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except gevent.subprocess.TimeoutExpired:
            self.process.kill()


def one_way(bus: Bus, url: str, data_dir: str, count: int) -> float:
    key = uuid.uuid4().hex[:8]
    sink = Child(url, data_dir, "sink", key, count)
    try:
        message = call.call_event["CHANNEL_ANSWER"].build(call_id=key)
        started = time.time()
        for number in range(count):
            bus.publish(message)
            if number % 500 == 499:
                # Let the transport's writers run while we produce.
                gevent.sleep(0)
        result = sink.read(120)
        return count / (result["last"] - started)
    finally:
        sink.stop()


def request_response(
    bus: Bus, url: str, data_dir: str, count: int, concurrency: int
) -> tuple[float, float, float]:
    key = uuid.uuid4().hex[:8]
    responder = Child(url, data_dir, "responder", key, 0)
    try:
        request = authn.authn_req.build(
            method="REGISTER", auth_realm=key, auth_user="u", From="f", to="t"
        )
        latencies: list[float] = []
        remaining = [count]

        def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                begun = time.perf_counter()
                bus.request(request, timeout=10)
                latencies.append((time.perf_counter() - begun) * 1000)

        for _ in range(50):  # warm-up: connections, caches
            bus.request(request, timeout=10)
        started = time.perf_counter()
        gevent.joinall([gevent.spawn(worker) for _ in range(concurrency)], raise_error=True)
        elapsed = time.perf_counter() - started
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return count / elapsed, p50, p99
    finally:
        responder.stop()


def measure(transport: str, args: argparse.Namespace) -> dict[str, Any]:
    url = "local" if transport == "local" else AMQP_URL
    with tempfile.TemporaryDirectory(prefix="mirliton-bench-bus-") as data_dir:
        bus = connect(url, node="bench", data_dir=data_dir)
        try:
            msgs_per_s = one_way(bus, url, data_dir, args.messages)
            rate, p50, p99 = request_response(bus, url, data_dir, args.requests, args.concurrency)
            serial_rate, serial_p50, serial_p99 = request_response(
                bus, url, data_dir, max(1, args.requests // 5), 1
            )
        finally:
            bus.close()
    return {
        "one_way_msgs_per_s": round(msgs_per_s),
        "request_response_per_s": round(rate),
        "request_p50_ms": round(p50, 3),
        "request_p99_ms": round(p99, 3),
        "request_concurrency": args.concurrency,
        "sequential_request_response_per_s": round(serial_rate),
        "sequential_request_p50_ms": round(serial_p50, 3),
        "sequential_request_p99_ms": round(serial_p99, 3),
        "messages": args.messages,
        "requests": args.requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--transports", default="local,amqp")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--child", choices=["sink", "responder"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.url, args.data_dir, args.child, args.key, args.messages)
        return
    results: dict[str, Any] = {}
    for transport in args.transports.split(","):
        figures = measure(transport, args)
        results[transport] = figures
        print(
            f"{transport:5}  one-way {figures['one_way_msgs_per_s']:>8} msgs/s   "
            f"request/response {figures['request_response_per_s']:>6}/s "
            f"(concurrency {args.concurrency})  p50 {figures['request_p50_ms']:.2f} ms  "
            f"p99 {figures['request_p99_ms']:.2f} ms; one at a time "
            f"{figures['sequential_request_response_per_s']}/s "
            f"p50 {figures['sequential_request_p50_ms']:.2f} ms",
            flush=True,
        )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
