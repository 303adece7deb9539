"""What each group of a none job's bwrap options costs its start, in one run.

    sudo /path/to/venv/bin/python bench/bench_sandbox_steps.py [ROUNDS] [--covers-in-bwrap]

bwrap alone (no worker, Celery or Redis), started from a job's thread in a none job's mount
namespace (copied from the worker's mount template, with /work and its sysfs, as the worker
makes them), with its options cut after each group in turn: namespaces with /usr and the
system directories, /etc and the job's files on it, /proc, the /proc masks, /dev, /dev/shm,
/tmp and /work, /sys, then the read-only root and the capabilities. Each is timed until its
command (`echo`) writes, ROUNDS rounds (100) after 5 warm-ups, the cuts in turn within a
round. Prints each group's median and what it adds; writes bench/results/sandbox-steps.json.
Cleans up its temp dir. `--covers-in-bwrap`: the /sys covers bound by bwrap one by one, as
before the worker put them on the job's sysfs (item 29 in docs/PERFORMANCE_LOG.md).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_sandbox import RESULTS, WARMUP, none_job_root, template_for, worker_files

from joblet.worker.execution import tool
from joblet.worker.mount_template import MountTemplate
from joblet.worker.mounts import remove_dirs
from joblet.worker.nsthread import JobThread
from joblet.worker.sandbox import bwrap_args


def cuts(args: list[str]) -> list[tuple[str, int]]:
    """(group, end) for the groups of a none job's bwrap options, in their order."""

    def bind_to(dest: str) -> int:
        return next(i for i in range(len(args) - 2) if args[i].startswith("--") and args[i + 2] == dest)

    proc = args.index("--proc")
    return [
        ("namespaces, /usr, system dirs", bind_to("/etc")),
        ("/etc and the job's files on it", proc),
        ("/proc", proc + 2),
        ("/proc masks", args.index("--dev-bind")),
        ("/dev, /dev/shm, /tmp, /work", bind_to("/sys")),
        ("/sys with its covers", args.index("--remount-ro")),
        ("read-only root, capabilities", len(args)),
    ]


def first_byte(prefix: list[str]) -> float:
    """ms from spawning bwrap with `prefix` until its command wrote."""
    start = time.perf_counter()
    proc = subprocess.Popen([tool("bwrap"), *prefix, "/bin/echo", "x"], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.read(1) == b"x"
    took = time.perf_counter() - start
    proc.communicate()
    return took * 1000


def steps(
    cover: Path, run_dir: Path, template: MountTemplate, rounds: int, worker_covers: bool = True
) -> dict[str, dict[str, float]]:
    inside = JobThread("steps")
    mounts, host, layout = none_job_root(run_dir, cover, inside, template, worker_covers)
    try:
        args = bwrap_args(host, layout)
        times: dict[str, list[float]] = {name: [] for name, _ in cuts(args)}
        for round_ in range(WARMUP + rounds):
            for name, end in cuts(args):
                took = inside(lambda end=end: first_byte(args[:end]))
                if round_ >= WARMUP:
                    times[name].append(took)
    finally:
        mounts.close()
        inside.close()
    out, before = {}, 0.0
    for name, taken in times.items():
        median = statistics.median(taken)
        out[name] = {"median_ms": round(median, 3), "added_ms": round(median - before, 3)}
        before = median
    return out


def main() -> int:
    numbers = [a for a in sys.argv[1:] if a.isdigit()]
    rounds = int(numbers[0]) if numbers else 100
    tmp = Path(tempfile.mkdtemp(prefix="joblet-bench-steps-"))
    template = template_for(tmp / "run")
    try:
        results = steps(worker_files(tmp / "run"), tmp / "run", template, rounds, "--covers-in-bwrap" not in sys.argv)
    finally:
        template.close()
        remove_dirs([tmp])
    print(f"{'bwrap options up to':<34}{'median ms':>11}{'added':>9}")
    for name, row in results.items():
        print(f"{name:<34}{row['median_ms']:>11.3f}{row['added_ms']:>9.3f}")
    out = RESULTS.with_name("sandbox-steps.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**results, "rounds": rounds}, indent=2) + "\n")
    print(f"wrote {out}; cleanup: {'nothing left behind' if not tmp.exists() else tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
