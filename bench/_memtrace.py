"""Where the memory of a benchmarked node goes: tracemalloc snapshots of its processes.

A node's role processes are forked by Thespian, which takes over every signal handler, so
snapshots are asked for with files instead: :func:`hook_dir` writes a ``sitecustomize.py``
that, in every process started with that directory first on PYTHONPATH and
PYTHONTRACEMALLOC set, runs a plain OS thread (started again after each fork) watching for
trigger files. :func:`snapshot` drops a trigger ``<tag>.want`` naming the pids asked and waits
for each one's ``<tag>-<pid>.snap``; :func:`top_differences` compares two tags.

Tracing slows allocations down (about 2x) and the trace itself is not traced: use it to
see what a held call is made of, not to measure RSS or CPS (run the benchmark again without
it for those).
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

__all__ = ["HOOK", "hook_dir", "snapshot", "top_differences"]

# Runs at interpreter start-up, before mirliton monkey-patches threads and sleep with gevent:
# the saved originals give a real thread that keeps running while greenlets are busy.
HOOK = '''
import os, sys, _thread, time as _time, gc, tracemalloc
_sleep = _time.sleep
_start = _thread.start_new_thread
_dir = os.environ.get("BENCH_TRACEMALLOC_DIR")

def _watch():
    done = set()
    pid = os.getpid()
    while True:
        _sleep(0.2)
        if os.getpid() != pid or not tracemalloc.is_tracing():
            return
        try:
            wanted = [n[:-5] for n in os.listdir(_dir) if n.endswith(".want")]
        except OSError:
            continue
        for tag in wanted:
            if tag in done:
                continue
            done.add(tag)
            try:
                with open(os.path.join(_dir, tag + ".want")) as want:
                    pids = want.read().split()
            except OSError:
                continue
            if pids and str(pid) not in pids:
                continue  # asked of other processes only
            gc.collect()
            path = os.path.join(_dir, "%s-%d.snap" % (tag, pid))
            tracemalloc.take_snapshot().dump(path + ".part")
            os.rename(path + ".part", path)

if _dir:
    _start(_watch, ())
    os.register_at_fork(after_in_child=lambda: _start(_watch, ()))
'''


def hook_dir(workdir: Path) -> Path:
    """A directory holding the start-up hook (put it first on PYTHONPATH, and set
    PYTHONTRACEMALLOC and BENCH_TRACEMALLOC_DIR to that same directory's ``snaps``)."""
    hook = workdir / "tracemalloc-hook"
    (hook / "snaps").mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    return hook


def snapshot(hook: Path, tag: str, pids: list[int], timeout: float = 60.0) -> dict[int, Path]:
    """Ask every traced process for a snapshot named ``tag``; the paths of those of ``pids``."""
    snaps = hook / "snaps"
    want = snaps / f"{tag}.want"
    want.with_suffix(".part").write_text(" ".join(str(pid) for pid in pids))
    want.with_suffix(".part").rename(want)  # whole, or not seen at all
    paths = {pid: snaps / f"{tag}-{pid}.snap" for pid in pids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(path.exists() for path in paths.values()):
        time.sleep(0.2)
    return {pid: path for pid, path in paths.items() if path.exists()}


def top_differences(pairs: list[tuple[Path, Path]], per: float, limit: int = 25,
                    key: str = "lineno") -> dict[str, object]:
    """How much the memory of some processes grew between two snapshots of each ((before,
    after) pairs: the shards of a node together), divided by ``per`` (e.g. the number of held
    calls): in all, and at the allocation sites that grew most (file and line; file with
    ``key="filename"``; line and its three callers with ``key="traceback"``), largest first."""
    sizes: dict[str, int] = {}
    counts: dict[str, int] = {}
    for before, after in pairs:
        old = tracemalloc.Snapshot.load(str(before))
        new = tracemalloc.Snapshot.load(str(after))
        for stat in new.compare_to(old, key):
            frame = stat.traceback[-1]  # frames run from the oldest to the allocating one
            if key == "filename":
                site = frame.filename
            elif key == "traceback":  # the allocating line and the calls that led to it
                site = " < ".join(f"{Path(f.filename).name}:{f.lineno}"
                                  for f in list(stat.traceback)[::-1][:4])
            else:
                site = f"{Path(frame.filename).name}:{frame.lineno}"
            sizes[site] = sizes.get(site, 0) + stat.size_diff
            counts[site] = counts.get(site, 0) + stat.count_diff
    ranked = sorted(sizes, key=lambda site: sizes[site], reverse=True)[:limit]
    return {
        "total_bytes_per": round(sum(sizes.values()) / per, 1),
        "sites": [{"site": site, "bytes_per": round(sizes[site] / per, 1),
                   "blocks_per": round(counts[site] / per, 2)} for site in ranked],
    }
