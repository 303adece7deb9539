"""What the mount table bwrap reads at each bind costs its start (docs/PERFORMANCE_LOG.md, item 45).

    sudo /path/to/venv/bin/python bench/bench_mount_table.py [ROUNDS] [BATCHES]

bwrap alone (no worker, Celery or Redis) with a none job's options, started from the job's
thread in its mount namespace, two ways in one run: `before`, the namespace copied from a
template that keeps the host's /dev and the jobs' cgroups (with the sysfs and cgroup mounts
on their way) and the covers on the host's filesystem (`<run_dir>/cover`), as before item 45;
`now`, as the worker makes it. Each is timed until its command (`echo`) writes and until bwrap
exits, ROUNDS rounds (100) after 5 warm-ups, in turn; then bwrap's CPU (`perf stat -e
task-clock`, bwrap and its children) in BATCHES batches (10) of 20 starts, in turn. Prints the
medians and ratios, the mounts in each namespace; cleans up its temp dir.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_sandbox import WARMUP, none_job_root, worker_files

from joblet.config import load
from joblet.worker.cgroups import V1_BASE, V1_CONTROLLERS, detect_root
from joblet.worker.execution import tool
from joblet.worker.mount_template import MountTemplate
from joblet.worker.mounts import remove_dirs
from joblet.worker.nsthread import JobThread
from joblet.worker.sandbox import bwrap_args
from joblet.worker.services import template_keep


def start(args: list[str]) -> tuple[float, float]:
    """ms until bwrap's command wrote, and until bwrap exited."""
    begin = time.perf_counter()
    proc = subprocess.Popen([tool("bwrap"), *args, "/bin/echo", "x"], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.read(1) == b"x"
    wrote = time.perf_counter()
    proc.communicate()
    return (wrote - begin) * 1000, (time.perf_counter() - begin) * 1000


def cpu_ms(args: list[str]) -> float:
    """bwrap's task-clock (its children's included), ms a start, over 20 starts."""
    out = subprocess.run(
        ["perf", "stat", "-x,", "-e", "task-clock", "-r", "20", tool("bwrap"), *args, "/bin/true"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    return float(next(line for line in out.splitlines() if "task-clock" in line).split(",")[0])


def main() -> int:
    numbers = [int(a) for a in sys.argv[1:] if a.isdigit()]
    rounds, batches = (numbers + [100, 10][len(numbers) :])[:2]
    tmp = Path(tempfile.mkdtemp(prefix="joblet-bench-mount-table-"))
    cfg = load(run_dir=tmp / "run", state_dir=tmp / "state")
    now_keep = template_keep(cfg)
    cgroups = (detect_root(), *(V1_BASE / c / detect_root().name for c in V1_CONTROLLERS))
    before_keep = (*now_keep, "/dev/null", *map(str, cgroups))
    ways = {"before": (before_keep, True), "now": (now_keep, False)}
    templates = {name: MountTemplate(keep) for name, (keep, _) in ways.items()}
    cover = worker_files(tmp / "run")
    jobs = {}
    try:
        for name, (_, host_covers) in ways.items():
            inside = JobThread(f"mount-table-{name}")
            mounts, host, layout = none_job_root(tmp / "run", cover, inside, templates[name], host_covers=host_covers)
            jobs[name] = (inside, mounts, bwrap_args(host, layout))
        lines = {n: j[0](lambda: len(open("/proc/thread-self/mountinfo").read().splitlines())) for n, j in jobs.items()}
        names = list(ways)
        times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for round_ in range(WARMUP + rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                inside, _, args = jobs[name]
                took = inside(lambda args=args: start(args))
                if round_ >= WARMUP:
                    times[name].append(took)
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for batch in range(batches):
            for name in names if batch % 2 == 0 else names[::-1]:
                inside, _, args = jobs[name]
                cpu[name].append(inside(lambda args=args: cpu_ms(args)))
    finally:
        for inside, mounts, _ in jobs.values():
            mounts.close()
            inside.close()
        for template in templates.values():
            template.close()
        remove_dirs([tmp])
    base = None
    print(f"{'':<8}{'mounts':>7}{'command wrote ms':>18}{'bwrap exited ms':>17}{'CPU ms':>9}")
    for name in names:
        row = (
            statistics.median(t[0] for t in times[name]),
            statistics.median(t[1] for t in times[name]),
            statistics.median(cpu[name]),
        )
        base = base or row
        cells = "".join(f"{v:>10.3f} ({v / b:.3f})" for v, b in zip(row, base, strict=True))
        print(f"{name:<8}{lines[name]:>7}{cells}")
    print(f"{rounds} rounds, {batches} batches of 20; cleanup: {'nothing left behind' if not tmp.exists() else tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
