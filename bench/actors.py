"""Actor kernel and supervision figures (issue 2 targets).

    python bench/actors.py [--json] [--runs N] [--spawn-count N] [--calls N] [--crashes N]
                           [--kills N] [--no-process]

- Lightweight spawn rate: N actors spawned one after the other (``spawn`` returns once the
  actor's ``init`` ran), spawns per second; memory per actor: growth of this process's
  resident set (/proc/self/statm) over N live actors, divided by N. Measured first, on a
  fresh process and without tracemalloc (which would add its own bookkeeping to both); then,
  as a cross-check, the Python heap per actor traced by tracemalloc over other actors.
- In-process request/reply: ``ActorRef.call`` to an echo actor, one at a time, p50/p99.
- Restart of a crashed lightweight actor: a worker under a one_for_one ``Supervisor``
  (intensity set high) records the time just before it raises; its replacement's ``init``
  records when it runs. Latency = the difference, p50/p99 over the crashes. Logs go to a
  file as in a node (each crash logs its traceback), so their cost is included.
- Restart of a killed process actor: a real node (``mirliton start --detach``, role "ops" on
  a free port, root intensity set high), ``kill -9`` of the ops role process, then the root
  supervisor's tree file (data_dir/run/tree/root.json) polled every 1 ms until it shows a new
  pid in state running (the new process finished ``init_process``). p50/p99 over the kills.

``--runs N`` runs the whole bench N times, each in a fresh process, and reports the median of
each figure (the machine may be shared and noisy; every run's figures are kept under "runs").

Targets (issue 2): >= 20,000 spawns/s, <= 20 KB per actor, crashed lightweight actor restart
< 1 ms p50, killed process actor restart < 100 ms p50. With ``--json`` the last line printed
is one JSON object: rates per second, latencies in ms, memory in KB / MB.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from actors.kernel import Actor, ActorRef, spawn  # noqa: E402
from supervisors import ChildSpec, Supervisor, SupervisorFlags  # noqa: E402

TARGET_SPAWNS_PER_S = 20_000
TARGET_KB_PER_ACTOR = 20.0
TARGET_LIGHTWEIGHT_RESTART_P50_MS = 1.0
TARGET_PROCESS_RESTART_P50_MS = 100.0

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 4)


# --- lightweight spawn and memory ---------------------------------------------------------


class Idle(Actor):
    """Does nothing until stopped: the cost of an actor itself."""


def measure_spawn(count: int) -> dict[str, Any]:
    for ref in [spawn(Idle()) for _ in range(200)]:  # warm up code paths and allocators
        ref.kill()
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    refs = [spawn(Idle()) for _ in range(count)]
    elapsed = time.perf_counter() - started
    gc.collect()
    rss_delta = rss_bytes() - rss_before
    kill_started = time.perf_counter()
    for ref in refs:
        ref.kill()
    kill_elapsed = time.perf_counter() - kill_started
    return {
        "spawn_count": count,
        "spawns_per_s": round(count / elapsed),
        "memory_per_actor_kb": round(rss_delta / count / 1024.0, 2),
        "spawn_rss_delta_mb": round(rss_delta / 1024.0 / 1024.0, 1),
        "kills_per_s": round(count / kill_elapsed),
    }


def measure_traced_memory(count: int) -> dict[str, Any]:
    """Cross-check of the RSS figure: what Python's allocators hold per live actor
    (tracemalloc; greenlet stack copies included), measured apart from the timed spawns."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    refs = [spawn(Idle()) for _ in range(count)]
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    for ref in refs:
        ref.kill()
    return {"traced_memory_per_actor_kb": round(traced / count / 1024.0, 2)}


# --- request / reply ----------------------------------------------------------------------


class Echo(Actor):
    def handle_call(self, request: Any) -> Any:
        return request


def measure_calls(count: int) -> dict[str, Any]:
    ref = spawn(Echo())
    for n in range(1000):
        ref.call(n)
    latencies: list[float] = []
    started = time.perf_counter()
    for n in range(count):
        t0 = time.perf_counter()
        ref.call(n)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    ref.stop()
    return {
        "call_count": count,
        "calls_per_s": round(count / elapsed),
        "call_p50_ms": ms(statistics.median(latencies)),
        "call_p99_ms": ms(percentile(latencies, 0.99)),
    }


# --- restart of a crashed lightweight actor -----------------------------------------------


