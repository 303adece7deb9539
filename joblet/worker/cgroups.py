"""A job's own cgroup (v2 hierarchy): holds every process of the job, kills them all at once,
and carries its limits.

On hybrid hosts (v1 controllers, v2 at /sys/fs/cgroup/unified) the v2 tree still tracks
processes and has `cgroup.kill`, so the whole job tree is found and ended there; limits then
go to v1 directories of the same name under each controller (`/sys/fs/cgroup/memory/<root
name>/<job>`, `cpu`, `blkio`), derived from the v2 path so a restarted worker finds them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from joblet.api.limits import Limits
from joblet.api.message import JOB_ID_RE
from joblet.errors import ConfigError, ExecutionError

CANDIDATES = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
V1_BASE = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("cpu", "memory", "blkio", "pids")
CHARGE_SLACK = 2 << 20  # the most one charge asks at once (a huge page): a peak this near a limit reached it
CPU_PERIOD = 100_000
SIGNAL_BATCH = 256  # pidfds a stop holds at once (JobCgroup.signal)
NETNS_HINT = (
    "started by `ip netns exec`? It mounts a /sys of its own, without the host's cgroups: "
    "use `nsenter --net=/run/netns/NAME` instead"
)

log = logging.getLogger(__name__)


def detect_root() -> Path:
    """The cgroup v2 mount point of this host."""
    for path in CANDIDATES:
        if (path / "cgroup.procs").exists() and (path / "cgroup.subtree_control").exists():
            return path
    raise ExecutionError(f"no cgroup v2 hierarchy found (looked at /sys/fs/cgroup[/unified]); {NETNS_HINT}")


def check_root(root: Path) -> None:
    """Refuse a jobs' cgroup root that cannot be made, before the worker makes anything:
    its nearest existing directory must be a cgroup (the worker makes the rest). Under `ip
    netns exec`, /sys/fs/cgroup is an empty directory of a fresh sysfs, and the worker died
    with a traceback after claiming its state directory."""
    if root.exists():
        return
    missing = root
    while not missing.parent.exists():
        missing = missing.parent
    if not (missing.parent / "cgroup.procs").exists():
        # a hybrid host's v1 directory (its hierarchies' tmpfs) is no place for it either: the
        # v2 hierarchy is beside them, and `ip netns exec` was not what went wrong
        unified = missing.parent / "unified"
        hint = NETNS_HINT
        if (unified / "cgroup.procs").exists():
            hint = f"on this hybrid host the cgroup v2 hierarchy is {unified}: e.g. {unified / root.name}"
        raise ConfigError(
            f"cgroup_root {root} (JOBLET_CGROUP_ROOT) cannot be made: {missing} does not exist "
            f"and {missing.parent} is not a cgroup directory; {hint}"
        )


def make_root(root: Path) -> Path:
    """The jobs' cgroup root, made if missing; the path."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only /sys (a container's): one line, not a traceback
        raise ExecutionError(f"failed to make the jobs' cgroup root {root}: {exc.strerror}") from None
    return root


def check_own_root(root: Path, v1_base: Path = V1_BASE) -> None:
    """Refuse a jobs' cgroup root that is not joblet's alone: at start the worker kills and
    removes every group under it (a killed worker's jobs), and limits all of them together.
    Given a shared one (JOBLET_CGROUP_ROOT=/sys/fs/cgroup/unified) it removed four other
    workers' roots (operator's run); /sys/fs/cgroup on a v2 host is system.slice and
    user.slice: the whole host. Its groups must be jobs' (a job id's 32 hex digits), and it
    holds no process of its own."""
    hint = f"give a directory of joblet's own, e.g. {root / 'joblet'} (JOBLET_CGROUP_ROOT)"
    if any(JOB_ID_RE.match(part) for part in root.parts):  # another worker's restart would remove it
        raise ConfigError(f"cgroup_root {root} is named like a job's cgroup (32 hex digits): {hint}")
    twins = [(twin, f"{twin}, cgroup_root's v1 twin,") for twin in v1_twins(root, v1_base)]
    for group, what in [(root, f"cgroup_root {root}"), *twins]:
        if not group.is_dir():
            continue  # the worker makes it (check_root has looked at where)
        if (group / "cgroup.procs").exists() and not (group.parent / "cgroup.procs").exists():
            raise ConfigError(f"{what} is the top of a cgroup hierarchy, the host's own: {hint}")
        foreign = sorted(d.name for d in group.iterdir() if d.is_dir() and not JOB_ID_RE.match(d.name))
        if foreign:
            named = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ConfigError(f"{what} holds cgroups that are not joblet's jobs ({named}): {hint}")
        # a twin holds jobs without a limit of its controller (a killed worker's, not yet gone)
        procs = _read(group / "cgroup.procs").split()
        if [pid for pid in procs if group == root or job_of(pid, root) is False]:  # None: gone meanwhile
            raise ConfigError(f"{what} holds processes of its own (a service's cgroup?): {hint}")


