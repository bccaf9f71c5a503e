"""gevent transport adapters: the only SIP module that touches sockets.

Each adapter turns bytes from the network into parsed messages handed to a callback
``on_message(message, source_address, transport)`` and sends bytes it is given. They know
nothing about transactions; :class:`TransactionRunner` glues a sans-I/O
:class:`~protocols.sip.transaction.TransactionLayer` to one or more adapters and drives its
timers with a greenlet.

- :class:`UdpTransport`: one socket, one receive greenlet, one datagram = one message.
- :class:`TcpTransport`: a listener plus outbound connections, reused per remote address
  (RFC 3261 18.1.1/18.2.2: responses go back on the connection the request came in on, and
  we reuse an open connection to a peer rather than opening another), framed by the message
  layer's StreamParser (Content-Length), with a write lock per connection, RFC 5626 CRLF
  keepalives answered, and idle connections closed.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import gevent
from gevent import socket
from gevent.event import Event as GeventEvent
from gevent.lock import Semaphore

from protocols.sip.errors import SipParseError
from protocols.sip.message import Message, Request, Response
from protocols.sip.parser import StreamParser, is_keepalive, parse_message
from protocols.sip.transaction import (
    Address,
    ClientTransaction,
    Event,
    Outgoing,
    ServerTransaction,
    TransactionLayer,
    is_reliable,
)
from protocols.sip.validate import error_response

__all__ = [
    "MessageHandler",
    "ParseErrorHandler",
    "SipTransport",
    "TcpConnection",
    "TcpTransport",
    "TransactionRunner",
    "UdpTransport",
]

log = logging.getLogger(__name__)

MessageHandler = Callable[[Message, Address, "SipTransport"], None]
# Called with the error, the raw bytes (a datagram, or what was buffered on a stream) and the
# source; a server uses it to answer a broken request with error.status_hint.
ParseErrorHandler = Callable[[SipParseError, bytes, Address, "SipTransport"], None]

_MAX_DATAGRAM = 65535
_CRLF = b"\r\n"
_DOUBLE_CRLF = b"\r\n\r\n"


class SipTransport(Protocol):
    name: str  # "UDP", "TCP": the Via transport token
    # What the transaction layer calls this listener: the name, or e.g. "UDP:7000" when a node
    # has several listeners of one kind; responses leave through the listener requests came in on.
    key: str

    @property
    def local_address(self) -> Address: ...

    def send(self, data: bytes, destination: Address) -> None: ...

    def close(self) -> None: ...


def _ignore_parse_error(
    error: SipParseError, data: bytes, source: Address, transport: SipTransport
) -> None:
    log.debug("dropping unparsable message from %s over %s: %s", source, transport.name, error)


class UdpTransport:
    """One UDP socket and a greenlet reading datagrams from it."""

    name = "UDP"

    def __init__(
        self,
        host: str,
        port: int,
        on_message: MessageHandler,
        *,
        on_parse_error: ParseErrorHandler | None = None,
        key: str | None = None,
    ) -> None:
        self.key = (key or self.name).upper()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._on_message = on_message
        self._on_parse_error = on_parse_error or _ignore_parse_error
        self._reader: gevent.Greenlet | None = None
        self._closed = False

    @property
    def local_address(self) -> Address:
        host, port = self._socket.getsockname()[:2]
        return host, port

    @property
    def socket(self) -> socket.socket:
        """The bound socket, for socket options the adapter does not set itself (a larger
        receive buffer, DSCP marking); reading from it would race the reader greenlet."""
        return self._socket

    def start(self) -> UdpTransport:
        self._reader = gevent.spawn(self._read_loop)
        return self

    def _read_loop(self) -> None:
        while not self._closed:
            try:
                data, source = self._socket.recvfrom(_MAX_DATAGRAM)
            except ConnectionRefusedError:
                # ICMP port unreachable for an earlier send surfaces here on Linux; it says
                # nothing about the next datagram, so keep reading.
                continue
            except OSError as error:
                if self._closed:
                    return
                log.warning("UDP receive on %s failed: %s", self.key, error)
                gevent.sleep(0.01)  # never spin on a persistent socket error
                continue
            address: Address = (source[0], source[1])
            if is_keepalive(data):
                continue  # RFC 5626 3.5.1 CRLF keepalive over UDP: nothing to answer
            try:
                message = parse_message(data)
            except SipParseError as error:
                self._on_parse_error(error, data, address, self)
                continue
            try:
                self._on_message(message, address, self)
            except Exception:  # a bug in one handler must not kill the listener
                log.exception("SIP message handler failed")

    def send(self, data: bytes, destination: Address) -> None:
        self._socket.sendto(data, destination)

    def close(self) -> None:
        self._closed = True
        self._socket.close()
        if self._reader is not None:
            self._reader.kill(block=False)


class TcpConnection:
    """One TCP connection: a reader greenlet feeding a StreamParser, and a write lock so two
    greenlets never interleave the bytes of two messages."""

    def __init__(
        self,
        sock: socket.socket,
        remote: Address,
        transport: TcpTransport,
        *,
        outbound: bool = False,
    ) -> None:
        self.socket = sock
        self.remote = remote
        self.transport = transport
        # We opened it (we are the flow's client): RFC 5626 keepalive pings are ours to send.
        self.outbound = outbound
        self.parser = StreamParser()
        self.write_lock = Semaphore()
        self.last_activity = time.monotonic()
        self.closed = False
        self.reader: gevent.Greenlet | None = None

    def start(self) -> None:
        self.reader = gevent.spawn(self._read_loop)

    def send(self, data: bytes) -> None:
        with self.write_lock:
            self.socket.sendall(data)
        self.last_activity = time.monotonic()

    def _read_loop(self) -> None:
        try:
            while not self.closed:
                data = self.socket.recv(65536)
                if not data:
                    break
                self.last_activity = time.monotonic()
                if not self._feed(data):
                    break
                for _ in range(self.parser.take_pings()):
                    # RFC 5626 4.4.1: each CRLFCRLF ping is answered with a CRLF pong.
                    self.send(_CRLF)
        except OSError as error:
            log.debug("TCP connection %s failed: %s", self.remote, error)
        finally:
            self.close()

    def _feed(self, data: bytes) -> bool:
        """Parse what arrived; False when framing is lost and the connection must go."""
        try:
            messages = self.parser.feed(data)
        except SipParseError as error:
            # Framing is lost: deliver what was complete before the error, report it, close.
            self._deliver(getattr(error, "parsed_before", []))
            self.transport._on_parse_error(error, data, self.remote, self.transport)
            return False
        self._deliver(messages)
        return True

    def _deliver(self, messages: Sequence[Message]) -> None:
        for message in messages:
            try:
                self.transport._on_message(message, self.remote, self.transport)
            except Exception:
                log.exception("SIP message handler failed")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.socket.close()
        finally:
            self.transport._forget(self)
        if self.reader is not None and self.reader is not gevent.getcurrent():
            self.reader.kill(block=False)


class TcpTransport:
    """A TCP listener and the connections to and from it, reused per remote address."""

    name = "TCP"

    def __init__(
        self,
        host: str,
        port: int,
        on_message: MessageHandler,
        *,
        on_parse_error: ParseErrorHandler | None = None,
        idle_timeout: float = 3605.0,
        keepalive_interval: float | None = None,
        connect_timeout: float = 5.0,
        backlog: int = 128,
        max_connections: int = 4096,
        key: str | None = None,
    ) -> None:
        self.key = (key or self.name).upper()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(backlog)
        self._host = host
        self._on_message = on_message
        self._on_parse_error = on_parse_error or _ignore_parse_error
        # Kazoo's Kamailio keeps TCP connections 3605 s; connections idle longer are closed.
        self.idle_timeout = idle_timeout
        # Connections we opened send an RFC 5626 CRLFCRLF ping this often (None: never), which
        # keeps NAT bindings and middleboxes from dropping the flow; peers that connected to us
        # ping us, and get a CRLF pong.
        self.keepalive_interval = keepalive_interval
        self.connect_timeout = connect_timeout
        # Kazoo's Kamailio: tcp_max_connections 4096. Beyond it new inbound connections are
        # closed at once, so a connection flood cannot exhaust descriptors and memory.
        self.max_connections = max_connections
        self.refused_connections = 0
        self._connections: dict[Address, TcpConnection] = {}
        self._connect_locks: dict[Address, Semaphore] = {}
        self._greenlets: list[gevent.Greenlet] = []
        self._closed = False

    @property
    def local_address(self) -> Address:
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def connections(self) -> Mapping[Address, TcpConnection]:
        return dict(self._connections)

    def start(self) -> TcpTransport:
        self._greenlets.append(gevent.spawn(self._accept_loop))
        self._greenlets.append(gevent.spawn(self._housekeeping_loop))
        return self

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, peer = self._listener.accept()
            except OSError:
                if self._closed:
                    return
                continue
            if len(self._connections) >= self.max_connections:
                self.refused_connections += 1
                log.warning(
                    "TCP connection limit %d reached: closing %s", self.max_connections, peer
                )
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._adopt(sock, (peer[0], peer[1]))

    def _adopt(
        self, sock: socket.socket, remote: Address, *, outbound: bool = False
    ) -> TcpConnection:
        connection = TcpConnection(sock, remote, self, outbound=outbound)
        previous = self._connections.get(remote)
        self._connections[remote] = connection
        if previous is not None:
            previous.close()
        connection.start()
        return connection

    def _forget(self, connection: TcpConnection) -> None:
        if self._connections.get(connection.remote) is connection:
            del self._connections[connection.remote]

    def _housekeeping_loop(self) -> None:
        period = min(self.idle_timeout, self.keepalive_interval or self.idle_timeout) / 4
        period = max(0.05, min(period, 30.0))
        last_ping = time.monotonic()
        while not self._closed:
            gevent.sleep(period)
            now = time.monotonic()
            ping = (
                self.keepalive_interval is not None and now - last_ping >= self.keepalive_interval
            )
            if ping:
                last_ping = now
            for connection in list(self._connections.values()):
                if now - connection.last_activity > self.idle_timeout:
                    log.debug("closing idle TCP connection to %s", connection.remote)
                    connection.close()
                elif ping and connection.outbound:
                    try:
                        with connection.write_lock:
                            connection.socket.sendall(_DOUBLE_CRLF)
                    except OSError:
                        connection.close()

    def connection_to(self, destination: Address) -> TcpConnection:
        """An open connection to ``destination``, connecting if there is none. Concurrent
        senders to the same peer share one connect attempt. Connections are keyed by IP
        address, so a name resolves first (to find the connection the peer opened to us)."""
        destination = _resolve(destination)
        existing = self._connections.get(destination)
        if existing is not None and not existing.closed:
            return existing
        lock = self._connect_locks.setdefault(destination, Semaphore())
        try:
            with lock:
                existing = self._connections.get(destination)
                if existing is not None and not existing.closed:
                    return existing
                sock = socket.create_connection(destination, timeout=self.connect_timeout)
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return self._adopt(sock, destination, outbound=True)
        finally:
            if not lock.locked():
                # Nobody else is waiting on it: forget it so the table does not grow forever.
                self._connect_locks.pop(destination, None)

    def send(self, data: bytes, destination: Address) -> None:
        connection = self.connection_to(destination)
        try:
            connection.send(data)
        except OSError:
            connection.close()
            raise

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for connection in list(self._connections.values()):
            connection.close()
        gevent.killall(self._greenlets, block=False)


def _resolve(destination: Address) -> Address:
    """(IP, port) for a (host, port); IP literals pass through untouched."""
    host, port = destination
    try:
        ipaddress.ip_address(host)
        return destination
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    resolved = infos[0][4]
    return str(resolved[0]), int(resolved[1])


def _reliable_response_fallback(item: Outgoing) -> Address | None:
    """RFC 3261 18.2.2: a response over a reliable transport goes on the connection the request
    came in on; when that connection is gone, the server connects to the ``received`` address
    (or sent-by host) at the sent-by port instead."""
    message = item.message
    if not isinstance(message, Response) or not is_reliable(item.transport):
        return None
    via = message.top_via
    if via is None:
        return None
    host = via.received or via.host
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    target = (host, via.port or 5060)
    return target if target != item.destination else None


class TransactionRunner:
    """Runs a :class:`TransactionLayer` on gevent: feeds it what the transports receive, puts
    what it wants to send on the right transport, fires its timers, and hands its events to
    ``on_event``.

    All entry points run in greenlets of one hub, so the layer is never entered concurrently.
    ``on_event`` runs in the greenlet that received the message (a transport reader) or in the
    timer greenlet: it must not block; hand slow work (bus requests, database) to a greenlet
    of its own and answer later through :meth:`respond`.

    Usage::

        runner = TransactionRunner(TransactionLayer(), on_event)
        udp = UdpTransport("0.0.0.0", 5060, runner.on_message,
                           on_parse_error=runner.on_parse_error).start()
        tcp = TcpTransport("0.0.0.0", 5060, runner.on_message,
                           on_parse_error=runner.on_parse_error).start()
        runner.add_transport(udp)
        runner.add_transport(tcp)
        runner.start()
    """

    def __init__(
        self,
        layer: TransactionLayer,
        on_event: Callable[[Event], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layer = layer
        self._on_event = on_event
        self._clock = clock
        self._transports: dict[str, SipTransport] = {}
        self._wakeup = GeventEvent()
        self._timer_greenlet: gevent.Greenlet | None = None
        self._stopped = False

    def add_transport(self, transport: SipTransport) -> None:
        self._transports[transport.key.upper()] = transport

    def transport(self, key: str) -> SipTransport:
        return self._transports[key.upper()]

    def on_message(self, message: Message, source: Address, transport: SipTransport) -> None:
        """The adapters' ``on_message`` callback."""
        self.layer.receive(message, source, transport.key, self._clock())
        self.flush()

    def on_parse_error(
        self, error: SipParseError, data: bytes, source: Address, transport: SipTransport
    ) -> None:
        """The adapters' ``on_parse_error`` callback: a request that could be split far enough
        is answered statelessly with the status the parser suggests (400, 413, 505, ...);
        anything else (responses, garbage) is dropped."""
        response = error_response(error)
        if response is None:
            log.debug("dropping unparsable message from %s: %s", source, error)
            return
        self.send_stateless(response, source, transport.key)

    def start(self) -> TransactionRunner:
        self._timer_greenlet = gevent.spawn(self._timer_loop)
        return self

    def stop(self) -> None:
        self._stopped = True
        self._wakeup.set()
        if self._timer_greenlet is not None:
            self._timer_greenlet.kill(block=False)

    # TU-facing calls: do the layer call, then push out whatever it produced.

    def send_request(
        self, request: Request, destination: Address, transport: str
    ) -> ClientTransaction:
        transaction = self.layer.send_request(request, destination, transport, self._clock())
        self.flush()
        return transaction

    def respond(self, transaction: ServerTransaction, response: Response) -> None:
        self.layer.respond(transaction, response, self._clock())
        self.flush()

    def cancel(self, transaction: ClientTransaction) -> None:
        self.layer.cancel(transaction, self._clock())
        self.flush()

    def send_stateless(self, message: Message, destination: Address, transport: str) -> None:
        self.layer.send_stateless(message, destination, transport)
        self.flush()

    def terminate(self, transaction: ClientTransaction | ServerTransaction) -> None:
        """End a transaction now (see :meth:`TransactionLayer.terminate`)."""
        self.layer.terminate(transaction)
        self.flush()

    def flush(self) -> None:
        """Send pending output, deliver pending events, and re-arm the timer greenlet."""
        while True:
            outgoing = self.layer.datagrams_to_send()
            for item in outgoing:
                self._send(item)
            events = self.layer.events()
            for event in events:
                try:
                    self._on_event(event)
                except Exception:
                    log.exception("SIP event handler failed")
            if not outgoing and not events:
                break
        self._wakeup.set()

    def _send(self, item: Outgoing) -> None:
        transport = self._transports.get(item.transport)
        if transport is None:
            self.layer.transport_failed(item, f"no {item.transport} transport", self._clock())
            return
        try:
            transport.send(item.data, item.destination)
            return
        except OSError as error:
            failure = str(error)
        fallback = _reliable_response_fallback(item)
        if fallback is not None:
            try:
                transport.send(item.data, fallback)
                return
            except OSError as error:
                failure = f"{failure}; then {fallback}: {error}"
        self.layer.transport_failed(item, failure, self._clock())

    def _timer_loop(self) -> None:
        while not self._stopped:
            deadline = self.layer.get_timer()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            self._wakeup.clear()
            if timeout is None or timeout > 0:
                self._wakeup.wait(timeout)
            if self._stopped:
                return
            self.layer.handle_timer(self._clock())
            self.flush()
