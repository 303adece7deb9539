"""Resource samples of this host's running jobs, published for `rnx stats`.

Called once per heartbeat (Supervisor.beat). Per job it reads a few small files: CPU time
from the job's v2 group (`cpu.stat`, present without any controller) or its v1 `cpuacct`
twin; memory from `memory.current` (v2) or the v1 memory twin, else the processes' resident
sets; pids from `pids.current` (v2 or the v1 twin); `/work` usage by statvfs (of the worker's
descriptor of it, worker/mounts.py); and one read of
`/proc/thread-self/net/dev` (the worker's own network namespace, whatever /sys shows) for the
host ends of the job's veths. A job's traffic in is what its host-side veth sends.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from joblet.worker.job import JobRun

PAGE = os.sysconf("SC_PAGE_SIZE")
UNLIMITED = 2**62  # v1 limits read as a huge number when unset


class Sampler:
    """Keeps each job's previous CPU reading, for a rate over the last interval."""

    def __init__(self) -> None:
        self.last_cpu: dict[str, tuple[float, int]] = {}

    def take(self, runs: list[JobRun]) -> dict[str, dict[str, Any]]:
        links = link_counters()
        out = {}
        for run in runs:
            try:
                out[run.job_id] = self.one(run, links)
            except OSError as exc:  # it ended meanwhile (its cgroup gone: ENODEV); the others are sampled
                if exc.errno not in (errno.ENODEV, errno.ENOENT):
                    raise
        self.last_cpu = {j: v for j, v in self.last_cpu.items() if j in out}
        return out

    def one(self, run: JobRun, links: dict[str, tuple[int, int]]) -> dict[str, Any]:
        cg = run.cgroup
        now, usage = time.clock_gettime(time.CLOCK_BOOTTIME), cpu_usec(cg.path, cg.v1_dir("cpuacct"))
        main = run.sandbox.main if run.sandbox else None
        first = (started(main.pid) if main else None) or now  # first sample: since the job began
        since, before = self.last_cpu.get(run.job_id, (first, 0))
        self.last_cpu[run.job_id] = (now, usage)
        elapsed = max(now - since, 1e-3)
        procs = cg.pids()
        memory, memory_limit = memory_bytes(cg.path, cg.v1_dir("memory"), procs)
        pids, pids_limit = pid_count(cg.path, cg.v1_dir("pids"), len(procs))
        used, size = run.mounts.usage() if run.mounts else (None, None)
        names = [a.host_ifname for a in run.plan.attachments] if run.plan else []
        net = [links[n] for n in names if n in links]
        return {
            "cpu_percent": round((usage - before) / 1e4 / elapsed, 1),
            "cpu_usec": usage,
            "memory": memory,
            "memory_limit": memory_limit,
            "pids": pids,
            "pids_limit": pids_limit,
            "disk_used": used,
            "disk_size": size,
            "net_in": sum(tx for _, tx in net) if names else None,
            "net_out": sum(rx for rx, _ in net) if names else None,
            "sampled": time.time(),
        }


def started(pid: int) -> float | None:
    """When a process started, in seconds since boot (CLOCK_BOOTTIME)."""
    stat = _read(Path(f"/proc/{pid}/stat"))
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK") if len(fields) > 19 else None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _limit(text: str) -> int | None:
    value = _int(text)
    return value if value is not None and value < UNLIMITED else None


def cpu_usec(v2: Path, v1_cpuacct: Path) -> int:
    for line in _read(v2 / "cpu.stat").splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    nanos = _int(_read(v1_cpuacct / "cpuacct.usage"))
    return nanos // 1000 if nanos is not None else 0


STATM_MOST = 256  # processes' resident sets read per job and heartbeat (past it, a sample)


def memory_bytes(v2: Path, v1: Path, pids: list[int]) -> tuple[int, int | None]:
    """(bytes in use, limit or None): the cgroup's count, else the processes' resident sets:
    of a job of more than STATM_MOST processes, an evenly spread sample's, scaled (one of
    4,000 processes took 80 ms of the heartbeat's thread a beat, red-team run)."""
    current = _int(_read(v2 / "memory.current"))
    if current is not None:
        return current, _limit(_read(v2 / "memory.max"))
    current = _int(_read(v1 / "memory.usage_in_bytes"))
    if current is not None:
        return current, _limit(_read(v1 / "memory.limit_in_bytes"))
    sample = pids[:: -(-len(pids) // STATM_MOST)] if pids else []
    rss = 0
    for pid in sample:
        fields = _read(Path(f"/proc/{pid}/statm")).split()
        rss += int(fields[1]) * PAGE if len(fields) > 1 else 0
    return (rss * len(pids) // len(sample) if sample else 0), None


def pid_count(v2: Path, v1: Path, procs: int) -> tuple[int, int | None]:
    for directory in (v2, v1):
        current = _int(_read(directory / "pids.current"))
        if current is not None:
            return current, _limit(_read(directory / "pids.max"))
    return procs, None


def link_counters(text: str | None = None) -> dict[str, tuple[int, int]]:
    """interface -> (rx bytes, tx bytes) in this thread's network namespace."""
    if text is None:
        text = _read(Path("/proc/thread-self/net/dev"))
    out = {}
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        fields = counters.split()
        if len(fields) >= 9:
            out[name.strip()] = (int(fields[0]), int(fields[8]))
    return out
