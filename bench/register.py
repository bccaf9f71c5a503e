"""Digest REGISTER load through the edge of a real node, driven by SIPp.

    python bench/register.py [--json] [--duration 30] [--processes 4] [--runs 3]
                             [--rates 500,750,1000,1250,1500,2000] [--search-duration 10]

A node with the registrar and edge roles runs on the embedded defaults (local bus, embedded
store) in a temporary data dir. Each SIPp process (bench/sipp/reg_uac.xml) registers one
device of its own (SIPp 3.6 takes one credential per process, -au/-ap): REGISTER -> 401 ->
REGISTER with digest -> 200, a new Call-ID per registration, every registration written
through to the store before its 200. The load comes from 127.0.0.1 and is NOT trusted: it is
challenged and authenticated like any phone; the per-source flood limit is raised
(``edge.flood_requests``) since every SIPp process shares one source address.

The search: each rate of ``--rates`` (total registrations per second, split evenly over the
processes) runs ``--search-duration`` seconds, ascending, until one has a failure (a failed or
unfinished call); then the highest clean rate runs ``--duration`` seconds ``--runs`` times (a
failing confirmation steps down a rate, then by quarters). The machine's load average is
reported: the node shares its cores with SIPp and whatever else runs. Reported: that rate, the registrations per second
achieved, and p50/p99 of the registration time (first REGISTER sent to 200 received), medians
over the runs, and the edge process's CPU time per registration (about 1e6 / it is the rate
one core of its own would sustain). With ``--json`` the last line printed is one JSON object.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

SCENARIO = ROOT / "bench" / "sipp" / "reg_uac.xml"
REALM = "bench.example.com"


class BenchNode:
    def __init__(self, workdir: Path, processes: int) -> None:
        self.data_dir = workdir / "node"
        self.sip_port = free_sip_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MIRLITON_NODE__ROLES": json.dumps(["registrar", "edge"]),
            "MIRLITON_NODE__NAME": "bench",
            "MIRLITON_OPS__LISTEN": f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
            "MIRLITON_SIP__LISTEN": json.dumps([f"udp:127.0.0.1:{self.sip_port}"]),
            # One source address for every SIPp process: the per-IP flood limit is raised.
            "MIRLITON_EDGE__FLOOD_REQUESTS": "1000000",
            "MIRLITON_LOG__LEVEL": "WARNING",
        }
        self.users = {f"{5000 + i}": f"bench-secret-{5000 + i}" for i in range(processes)}

    def cli(self, *args: str) -> str:
        return mirliton(self.data_dir, self.env, *args)

    def start(self) -> None:
        self.cli("start", "--detach")
        account = json.loads(self.cli("account", "create", "--name", "Bench", "--realm", REALM,
                                      "--username", "admin", "--password", "bench-admin", "--json"))
        for user, password in self.users.items():
            self.cli("device", "create", "--account", account["account_id"], "--name", user,
                     "--username", user, "--password", password, "--json")

    def edge_pid(self) -> int | None:
        status = json.loads(self.cli_unchecked("status", "--json"))

        def find(node: dict[str, Any]) -> int | None:
            if node.get("id") == "edge" and node.get("pid"):
                return int(node["pid"])
            for child in node.get("children", []) or []:
                found = find(child)
                if found:
                    return found
            return None

        return find(status.get("tree") or {})

    def cli_unchecked(self, *args: str) -> str:
        return mirliton(self.data_dir, self.env, *args, check=False)

    def stop(self) -> None:
        try:
            self.cli("stop")
        except RuntimeError:
            pass


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(node: BenchNode, rate: float, duration: float, workdir: Path) -> dict[str, Any]:
    """All SIPp processes at ``rate`` registrations/s in total for ``duration`` seconds."""
    edge_pid = node.edge_pid()
    cpu_before = _cpu_seconds(edge_pid)
    users = list(node.users.items())
    per_process = rate / len(users)
    calls = max(1, int(per_process * duration))
    procs = []
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    for index, (user, password) in enumerate(users):
        out_dir = run_dir / f"sipp-{index}"
        out_dir.mkdir()
        scenario = out_dir / "reg_uac.xml"
        shutil.copy(SCENARIO, scenario)
        args = [
            "sipp", f"127.0.0.1:{node.sip_port}", "-sf", str(scenario),
            "-i", "127.0.0.1", "-p", str(free_sip_port()),
            "-s", user, "-au", user, "-ap", password, "-key", "domain", REALM,
            "-r", f"{per_process:.3f}", "-rp", "1000", "-m", str(calls), "-l", str(max(50, int(per_process * 5))),
            "-default_behaviors", "none", "-nostdin", "-timeout", f"{duration + 30:.0f}s",
            "-recv_timeout", "5000", *sipp_stat_args(out_dir),
        ]
        procs.append((subprocess.Popen(args, cwd=out_dir, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE), out_dir))
    started = time.monotonic()
    for proc, _ in procs:
        try:
            proc.wait(timeout=duration + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - started
    edge_cpu = _cpu_seconds(edge_pid) - cpu_before
    successful = failed = 0
    rtts: list[float] = []
    for _, out_dir in procs:
        ok, ko = sipp_totals(out_dir)
        successful += ok
        failed += ko
        rtts.extend(response_times(out_dir))
    expected = calls * len(users)
    rtts.sort()
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "rate": rate,
        "duration_s": duration,
        "expected": expected,
        "successful": successful,
        "failed": failed + max(0, expected - successful - failed),
        "registrations_per_s": successful / elapsed if elapsed else 0.0,
        "p50_ms": percentile(rtts, 0.50),
        "p99_ms": percentile(rtts, 0.99),
        # CPU time of the edge process per successful registration: what the rate would be
        # on a core of its own is about 1e6 / this.
        "edge_cpu_us_per_registration": round(edge_cpu / successful * 1e6) if successful else None,
        "load_average": round(os.getloadavg()[0], 2),
    }


def _fallbacks(rates: list[float]) -> Callable[[list[float]], list[float]]:
    """Confirm the highest clean rate with full-length runs; a failing confirmation steps down
    to the next clean rate, then by a quarter at a time (bounded)."""

    def candidates(clean: list[float]) -> list[float]:
        ordered = sorted(clean, reverse=True)
        lowest = ordered[-1] if ordered else min(rates)
        return ordered + [round(lowest * 0.75 ** step) for step in range(1, 4)]

    return candidates


def _describe(phase: str, result: dict[str, Any]) -> str:
    if phase == "search":
        return (f"search {result['rate']:.0f}/s: {result['successful']} ok, "
                f"{result['failed']} failed, p99 {result['p99_ms']} ms")
    return (f"run {result['rate']:.0f}/s for {result['duration_s']:.0f}s: "
            f"{result['successful']} ok, {result['failed']} failed, "
            f"{result['registrations_per_s']:.0f}/s, p50 {result['p50_ms']} ms, "
            f"p99 {result['p99_ms']} ms, edge {result['edge_cpu_us_per_registration']} us "
            f"CPU/registration, load {result['load_average']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_search_arguments(parser, rates="500,750,1000,1250,1500,1750,2000")
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    if sipp_missing():
        return 2
    rates = sorted(float(r) for r in args.rates.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="mirliton-bench-register-"))
    node = BenchNode(workdir, args.processes)
    node.start()
    search: list[dict[str, Any]] = []
    confirmations: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    try:
        run_load(node, rates[0] / 2, 3.0, workdir)  # warm-up: caches, AOR actors, store
        search, confirmations, attempts = search_and_confirm(
            lambda rate, seconds: run_load(node, rate, seconds, workdir), rates,
            search_duration=args.search_duration, duration=args.duration, runs=args.runs,
            fallbacks=_fallbacks(rates), describe=_describe)
    finally:
        node.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ok = bool(confirmations)

    def median(key: str) -> float | None:
        return median_of(confirmations, key)

    summary = {
        "benchmark": "register",
        "source": "untrusted (digest on every registration); edge.flood_requests raised to 1000000",
        "sipp_processes": args.processes,
        "duration_s": args.duration,
        "runs": len(confirmations),
        "max_clean_rate_per_s": confirmations[0]["rate"] if ok else 0,
        "registrations_per_s": median("registrations_per_s"),
        "p50_ms": median("p50_ms"),
        "p99_ms": median("p99_ms"),
        "edge_cpu_us_per_registration": median("edge_cpu_us_per_registration"),
        "failed": sum(r["failed"] for r in confirmations),
        "search": [{k: r[k] for k in ("rate", "successful", "failed", "p99_ms")} for r in search],
        "runs_detail": [{k: r[k] for k in ("rate", "successful", "failed", "registrations_per_s",
                                           "p50_ms", "p99_ms", "edge_cpu_us_per_registration",
                                           "load_average")} for r in attempts],
    }
    print_summary(summary, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
