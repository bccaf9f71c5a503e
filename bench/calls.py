"""Call load through a real node: SIPp UAC -> edge -> calls shard (B2BUA) -> edge -> SIPp UAS
registered as a device. Driven by SIPp (bench/sipp/calls_uac.xml, calls_uas.xml).

    python bench/calls.py [--json] [--duration 30] [--runs 3] [--rates 25,35,50,70,100,150]
                          [--search-duration 10] [--hold-calls 2000] [--hold-rate 25]
                          [--memory-only] [--tracemalloc]

A node with the registrar, edge (dispatching calls), callflow, cdr and calls roles (2 shards)
runs on the embedded defaults in a temporary data dir. The callee is a SIPp UAS that
registers as device 7000 with digest; the caller is SIPp authenticating as device 6000:
INVITE -> 407 -> INVITE with digest -> route_req -> callflow parks -> route_win -> bridge to
the registered contact -> 180/200 -> ACK; the caller hangs up after ``--call-ms``. Every call
writes two CDRs. The load comes from 127.0.0.1 and is NOT trusted (challenged as any phone);
the per-source flood limit is raised (``edge.flood_requests``) since every call comes from
one address.

1. CPS: each rate of ``--rates`` runs ``--search-duration`` seconds, ascending, until one has
   a failed or unfinished call; the highest clean rate is then confirmed with ``--runs`` runs
   of ``--duration`` seconds (a failing confirmation steps down). Setup latency p50/p99 is
   first INVITE sent to 200 OK received (digest round trip included), medians over the runs.
2. Memory (first, on the fresh node): ``--hold-calls`` calls are set up at ``--hold-rate``
   and held; the resident memory
   of the calls shard processes (RSS, summed) is read before and once they are all
   established; reported as (RSS delta) / calls, in KB. The edge's delta is reported apart.
   ``--memory-only`` stops there. ``--tracemalloc`` also traces the node's allocations
   (slower; bench/_memtrace.py) and reports the files and lines its memory grew at, in
   bytes per held call: what a held call is made of.

With ``--json`` the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _memtrace import hook_dir, snapshot, top_differences
from _sipp import (
    ROOT,
    add_search_arguments,
    free_port,
    free_sip_port,
    median_of,
    mirliton,
    percentile,
    print_summary,
    response_times,
    search_and_confirm,
    sipp_missing,
    sipp_stat_args,
    sipp_totals,
)

SIPP_DIR = ROOT / "bench" / "sipp"
REALM = "calls-bench.example.com"
CALLER, CALLEE = "6000", "7000"
EDGE_ROLE = "edge"


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class BenchNode:
    def __init__(self, workdir: Path, shards: int, tracemalloc_hook: Path | None = None) -> None:
        self.data_dir = workdir / "node"
        self.tracemalloc_hook = tracemalloc_hook
        self.sip_port = free_sip_port()
        self.ops_port = free_port(socket.SOCK_STREAM)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MIRLITON_NODE__ROLES": json.dumps(["ops", "registrar", EDGE_ROLE, "cdr", "callflow",
                                                "calls"]),
            "MIRLITON_NODE__NAME": "bench-calls",
            "MIRLITON_OPS__LISTEN": f"127.0.0.1:{self.ops_port}",
            "MIRLITON_SIP__LISTEN": json.dumps([f"udp:127.0.0.1:{self.sip_port}"]),
            "MIRLITON_EDGE__FLOOD_REQUESTS": "1000000",
            "MIRLITON_CALLS__SHARDS": str(shards),
            "MIRLITON_LOG__LEVEL": "WARNING",
        }
        if tracemalloc_hook is not None:
            self.env["PYTHONPATH"] = f"{tracemalloc_hook}{os.pathsep}{ROOT}"
            self.env["PYTHONTRACEMALLOC"] = "8"
            self.env["BENCH_TRACEMALLOC_DIR"] = str(tracemalloc_hook / "snaps")
        self.passwords = {CALLER: "bench-caller-secret", CALLEE: "bench-callee-secret"}

    def cli(self, *args: str) -> str:
        return mirliton(self.data_dir, self.env, *args)

    def start(self) -> None:
        from store import new_doc_id, open_store
        from store.kazoo import account_db_name, set_pvt_fields

        self.cli("start", "--detach")
        account = json.loads(self.cli("account", "create", "--name", "Bench", "--realm", REALM,
                                      "--username", "admin", "--password", "bench-admin", "--json"))
        devices = {}
        for user, password in self.passwords.items():
            devices[user] = json.loads(self.cli(
                "device", "create", "--account", account["account_id"], "--name", user,
                "--username", user, "--password", password, "--json"))["device_id"]
        with open_store("embedded", self.data_dir) as store:
            store.put(account_db_name(account["account_id"]), set_pvt_fields(
                {"_id": new_doc_id(), "numbers": [CALLEE],
                 "flow": {"module": "device", "data": {"id": devices[CALLEE]}}},
                "callflow", account["account_id"]))

    def pids(self, role: str) -> list[int]:
        from mirliton.status import assemble_tree

        tree = assemble_tree(self.data_dir / "run") or {}
        found: list[int] = []

        def walk(node: dict[str, Any], inside: bool) -> None:
            here = inside or node.get("id") == role
            if here and node.get("pid") and node.get("kind", "process") == "process":
                found.append(int(node["pid"]))
            for child in node.get("children", []):
                walk(child, here)

        walk(tree, False)
        return sorted(set(found))

    def calls_active(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ops_port}/metrics", timeout=10) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith("mirliton_calls_active "):
                    return float(line.split()[1])
        return 0.0

    def stop(self) -> None:
        try:
            self.cli("stop")
        except RuntimeError:
            pass


class Callee:
    """SIPp UAS on its own port, registered as device 7000 first."""

    def __init__(self, node: BenchNode, workdir: Path) -> None:
        self.node = node
        self.port = free_sip_port()
        self.dir = workdir / "uas"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        register = subprocess.run(
            ["sipp", f"127.0.0.1:{self.node.sip_port}", "-sf", str(SIPP_DIR / "calls_reg.xml"),
             "-i", "127.0.0.1", "-p", str(self.port), "-s", CALLEE, "-au", CALLEE,
             "-ap", self.node.passwords[CALLEE], "-key", "domain", REALM, "-m", "1",
             "-default_behaviors", "none", "-nostdin", "-timeout", "20s", "-timeout_error"],
            cwd=self.dir, capture_output=True, timeout=60)
        if register.returncode != 0:
            raise RuntimeError(f"the callee did not register: {register.stderr.decode()[-500:]}")
        self.proc = subprocess.Popen(
            ["sipp", "-sf", str(SIPP_DIR / "calls_uas.xml"), "-i", "127.0.0.1", "-p", str(self.port),
             "-s", CALLEE, "-nostdin", "-trace_err", "-max_recv_loops", "10000"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_calls(node: BenchNode, rate: float, calls: int, call_ms: int, workdir: Path,
              limit: int | None = None, wait: bool = True) -> tuple[subprocess.Popen[bytes], Path]:
    out_dir = Path(tempfile.mkdtemp(prefix="uac-", dir=workdir))
    args = [
        "sipp", f"127.0.0.1:{node.sip_port}", "-sf", str(SIPP_DIR / "calls_uac.xml"),
        "-i", "127.0.0.1", "-p", str(free_sip_port()), "-s", CALLEE,
        "-au", CALLER, "-ap", node.passwords[CALLER], "-key", "domain", REALM,
        "-r", f"{rate:.3f}", "-rp", "1000", "-m", str(calls), "-l", str(limit or max(100, calls)),
        "-d", str(call_ms), "-nostdin", "-timeout", f"{calls / rate + call_ms / 1000 + 60:.0f}s",
        "-recv_timeout", "10000", *sipp_stat_args(out_dir),
    ]
    proc = subprocess.Popen(args, cwd=out_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if wait:
        proc.wait()
    return proc, out_dir


def collect(out_dir: Path, expected: int, elapsed: float, rate: float) -> dict[str, Any]:
    successful, failed = sipp_totals(out_dir)
    rtts = response_times(out_dir)
    return {
        "rate": rate,
        "expected": expected,
        "successful": successful,
        "failed": failed + max(0, expected - successful - failed),
        "cps": successful / elapsed if elapsed else 0.0,
        "p50_ms": percentile(rtts, 0.50),
        "p99_ms": percentile(rtts, 0.99),
    }


def wait_idle(node: BenchNode, limit: float = 90.0) -> None:
    """Let the calls of an overloaded run (failed halfway, ended by timeouts) clear first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if node.calls_active() <= 0:
                return
        except OSError:
            return
        time.sleep(1.0)