class CrashProbe:
    """Shared by the worker incarnations: when each crashed and each replacement started."""

    def __init__(self) -> None:
        self.crashed_at = 0.0
        self.restart_latencies: list[float] = []
        self.current: ActorRef | None = None
        self.started = gevent.event.Event()


class CrashingWorker(Actor):
    def __init__(self, probe: CrashProbe) -> None:
        self.probe = probe

    def init(self) -> None:
        now = time.perf_counter()
        probe = self.probe
        if probe.crashed_at:
            probe.restart_latencies.append(now - probe.crashed_at)
            probe.crashed_at = 0.0
        probe.current = self.ref
        probe.started.set()

    def handle_cast(self, msg: Any) -> None:
        self.probe.crashed_at = time.perf_counter()
        raise RuntimeError("bench crash")


def measure_lightweight_restart(crashes: int) -> dict[str, Any]:
    probe = CrashProbe()
    sup = spawn(Supervisor(
        [ChildSpec("worker", lambda: CrashingWorker(probe))],
        SupervisorFlags("one_for_one", intensity=10 * crashes, period=3600.0),
        name="bench",
    ))
    for _ in range(crashes):
        probe.started.clear()
        assert probe.current is not None
        probe.current.send("crash")
        if not probe.started.wait(10.0):
            raise RuntimeError("the crashed worker was not restarted within 10 s")
    sup.stop()
    latencies = probe.restart_latencies
    return {
        "lightweight_restart_count": len(latencies),
        "lightweight_restart_p50_ms": ms(statistics.median(latencies)),
        "lightweight_restart_p99_ms": ms(percentile(latencies, 0.99)),
    }


# --- restart of a killed process actor (a real node) --------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_role(tree_file: Path, role: str) -> dict[str, Any] | None:
    try:
        tree = json.loads(tree_file.read_text())
    except (OSError, ValueError):
        return None
    return next((c for c in tree.get("children", []) if c.get("id") == role), None)


def wait_for_role(tree_file: Path, role: str, not_pid: int | None, limit_s: float,
                  poll_s: float = 0.001) -> dict[str, Any]:
    """Poll the tree file until ``role`` is running with a pid other than ``not_pid``."""
    deadline = time.perf_counter() + limit_s
    while True:
        child = read_role(tree_file, role)
        if child and child.get("state") == "running" and child.get("pid") not in (None, not_pid):
            return child
        if time.perf_counter() > deadline:
            raise RuntimeError(f"role {role} not running with a new pid within {limit_s}s: {child}")
        time.sleep(poll_s)


def measure_process_restart(kills: int) -> dict[str, Any]:
    role = "ops"
    with tempfile.TemporaryDirectory(prefix="mirliton-bench-") as tmp:
        data_dir = Path(tmp) / "node"
        env = dict(os.environ)
        env.update({
            "MIRLITON_NODE__ROLES": json.dumps([role]),
            "MIRLITON_NODE__NAME": "bench-actors",
            "MIRLITON_OPS__LISTEN": f"127.0.0.1:{free_port()}",
            "MIRLITON_SUPERVISION__INTENSITY": str(10 * kills),
            "PYTHONPATH": str(ROOT),
        })

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "mirliton", *args, "--data-dir", str(data_dir)],
                env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)

        started = cli("start", "--detach")
        if started.returncode != 0:
            raise RuntimeError(f"mirliton start failed: {started.stdout}{started.stderr}")
        try:
            status = json.loads(cli("status", "--json").stdout)
            child = next(c for c in status["tree"]["children"] if c["id"] == role)
            pid = int(child["pid"])
            restarts_before = int(child["restarts"])
            tree_file = data_dir / "run" / "tree" / "root.json"
            latencies: list[float] = []
            for _ in range(kills):
                time.sleep(0.2)  # kill a settled process, not one still starting up
                t0 = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                child = wait_for_role(tree_file, role, pid, limit_s=30.0)
                latencies.append(time.perf_counter() - t0)
                pid = int(child["pid"])
            status = json.loads(cli("status", "--json").stdout)
            child = next(c for c in status["tree"]["children"] if c["id"] == role)
            restarts_counted = int(child["restarts"]) - restarts_before
        finally:
            stopped = cli("stop")
            if stopped.returncode != 0:
                print(f"mirliton stop failed: {stopped.stdout}{stopped.stderr}", file=sys.stderr)
    return {
        "process_restart_count": len(latencies),
        "process_restart_p50_ms": ms(statistics.median(latencies)),
        "process_restart_p99_ms": ms(percentile(latencies, 0.99)),
        "process_restarts_counted": restarts_counted,
    }


