"""What a job's root looks like, as bubblewrap arguments (pure: tested without root).

A job gets a new root (bubblewrap's tmpfs, pivot_root, then made read-only) holding:
the host's executables and libraries read-only (`/usr`, `/bin`, `/sbin`, `/lib*` and the
configured extra paths), `/etc` read-only (the worker's copy of the host's, without its
secrets: etc_view.py) with its own `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`
mounted on it, secrets under the other read-only paths covered by empty files or
directories, a fresh `/proc` (read-only, Docker's masked paths covered), a minimal `/dev`
(read-only, private `/dev/shm` and `/dev/pts`), private size-capped `/tmp`, its `/work`
(a size-capped tmpfs the worker mounted), its volumes and
runtime, and `/sys` (read-only: a sysfs of the job's own network namespace that the worker
mounted, with its firmware tables and SYS_MASKED covered by the worker: `sys_covers`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from joblet.worker.lookup import under

# Docker's default capability set less CAP_MKNOD (jobs get /dev from joblet), CAP_SETFCAP and
# CAP_AUDIT_WRITE (nothing in a job needs them), and CAP_NET_RAW unless the worker's
# job_net_raw gives it (podman's default): a raw socket sent first fragments that filled the
# host's IPv4 reassembly budget, dropping every job's and the host's fragmented traffic, and
# packet sockets queue memory no cgroup is charged (red-team run). `ping` needs none: ICMP
# echo sockets are open to every group in a job's namespace (netns.py).
CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
)
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# with the names the tools write a new copy under before renaming it over the old one
# (shadow-utils: shadow+, shadow-; pam_unix: nshadow, nopasswd; visudo: sudoers.tmp; etc_view.py
# also strips what systemd-sysusers and editors put around a name)
SECRETS = (
    "/etc/shadow*",
    "/etc/gshadow*",
    "/etc/nshadow",
    "/etc/ngshadow",
    "/etc/sudoers*",
    "/etc/security/opasswd",
    "/etc/security/nopasswd",
    "/etc/ssl/private",
    "/etc/joblet",
    "/etc/redis",
    "/etc/ssh/ssh_host_*",
)
PROC_MASKED = (
    "/proc/kcore",
    "/proc/keys",
    "/proc/key-users",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/timer_stats",
    "/proc/acpi",
    "/proc/scsi",
    "/proc/asound",
    # root-only on the host, readable by a job's root (CAP_DAC_OVERRIDE): physical page
    # flags and owners, slab and vmalloc layouts (kernel addresses), aids to kernel exploits
    "/proc/kpageflags",
    "/proc/kpagecount",
    "/proc/kpagecgroup",
    "/proc/slabinfo",
    "/proc/vmallocinfo",
    "/proc/pagetypeinfo",  # free pages per migrate type: a page allocator's state for heap grooming
)
# under the job's own sysfs: the kernel's physical load address (KASLR), the energy counters
# of Docker's mask (Platypus, CVE-2020-8694), the slab caches' counters (root-only on the
# host, as /proc/slabinfo), and zram's control files: reading hot_add (root-only, read-only
# sysfs or not) adds a zram block device to the host that outlives the job (red-team run)
SYS_MASKED = (
    "/sys/kernel/vmcoreinfo",
    "/sys/devices/virtual/powercap",
    "/sys/kernel/slab",
    "/sys/class/zram-control",
    "/sys/devices/virtual/block",  # loop devices' backing files: other volumes' and installations' paths
)
SETPRIV = "/usr/bin/setpriv"


@dataclass(frozen=True)
class Host:
    """What the worker found on this host: which system paths exist and are links, which
    secrets (outside /etc) and /proc entries exist to be covered, the empty things to cover
    with, and the worker's copy of /etc."""

    etc: str
    empty_file: str
    empty_dir: str
    system: tuple[tuple[str, str | None], ...]  # (path, link target or None for a directory)
    ro_paths: tuple[str, ...]
    secret_files: tuple[str, ...]
    secret_dirs: tuple[str, ...]
    proc_files: tuple[str, ...]
    proc_dirs: tuple[str, ...]
    sys_files: tuple[str, ...] = ()
    sys_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    """One job's root."""

    hostname: str
    work_dir: str
    run_dir: str
    sys_dir: str | None = None  # the job's own sysfs (joblet always gives one); None: the host's /sys
    tmp_bytes: int = 256 << 20
    shm_bytes: int = 64 << 20
    binds: tuple[tuple[str, str, bool], ...] = ()  # (host path, job path, read-only)
    net_files: tuple[str, ...] = ()  # of hosts, resolv.conf: those written in run_dir
    user: tuple[int, int] | None = None
    host_network: bool = False  # the host's network namespace: no CAP_NET_RAW (it would sniff the host)
    net_raw: bool = False  # CAP_NET_RAW for a root job (the worker's job_net_raw), not in host mode
    sys_masked: bool = False  # sys_dir carries its covers already (mounts.py): bwrap binds it whole


