"""The HTTP server of the API: gevent's WSGIServer, with TCP_NODELAY on every connection.

Why TCP_NODELAY: pywsgi sends a response's headers and its body in two writes; with Nagle's
algorithm on, the body waits for the ACK of the headers, which a keep-alive client delays by up
to 40 ms (delayed ACK). Every request would take 40 ms whatever the work (measured with
bench/api.py: 44 ms p50 for a 0.3 ms GET).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from gevent.pywsgi import WSGIHandler, WSGIServer

__all__ = ["make_server"]

log = logging.getLogger("mirliton.crossbar")


class _NoDelayHandler(WSGIHandler):
    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket (unix socket in a test): nothing to tune
        super().__init__(sock, address, server, rfile)


def make_server(app: Any, host: str, port: int) -> WSGIServer:
    """A WSGIServer for ``app`` on host:port (not started)."""
    return WSGIServer((host, port), app, handler_class=_NoDelayHandler, log=None, error_log=log)
