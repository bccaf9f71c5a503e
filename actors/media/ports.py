"""RTP port allocation from the configured range (``media.rtp_port_min`` .. ``rtp_port_max``).

Even ports only (RFC 3550 11: RTP on an even port, RTCP on the next odd one, which stays
free for it). A rotating cursor spreads allocations over the range so a port just released
is not handed out again at once (late packets of the old call would reach the new one).
A port another process holds is skipped: the bind is the test.
"""

from __future__ import annotations

import errno
import random
import socket as _socket_module

from gevent import monkey

__all__ = ["PortAllocator", "PortsExhausted", "UdpSocket"]

# The engine reads sockets from libev io watchers, not from greenlets blocked in recv, so it
# wants plain non-blocking sockets even in a gevent-patched process.
UdpSocket = monkey.get_original("socket", "socket")


class PortsExhausted(RuntimeError):
    """Every even port in the range is in use."""


class PortAllocator:
    def __init__(self, host: str, port_min: int, port_max: int) -> None:
        if port_min > port_max:
            raise ValueError("rtp_port_min above rtp_port_max")
        self.host = host
        self.first = port_min + (port_min & 1)
        self.last = port_max - (port_max & 1)
        if self.first > self.last:
            raise ValueError("the RTP port range holds no even port")
        # Each shard process has its own allocator over the same range: starting at a random
        # point keeps them from contending for the same ports one bind failure after another.
        self._cursor = self.first + 2 * random.randrange(self.capacity)
        self._in_use: set[int] = set()

    @property
    def capacity(self) -> int:
        return (self.last - self.first) // 2 + 1

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def bind(self) -> _socket_module.socket:
        """A non-blocking UDP socket bound to the next free even port."""
        family = _socket_module.AF_INET6 if ":" in self.host else _socket_module.AF_INET
        for _ in range(self.capacity):
            port = self._cursor
            self._cursor = self.first if port + 2 > self.last else port + 2
            if port in self._in_use:
                continue
            sock = UdpSocket(family, _socket_module.SOCK_DGRAM)
            try:
                sock.bind((self.host, port))
            except OSError as error:
                sock.close()
                if error.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            sock.setblocking(False)
            self._in_use.add(port)
            return sock
        raise PortsExhausted(f"no free even RTP port in {self.first}-{self.last}")

    def bind_rtcp(self, rtp_port: int) -> _socket_module.socket | None:
        """The RTCP socket beside an RTP port (the odd port above it), or None when something
        else holds that port (the stream then does without RTCP)."""
        family = _socket_module.AF_INET6 if ":" in self.host else _socket_module.AF_INET
        sock = UdpSocket(family, _socket_module.SOCK_DGRAM)
        try:
            sock.bind((self.host, rtp_port + 1))
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        return sock

    def release(self, port: int) -> None:
        self._in_use.discard(port)
