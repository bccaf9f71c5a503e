"""The API through gevent's WSGIServer on a loopback port (what the role runs): keep-alive
requests, and TCP_NODELAY on each connection (pywsgi writes headers and body separately; with
Nagle's algorithm a keep-alive client would wait for its delayed ACK, 40 ms a request); password
hashing that leaves the hub free for the other requests."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import gevent
import gevent.socket
from argon2 import PasswordHasher
from gevent.pywsgi import WSGIHandler

from actors.crossbar import service as service_module
from actors.crossbar.server import make_server
from tests.crossbar.conftest import Tree


def _send(sock: Any, method: str, path: str, token: str, data: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """One request on a kept-alive connection (a JSON body when ``data`` is given); the status
    and the JSON of the reply."""
    body = json.dumps({"data": data}).encode() if data is not None else b""
    extra = (f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
             if data is not None else "")
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n{extra}\r\n".encode() + body)
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    head, rest = reply.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ")[1]), json.loads(rest)


def test_keep_alive_requests_on_connections_with_nodelay(tree: Tree, monkeypatch: Any) -> None:
    nodelay: list[int] = []
    original = WSGIHandler.handle

    def recording_handle(self: WSGIHandler) -> None:
        nodelay.append(self.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        original(self)

    monkeypatch.setattr(WSGIHandler, "handle", recording_handle)
    server = make_server(tree.app, "127.0.0.1", 0)
    server.start()
    try:
        client = gevent.socket.create_connection(("127.0.0.1", server.server_port))
        for _ in range(3):
            status, body = _send(client, "GET", tree.account_path("A"), str(tree.clients["A"].token))
            assert status == 200 and body["data"]["id"] == tree.ids["A"]
        status, body = _send(client, "GET", f"{tree.account_path('B')}/devices", str(tree.clients["A"].token))
        assert status == 403 and body["error_id"] == "forbidden"
        client.close()
    finally:
        server.stop(timeout=1)
    assert nodelay == [1]  # one connection, kept alive for every request, with TCP_NODELAY


def test_password_hashing_does_not_stop_the_other_requests(tree: Tree, monkeypatch: Any) -> None:
    """argon2id runs off the hub: while a user's password is being hashed, other requests are
    answered. The hasher here does not finish until the test has seen GETs answered during
    the hash (on the hub, nothing else could run and it would give up waiting)."""
    real = PasswordHasher()
    hashing = threading.Event()
    answered_meanwhile = threading.Event()
    outcomes: list[bool] = []

    class WaitingHasher:
        def hash(self, password: str) -> str:
            hashing.set()
            outcomes.append(answered_meanwhile.wait(timeout=20))
            return real.hash(password)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(service_module, "_password_hasher", WaitingHasher())
    server = make_server(tree.app, "127.0.0.1", 0)
    server.start()
    token = str(tree.clients["A"].token)
    try:
        def create() -> None:
            sock = gevent.socket.create_connection(("127.0.0.1", server.server_port))
            status, body = _send(sock, "PUT", f"{tree.account_path('A')}/users", token, {
                "first_name": "Slow", "last_name": "Hash", "username": "slow", "password": "a-password"})
            assert status == 201, body
            sock.close()

        creating = gevent.spawn(create)
        reader = gevent.socket.create_connection(("127.0.0.1", server.server_port))
        during = 0
        while not creating.ready():
            status, _ = _send(reader, "GET", tree.account_path("A"), token)
            assert status == 200
            if hashing.is_set():
                during += 1
                if during >= 3:
                    answered_meanwhile.set()
            gevent.sleep(0.005)
        reader.close()
        creating.get()
    finally:
        server.stop(timeout=1)
    assert outcomes == [True] and during >= 3, (outcomes, during)