def job_of(pid: int | str, root: Path) -> bool | None:
    """Whether a process is in one of the jobs' v2 groups under `root` (its /proc/PID/cgroup,
    `0::.../ROOT/JOB_ID`), which a job cannot leave; None when it is gone."""
    text = _read(Path(f"/proc/{pid}/cgroup"))
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            parts = line[3:].strip().strip("/").split("/")
            return len(parts) >= 2 and parts[-2] == root.name and bool(JOB_ID_RE.match(parts[-1]))
    return False


def v1_twins(root: Path, v1_base: Path = V1_BASE) -> list[Path]:
    """The jobs' parent's twin in each v1 hierarchy of V1_CONTROLLERS this host has (hybrid
    hosts), named by the root's last component alone: two roots of one name share them (their
    pids budget, their jobs' groups), whatever their paths (red-team run)."""
    return [v1_base / c / root.name for c in V1_CONTROLLERS if (v1_base / c / "cgroup.procs").exists()]


def enable_controllers(root: Path, job_parent: Path) -> bool:
    """Turn on cpu, memory, io and pids for the jobs' parent (v2); False when the host keeps
    them in v1 (hybrid) and limits go there."""
    wanted = ("cpu", "memory", "io", "pids")
    for directory in (root, job_parent) if root != job_parent else (job_parent,):
        available = _read(directory / "cgroup.controllers").split()
        for name in wanted:
            if name in available:
                with contextlib.suppress(OSError):
                    (directory / "cgroup.subtree_control").write_text(f"+{name}")
    return "memory" in _read(job_parent / "cgroup.controllers").split()


def make_v1_parents(job_parent: Path, v1_base: Path = V1_BASE) -> list[Path]:
    """The jobs' parent's twin in each v1 hierarchy of V1_CONTROLLERS this host has (hybrid
    hosts), made if missing; the directories. A job without a limit of that controller joins
    it: it stayed in the worker's own group, where its CPU, memory and I/O counted against
    the worker's unit (a 50 % CPUQuota on the worker: 400 busy processes of a job without
    --max-cpu stopped its heartbeat for 10 s; a 300 MB MemoryMax: a 250 MB job was killed by
    the worker's limit and read as a plain SIGKILL) (red-team run)."""
    made = v1_twins(job_parent, v1_base)
    for directory in made:
        try:
            directory.mkdir(exist_ok=True)
        except OSError as exc:
            raise ExecutionError(f"failed to make the jobs' cgroup {directory}: {exc.strerror}") from None
    return made


def refuse_huge_pages(root: Path, job_parent: Path) -> bool:
    """No job maps the host's huge pages: `--max-memory` does not count them, and one job took
    the whole pool (red-team run). hugetlb is turned on for the jobs' parent (v2) and each
    page size's limit and reservation there set to 0: a MAP_HUGETLB mmap in a job gets
    ENOMEM (Linux 5.7+ has the reservation's limit; before, the first touch gets SIGBUS).
    False when nothing is limited: hugetlb is in cgroup v1, not enabled for the jobs' parent,
    or a limit could not be written (a warning says which)."""
    if root != job_parent and "hugetlb" in _read(root / "cgroup.controllers").split():
        with contextlib.suppress(OSError):
            (root / "cgroup.subtree_control").write_text("+hugetlb")
    limits = sorted(job_parent.glob("hugetlb.*.max"))  # hugetlb.2MB.max, hugetlb.2MB.rsvd.max, ...
    for path in limits:
        try:
            path.write_text("0")
        except OSError as exc:  # EBUSY: pages held by a job a killed worker left (reconcile ends it)
            log.warning("jobs here may map huge pages: %s = 0 failed: %s", path, exc.strerror)
            return False
    return bool(limits)


def host_huge_pages(vm: Path = Path("/proc/sys/vm")) -> int:
    """The host's pool of default-size huge pages, reserved and allowed beyond (0: none)."""
    return sum(int(_read(vm / name) or 0) for name in ("nr_hugepages", "nr_overcommit_hugepages"))