def make_cover(run_dir: Path) -> Path:
    """An empty read-only file and directory to bind over what jobs must not see (the worker's
    are in each job's files: mounts.JobMounts)."""
    cover = run_dir / "cover"
    (cover / "dir").mkdir(parents=True, exist_ok=True)
    (cover / "file").touch(exist_ok=True)
    (cover / "file").chmod(0o444)
    (cover / "dir").chmod(0o555)
    return cover


def survey(
    cover: Path, ro_paths: tuple[str, ...], secrets: tuple[str, ...], etc: str, etc_links: tuple[str, ...] = ()
) -> Host:
    """Look at this host (before each job: a key added later is covered too): what to bind
    and what to cover. `secrets`: patterns; those under /etc are the copy's to leave out
    (`etc`, etc_view.py), those under /usr or the extra read-only paths are covered here. A
    secret that is a link is covered where it leads now (`etc_links`: /etc's secret links): it
    was left out, and a masked `linked.txt -> target.txt` read the target (red-team run)."""
    import glob

    system = tuple((p, os.readlink(p) if os.path.islink(p) else None) for p in SYSTEM_DIRS if os.path.lexists(p))
    bound = ("/usr", *ro_paths)
    patterns = [p for p in secrets if _may_match_under(p, bound)]  # not the many under /etc
    found = [s for pattern in patterns for s in sorted(glob.glob(pattern))]
    found = [os.path.realpath(s) if os.path.islink(s) else s for s in found]
    found = {s for s in found if any(under(s, b) for b in bound) and os.path.exists(s)}
    found = sorted(found | _seen_targets(tuple(map(os.path.realpath, etc_links)), etc, bound))
    procs = [p for p in PROC_MASKED if os.path.exists(p)]
    sysfs = [p for p in SYS_MASKED if os.path.exists(p)]
    return Host(
        etc=etc,
        empty_file=str(cover / "file"),
        empty_dir=str(cover / "dir"),
        system=system,
        ro_paths=tuple(p for p in ro_paths if os.path.exists(p)),
        secret_files=tuple(s for s in found if not os.path.isdir(s)),
        secret_dirs=tuple(s for s in found if os.path.isdir(s)),
        proc_files=tuple(p for p in procs if not os.path.isdir(p)),
        proc_dirs=tuple(p for p in procs if os.path.isdir(p)),
        sys_files=tuple(p for p in sysfs if not os.path.isdir(p)),
        sys_dirs=tuple(p for p in sysfs if os.path.isdir(p)),
    )


def _seen_targets(targets: tuple[str, ...], etc: str, bound: tuple[str, ...]) -> set[str]:
    """Where /etc's secret links lead, as a job sees them: under /etc only where the copy
    has that path, and not as a placeholder's (a target in a directory others may not enter
    is hidden with it: a cover there failed every job's start, bwrap unable to make its
    mount point in the read-only copy, review); under /usr or a read-only path as it is."""
    kept = set()
    for target in targets:
        if under(target, "/etc"):
            copy = os.path.join(etc, os.path.relpath(target, "/etc"))
            if os.path.lexists(copy) and not os.path.islink(copy):
                kept.add(target)
        elif any(under(target, b) for b in bound) and os.path.exists(target):
            kept.add(target)
    return kept


def _may_match_under(pattern: str, bases: tuple[str, ...]) -> bool:
    """Whether a glob could match a path under one of `bases` (by its part before the first
    wildcard): globbing only those saves listing /etc for each of its patterns per job."""
    fixed = pattern[: min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))]
    return any(under(fixed, b) or b.startswith(fixed) for b in bases)


