"""Where a job's command is, as the job will see it: its links followed inside the job's
view of the host (the worker reads the files behind it), and why a command cannot start
(as a shell says it: not found, a directory, not executable, a missing #! interpreter)."""

from __future__ import annotations

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


def resolve(command: str, path_env: str, views: list[tuple[str, str]]) -> str | Unrunnable:
    """Where the job will find `command` (a path inside the job), or why it cannot run it.

    `views` maps job paths to host paths ((job prefix, host prefix), longest first); the
    host's own read-only paths map to themselves. Like a shell: a name with a slash is a path
    (relative to /work), else the PATH directories are searched (directories skipped; a
    file found that cannot run is reported if nothing else is), then /work (the guide runs
    uploaded scripts by bare name)."""
    if "/" in command:
        candidates = [str(PurePosixPath("/work") / command)]
    else:
        dirs = [d for d in path_env.split(":") if d.startswith("/")] + ["/work"]
        candidates = [f"{d.rstrip('/')}/{command}" for d in dirs]
    problem: Unrunnable | None = None
    for candidate in candidates:
        real = job_realpath(candidate, views)
        host_path = host_view(real, views) if real else None
        mode = _mode(host_path) if host_path else 0
        if stat.S_ISDIR(mode) and "/" in command:
            problem = problem or Unrunnable(126, "Is a directory")
        elif stat.S_ISREG(mode) and not os.access(str(host_path), os.X_OK):
            problem = problem or Unrunnable(126, "Permission denied")
        elif stat.S_ISREG(mode):
            # not in a volume: another job sharing it could swap a directory on the way for a
            # link while the worker reads, and learn the first line of a host file
            bad = None if under(str(real), "/volumes") else _bad_interpreter(str(host_path), views)
            if bad is None:
                return os.path.normpath(candidate)
            problem = problem or Unrunnable(126, f"{bad}: bad interpreter: No such file or directory")
    if problem is None and "/" in command:
        path = os.path.normpath(candidates[0])
        if path in SANDBOX_DIRS:  # the sandbox's own, with no view on the host
            return Unrunnable(126, "Is a directory")
        if path in SANDBOX_DEVICES:
            return Unrunnable(126, "Permission denied")
        return Unrunnable(127, "No such file or directory")
    return problem or Unrunnable(127, "command not found")


# What the sandbox makes in the job's root that no view maps (sandbox.py): `rnx run /tmp`
# said "No such file or directory" where the job has the directory.
SANDBOX_DIRS = frozenset(("/", "/tmp", "/var", "/run", "/dev", "/dev/shm", "/dev/pts", "/proc", "/sys", "/work"))
SANDBOX_DEVICES = frozenset(f"/dev/{name}" for name in ("full", "null", "random", "tty", "urandom", "zero"))


def _mode(path: str) -> int:
    """Its type and mode, not followed (a link put there since the walk is not); 0 if none."""
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0


def _bad_interpreter(host_path: str, views: list[tuple[str, str]]) -> str | None:
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
    real = job_realpath(interpreter, views)
    found = host_view(real, views) if real else None
    return None if found and stat.S_ISREG(_mode(found)) else interpreter


def job_realpath(job_path: str, views: list[tuple[str, str]], hops: int = 40) -> str | None:
    """`job_path` with its links followed as the job would follow them, or None where it
    leads to nothing the job sees. A link in a volume is read on the host, but its target
    is a path inside the job: followed on the host, `/volumes/v/x -> /root/tool` told a job
    whether the host had /root/tool (started, or "command not found")."""
    todo = list(PurePosixPath(job_path).parts[1:])
    done = "/"
    while todo:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            done = os.path.dirname(done)
            continue
        path = os.path.join(done, name)
        host = host_view(path, views)
        if host is None:  # a directory bwrap makes to hold mounts (/volumes), or nothing
            if not any(under(prefix, path) for prefix, _ in views):
                return None
        elif any(path == prefix for prefix, _ in views if prefix != host):  # a mount point in
            pass  # the job (its host side may be a link: /proc/self/fd/N for /work); views of
            # the host's own paths map to themselves, and a link there is one in the job too
        elif os.path.islink(host):
            hops -= 1
            try:
                target = PurePosixPath(os.readlink(host))
            except OSError:  # changed since (a job swapping links in a shared volume)
                return None
            if hops < 0:
                return None
            todo[:0] = list(target.parts[1:] if target.is_absolute() else target.parts)
            done = "/" if target.is_absolute() else done
            continue
        done = path
    return done


def host_view(job_path: str, views: list[tuple[str, str]]) -> str | None:
    """The host path behind a job path, or None if the job cannot see such a path."""
    job_path = os.path.normpath(job_path)
    for prefix, host_prefix in views:
        if under(job_path, prefix):
            return host_prefix + job_path[len(prefix) :]
    return None
