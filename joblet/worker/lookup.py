"""Where a job's command is, as the job will see it: its links followed inside the job's
view of the host (the worker reads the files behind it), and why a command cannot start
(as a shell says it: not found, a directory, not executable, a missing #! interpreter)."""

from __future__ import annotations

import collections
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath


def under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


@dataclass(frozen=True)
class Unrunnable:
    """Why the command cannot start, as a shell says it: 127 not found, 126 found but not
    runnable (a directory, not executable, its #! interpreter missing)."""

    code: int
    why: str


# Parts a command's lookup may walk in all (PATH's directories, links, #! interpreters): a
# volume's tree of deep links, each walked again from its volume's root, searched through a
# PATH of thousands of entries, held a worker's core for weeks, past a stop (red-team run).
# A usual lookup walks tens; a deep one in a volume a few thousand (~1 ms each per 1,000).
STEPS = 20_000


class Steps:
    """What is left of one lookup's STEPS."""

    def __init__(self, left: int = STEPS) -> None:
        self.left = left

    def take(self, path: str) -> bool:
        """Pay for one part of `path` (a volume's: its depth, each walked again from its root)."""
        self.left -= 1 + (path.count("/") if under(path, "/volumes") else 0)
        return self.left >= 0


def resolve(
    command: str, path_env: str, views: list[tuple[str, str]], user: tuple[int, int] | None = None
) -> str | Unrunnable:
    """Where the job will find `command` (a path inside the job), or why it cannot run it.

    `views` maps job paths to host paths ((job prefix, host prefix), longest first); the
    host's own read-only paths map to themselves. Like a shell: a name with a slash is a path
    (relative to /work), else the PATH directories are searched (directories skipped; a
    file found that cannot run is reported if nothing else is), then /work (the guide runs
    uploaded scripts by bare name)."""
    if "/" in command:
        candidates = [str(PurePosixPath("/work") / command)]
    else:  # each directory once: a shell finds nothing more the second time
        dirs = dict.fromkeys([d for d in path_env.split(":") if d.startswith("/")] + ["/work"])
        candidates = [f"{d.rstrip('/')}/{command}" for d in dirs]
    problem: Unrunnable | None = None
    as_dir = command.endswith(("/", "/."))  # the path drops it: /bin/echo/ ran /bin/echo
    steps = Steps()
    for candidate in candidates:
        real = job_realpath(candidate, views, steps=steps, user=user)
        if steps.left < 0:  # as the kernel's ELOOP (a shell's 126)
            return problem or Unrunnable(126, "Too many levels of symbolic links")
        host_path = host_view(real, views) if real else None
        mode, runnable = _probe(real, host_path, views)
        if user is not None and real:  # as the job's user, who has no capability: its modes
            runnable = runnable and _permits(real, views, user, 1)
        if stat.S_ISDIR(mode) and "/" in command:
            problem = problem or Unrunnable(126, "Is a directory")
        elif mode and as_dir:
            problem = problem or Unrunnable(126, "Not a directory")
        elif stat.S_ISREG(mode) and not runnable:
            problem = problem or Unrunnable(126, "Permission denied")
        elif stat.S_ISREG(mode):
            # not in a volume: another job sharing it could swap a directory on the way for a
            # link while the worker reads, and learn the first line of a host file
            # a --user job's script read only where its user may read it: the worker's root
            # read one of 0711, or in a directory of 0700, and told its `#!` word (red-team run)
            readable = user is None or _permits(str(real), views, user, 4)
            local = under(str(real), "/volumes") or not readable
            bad = None if local else _bad_interpreter(str(host_path), views, steps, user)
            if bad is None:
                return os.path.normpath(candidate)
            problem = problem or Unrunnable(126, f"{bad}: bad interpreter: No such file or directory")
    if problem is None and "/" in command:
        return _no_file(candidates[0], real, host_path, views, as_dir)
    return problem or Unrunnable(127, "command not found")


def _no_file(
    candidate: str, real: str | None, host_path: str | None, views: list[tuple[str, str]], as_dir: bool
) -> Unrunnable:
    """Why a path that no view shows as a file cannot run: the sandbox's own directories and
    devices are there in the job (126), a path through a file is ENOTDIR (126), else 127."""
    path = os.path.normpath(candidate)
    if path in SANDBOX_DIRS or (real is not None and any(p != real and under(p, real) for p, _ in views)):
        return Unrunnable(126, "Is a directory")  # the second: bwrap made it to hold a mount (/volumes)
    if path in SANDBOX_DEVICES:
        return Unrunnable(126, "Not a directory" if as_dir else "Permission denied")
    # /bin/echo/x; not in a volume, where another job could swap a directory for a link on the
    # way (as for the #! check) and learn whether a host path is a file
    if host_path is not None and not (real and under(real, "/volumes")) and _errno(host_path) == errno.ENOTDIR:
        return Unrunnable(126, "Not a directory")
    return Unrunnable(127, "No such file or directory")


