"""The gevent UDP adapter's public surface (the rest is exercised against SIPp)."""

from __future__ import annotations

import socket

from protocols.sip.transport import UdpTransport


def test_udp_transport_exposes_its_bound_socket() -> None:
    transport = UdpTransport("127.0.0.1", 0, lambda *_: None)
    try:
        assert transport.socket.getsockname()[:2] == transport.local_address
        # What the edge does with it: a larger receive buffer for bursts of REGISTERs.
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        assert transport.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 0
    finally:
        transport.close()
