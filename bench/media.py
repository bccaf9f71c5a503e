"""Media engine figures (issue 9): anchored G.711 RTP streams one engine (one calls shard)
relays at 20 ms.

    python bench/media.py [--json] [--runs 3] [--step-seconds 4] [--budget 40]

Three processes per step, all on loopback:

- *engine*: one :class:`~actors.media.MediaEngine` (one process = one shard, one clock)
  holding N bridged pairs of streams A_i <-> B_i. Each A_i receives a G.711 (PCMU) stream and
  relays it through B_i to the receiver, rewriting SSRC, sequence numbers and timestamps as a
  bridged call does. It runs with a calls shard's garbage-collector settings (those of every
  role process) and measures its own CPU time (user + system) over the measured window.
- *sender*: N UDP sockets, one 20 ms PCMU packet (160 bytes) per socket per frame, paced on an
  absolute schedule, stream i at phase i/N of the frame (phones are not synchronised with each
  other, so packets reach the engine spread over the frame). Each payload starts with the
  wall-clock time read just before its ``sendto`` (PCMU to PCMU is relayed without transcoding, so the payload arrives intact).
- *receiver*: N UDP sockets read with epoll; for each packet, the relay delay = the kernel's
  receive timestamp (SO_TIMESTAMPNS: when the datagram reached the socket, whatever the
  receiver's own scheduling) minus the send time in its payload (one machine, one clock).

A *relayed stream* is one inbound RTP flow relayed out of the engine (one direction of a
bridged call). A packet is **late** when it reaches the receiver more than 20 ms after it was
sent (one frame: a phone with a one-frame jitter buffer would have to drop it); a packet that
never arrives counts as late too. A step of N streams *passes* when fewer than 1 % of the
packets sent in its measured window are late.

The search goes up a ladder of N (100, 200, 300, ...) until a step fails twice in a row (a
failing step is run once more: the machine may be shared) or the time budget of the run is
spent; the result of a run is the largest N that passed, with the engine's CPU per
stream at that N: engine CPU seconds / wall seconds / N (so 0.001 = 0.1 % of a core per
stream). ``--runs`` (default 3) repeats the search; the figures reported are the medians.
Target (issue 9): >= 200 relayed streams per shard. With ``--json`` the last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_STREAMS = 200
LATE_AFTER = 0.020  # seconds from send to delivery
LATE_LIMIT = 0.01  # fraction of packets
LADDER = (100, 200, 300, 400, 600, 800, 1000, 1200, 1500)
PORT_MIN, PORT_MAX = 20000, 29999
FRAME = 0.020
_STAMP = struct.Struct("!dI")  # send time (wall clock), frame number
# Linux SO_TIMESTAMPNS (Python's socket module does not name it): a struct timespec of
# CLOCK_REALTIME per datagram, so the sender stamps with time.time() too.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the three roles ----------------------------------------------------------------------------


def role_engine(args: argparse.Namespace) -> None:
    import gevent

    from actors.media import MediaEngine

    _raise_fd_limit()
    if args.engine_nice:
        os.nice(args.engine_nice)
    # The garbage-collector settings of a role process (mirliton/roles.py, RoleProcess), which
    # a calls shard is: start-up objects frozen, young objects collected less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    receivers = [int(p) for p in args.targets.split(",")]
    engine = MediaEngine("127.0.0.1", PORT_MIN, PORT_MAX).start()
    inbound: list[int] = []
    for port in receivers:
        a = engine.open_stream()
        b = engine.open_stream()
        b.set_remote("127.0.0.1", port, codec="PCMU")
        engine.bridge(a, b)
        inbound.append(a.local_port)
    print(json.dumps({"ports": inbound}), flush=True)
    # Nothing flows until the controller gives the start time; blocking here is harmless.
    t0 = float(sys.stdin.readline())
    gevent.sleep(max(0.0, t0 + args.warmup - time.monotonic()))
    cpu_start, wall_start = _cpu_seconds(), time.monotonic()
    ticks_start, late_ticks_start = engine.ticks, engine.late_ticks
    gevent.sleep(max(0.0, t0 + args.warmup + args.duration - time.monotonic()))
    cpu, wall = _cpu_seconds() - cpu_start, time.monotonic() - wall_start
    relayed = sum(s.packets_sent for s in engine.streams)
    print(json.dumps({"cpu_seconds": cpu, "wall_seconds": wall, "packets_relayed": relayed,
                      "ticks": engine.ticks - ticks_start,
                      "late_ticks": engine.late_ticks - late_ticks_start}), flush=True)
    gevent.sleep(0.5)  # let the tail of the traffic through before closing the ports
    engine.stop()


def role_sender(args: argparse.Namespace) -> None:
    _raise_fd_limit()
    targets = [("127.0.0.1", int(p)) for p in args.targets.split(",")]
    socks = []
    for _ in targets:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    t0 = args.t0
    end = t0 + args.warmup + args.duration
    header = struct.Struct("!BBHII")
    filler = b"\xff" * (160 - _STAMP.size)
    sent_measured = 0
    count = len(socks)
    # Phones are not synchronised: stream i sends at phase i/N of each 20 ms frame, so the
    # engine sees a steady flow rather than N packets at the same instant.
    phases = [FRAME * i / count for i in range(count)]
    tick = 0
    first_measured = round(args.warmup / FRAME)
    while True:
        frame_start = t0 + tick * FRAME
        if frame_start >= end:
            break
        seq = tick & 0xFFFF
        ts = (tick * 160) & 0xFFFFFFFF
        measured = tick >= first_measured
        for index in range(count):
            delay = frame_start + phases[index] - time.monotonic()
            if delay > 0.0005:
                time.sleep(delay)
            packet = (header.pack(0x80, 0, seq, ts, 0x1000 + index)
                      + _STAMP.pack(time.time(), tick) + filler)
            try:
                socks[index].sendto(packet, targets[index])
            except OSError:
                continue
            if measured:
                sent_measured += 1
        tick += 1
    print(json.dumps({"sent": sent_measured}), flush=True)


def role_receiver(args: argparse.Namespace) -> None:
    _raise_fd_limit()
    socks = {}
    poller = select.epoll()
    for _ in range(args.streams):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        # The kernel stamps each datagram as it lands in the socket: the delivery time, not
        # when this (possibly descheduled) process gets round to reading it.
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        socks[sock.fileno()] = sock
        poller.register(sock.fileno(), select.EPOLLIN)
    print(json.dumps({"ports": [s.getsockname()[1] for s in socks.values()]}), flush=True)
    t0 = float(sys.stdin.readline())
    # The measured window in frames, counted as the sender counts them.
    first = round(args.warmup / FRAME)
    last = round((args.warmup + args.duration) / FRAME)
    stop = t0 + args.warmup + args.duration + 0.5
    delays: list[float] = []
    while True:
        now = time.monotonic()
        if now >= stop:
            break
        for fd, _ in poller.poll(min(0.05, stop - now)):
            sock = socks[fd]
            while True:
                try:
                    data, ancillary, _, _ = sock.recvmsg(2048, _CMSG_SPACE)
                except BlockingIOError:
                    break
                arrived = None
                for level, kind, value in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                        arrived = seconds + nanoseconds / 1e9
                if arrived is None:
                    arrived = time.time()
                if len(data) < 12 + _STAMP.size or 192 <= data[1] <= 223:
                    continue  # too short, or the engine's RTCP report landing on this port
                sent, frame = _STAMP.unpack_from(data, 12)
                if first <= frame < last:
                    delays.append(arrived - sent)
    delays.sort()
    count = len(delays)
    late = sum(1 for d in delays if d > LATE_AFTER)

    def pct(q: float) -> float:
        return round(1000 * delays[min(count - 1, int(q * count))], 3) if count else 0.0

    print(json.dumps({"received": count, "late_delivered": late, "p50_ms": pct(0.5),
                      "p99_ms": pct(0.99), "max_ms": pct(1.0)}), flush=True)


# -- the controller ------------------------------------------------------------------------------


def _spawn(role: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--role", role,
                             *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)


def _read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench process {proc.args} exited ({proc.wait()})")
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)  # type: ignore[no-any-return]


def run_step(streams: int, warmup: float, duration: float, engine_nice: int = 0) -> dict[str, Any]:
    timing = ["--warmup", str(warmup), "--duration", str(duration)]
    receiver = _spawn("receiver", "--streams", str(streams), *timing)
    engine = sender = None
    try:
        receiver_ports = _read_json(receiver)["ports"]
        engine = _spawn("engine", "--targets", ",".join(map(str, receiver_ports)),
                        "--engine-nice", str(engine_nice), *timing)
        engine_ports = _read_json(engine)["ports"]
        t0 = time.monotonic() + 0.5
        for proc in (receiver, engine):
            assert proc.stdin is not None
            proc.stdin.write(f"{t0}\n")
            proc.stdin.flush()
        sender = _spawn("sender", "--targets", ",".join(map(str, engine_ports)),
                        "--t0", str(t0), *timing)
        sent = _read_json(sender)["sent"]
        engine_figures = _read_json(engine)
        received = _read_json(receiver)
    finally:
        for proc in (sender, engine, receiver):
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    lost = max(0, sent - received["received"])
    late = received["late_delivered"] + lost
    late_fraction = late / sent if sent else 1.0
    cpu_per_stream = engine_figures["cpu_seconds"] / engine_figures["wall_seconds"] / streams
    return {
        "streams": streams,
        "sent": sent,
        "received": received["received"],
        "lost": lost,
        "late": late,
        "late_percent": round(100 * late_fraction, 3),
        "passed": late_fraction < LATE_LIMIT,
        "delay_p50_ms": received["p50_ms"],
        "delay_p99_ms": received["p99_ms"],
        "delay_max_ms": received["max_ms"],
        "engine_cpu_percent": round(100 * engine_figures["cpu_seconds"]
                                    / engine_figures["wall_seconds"], 1),
        "cpu_per_stream": round(cpu_per_stream, 6),
        "engine_late_ticks": engine_figures["late_ticks"],
    }


def run_search(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for streams in LADDER:
        if time.monotonic() - started > args.budget:
            print(f"  time budget of {args.budget:g} s spent", flush=True)
            break
        # The machine is shared: a step that fails is run once more before the search stops,
        # so one burst of another process's load does not end it.
        for attempt in (1, 2):
            step = run_step(streams, args.warmup, args.step_seconds, args.engine_nice)
            step["attempt"] = attempt
            steps.append(step)
            print(f"  {streams:5d} streams: late {step['late_percent']:6.3f} %  "
                  f"(lost {step['lost']}), delay p50 {step['delay_p50_ms']} ms "
                  f"p99 {step['delay_p99_ms']} ms, engine CPU {step['engine_cpu_percent']} %, "
                  f"{1000 * step['cpu_per_stream']:.3f} ms CPU/s per stream"
                  f"{'' if step['passed'] else '  FAILED'}", flush=True)
            if step["passed"]:
                break
        if not step["passed"]:
            break
        best = step
    return {
        "max_streams": best["streams"] if best else 0,
        "cpu_per_stream": best["cpu_per_stream"] if best else None,
        "late_percent_at_max": best["late_percent"] if best else None,
        "delay_p99_ms_at_max": best["delay_p99_ms"] if best else None,
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--step-seconds", type=float, default=4.0,
                        help="measured seconds per step (after a 1 s warm-up)")
    parser.add_argument("--budget", type=float, default=35.0,
                        help="seconds per run after which no new step starts")
    parser.add_argument("--engine-nice", type=int, default=0,
                        help="nice increment for the engine process (negative needs root; "
                             "media servers usually run at raised priority)")
    parser.add_argument("--role", choices=("engine", "sender", "receiver"), help=argparse.SUPPRESS)
    parser.add_argument("--targets", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=4.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "engine":
        role_engine(args)
        return
    if args.role == "sender":
        role_sender(args)
        return
    if args.role == "receiver":
        role_receiver(args)
        return

    runs = []
    for index in range(args.runs):
        print(f"--- run {index + 1} of {args.runs}", flush=True)
        runs.append(run_search(args))
    figures = [r for r in runs if r["max_streams"]]
    result: dict[str, Any] = {
        "max_streams": statistics.median(r["max_streams"] for r in runs),
        "cpu_per_stream": (statistics.median(r["cpu_per_stream"] for r in figures)
                           if figures else None),
        "late_percent_at_max": (statistics.median(r["late_percent_at_max"] for r in figures)
                                if figures else None),
        "delay_p99_ms_at_max": (statistics.median(r["delay_p99_ms_at_max"] for r in figures)
                                if figures else None),
        "late_threshold_ms": 1000 * LATE_AFTER,
        "late_limit_percent": 100 * LATE_LIMIT,
        "target_streams": TARGET_STREAMS,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "engine_nice": args.engine_nice,
        "runs": runs,
    }
    result["target_met"] = result["max_streams"] >= TARGET_STREAMS
    print(f"--- medians of {args.runs} runs: {result['max_streams']} relayed streams with "
          f"< {100 * LATE_LIMIT:g} % late (> {1000 * LATE_AFTER:g} ms), "
          f"CPU per stream {result['cpu_per_stream']} (cores), "
          f"target >= {TARGET_STREAMS}: {'ok' if result['target_met'] else 'MISSED'}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