def host_pid_limit(proc: Path = Path("/proc/sys/kernel")) -> int:
    """How many processes and threads this host can have at once (pid_max, threads-max)."""
    values = []
    for name in ("pid_max", "threads-max"):
        with contextlib.suppress(OSError, ValueError):
            values.append(int((proc / name).read_text()))
    return min(values, default=32768)


def jobs_pids_budget(configured: int, host_limit: int) -> int:
    """What all jobs of a host may have together: `configured`, or when 0 the host's limit
    less a quarter of it, at least 4096 (half on a host whose limit is below 8192) left for
    the host's own processes and the worker's threads, two per running job."""
    if configured:
        return configured
    return max(64, host_limit - max(min(4096, host_limit // 2), host_limit // 4))


def host_memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    """The host's memory in MB (MemTotal)."""
    for line in _read(meminfo).splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ExecutionError(f"no MemTotal in {meminfo}")


def jobs_memory_budget(configured: int, host_mb: int) -> int:
    """MB all jobs of a host may charge together: `configured`, or when 0 the host's memory
    less a tenth of it, at least 512 MB (half on a host with less than 1 GB), left to the
    host's own services (Redis, the worker)."""
    if configured:
        return configured
    return max(64, host_mb - max(min(512, host_mb // 2), host_mb // 10))


def limit_jobs_memory(job_parent: Path, mb: int, v1_base: Path = V1_BASE) -> Path:
    """Cap the memory of all jobs together at `mb` on their parent group (memory.max in v2
    where the memory controller is on there, else memory.limit_in_bytes of its v1 twin): a
    job's charge outlives it where another job holds what it charged (a memfd passed over a
    unix socket in a shared volume: the charge moves to the parent, where nothing limited it,
    and a chain of such jobs took the host's memory, red-team run); the file written."""
    size = str(mb * 1024 * 1024)
    target = job_parent / "memory.max"
    targets = [target]
    if not target.exists():
        target = v1_base / "memory" / job_parent.name / "memory.limit_in_bytes"
        if not target.parent.exists():
            raise ExecutionError("no cgroup memory controller on this host: cannot limit jobs' memory")
        # v1 counts TCP buffers apart, and only where this is set: jobs queued 600 MB of them
        # past a 400 MB cap (red-team run); as a job's own limit, the same size again
        tcp = target.parent / "memory.kmem.tcp.limit_in_bytes"
        targets = [target, *([tcp] if tcp.exists() else [])]
    for path in targets:
        try:
            path.write_text(size)
        except OSError as exc:  # EBUSY: the jobs a killed worker left charge more (reconcile ends them)
            raise ExecutionError(f"failed to set {path} = {size}: {exc.strerror}") from None
    return target


def limit_jobs_pids(job_parent: Path, count: int, v1_base: Path = V1_BASE) -> Path:
    """Cap the processes of all jobs together at `count` on their parent group (v2, else its
    v1 pids twin), so that jobs at their own limits cannot take the host's last pids (the
    worker's threads, its heartbeat, every other service's forks); the file written."""
    return _write_pids_max(job_parent, v1_base / "pids" / job_parent.name, count, v1_base)


def _write_pids_max(v2_dir: Path, v1_dir: Path, count: int, v1_base: Path) -> Path:
    """pids.max in the v2 group when the pids controller is on there, else in its v1 twin
    (hybrid hosts), made if missing; the file written."""
    target = v2_dir / "pids.max"
    if not target.exists():
        if not (v1_base / "pids" / "cgroup.procs").exists():
            raise ExecutionError("no cgroup pids controller on this host: cannot limit jobs' processes")
        target = v1_dir / "pids.max"
        target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.write_text(str(count))
    except OSError as exc:
        raise ExecutionError(f"failed to set {target} = {count}: {exc.strerror}") from None
    return target


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def block_device(path: Path) -> str | None:
    """MAJOR:MINOR of the whole disk holding `path` (throttling applies to disks); None for a
    filesystem on no block device of its own (btrfs, ZFS, overlayfs, tmpfs: an anonymous
    device number), which io.max refuses (ENODEV): every --max-iobps job failed there (review)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    sys_dev = Path("/sys/dev/block") / dev
    if not sys_dev.exists():
        return None
    if (sys_dev / "partition").exists():
        parent = _read(sys_dev.resolve().parent / "dev").strip()
        return parent or dev
    return dev


def _io_writes(device: str, bps: int) -> list[tuple[str, str, str]]:
    """(v1 controller, file, value) holding one disk's reads and writes to `bps` bytes/s."""
    return [
        ("blkio", "io.max", f"{device} rbps={bps} wbps={bps}"),
        ("blkio", "blkio.throttle.read_bps_device", f"{device} {bps}"),
        ("blkio", "blkio.throttle.write_bps_device", f"{device} {bps}"),
    ]


def _number(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return 0


class JobCgroup:
    """The directory <cgroup root>/<job id>, and its v1 twins when limits live in v1."""

    def __init__(self, path: Path, v1_base: Path = V1_BASE) -> None:
        self.path = path
        self.v1_base = v1_base
        # whether a disk rate may be set on it (lift_io): False for a group this object made
        # and gave none, None for one it found (reconcile's, the sweep's): its files are read
        self.throttled: bool | None = None

    def v1_dir(self, controller: str) -> Path:
        return self.v1_base / controller / self.path.parent.name / self.path.name

    def v1_dirs(self) -> list[Path]:
        return [self.v1_dir(c) for c in V1_CONTROLLERS if self.v1_dir(c).is_dir()]

    @property
    def procs_files(self) -> list[Path]:
        """Every cgroup.procs a process of the job must join (v2 first): per v1 controller, its
        own directory where a limit made one, else the jobs' parent twin (hybrid hosts:
        `make_v1_parents`), so no job stays in the worker's v1 groups."""
        found = [self.procs_file]
        for controller in V1_CONTROLLERS:
            for directory in (self.v1_dir(controller), self.v1_dir(controller).parent):
                if directory.is_dir():
                    found.append(directory / "cgroup.procs")
                    break
        return found

    def limit_pids(self, count: int) -> None:
        """At most `count` processes and threads: in the v2 group when the pids controller is
        on there, else in a v1 pids group of the same name (hybrid hosts)."""
        _write_pids_max(self.path, self.v1_dir("pids"), count, self.v1_base)

    def limit(self, limits: Limits, v2: bool, device: str | None = None) -> None:
        """Write the job's limits (v2 files in its own directory, else v1 directories)."""
        writes: list[tuple[str, str, str]] = []  # (v1 controller, file, value)
        if limits.max_cpu is not None:
            quota = limits.max_cpu * CPU_PERIOD // 100
            writes += [
                ("cpu", "cpu.max", f"{quota} {CPU_PERIOD}"),
                ("cpu", "cpu.cfs_period_us", str(CPU_PERIOD)),
                ("cpu", "cpu.cfs_quota_us", str(quota)),
            ]
        if limits.max_memory is not None:
            size = str(limits.max_memory * 1024 * 1024)
            writes += [
                ("memory", "memory.max", size),
                ("memory", "memory.swap.max", "0"),
                ("memory", "memory.limit_in_bytes", size),
                ("memory", "memory.memsw.limit_in_bytes", size),
                # v1 charges TCP buffers to the group only once this is set, and apart from
                # the rest (v2 within memory.max): else a job queued 600 MB past a 64 MB
                # limit, out of the host-wide tcp_mem
                ("memory", "memory.kmem.tcp.limit_in_bytes", size),
            ]
        if limits.max_iobps is not None and device:
            writes += _io_writes(device, limits.max_iobps)
            self.throttled = True
        self._write(writes, v2)

    def throttle_io(self, bps: int, v2: bool, devices: list[str]) -> None:
        """`bps` on more disks than the state directory's: a job's sized volumes, each its own
        loop device, which the state disk's throttle does not see (red-team run: 444 MB/s of
        direct writes to a sized volume under --max-iobps=1048576)."""
        self.throttled = self.throttled or bool(devices)
        self._write([w for device in devices for w in _io_writes(device, bps)], v2)

    def _write(self, writes: list[tuple[str, str, str]], v2: bool) -> None:
        v2_files = {"cpu.max", "memory.max", "memory.swap.max", "io.max"}
        for controller, name, value in writes:
            if (name in v2_files) != v2:
                continue
            directory = self.path if v2 else self.v1_dir(controller)
            if not v2:
                directory.mkdir(parents=True, exist_ok=True)
            target = directory / name
            if name in ("memory.swap.max", "memory.memsw.limit_in_bytes") and not target.exists():
                continue  # no swap accounting on this host: nothing to close
            if name == "memory.kmem.tcp.limit_in_bytes" and not target.exists():
                continue  # a kernel without it (v1's kmem files are going away)
            try:
                target.write_text(value)
            except OSError as exc:
                raise ExecutionError(f"failed to set {target} = {value}: {exc.strerror}") from None

    def oom_killed(self) -> str | None:
        """Did the kernel's OOM killer kill a process of this job, and for whose limit: "own"
        (the job's), "shared" (a parent's: all jobs' together, or the host's memory), None.
        v2 counts `oom` in the group whose own limit was reached; v1 keeps no such count (its
        failcnt stayed 0 with a swap limit set, seen here): its own limit struck where its peak
        usage reached it, within a huge page's charge."""
        events = _read(self.path / "memory.events")
        if _counter(events, "oom_kill"):
            return "own" if _counter(events, "oom") else "shared"
        v1 = self.v1_dir("memory")
        if not _counter(_read(v1 / "memory.oom_control"), "oom_kill"):
            return None
        limit = _number(_read(v1 / "memory.limit_in_bytes"))
        peak = max(_number(_read(v1 / f"memory.{name}max_usage_in_bytes")) for name in ("", "memsw."))
        return "own" if limit and peak + CHARGE_SLACK >= limit else "shared"

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExecutionError(f"failed to create cgroup {self.path}: {exc.strerror}") from None
        self.throttled = False  # made here: a rate only by limit() or throttle_io()

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs_file.read_text().split()]
        except FileNotFoundError:
            return []

    def signal(self, sig: int, exclude: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        """Send `sig` to every process in the cgroup but `exclude`. A pid read from cgroup.procs
        could end and be reused by a process outside the job before a kill(2) reached it
        (pid_max is 32768 here; red-team run): each is held by a pidfd first and signalled only
        when a second read still lists it, so the pidfd is the job's own process (were it not,
        the pid's new owner must have ended before it could rejoin the list, and the send fails).
        SIGNAL_BATCH pids at a time: a job of thousands of processes must not take the worker's
        last descriptors (review)."""
        wanted = [pid for pid in self.pids() if pid not in exclude]
        for at in range(0, len(wanted), SIGNAL_BATCH):
            held: dict[int, int] = {}
            try:
                for pid in wanted[at : at + SIGNAL_BATCH]:
                    with contextlib.suppress(ProcessLookupError):
                        held[pid] = os.pidfd_open(pid)
                still = set(self.pids()) if held else set()
                for pid, fd in held.items():
                    if pid in still:
                        with contextlib.suppress(ProcessLookupError):
                            signal.pidfd_send_signal(fd, sig)
            finally:
                for fd in held.values():
                    os.close(fd)

    def lift_io(self) -> None:
        """Drop the group's disk rates: a write held by its throttle waits uninterruptibly, and
        a SIGKILL ended it only when the throttle let it through (red-team run: a dd at the
        least --max-iobps outlived its timeout by minutes, in D state, and host syncs of that
        disk waited behind it). A job being killed writes no more than it had started. Read
        only where a rate may be set (`throttled`): a job's teardown kills its group more than
        once, and most jobs have none."""
        if self.throttled is False:
            return
        self.throttled = False
        for line in _read(self.path / "io.max").splitlines():
            device = line.split(" ", 1)[0]
            with contextlib.suppress(OSError):
                (self.path / "io.max").write_text(f"{device} rbps=max wbps=max riops=max wiops=max")
        blkio = self.v1_dir("blkio")
        for name in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
            for line in _read(blkio / name).splitlines():
                with contextlib.suppress(OSError):
                    (blkio / name).write_text(f"{line.split(' ', 1)[0]} 0")

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (and those forked meanwhile), its disk rates
        lifted first (lift_io)."""
        self.lift_io()
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(FileNotFoundError):
                kill_file.write_text("1")
            return
        for _ in range(10):  # no cgroup.kill (kernel < 5.14): loop until nothing is left
            if not self.pids():
                return
            self.signal(signal.SIGKILL)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left and remove the directories; missing ones are success."""
        self._remove_v2(timeout)
        for directory in self.v1_dirs():  # empty once the v2 group is (same processes)
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise ExecutionError(f"failed to remove cgroup {directory}: {exc.strerror}") from None

    def _remove_v2(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.path.exists():
            self.kill()
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:  # EBUSY while the last processes exit
                if time.monotonic() > deadline:
                    raise ExecutionError(f"failed to remove cgroup {self.path}: {exc.strerror}") from None
                time.sleep(0.01)
