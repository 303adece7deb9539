"""The worker's own resource limits, set at its start: what it needs, and what its jobs
inherit from it (the job's shell and bwrap pass them on; jobs lack CAP_SYS_RESOURCE to raise
a hard limit)."""

from __future__ import annotations

import logging
import resource
from pathlib import Path

log = logging.getLogger(__name__)


def raise_fd_limit() -> None:
    """Each running job holds a few pipes; 1024 descriptors would cap a host near 150 jobs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def halve_uid_budgets() -> None:
    """Jobs run as the host's uid 0 (no user namespace), and the kernel counts pending
    signals and POSIX message queue bytes per uid, against the limit of the process that
    queues or creates: one job queued root's whole budget (96,365 signals), and the host's
    root processes got EAGAIN from timer_create and sigqueue. The worker's own limits, which
    its jobs inherit and cannot raise (no CAP_SYS_RESOURCE), are halved: jobs together take
    at most half, and the host's root keeps the rest."""
    budgets = {
        resource.RLIMIT_SIGPENDING: "pending signals (RLIMIT_SIGPENDING)",
        resource.RLIMIT_MSGQUEUE: "bytes of POSIX message queues (RLIMIT_MSGQUEUE)",
    }
    for which, what in budgets.items():
        soft, hard = resource.getrlimit(which)
        if hard == resource.RLIM_INFINITY or hard <= 1:
            continue  # no budget to share, or none left to halve
        half = hard // 2
        resource.setrlimit(which, (min(soft, half), half))
        log.info("jobs here: at most %d of root's %d %s", half, hard, what)


def spare_core_handlers(proc: Path = Path("/proc/sys/kernel")) -> None:
    """Where `core_pattern` pipes cores to a program (apport, systemd-coredump), the kernel
    runs it as the host's root, outside every job's limits, at each crash of a job's process,
    any number at once unless `core_pipe_limit` bounds them: a crash loop in a job would spend
    the host's CPU and disk (red-team run: the kernel's rule, not shown on this host, whose
    cores go to a file). The kernel skips that pipe for a process whose soft RLIMIT_CORE is 1
    byte, and writes no core file so small: the worker's soft limit is 1, which its jobs
    inherit. A job that wants its cores raises it (`ulimit -c unlimited`, up to the hard
    limit, unchanged); where cores then go to a program without a bound, the worker says so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard != 0 and soft != 1:  # a hard limit of 0: no cores at all, nothing to spare
        resource.setrlimit(resource.RLIMIT_CORE, (1, hard))
    try:
        pattern = (proc / "core_pattern").read_text().strip()
        parallel = int((proc / "core_pipe_limit").read_text())
    except (OSError, ValueError):
        return
    if pattern.startswith("|") and hard != 0 and parallel == 0:
        log.warning(
            "cores go to %s: a job that raises its core limit (ulimit -c) runs it as root outside its limits "
            "at each crash, any number at once; set kernel.core_pipe_limit (e.g. 4) to bound them",
            (pattern[1:].split() or [pattern])[0],
        )
