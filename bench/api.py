"""REST API throughput: PUT and GET of devices with N concurrent clients against a crossbar
server on the embedded store.

    python bench/api.py [--json] [--clients N] [--seconds S]

The server is a child process set up as the crossbar role sets itself up (gevent-patched, falcon
app on gevent's WSGIServer, embedded store and local bus in a fresh data dir); this process runs
N greenlets, each with one keep-alive HTTP/1.1 connection, authenticated with a token from
``PUT /v2/user_auth``. Phase 1 creates devices (``PUT /v2/accounts/{id}/devices``) for S
seconds; phase 2 reads random ones of them (``GET .../devices/{id}``) for S seconds. One
request of each kind per client goes first, unmeasured (warm-up). Rates are
completed requests per second; latencies p50/p99 in milliseconds. Only 2xx answers count; any
other answer is reported as an error. The server's CPU time per request (from /proc) is reported
too: on a shared machine the rates follow the load, that figure much less.

With ``--json`` the last line printed is one JSON object.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REALM = "bench.example.test"
USERNAME, PASSWORD = "bench", "bench-password"


def serve(data_dir: str, port: int) -> None:
    """The server side (child process): what actors/crossbar/role.py runs, without the node."""
    from actors.crossbar.app import make_app
    from actors.crossbar.server import make_server
    from bus import connect
    from store import open_store

    store = open_store("embedded", data_dir)
    bus = connect("local", node="bench", data_dir=data_dir)
    app = make_app(store, bus=bus)
    server = make_server(app, "127.0.0.1", port)
    print("ready", flush=True)
    server.serve_forever()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """One keep-alive HTTP/1.1 connection with the least client-side work per request (http.client
    parses headers with the email package, which would make the client the bottleneck)."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.token = token
        self.buffer = b""

    def call(self, method: str, path: str, data: Any = None) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"data": data}).encode() if data is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        if self.token:
            head += f"X-Auth-Token: {self.token}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        header_bytes, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = header_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        while len(self.buffer) < length:
            self._fill()
        payload, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, json.loads(payload) if payload else {}

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (the server's own CPU, whatever the machine's load)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _phase(clients: list[Client], seconds: float, one: Any) -> dict[str, Any]:
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + seconds

    def worker(index: int, client: Client) -> None:
        n = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            ok = one(client, index, n)
            elapsed = time.perf_counter() - started
            n += 1
            if ok:
                latencies.append(elapsed)
            else:
                errors[0] += 1

    started = time.monotonic()
    gevent.joinall([gevent.spawn(worker, i, c) for i, c in enumerate(clients)])
    elapsed = time.monotonic() - started
    return {
        "rate": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "requests": len(latencies),
        "errors": errors[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (greenlets)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each phase")
    parser.add_argument("--serve", nargs=2, metavar=("DATA_DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return

    from store import open_store
    from store.accounts import create_account

    with tempfile.TemporaryDirectory(prefix="mirliton-bench-api-") as data_dir:
        store = open_store("embedded", data_dir)
        account = create_account(store, "Bench", REALM, USERNAME, PASSWORD)
        store.close()
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", data_dir, str(port)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise SystemExit("the API server did not start")
            login = Client(port)
            credentials = hashlib.md5(f"{USERNAME}:{PASSWORD}".encode()).hexdigest()
            status, body = login.call("PUT", "/v2/user_auth", {"credentials": credentials, "account_realm": REALM})
            if status != 201:
                raise SystemExit(f"user_auth failed: {status} {body}")
            token = body["auth_token"]
            devices_path = f"/v2/accounts/{account['account_id']}/devices"
            clients = [Client(port, token) for _ in range(args.clients)]
            created: list[str] = []

            def put_one(client: Client, index: int, n: int) -> bool:
                status, body = client.call("PUT", devices_path, {
                    "name": f"Bench phone {index}-{n}",
                    "sip": {"username": f"b{index}x{n}", "password": "bench-secret"},
                })
                if status == 201:
                    created.append(body["data"]["id"])
                return status == 201

            def get_one(client: Client, index: int, n: int) -> bool:
                status, _ = client.call("GET", f"{devices_path}/{random.choice(created)}")
                return status == 200

            # Warm-up, not measured: the first write builds the schema validators (~0.1 s) and
            # would otherwise sit in every client's first request, i.e. in the p99.
            for index, client in enumerate(clients):
                put_one(client, index, -1)
                get_one(client, index, -1)
            cpu_start, client_start = _cpu_seconds(server.pid), _cpu_seconds(os.getpid())
            put = _phase(clients, args.seconds, put_one)
            cpu_put, client_put = _cpu_seconds(server.pid), _cpu_seconds(os.getpid())
            get = _phase(clients, args.seconds, get_one)
            cpu_get, client_get = _cpu_seconds(server.pid), _cpu_seconds(os.getpid())
            put["client_cpu_ms"] = round((client_put - client_start) * 1000 / max(put["requests"], 1), 3)
            get["client_cpu_ms"] = round((client_get - client_put) * 1000 / max(get["requests"], 1), 3)
            put["server_cpu_ms"] = round((cpu_put - cpu_start) * 1000 / max(put["requests"], 1), 3)
            get["server_cpu_ms"] = round((cpu_get - cpu_put) * 1000 / max(get["requests"], 1), 3)
        finally:
            server.terminate()
            server.wait(timeout=10)

    figures = {
        "clients": args.clients,
        "seconds": args.seconds,
        "put_devices_per_s": put["rate"],
        "put_p50_ms": put["p50_ms"],
        "put_p99_ms": put["p99_ms"],
        "put_errors": put["errors"],
        "get_devices_per_s": get["rate"],
        "get_p50_ms": get["p50_ms"],
        "get_p99_ms": get["p99_ms"],
        "get_errors": get["errors"],
        "devices_created": put["requests"],
        "put_server_cpu_ms_per_request": put["server_cpu_ms"],
        "get_server_cpu_ms_per_request": get["server_cpu_ms"],
        "put_client_cpu_ms_per_request": put["client_cpu_ms"],
        "get_client_cpu_ms_per_request": get["client_cpu_ms"],
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    for name, phase in (("PUT devices", put), ("GET device ", get)):
        print(f"{name}: {phase['rate']}/s p50 {phase['p50_ms']} ms p99 {phase['p99_ms']} ms "
              f"({phase['errors']} errors; server CPU {phase['server_cpu_ms']} ms a request)")
    if args.json:
        print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
