"""What the SIPp-driven benchmarks (bench/calls.py, bench/register.py) share: free ports, the
``mirliton`` command of a benchmark node, SIPp's statistics and response-time files, and the
search for the highest clean rate then its confirmation.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import socket
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ROOT",
    "add_search_arguments",
    "print_summary",
    "sipp_missing",
    "free_port",
    "free_sip_port",
    "median_of",
    "mirliton",
    "percentile",
    "response_times",
    "search_and_confirm",
    "sipp_stat_args",
    "sipp_totals",
]

ROOT = Path(__file__).resolve().parents[1]

Result = dict[str, Any]


def add_search_arguments(parser: argparse.ArgumentParser, rates: str) -> None:
    """The options of :func:`search_and_confirm` (and --json), ``rates`` their default."""
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--search-duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default=rates)


def sipp_missing() -> bool:
    if shutil.which("sipp") is not None:
        return False
    print("sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
    return True


def print_summary(summary: Mapping[str, Any], as_json: bool) -> None:
    """With ``as_json`` one JSON object, the last line printed; else one line a figure."""
    if as_json:
        print(json.dumps(summary))
        return
    for key, value in summary.items():
        print(f"{key}: {value}")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_sip_port() -> int:
    """A port free for UDP and TCP alike (the node listens on both for SIP)."""
    while True:
        port = free_port()
        with socket.socket() as tcp:
            try:
                tcp.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def mirliton(data_dir: Path, env: Mapping[str, str], *args: str, check: bool = True) -> str:
    """``mirliton ARGS --data-dir DATA_DIR`` of the benchmark node; its standard output."""
    done = subprocess.run([sys.executable, "-m", "mirliton", *args, "--data-dir", str(data_dir)],
                          env=dict(env), cwd=ROOT, capture_output=True, text=True, timeout=180)
    if check and done.returncode != 0:
        raise RuntimeError(f"mirliton {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def sipp_stat_args(out_dir: Path) -> list[str]:
    """SIPp options writing what :func:`sipp_totals` and :func:`response_times` read, into
    ``out_dir`` (SIPp's working directory)."""
    return ["-trace_stat", "-fd", "1", "-stf", str(out_dir / "stat.csv"), "-trace_rtt",
            "-rtt_freq", "1", "-trace_err", "-max_recv_loops", "10000"]


def _last_stat_row(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with path.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def sipp_totals(out_dir: Path) -> tuple[int, int]:
    """(successful, failed) calls of a finished SIPp run, from its last statistics row."""
    stat = _last_stat_row(out_dir / "stat.csv")
    return int(stat.get("SuccessfulCall(C)", 0)), int(stat.get("FailedCall(C)", 0))


def response_times(out_dir: Path) -> list[float]:
    """The run's response times (rtd 1: first request sent to the scenario's timed answer) in
    ms, sorted."""
    times: list[float] = []
    for path in out_dir.glob("*_rtt.csv"):
        with path.open() as f:
            for row in csv.reader(f, delimiter=";"):
                if len(row) >= 3 and row[2].strip() == "1":
                    try:
                        times.append(float(row[1]))
                    except ValueError:
                        continue
    times.sort()
    return times


def percentile(values: list[float], fraction: float) -> float | None:
    """Of sorted ``values``, rounded to 0.01; None when empty."""
    if not values:
        return None
    index = min(len(values) - 1, max(0, int(round(fraction * len(values))) - 1))
    return round(values[index], 2)


def median_of(results: list[Result], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def search_and_confirm(
    run: Callable[[float, float], Result],
    rates: list[float],
    *,
    search_duration: float,
    duration: float,
    runs: int,
    fallbacks: Callable[[list[float]], list[float]],
    describe: Callable[[str, Result], str],
) -> tuple[list[Result], list[Result], list[Result]]:
    """Run ``run(rate, seconds)`` for each of ``rates`` ascending, ``search_duration`` each,
    until one has a failure; then confirm with ``runs`` runs of ``duration`` at each rate of
    ``fallbacks(clean rates)`` in turn until one passes them all. Progress goes to stderr
    through ``describe("search" | "run", result)``.

    Returns (search results, the passing confirmations or [] when none passed, every
    confirmation attempted)."""
    search: list[Result] = []
    clean: list[float] = []
    for rate in sorted(rates):
        result = run(rate, search_duration)
        search.append(result)
        print(describe("search", result), file=sys.stderr)
        if result["failed"]:
            break
        clean.append(rate)
    attempts: list[Result] = []
    for rate in fallbacks(clean):
        confirmations: list[Result] = []
        for _ in range(runs):
            result = run(rate, duration)
            confirmations.append(result)
            print(describe("run", result), file=sys.stderr)
            if result["failed"]:
                break
        attempts.extend(confirmations)
        if len(confirmations) == runs and not any(r["failed"] for r in confirmations):
            return search, confirmations, attempts
    return search, [], attempts
