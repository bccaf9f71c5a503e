"""The API through gevent's WSGIServer on a loopback port (what the role runs): keep-alive
requests, and TCP_NODELAY on each connection (pywsgi writes headers and body separately; with
Nagle's algorithm a keep-alive client would wait for its delayed ACK, 40 ms a request)."""

from __future__ import annotations

import json
import socket
from typing import Any

import gevent.socket
from gevent.pywsgi import WSGIHandler

from actors.crossbar.server import make_server
from tests.crossbar.conftest import Tree


def _request(sock: Any, method: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), json.loads(body)


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
            status, body = _request(client, "GET", tree.account_path("A"), str(tree.clients["A"].token))
            assert status == 200 and body["data"]["id"] == tree.ids["A"]
        status, body = _request(client, "GET", f"{tree.account_path('B')}/devices", str(tree.clients["A"].token))
        assert status == 403 and body["error_id"] == "forbidden"
        client.close()
    finally:
        server.stop(timeout=1)
    assert nodelay == [1]  # one connection, kept alive for every request, with TCP_NODELAY