def open_parents(paths: Iterable[str], bound: tuple[str, ...] = ()) -> list[str]:
    """`--perms 0755 --dir` for each parent of `paths` that bwrap would make, not under one of
    `bound` (there already): it makes them 0700, and a job of another user could not reach
    its own volumes, nor an operator's read-only path whose parent the job's root lacks
    (`/opt/tools` under an `/opt` of 0700; red-team run)."""
    parents = sorted({str(p) for path in paths for p in PurePosixPath(path).parents} - {"/"})
    made = [p for p in parents if not any(under(p, b) for b in bound)]
    return [arg for parent in made for arg in ("--perms", "0755", "--dir", parent)]


def bwrap_args(host: Host, layout: Layout) -> list[str]:
    """bubblewrap's options for this job, up to (not including) the command."""
    # no network namespace here: bwrap starts inside the one the worker built for the job
    args = [
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        layout.hostname,
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for path, target in host.system:
        args += ["--symlink", target, path] if target is not None else ["--ro-bind", path, path]
    args += _etc(host, layout)
    args += open_parents(host.ro_paths, ("/usr", "/etc", *(path for path, _ in host.system)))
    for path in host.ro_paths:
        args += ["--ro-bind", path, path]
    args += _covers(host) + _proc(host) + _dev(layout)
    args += [
        "--perms",
        "1777",
        "--size",
        str(layout.tmp_bytes),
        "--tmpfs",
        "/tmp",
        "--dir",
        "/var",
        "--symlink",
        "../tmp",
        "/var/tmp",
        "--dir",
        "/run",
        "--bind",
        layout.work_dir,
        "/work",
    ]
    args += open_parents([target for _, target, _ in layout.binds])
    for source, target, read_only in layout.binds:
        args += ["--ro-bind" if read_only else "--bind", source, target]
    args += ["--ro-bind", layout.sys_dir or "/sys", "/sys"]
    if not (layout.sys_masked and layout.sys_dir):
        args += [a for source, path in sys_covers(host) for a in ("--ro-bind", source, path)]
    args += ["--remount-ro", "/", "--chdir", "/work", "--cap-drop", "ALL"]
    for cap in CAPS:
        if cap != "CAP_NET_RAW" or (layout.net_raw and not layout.host_network):
            args += ["--cap-add", cap]
    return args


def sys_covers(host: Host) -> list[tuple[str, str]]:
    """(cover, path under /sys) for what a job's /sys hides: its firmware tables and SYS_MASKED.
    Bound by bwrap one by one, or (cheaper: ~0.15 ms of a start each, bwrap reads the whole
    mount table at each bind) by the worker on the job's own sysfs, which bwrap then binds
    whole with its covers (mounts.py)."""
    return [
        (host.empty_dir, "/sys/firmware"),
        *((host.empty_file, path) for path in host.sys_files),
        *((host.empty_dir, path) for path in host.sys_dirs),
    ]


def _etc(host: Host, layout: Layout) -> list[str]:
    """The worker's copy of /etc, and the job's own hosts, resolv.conf, hostname on it."""
    args = ["--ro-bind", host.etc, "/etc"]
    for name in (*layout.net_files, "hostname"):
        args += ["--ro-bind", f"{layout.run_dir}/{name}", f"/etc/{name}"]
    return args


def _covers(host: Host) -> list[str]:
    args = []
    for path in host.secret_files:
        args += ["--ro-bind", host.empty_file, path]
    for path in host.secret_dirs:
        args += ["--ro-bind", host.empty_dir, path]
    return args


def _proc(host: Host) -> list[str]:
    """The job's procfs with its masks, read-only. procfs's own entries (meminfo, stat, tty/,
    kallsyms...) are one object each for every procfs of the host: a root job's chmod and
    chown there changed them host-wide until reboot (`chmod 0440 /proc/execdomains` denied it
    to every later --user job and to the host's new procfs; red-team run), and a uid 0 job
    without capabilities owns them. Read-only binds of each (Docker's AppArmor profile denies
    those writes) cost ~8 ms of a start here; a read-only /proc costs a remount, and a job's
    writes to its own /proc/PID files (oom_score_adj, a thread's comm) fail with EROFS. So do
    those to `/proc/sys` (sysctls), `/proc/sysrq-trigger`, `/proc/fs` and `/proc/pressure`
    (a write there makes a PSI trigger, and each one's close at the process's exit waits out
    an RCU grace period in D state: 3,000 of them kept a job with `--timeout 3` for 19 s,
    red-team run), which were read-only binds of their own before, ~0.5 ms of bwrap's start
    (docs/PERFORMANCE_LOG.md, item 52)."""
    args = ["--proc", "/proc"]
    for path in host.proc_files:
        args += ["--ro-bind", host.empty_file, path]
    for path in host.proc_dirs:
        args += ["--ro-bind", host.empty_dir, path]
    return [*args, "--remount-ro", "/proc"]


# The job's own device nodes, in the read-only /dev the worker makes for it (mounts.make_dev)
# and bwrap binds whole. Not bwrap's --dev: it binds the host's nodes, the same inodes, and a
# root job's chmod or chown (CAP_CHOWN, CAP_FOWNER) changed the host's /dev/null.
DEV_NODES = ("full", "null", "random", "tty", "urandom", "zero")


def _dev(layout: Layout) -> list[str]:
    return [
        "--dev-bind",
        f"{layout.run_dir}/dev",
        "/dev",
        "--perms",
        "1777",
        "--size",
        str(layout.shm_bytes),
        "--tmpfs",
        "/dev/shm",
    ]


# What glibc's loader and libc read that it ignores in a setuid program (unsecvars.h): given
# to setpriv, which runs as root before it drops to --user, LD_PRELOAD ran the job's own code
# as root with the sandbox's capabilities (red-team run). They are set after the drop.
LOADER_ENV = frozenset(
    {
        "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LD_AUDIT", "LD_DEBUG",
        "LD_DEBUG_OUTPUT", "LD_DYNAMIC_WEAK", "LD_HWCAP_MASK", "LD_LIBRARY_PATH", "LD_ORIGIN_PATH",
        "LD_PRELOAD", "LD_PROFILE", "LD_SHOW_AUXV", "LD_USE_LOAD_BIAS", "LOCALDOMAIN", "LOCPATH",
        "MALLOC_TRACE", "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR",
    }
)  # fmt: skip
ENV, SH = "/usr/bin/env", "/bin/sh"


def loader_env(env: dict[str, str], user: tuple[int, int] | None) -> tuple[dict[str, str], dict[str, str]]:
    """(what the sandbox starts with, what is set after the drop to `user`): the job's
    LOADER_ENV variables wait for the drop; without `user` nothing is dropped."""
    if user is None:
        return env, {}
    later = {k: v for k, v in env.items() if k in LOADER_ENV}
    return {k: v for k, v in env.items() if k not in later}, later


def command_argv(
    path: str, args: tuple[str, ...], user: tuple[int, int] | None, later: dict[str, str] | None = None
) -> list[str]:
    """The command as the sandbox starts it; another user through setpriv, with no
    capability left to it even as uid 0 (`--user=0:0`: leaving uid 0 was what dropped them,
    and a root exec regains its bounding set). `later`: variables env(1) sets after the drop
    (loader_env; env takes an operand with a '=' for one, so such a path goes through sh)."""
    if user is None:
        return [path, *args]
    drop = ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]
    tail = [path, *args]
    if later:
        if "=" in path:
            tail = [SH, "-c", 'exec "$0" "$@"', *tail]
        tail = [ENV, *(f"{k}={v}" for k, v in later.items()), *tail]
    return [SETPRIV, f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", *drop, "--", *tail]


def views_of(host: Host, layout: Layout, work: str | None = None, covers: str | None = None) -> list[tuple[str, str]]:
    """(job prefix, host prefix) for every path a job can run something from; `work`: where
    the worker reaches the job's /work, when not at its path (its own mount namespace), and
    `covers` the directory of the empty file and directory bound over the secrets (in the
    job's files: mounts.py). A secret is its cover here as in the job: looked up on the host,
    a masked directory's names (`Permission denied` or `No such file`) and a masked script's
    `#!` word reached a job's author in its error (red-team run)."""
    empty_file, empty_dir = (f"{covers}/file", f"{covers}/dir") if covers else (host.empty_file, host.empty_dir)
    views = [
        *((path, empty_file) for path in host.secret_files),
        *((path, empty_dir) for path in host.secret_dirs),
        ("/work", work or layout.work_dir),
        *((t, s) for s, t, _ in layout.binds),
        ("/usr", "/usr"),
        ("/etc", host.etc),  # the worker's copy: /usr/bin/awk -> /etc/alternatives/awk -> ...
        # bound by bwrap, a read-only path is a directory in the job even where the host's is
        # a link: mapped to what it leads to, it is a mount point, not followed as a link
        *((p, os.path.realpath(p)) for p in host.ro_paths),
    ]
    views += [(p, p) for p, _ in host.system]  # a link here (/bin -> usr/bin) is one in the job
    return sorted(views, key=lambda v: len(v[0]), reverse=True)