# --- main ---------------------------------------------------------------------------------


def evaluate_targets(results: dict[str, Any]) -> dict[str, bool]:
    targets = {
        "spawns_per_s": results["spawns_per_s"] >= TARGET_SPAWNS_PER_S,
        "memory_per_actor_kb": results["memory_per_actor_kb"] <= TARGET_KB_PER_ACTOR,
        "lightweight_restart_p50_ms":
            results["lightweight_restart_p50_ms"] < TARGET_LIGHTWEIGHT_RESTART_P50_MS,
    }
    if "process_restart_p50_ms" in results:
        targets["process_restart_p50_ms"] = (
            results["process_restart_p50_ms"] < TARGET_PROCESS_RESTART_P50_MS)
    return targets


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    # Logs go to a file, as in a node: each crash logs its traceback, and that cost counts.
    root = logging.getLogger()
    with tempfile.TemporaryDirectory(prefix="mirliton-bench-log-") as log_dir:
        handler = logging.FileHandler(os.path.join(log_dir, "bench.log"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            return measure_all(args)
        finally:
            root.removeHandler(handler)
            handler.close()


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    # The machine may be shared: the load when the run began helps read the figures.
    results: dict[str, Any] = {"load_avg_1m": round(os.getloadavg()[0], 2),
                                "cpus": os.cpu_count()}
    results.update(measure_spawn(args.spawn_count))  # first: on a fresh heap
    print(f"spawn: {results['spawns_per_s']:,} spawns/s, "
          f"{results['memory_per_actor_kb']} KB per actor "
          f"(RSS +{results['spawn_rss_delta_mb']} MB for {args.spawn_count:,} actors)")
    results.update(measure_traced_memory(min(args.spawn_count, 5_000)))
    print(f"       {results['traced_memory_per_actor_kb']} KB per actor traced by tracemalloc")
    results.update(measure_calls(args.calls))
    print(f"call:  {results['calls_per_s']:,} calls/s, p50 {results['call_p50_ms']} ms, "
          f"p99 {results['call_p99_ms']} ms")
    results.update(measure_lightweight_restart(args.crashes))
    print(f"lightweight restart ({results['lightweight_restart_count']} crashes): "
          f"p50 {results['lightweight_restart_p50_ms']} ms, "
          f"p99 {results['lightweight_restart_p99_ms']} ms")
    if not args.no_process:
        results.update(measure_process_restart(args.kills))
        print(f"process restart ({results['process_restart_count']} kill -9): "
              f"p50 {results['process_restart_p50_ms']} ms, "
              f"p99 {results['process_restart_p99_ms']} ms "
              f"(restart count +{results['process_restarts_counted']})")
    print(f"(load average {results['load_avg_1m']} on {results['cpus']} CPUs at the start)")
    return results


def run_several(args: argparse.Namespace) -> dict[str, Any]:
    """Each run in a fresh process (the spawn figures need a fresh heap); medians of all."""
    command = [sys.executable, str(Path(__file__).resolve()), "--json",
               "--spawn-count", str(args.spawn_count), "--calls", str(args.calls),
               "--crashes", str(args.crashes), "--kills", str(args.kills)]
    if args.no_process:
        command.append("--no-process")
    runs: list[dict[str, Any]] = []
    for n in range(args.runs):
        print(f"--- run {n + 1} of {args.runs}", flush=True)
        proc = subprocess.run(command, capture_output=True, text=True, check=True)
        lines = proc.stdout.strip().splitlines()
        print("\n".join(lines[:-1]), flush=True)
        runs.append(json.loads(lines[-1]))
    medians: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            median = statistics.median(run[key] for run in runs)
            medians[key] = int(median) if float(median).is_integer() else round(median, 4)
    medians["runs"] = runs
    print(f"--- medians of {args.runs} runs")
    for key, value in medians.items():
        if key != "runs":
            print(f"{key}: {value}")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--runs", type=int, default=1,
                        help="run N times, each in a fresh process, and report the medians")
    parser.add_argument("--spawn-count", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--crashes", type=int, default=1_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--no-process", action="store_true", help="skip the real-node part")
    args = parser.parse_args()

    results = run_several(args) if args.runs > 1 else run_once(args)
    targets = evaluate_targets(results)
    results["targets_met"] = targets
    print("targets: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in targets.items()))
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
