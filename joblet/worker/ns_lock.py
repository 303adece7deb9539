"""One worker per network namespace: a worker owns its namespace's joblet objects (the
`inet joblet` tables, the jb bridges and jv/ji links it sweeps when its Redis does not name
them). A second worker there (another installation: its own Redis, key prefix or state
directory) swept the first one's bridges and jobs' links and replaced its rules under its
running jobs; it is refused.

The lock is a `flock` on the namespace itself (its nsfs file, /proc/self/ns/net): every
process in the namespace shares it, whatever its mount namespace (a worker on the host and
one in a docker-compose container with `network_mode: host` have different /run), and the
kernel releases it when the worker ends, however it ends. A host-mode job shares the host's
namespace and could take the lock while its worker is down: a holder inside the jobs'
cgroups is not a worker, and the worker then starts without the lock (and says so).

The same holds for a worker's state directory and jobs' cgroup root (`hold_dir`): a second
worker of the same node name and state directory, in another namespace, passed for the first
one restarted, and its reconcile made the first one's running jobs LOST and emptied their
cgroups (operator's run); one sharing the cgroup root removed the other's jobs' groups.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from joblet.errors import JobletError
from joblet.worker.cgroups import job_of

log = logging.getLogger(__name__)
NAMESPACE = "/proc/self/ns/net"
_held: list[int] = []  # the descriptor, open for the worker's life


def hold(jobs_cgroup: Path, namespace: str = NAMESPACE) -> None:
    """Take this network namespace's worker lock, or raise naming the worker that holds it."""
    holders = _flock(os.open(namespace, os.O_RDONLY | os.O_CLOEXEC))
    if holders is None:
        return
    workers = [pid for pid in holders if job_of(pid, jobs_cgroup) is not True]  # a job's: not a worker
    if holders and not workers:
        log.warning("a job (pid %s) holds the worker lock of this network namespace: not taken", holders[0])
        return
    raise JobletError(
        f"another joblet worker runs in this network namespace ({_named(workers)}); one worker per host "
        "(or per network namespace: its links, bridges and nft tables are the namespace's)"
    )


def hold_dir(path: Path, setting: str, what: str | None = None) -> None:
    """Take the lock of a directory only one worker may use, or raise naming its holder;
    `what`: how the directory is named when not as `setting PATH`."""
    holders = _flock(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    if holders is not None:
        raise JobletError(
            f"another joblet worker uses {what or f'{setting} {path}'} ({_named(holders)}); each worker "
            f"needs its own (JOBLET_{setting.upper()})"
        )


def _flock(fd: int) -> list[int] | None:
    """Lock `fd` for the worker's life (None), or close it and return the pids holding it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return holders_of(os.fstat(fd))
        finally:
            os.close(fd)
    _held.append(fd)
    return None


def _named(pids: list[int]) -> str:
    return ", ".join(f"pid {pid}: {_command(pid)}" for pid in pids) or "its pid not visible here"


def holders_of(st: os.stat_result) -> list[int]:
    """The pids /proc/locks gives for flocks on this file (pids of this pid namespace)."""
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    with open("/proc/locks") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == where and parts[4].isdigit():
                pids.append(int(parts[4]))
    return pids


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120] or "?"