# What the sandbox makes in the job's root that no view maps (sandbox.py, mounts.make_dev):
# `rnx run /tmp` said "No such file or directory" where the job has the directory. Under
# /proc and /sys only what every procfs and sysfs has: what else is there depends on the
# kernel, the job's namespaces and the covers, which the worker's own view does not tell.
PROC_DIRS = ("1", "bus", "driver", "fs", "irq", "net", "self", "sys", "sysvipc", "thread-self", "tty")
SYS_DIRS = ("bus", "class", "dev", "devices", "firmware", "fs", "kernel", "module")
SANDBOX_DIRS = frozenset(
    (
        *("/", "/tmp", "/var", "/var/tmp", "/run", "/dev", "/dev/shm", "/dev/pts", "/dev/fd", "/proc", "/sys", "/work"),
        *(f"/proc/{name}" for name in PROC_DIRS),
        *(f"/sys/{name}" for name in SYS_DIRS),
    )
)
# stdin is /dev/null and stdout and stderr pipes (execution.py): none can be run either
SANDBOX_DEVICES = frozenset(
    f"/dev/{name}"
    for name in ("full", "null", "random", "tty", "urandom", "zero", "ptmx", "pts/ptmx", "stdin", "stdout", "stderr")
)


def _errno(path: str) -> int:
    """The error of lstat(path), 0 if none."""
    try:
        os.lstat(path)
    except OSError as exc:
        return exc.errno or 0
    return 0


def _probe(real: str | None, host_path: str | None, views: list[tuple[str, str]]) -> tuple[int, bool]:
    """The type and mode of what a job path leads to, and whether it may be executed. In a
    volume, read along a walk that follows no link (`_in_volume`): another job sharing it
    could swap a directory on the way for a link between the walk of job_realpath and these
    reads, which followed it on the host and told whether /root/.bashrc existed (red-team run)."""
    if host_path is None or real is None:
        return 0, False
    if under(real, "/volumes"):
        return _in_volume(real, views)
    mode = _mode(host_path)
    return mode, bool(mode) and os.access(host_path, os.X_OK)


def _in_volume(real: str, views: list[tuple[str, str]]) -> tuple[int, bool]:
    """`_probe` of a path in a volume: each part below the volume's own directory opened
    without following a link (a link there now is one put since the walk: nothing found)."""
    fd = _open_in_volume(real, views)
    if fd is None:
        return 0, False
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            return 0, False
        return mode, os.access(f"/proc/self/fd/{fd}", os.X_OK)  # the inode held, no path walked again
    finally:
        os.close(fd)