def cps_run(node: BenchNode, rate: float, duration: float, call_ms: int, workdir: Path) -> dict[str, Any]:
    wait_idle(node)
    calls = max(1, int(rate * duration))
    started = time.monotonic()
    _, out_dir = run_calls(node, rate, calls, call_ms, workdir)
    result = collect(out_dir, calls, time.monotonic() - started - call_ms / 1000, rate)
    result["duration_s"] = duration
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


def hold_run(node: BenchNode, calls: int, rate: float, workdir: Path) -> dict[str, Any]:
    """Set up ``calls`` calls and hold them; RSS of the shards before and with all up."""
    shard_pids = node.pids("calls")
    edge_pids = node.pids("edge")
    # Calls of the CPS runs that failed halfway end within a minute (2xx retransmission
    # timeout); the baseline is taken with none left.
    wait_idle(node)
    time.sleep(1.0)
    hook = node.tracemalloc_hook
    if hook is not None:
        snapshot(hook, "before", shard_pids + edge_pids)
    before = sum(_rss_kb(p) for p in shard_pids)
    edge_before = sum(_rss_kb(p) for p in edge_pids)
    ramp = calls / rate
    proc, out_dir = run_calls(node, rate, calls, int((ramp + 30) * 1000), workdir,
                              limit=calls, wait=False)
    deadline = time.monotonic() + ramp + 25
    established = 0.0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        established = node.calls_active() / 2
        if established >= calls:
            break
    time.sleep(1.0)
    established = node.calls_active() / 2
    after = sum(_rss_kb(p) for p in shard_pids)
    edge_after = sum(_rss_kb(p) for p in edge_pids)
    traced: dict[str, Any] = {}
    if hook is not None and established:
        snapshot(hook, "held", shard_pids + edge_pids)
        for role, pids in (("shards", shard_pids), ("edge", edge_pids)):
            pairs = [(hook / "snaps" / f"before-{pid}.snap", hook / "snaps" / f"held-{pid}.snap")
                     for pid in pids]
            pairs = [(first, held) for first, held in pairs if first.exists() and held.exists()]
            if pairs:
                traced[role] = {
                    "by_file": top_differences(pairs, established, 12, key="filename"),
                    "by_line": top_differences(pairs, established, 30),
                    "by_traceback": top_differences(pairs, established, 30, key="traceback"),
                }
    proc.wait()
    result = collect(out_dir, calls, ramp, rate)
    shutil.rmtree(out_dir, ignore_errors=True)
    per_call = (after - before) / established if established else None
    return {
        "calls": calls,
        "setup_rate": rate,
        "established": int(established),
        "shard_rss_before_mb": round(before / 1024, 1),
        "shard_rss_held_mb": round(after / 1024, 1),
        "kb_per_call": round(per_call, 1) if per_call is not None else None,
        "edge_kb_per_call": round((edge_after - edge_before) / established, 2) if established else None,
        "failed": result["failed"],
        **({"tracemalloc_bytes_per_call": traced} if traced else {}),
    }


