"""The ``local`` transport: one node's processes exchange messages with no broker.

Design: brokerless, one Unix stream socket per process and a shared binding registry.

* Every process using the bus listens on its own Unix socket in the *abstract* namespace
  (``\\0mirliton-bus/<hash of data_dir>/<pid>.<random>``). Abstract sockets have no file to
  clean up and vanish the moment their process dies, even on SIGKILL, so "is this peer
  alive?" is answered by the kernel: a connect to a dead peer is refused at once.
* Bindings (exchange, routing key pattern, queue, owning process) and declared exchanges live
  in a small SQLite database in WAL mode under ``data_dir/bus/``. Publishers keep a routing
  table in memory and reload it only when a generation token changes: an 8-byte value in a
  memory-mapped file that every writer replaces after its commit. Checking it costs one memory
  read per publish, and because a writer replaces the token *after* committing while a reader
  reads the token *before* loading, a reader never keeps a stale table for a newer token.
  Changes are journaled, so a reader applies only what changed since it last looked, and topic
  bindings are indexed in a trie (:class:`bus.routing.TopicTrie`): a ``call.*.<call-id>``
  binding per live call costs neither a full reload per call nor a scan per event.
* A publisher routes with the same rules as RabbitMQ (direct, fanout, topic ``*``/``#``, see
  :mod:`bus.routing`) and writes a length-prefixed frame to each destination process, which
  hands it to the right queue's consumer. A named queue consumed from several processes is
  served round-robin, as competing consumers on RabbitMQ. Writes to one peer go through one
  greenlet that coalesces pending frames into one ``sendall``: a busy publisher makes one
  system call per batch, not per message.
* A dead process's bindings are deleted by the first publisher whose connection to it is
  refused or broken, and by every process that starts (it sweeps peers that refuse), so a
  role process that was SIGKILLed and restarted by its supervisor takes over cleanly.
* A peer that does not keep up (stopped, hung) gets a bounded backlog; a publisher waits up to
  two seconds for room, then the peer's messages are dropped and counted
  (``mirliton_bus_dropped_total{reason="peer_backlog"}``) until it catches up, so one stuck
  process cannot stall the node. A consumer's own inbox is not bounded: a slow consumer shows
  as ``Consumer.backlog``.
* Abstract sockets have no file permissions, so a process accepts connections only from
  processes of its own user (or root), checked with ``SO_PEERCRED``.
* ``durable`` queues mean nothing here: there is no broker whose restart they would survive,
  and a message sent to a process that dies before handling it is lost with it.

Why not a hub in the node's root process: it would be one more hop per message and a single
point of failure whose death cuts every role off; here any process can die and restart alone.
Why not Thespian messages: ~335 messages/s. Why not datagrams: a datagram has a size limit
and no backpressure on unconnected sockets, and a stream delivers many frames per ``recv``.

Everything runs on gevent sockets in greenlets; SQLite calls are short and never wait on a
lock inside SQLite (a busy database is retried with a cooperative sleep).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import mmap
import os
import socket as std_socket
import sqlite3
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import gevent
import gevent.event
import gevent.socket

from bus import metrics
from bus.errors import BusError, PublishNotConfirmed
from bus.routing import DIRECT, FANOUT, ExchangeType, TopicTrie
from bus.transport import Binding, Bus, Consumer

__all__ = ["LocalBus"]

log = logging.getLogger("mirliton.bus.local")

_LENGTH = struct.Struct(">I")
_PEERCRED = struct.Struct("3i")
_HEADER = struct.Struct(">HHH")
# Frames waiting for one peer before a publisher has to wait for the writer (backpressure),
# and how long it waits before dropping: a stopped or hung process must not stall every
# publisher of the node (on amqp the broker's queue would absorb it instead).
_MAX_PENDING_FRAMES = 50_000
_BACKPRESSURE_WAIT = 2.0
# Coalesced write size: big enough to amortise the system call, small enough to interleave.
_BATCH_BYTES = 256 * 1024
_ROUTE_CACHE_LIMIT = 20_000
# No bus message comes near this; a bigger length prefix means a corrupted stream.
_MAX_FRAME_BYTES = 64 * 1024 * 1024


class _Registry:
    """Bindings and exchanges shared by the node's processes (SQLite WAL + generation mmap).

    Every change is also appended to a journal, so a process that saw sequence N applies
    only what came after N instead of reloading every binding; per-call bindings come and go
    all the time and a full reload per change would grow with the number of live calls.
    """

    # Journal rows older than this many changes are pruned; a process further behind
    # reloads everything.
    JOURNAL_KEEP = 50_000
    PRUNE_EVERY = 1000

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # timeout=0: never sleep inside SQLite (that would block every greenlet); _retry
        # sleeps cooperatively instead.
        self._db = sqlite3.connect(
            directory / "bindings.sqlite", timeout=0, isolation_level=None, check_same_thread=False
        )
        self._retry(self._create)
        fd = os.open(directory / "generation", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._generation = mmap.mmap(fd, 8)
        finally:
            os.close(fd)
        self.seen: bytes | None = None

    def _create(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS bindings (owner TEXT NOT NULL, queue TEXT NOT NULL,"
            " exchange TEXT NOT NULL, routing_key TEXT NOT NULL,"
            " PRIMARY KEY (owner, queue, exchange, routing_key))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS exchanges (name TEXT PRIMARY KEY, type TEXT NOT NULL)"
        )
        # op: "+" binding added, "-" binding removed, "x" exchange declared (type in queue).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " op TEXT NOT NULL, owner TEXT NOT NULL, queue TEXT NOT NULL,"
            " exchange TEXT NOT NULL, routing_key TEXT NOT NULL)"
        )

    @staticmethod
    def _retry(operation: Callable[[], Any], deadline: float = 30.0) -> Any:
        delay = 0.001
        give_up = time.monotonic() + deadline
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > give_up:
                    raise BusError(f"bus registry stays locked: {exc}") from exc
                gevent.sleep(delay)
                delay = min(delay * 2, 0.05)

    def changed(self) -> bool:
        return self._generation[:8] != self.seen

    def _write(self, work: Callable[[sqlite3.Connection], None]) -> None:
        def transaction() -> None:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                work(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

        self._retry(transaction)
        # After the commit: see the module docstring for why this order is safe.
        self._generation[:8] = os.urandom(8)

    @classmethod
    def _journal(cls, db: sqlite3.Connection, op: str, row: tuple[str, str, str, str]) -> None:
        cursor = db.execute(
            "INSERT INTO journal (op, owner, queue, exchange, routing_key) VALUES (?, ?, ?, ?, ?)",
            (op, *row),
        )
        seq = cursor.lastrowid or 0
        if seq % cls.PRUNE_EVERY == 0:
            db.execute("DELETE FROM journal WHERE seq <= ?", (seq - cls.JOURNAL_KEEP,))

    def add_bindings(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """Rows of (owner, queue, exchange, routing_key)."""

        def work(db: sqlite3.Connection) -> None:
            for row in rows:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO bindings (owner, queue, exchange, routing_key)"
                    " VALUES (?, ?, ?, ?)",
                    row,
                )
                if cursor.rowcount == 1:
                    self._journal(db, "+", row)

        self._write(work)

    def remove(self, owner: str, queue: str | None = None) -> None:
        """Drop the bindings of one queue of ``owner``, or all of them."""

        def work(db: sqlite3.Connection) -> None:
            where: str = "owner = ?"
            params: tuple[str, ...] = (owner,)
            if queue is not None:
                where, params = "owner = ? AND queue = ?", (owner, queue)
            rows = db.execute(
                f"SELECT owner, queue, exchange, routing_key FROM bindings WHERE {where}", params
            ).fetchall()
            db.execute(f"DELETE FROM bindings WHERE {where}", params)
            for row in rows:
                self._journal(db, "-", row)

        self._write(work)

    def remove_binding(self, row: tuple[str, str, str, str]) -> None:
        def work(db: sqlite3.Connection) -> None:
            cursor = db.execute(
                "DELETE FROM bindings WHERE owner = ? AND queue = ? AND exchange = ?"
                " AND routing_key = ?",
                row,
            )
            if cursor.rowcount:
                self._journal(db, "-", row)

        self._write(work)

    def declare_exchanges(self, exchanges: Sequence[tuple[str, str]]) -> None:
        def work(db: sqlite3.Connection) -> None:
            for name, kind in exchanges:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO exchanges (name, type) VALUES (?, ?)", (name, kind)
                )
                if cursor.rowcount == 1:
                    self._journal(db, "x", ("", kind, name, ""))

        self._write(work)

    def snapshot(self) -> tuple[list[tuple[str, str, str, str]], list[tuple[str, str]], int]:
        """Every binding and exchange, and the journal sequence they correspond to."""
        # Token first, then the data: a change committed after this read bumps the token
        # again, so the next changed() sees it.
        self.seen = self._generation[:8]

        def read() -> tuple[list[Any], list[Any], int]:
            self._db.execute("BEGIN")
            try:
                bindings = self._db.execute(
                    "SELECT owner, queue, exchange, routing_key FROM bindings"
                ).fetchall()
                exchanges = self._db.execute("SELECT name, type FROM exchanges").fetchall()
                (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()
            finally:
                self._db.execute("COMMIT")
            return bindings, exchanges, int(seq)

        return self._retry(read)

    def changes_since(self, seq: int) -> list[tuple[int, str, str, str, str, str]] | None:
        """Journal entries after ``seq``, or None when some were pruned (reload instead)."""
        self.seen = self._generation[:8]
        rows = self._retry(
            lambda: self._db.execute(
                "SELECT seq, op, owner, queue, exchange, routing_key FROM journal"
                " WHERE seq > ? ORDER BY seq",
                (seq,),
            ).fetchall()
        )
        if rows and rows[0][0] != seq + 1:
            return None
        return rows

    def owners(self) -> list[str]:
        rows = self._retry(
            lambda: self._db.execute("SELECT DISTINCT owner FROM bindings").fetchall()
        )
        return [row[0] for row in rows]

    def close(self) -> None:
        self._db.close()
        self._generation.close()


class _Peer:
    """The connection to one other process, with a writer greenlet coalescing frames."""

    def __init__(self, bus: LocalBus, owner: str) -> None:
        self.bus = bus
        self.owner = owner
        self.dead = False
        self._congested = False
        self._out: deque[bytes] = deque()
        self._enqueued = 0
        self.written = 0
        self._wakeup = gevent.event.Event()
        self._progress = gevent.event.Event()
        self._sock: gevent.socket.socket | None = None
        self._greenlet = gevent.spawn(self._run)

    def send(self, frame: bytes, deadline: float | None = None) -> int:
        """Queue a frame; returns its sequence number (for confirm waits), 0 if the peer died
        or stayed too far behind until ``deadline`` (default: a short backpressure wait)."""
        if self.dead:
            return 0
        if self._congested:
            # Once it made a publisher give up, drop at once until half the backlog is gone,
            # instead of making every publisher wait in turn.
            if len(self._out) >= _MAX_PENDING_FRAMES // 2 and deadline is None:
                metrics.DROPPED.labels("peer_backlog").inc()
                return 0
            self._congested = False
        if len(self._out) >= _MAX_PENDING_FRAMES:
            give_up = time.monotonic() + _BACKPRESSURE_WAIT if deadline is None else deadline
            while len(self._out) >= _MAX_PENDING_FRAMES and not self.dead:
                remaining = give_up - time.monotonic()
                if remaining <= 0:
                    self._congested = True
                    log.warning("bus: peer %s is not keeping up; dropping", self.owner)
                    metrics.DROPPED.labels("peer_backlog").inc()
                    return 0
                self._progress.clear()
                self._progress.wait(min(remaining, 1.0))
            if self.dead:
                return 0
        self._out.append(frame)
        self._enqueued += 1
        self._wakeup.set()
        return self._enqueued

    def wait_written(self, sequence: int, deadline: float) -> bool:
        while self.written < sequence:
            if self.dead:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            self._progress.wait(remaining)
        return True

    def _run(self) -> None:
        sock = gevent.socket.socket(std_socket.AF_UNIX, std_socket.SOCK_STREAM)
        try:
            sock.connect(self.bus._address(self.owner))
        except OSError:
            sock.close()
            self._gone()
            return
        self._sock = sock
        out = self._out
        try:
            while True:
                while out:
                    batch = [out.popleft()]
                    size = len(batch[0])
                    while out and size < _BATCH_BYTES:
                        frame = out.popleft()
                        batch.append(frame)
                        size += len(frame)
                    sock.sendall(b"".join(batch) if len(batch) > 1 else batch[0])
                    self.written += len(batch)
                    self._progress.set()
                self._wakeup.clear()
                self._wakeup.wait()
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EBADF, errno.ENOTCONN):
                log.warning("bus peer %s: %s", self.owner, exc)
            self._gone()
        finally:
            sock.close()

    def _gone(self) -> None:
        self.dead = True
        unsent = list(self._out)
        self._out.clear()
        self._progress.set()
        self.bus._peer_gone(self, unsent)

    def flush(self, timeout: float) -> None:
        self.wait_written(self._enqueued, time.monotonic() + timeout)

    def close(self) -> None:
        self.dead = True
        self._greenlet.kill(block=False)
        if self._sock is not None:
            self._sock.close()


# Route of one (exchange, routing key): the queues it reaches and who consumes each.
_Route = list[tuple[str, tuple[str, ...]]]


class LocalBus(Bus):
    """The brokerless bus of one node (see the module docstring for the design)."""

    transport = "local"

    def __init__(self, *, node: str, data_dir: Path | str) -> None:
        super().__init__(node=node)
        directory = Path(data_dir).resolve() / "bus"
        self._namespace = hashlib.sha1(str(directory).encode()).hexdigest()[:16]
        self._owner = f"{os.getpid()}.{os.urandom(4).hex()}"
        self._uid = os.getuid()
        self._registry = _Registry(directory)
        self._consumers: dict[str, list[Consumer]] = {}
        self._peers: dict[str, _Peer] = {}
        # (queue, owner) pairs bound, by exchange, from the registry (see _refresh).
        self._seq: int | None = None
        self._direct: dict[str, dict[str, dict[tuple[str, str], None]]] = {}
        self._fanout: dict[str, dict[tuple[str, str], None]] = {}
        self._topics: dict[str, TopicTrie] = {}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._turns = itertools.count()
        self._greenlets: list[gevent.Greenlet] = []
        self._listener = gevent.socket.socket(std_socket.AF_UNIX, std_socket.SOCK_STREAM)
        self._listener.bind(self._address(self._owner))
        self._listener.listen(256)
        self._greenlets.append(gevent.spawn(self._accept_loop))
        self._sweep_dead_owners()
        self._declare_kazoo_exchanges()
        self._reply = self._reply_consumer()
        self._start_consumer(self._reply)

    # --- addresses and the registry -----------------------------------------------------
    def _address(self, owner: str) -> str:
        return f"\0mirliton-bus/{self._namespace}/{owner}"

    def _declare_kazoo_exchanges(self) -> None:
        self._registry.declare_exchanges(list(self._exchanges.items()))

    def _refuses(self, owner: str) -> bool:
        """Whether nobody listens at ``owner``'s address any more: the process is gone.
        A busy or slow listener (backlog full, timeout) counts as alive."""
        probe = gevent.socket.socket(std_socket.AF_UNIX, std_socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(self._address(owner))
        except (ConnectionRefusedError, FileNotFoundError):
            return True
        except OSError:
            return False
        finally:
            probe.close()
        return False

    def _sweep_dead_owners(self) -> None:
        for owner in self._registry.owners():
            if owner != self._owner and self._refuses(owner):
                self._registry.remove(owner)

    def _refresh(self) -> None:
        """Bring the routing tables up to date with the registry (one memory read if current)."""
        if not self._registry.changed():
            return
        changes = None if self._seq is None else self._registry.changes_since(self._seq)
        if changes is None:
            bindings, exchanges, seq = self._registry.snapshot()
            self._direct, self._fanout, self._topics = {}, {}, {}
            for name, kind in exchanges:
                self._apply("x", "", kind, name, "")
            for owner, queue, exchange, routing_key in bindings:
                self._apply("+", owner, queue, exchange, routing_key)
            self._seq = seq
        else:
            for seq, op, owner, queue, exchange, routing_key in changes:
                self._apply(op, owner, queue, exchange, routing_key)
                self._seq = seq
        self._routes = {}

    def _apply(self, op: str, owner: str, queue: str, exchange: str, routing_key: str) -> None:
        if op == "x":
            if queue in ("direct", "topic", "fanout"):
                self._exchanges.setdefault(exchange, cast(ExchangeType, queue))
            return
        target = (queue, owner)
        kind = self._exchanges.get(exchange)
        if kind == DIRECT:
            keys = self._direct.setdefault(exchange, {})
            if op == "+":
                keys.setdefault(routing_key, {})[target] = None
            else:
                bound = keys.get(routing_key, {})
                bound.pop(target, None)
                if not bound:
                    keys.pop(routing_key, None)
        elif kind == FANOUT:
            if op == "+":
                self._fanout.setdefault(exchange, {})[target] = None
            else:
                self._fanout.get(exchange, {}).pop(target, None)
        else:
            trie = self._topics.get(exchange)
            if trie is None:
                trie = self._topics[exchange] = TopicTrie()
            if op == "+":
                trie.add(routing_key, target)
            else:
                trie.remove(routing_key, target)

    def _route(self, exchange: str, routing_key: str) -> _Route:
        self._refresh()
        key = (exchange, routing_key)
        route = self._routes.get(key)
        if route is not None:
            return route
        kind = self._exchanges[exchange]
        targets: Any
        if kind == DIRECT:
            targets = self._direct.get(exchange, {}).get(routing_key, ())
        elif kind == FANOUT:
            targets = self._fanout.get(exchange, ())
        else:
            trie = self._topics.get(exchange)
            targets = trie.match(routing_key) if trie is not None else ()
        owners_by_queue: dict[str, list[str]] = {}
        for queue, owner in targets:
            owners_by_queue.setdefault(queue, []).append(owner)
        route = [(queue, tuple(owners)) for queue, owners in owners_by_queue.items()]
        if len(self._routes) >= _ROUTE_CACHE_LIMIT:
            self._routes = {}
        self._routes[key] = route
        return route

    # --- sending ---------------------------------------------------------------------------
    def _send(
        self, exchange: str, routing_key: str, body: bytes, confirm: bool, timeout: float
    ) -> None:
        if len(body) > _MAX_FRAME_BYTES - 65536:
            raise BusError(f"a {len(body)}-byte message is too large for the bus")
        deadline = time.monotonic() + timeout
        while True:
            written = self._send_once(exchange, routing_key, body, confirm, deadline)
            if written or not confirm:
                return
            if time.monotonic() >= deadline:
                raise PublishNotConfirmed(
                    f"no queue took {exchange}/{routing_key} within {timeout}s"
                )
            gevent.sleep(0.02)

    def _send_once(
        self, exchange: str, routing_key: str, body: bytes, confirm: bool, deadline: float
    ) -> bool:
        route = self._route(exchange, routing_key)
        if not route:
            if not confirm:
                metrics.DROPPED.labels("no_consumer").inc()
            return False
        queues_by_owner: dict[str, list[str]] = {}
        for queue, owners in route:
            owner = owners[0] if len(owners) == 1 else owners[next(self._turns) % len(owners)]
            queues_by_owner.setdefault(owner, []).append(queue)
        waits: list[tuple[_Peer, int]] = []
        delivered = False
        for owner, queues in queues_by_owner.items():
            if owner == self._owner:
                for queue in queues:
                    delivered = self._deliver(exchange, routing_key, queue, body) or delivered
                continue
            peer = self._peers.get(owner)
            if peer is None or peer.dead:
                peer = self._peers[owner] = _Peer(self, owner)
            exchange_b = exchange.encode()
            key_b = routing_key.encode()
            queues_b = "\n".join(queues).encode()
            header = _HEADER.pack(len(exchange_b), len(key_b), len(queues_b))
            length = _HEADER.size + len(exchange_b) + len(key_b) + len(queues_b) + len(body)
            sequence = peer.send(
                b"".join((_LENGTH.pack(length), header, exchange_b, key_b, queues_b, body)),
                deadline if confirm else None,
            )
            if sequence:
                waits.append((peer, sequence))
        if not confirm:
            return True
        for peer, sequence in waits:
            delivered = peer.wait_written(sequence, deadline) or delivered
        return delivered

    def _peer_gone(self, peer: _Peer, unsent: list[bytes]) -> None:
        if self._peers.get(peer.owner) is peer:
            del self._peers[peer.owner]
        if not self._closed and not self._refuses(peer.owner):
            # A broken connection is not proof of death: the frames not yet written go out
            # on a new connection (a confirmed publish in flight retries on its own).
            if unsent:
                replacement = self._peers.get(peer.owner)
                if replacement is None or replacement.dead:
                    replacement = self._peers[peer.owner] = _Peer(self, peer.owner)
                for frame in unsent:
                    replacement.send(frame)
            return
        if unsent:
            metrics.DROPPED.labels("peer_gone").inc(len(unsent))
        if not self._closed:
            # Forget the bindings of a process only when its address refuses us, or every
            # process would stop routing to a live one.
            self._registry.remove(peer.owner)

    # --- receiving -------------------------------------------------------------------------
    def _deliver(self, exchange: str, routing_key: str, queue: str, body: bytes) -> bool:
        consumers = self._consumers.get(queue)
        if not consumers:
            metrics.DROPPED.labels("no_consumer").inc()
            return False
        consumer = (
            consumers[0] if len(consumers) == 1 else consumers[next(self._turns) % len(consumers)]
        )
        consumer.push(exchange, routing_key, body)
        return True

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            # Abstract sockets have no file permissions: any local user could connect. Only
            # processes of our own user (or root) may put messages on this node's bus.
            _pid, uid, _gid = _PEERCRED.unpack(
                conn.getsockopt(std_socket.SOL_SOCKET, std_socket.SO_PEERCRED, _PEERCRED.size)
            )
            if uid not in (self._uid, 0):
                log.warning("bus: refused a connection from uid %d", uid)
                conn.close()
                continue
            self._greenlets = [g for g in self._greenlets if not g.dead]
            self._greenlets.append(gevent.spawn(self._read_loop, conn))

    def _read_loop(self, conn: gevent.socket.socket) -> None:
        buffer = bytearray()
        unpack_length = _LENGTH.unpack_from
        unpack_header = _HEADER.unpack_from
        header_size = _HEADER.size
        try:
            while True:
                data = conn.recv(262144)
                if not data:
                    return
                buffer += data
                position = 0
                available = len(buffer)
                while available - position >= 4:
                    (length,) = unpack_length(buffer, position)
                    if length > _MAX_FRAME_BYTES:
                        raise ValueError(f"frame of {length} bytes")
                    end = position + 4 + length
                    if end > available:
                        break
                    start = position + 4
                    exchange_len, key_len, queues_len = unpack_header(buffer, start)
                    cursor = start + header_size
                    exchange = buffer[cursor : cursor + exchange_len].decode()
                    cursor += exchange_len
                    routing_key = buffer[cursor : cursor + key_len].decode()
                    cursor += key_len
                    queues = buffer[cursor : cursor + queues_len].decode().split("\n")
                    body = bytes(buffer[cursor + queues_len : end])
                    for queue in queues:
                        self._deliver(exchange, routing_key, queue, body)
                    position = end
                del buffer[:position]
        except OSError:
            return
        except (ValueError, struct.error):
            # Only our own code writes these frames; a broken one means a bug on the other
            # side. Drop the connection (the sender reconnects, see _peer_gone).
            log.exception("bus: malformed frame; closing the connection")
        finally:
            conn.close()

    # --- consumers and exchanges ----------------------------------------------------------------
    def _start_consumer(self, consumer: Consumer) -> None:
        self._consumers.setdefault(consumer.queue, []).append(consumer)
        self._registry.add_bindings(
            [(self._owner, consumer.queue, b.exchange, b.routing_key) for b in consumer.bindings]
        )

    def _add_binding(self, consumer: Consumer, binding: Binding) -> None:
        self._registry.add_bindings(
            [(self._owner, consumer.queue, binding.exchange, binding.routing_key)]
        )

    def _remove_binding(self, consumer: Consumer, binding: Binding) -> None:
        if len(self._consumers.get(consumer.queue, ())) > 1:
            # Another consumer of this process shares the queue and its bindings.
            return
        self._registry.remove_binding(
            (self._owner, consumer.queue, binding.exchange, binding.routing_key)
        )

    def _cancel_consumer(self, consumer: Consumer) -> None:
        consumers = self._consumers.get(consumer.queue, [])
        if consumer in consumers:
            consumers.remove(consumer)
        if not consumers:
            self._consumers.pop(consumer.queue, None)
            if not self._closed:
                self._registry.remove(self._owner, consumer.queue)

    def _knows_exchange(self, name: str) -> bool:
        self._refresh()
        return name in self._exchanges

    def _declare_exchange(self, name: str, kind: ExchangeType) -> None:
        self._refresh()
        known = self._exchanges.get(name)
        if known is not None and known != kind:
            raise BusError(f"exchange {name!r} is a {known} exchange, not {kind}")
        self._registry.declare_exchanges([(name, kind)])

    # --- lifecycle ------------------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued frame was written to its peer's socket."""
        deadline = time.monotonic() + timeout
        for peer in list(self._peers.values()):
            peer.flush(max(0.0, deadline - time.monotonic()))

    def _close(self) -> None:
        self.flush(2.0)
        for consumers in list(self._consumers.values()):
            for consumer in list(consumers):
                consumer.active = False
                consumer._greenlet.kill(block=False)
        self._consumers.clear()
        try:
            self._registry.remove(self._owner)
        finally:
            self._listener.close()
            for peer in list(self._peers.values()):
                peer.close()
            self._peers.clear()
            for greenlet in self._greenlets:
                greenlet.kill(block=False)
            self._registry.close()

    def _release_after_fork(self) -> None:
        # Close the inherited listening socket in the child only: while any process holds
        # it, the parent's address would keep accepting and never be seen as dead.
        self._listener.close()
        for peer in self._peers.values():
            if peer._sock is not None:
                peer._sock.close()