def _open_in_volume(path: str, views: list[tuple[str, str]]) -> int | None:
    """An O_PATH descriptor of what a volume path names, itself (not followed), reached from
    the volume's own directory (the worker's) without following a link; None where not."""
    root = next((r for prefix, r in views if path == prefix), None)
    found = None if root is not None else _volume_parent(path, views)
    try:
        if root is not None:
            return os.open(root, os.O_PATH | os.O_CLOEXEC)
        if found is None:
            return None
        return os.open(found[1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=found[0])
    except OSError:
        return None
    finally:
        if found is not None:
            os.close(found[0])


def _permits(job_path: str, views: list[tuple[str, str]], user: tuple[int, int], bit: int) -> bool:
    """Whether `user` (uid, gid; a --user job's, without capabilities or other groups) has
    `bit` (4 read, 1 execute or search) on what a resolved job path names, by its modes as
    the job sees them; a directory bwrap makes to hold mounts (no host side) is searchable:
    /volumes itself, read as a volume's path, was no one's to search, and a --user job's own
    script in its volume was `No such file or directory` (review)."""
    if any(under(job_path, prefix) for prefix, _ in views if under(prefix, "/volumes")):
        fd = _open_in_volume(job_path, views)
        if fd is None:
            return False
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
    else:
        host = host_view(job_path, views)
        if host is None:
            return True
        try:
            st = os.stat(host)
        except OSError:
            return False
    uid, gid = user
    shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
    return bool((st.st_mode >> shift) & bit)


def _mode(path: str) -> int:
    """Its type and mode, not followed (a link put there since the walk is not); 0 if none."""
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0


def _bad_interpreter(
    host_path: str, views: list[tuple[str, str]], steps: Steps | None = None, user: tuple[int, int] | None = None
) -> str | None:
    """A script's `#!` interpreter when the job has no such program (the kernel's exec fails
    with ENOENT, which bwrap reported as its own failure, exit 1); else None. Read without
    following a link or waiting on a FIFO put there since."""
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            head = os.read(fd, 256) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
        finally:
            os.close(fd)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    interpreter = words[0].decode(errors="replace") if words else ""
    if not interpreter.startswith("/"):
        return None
    real = job_realpath(interpreter, views, steps=steps, user=user)
    found = host_view(real, views) if real else None
    # one in a volume is read along a walk that follows no link (as `_probe`): a plain lstat
    # followed a directory another job swapped for a link, and told whether a host path was a
    # file, another tenant's volume's included (red-team run)
    return None if stat.S_ISREG(_probe(real, found, views)[0]) else interpreter


def job_realpath(
    job_path: str,
    views: list[tuple[str, str]],
    hops: int = 40,
    steps: Steps | None = None,
    user: tuple[int, int] | None = None,
) -> str | None:
    """`job_path` with its links followed as the job would follow them, or None where it
    leads to nothing the job sees or past `steps`; with `user` (a --user job's), None too
    through a directory that user may not search, whatever is in it. A link in a volume is read on the host,
    but its target is a path inside the job: followed on the host, `/volumes/v/x -> /root/tool`
    told a job whether the host had /root/tool (started, or "command not found")."""
    steps = steps or Steps()
    todo = collections.deque(PurePosixPath(job_path).parts[1:])
    done = "/"
    while todo:
        name = todo.popleft()
        if name in ("", "."):
            continue
        if name == "..":  # charged too: a link of 1,360 `..`s and a PATH of 1,000 copies took
            # 1.9 s of CPU a lookup, the steps untaken (review)
            if not steps.take(done):
                return None
            done = os.path.dirname(done)
            continue
        path = os.path.join(done, name)
        if not steps.take(path):
            return None
        if user is not None and not _permits(done, views, user, 1):
            return None
        host = host_view(path, views)
        if host is None:  # a directory bwrap makes to hold mounts (/volumes), or nothing
            if not any(under(prefix, path) for prefix, _ in views):
                return None
        elif any(path == prefix for prefix, _ in views if prefix != host):  # a mount point in
            pass  # the job (its host side may be a link: /proc/self/fd/N for /work); views of
            # the host's own paths map to themselves, and a link there is one in the job too
        else:
            link = _link_target(path, host, views)
            if link is None:  # changed since (a job swapping links in a shared volume)
                return None
            if link is not False:
                hops -= 1
                if hops < 0:
                    return None
                target = PurePosixPath(link)
                todo.extendleft(reversed(target.parts[1:] if target.is_absolute() else target.parts))
                done = "/" if target.is_absolute() else done
                continue
        done = path
    return done


def _link_target(path: str, host: str, views: list[tuple[str, str]]) -> str | None | bool:
    """Where the link at a job path leads (its text), False if it is no link, None if it is
    gone or changed. In a volume, read along a walk that follows no link: another job sharing
    it could swap a directory on the way for a link to a host directory, and the host's links
    there were read (red-team review: whether a host path is a link, and where it leads)."""
    if not under(path, "/volumes"):
        try:
            return os.readlink(host) if os.path.islink(host) else False
        except OSError:
            return None
    found = _volume_parent(path, views)
    if found is None:
        return None
    fd, name = found
    try:
        if not stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            return False
        return os.readlink(name, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def _volume_parent(path: str, views: list[tuple[str, str]]) -> tuple[int, str] | None:
    """An O_PATH descriptor of the directory holding a volume path's last part, reached from
    the volume's own directory without following a link, and that part; None where a part on
    the way is no directory now (or the path is the volume itself)."""
    prefix, root = next((v for v in views if under(path, v[0])), ("", ""))
    parts = [p for p in path[len(prefix) :].split("/") if p]
    if not prefix or not parts:
        return None
    try:
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            step = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = step
    except OSError:  # a link (ELOOP or ENOTDIR with O_NOFOLLOW), a file, or gone
        os.close(fd)
        return None
    return fd, parts[-1]


def host_view(job_path: str, views: list[tuple[str, str]]) -> str | None:
    """The host path behind a job path, or None if the job cannot see such a path."""
    job_path = os.path.normpath(job_path)
    for prefix, host_prefix in views:
        if under(job_path, prefix):
            return host_prefix + job_path[len(prefix) :]
    return None