def _step_down(top: float) -> list[float]:
    """Confirm the highest clean rate; a failing confirmation steps down by 15 % of it at a
    time (bounded)."""
    return [round(top * factor) for factor in (1.0, 0.85, 0.7, 0.55, 0.4, 0.25)]


def _describe(phase: str, result: dict[str, Any]) -> str:
    if phase == "search":
        return (f"search {result['rate']:.0f} cps: {result['successful']} ok, "
                f"{result['failed']} failed, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    return (f"run {result['rate']:.0f} cps for {result['duration_s']:.0f}s: "
            f"{result['successful']} ok, {result['failed']} failed, {result['cps']:.1f} cps, "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_search_arguments(parser, rates="25,35,50,70,100,150")
    parser.add_argument("--call-ms", type=int, default=1000)
    parser.add_argument("--hold-calls", type=int, default=2000)
    parser.add_argument("--hold-rate", type=float, default=25.0)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--memory-only", action="store_true",
                        help="hold --hold-calls calls and report memory; no CPS runs")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace allocations in the node (slow) and report, per held call, "
                             "the files and lines the shards' and edge's memory grew at")
    args = parser.parse_args()
    if sipp_missing():
        return 2
    sys.path.insert(0, str(ROOT))
    rates = sorted(float(r) for r in args.rates.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="mirliton-bench-calls-"))
    node = BenchNode(workdir, args.shards,
                     hook_dir(workdir) if args.tracemalloc else None)
    node.start()
    callee = Callee(node, workdir)
    callee.start()
    search: list[dict[str, Any]] = []
    confirmations: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    try:
        cps_run(node, rates[0] / 2, 3.0, args.call_ms, workdir)  # warm-up
        if args.hold_calls:
            # Memory first, on a node that has not been through overload yet: memory freed
            # after the CPS runs is reused and would hide what held calls cost.
            memory = hold_run(node, args.hold_calls, args.hold_rate, workdir)
            print(f"held {memory['established']} of {memory['calls']} calls: "
                  f"{memory['kb_per_call']} KB per call in the shards", file=sys.stderr)
        if not args.memory_only:
            search, confirmations, attempts = search_and_confirm(
                lambda rate, seconds: cps_run(node, rate, seconds, args.call_ms, workdir),
                rates, search_duration=args.search_duration, duration=args.duration,
                runs=args.runs, fallbacks=lambda clean: _step_down(max(clean or rates[:1])),
                describe=_describe)
    finally:
        callee.stop()
        node.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ok = bool(confirmations)

    def median(key: str) -> float | None:
        return median_of(confirmations, key)

    summary = {
        "benchmark": "calls",
        "path": "SIPp UAC -> edge -> calls shard -> edge -> SIPp UAS (registered device)",
        "source": "untrusted (digest on every INVITE); edge.flood_requests raised to 1000000",
        "shards": args.shards,
        "duration_s": args.duration,
        "call_ms": args.call_ms,
        "runs": len(confirmations),
        "max_clean_cps": confirmations[0]["rate"] if ok else 0,
        "cps": median("cps"),
        "setup_p50_ms": median("p50_ms"),
        "setup_p99_ms": median("p99_ms"),
        "failed": sum(r["failed"] for r in confirmations),
        "held_calls": memory.get("established"),
        "kb_per_established_call": memory.get("kb_per_call"),
        "memory": memory,
        "search": [{k: r[k] for k in ("rate", "successful", "failed", "p99_ms")} for r in search],
        "runs_detail": [{k: r[k] for k in ("rate", "successful", "failed", "cps", "p50_ms",
                                           "p99_ms")} for r in attempts],
        "load_average": os.getloadavg()[0],
    }
    print_summary(summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
