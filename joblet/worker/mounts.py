"""A job's /work: a size-capped tmpfs the worker mounts on the host before the job starts and
unmounts when it ends, so the kernel enforces the size and nothing a job leaves survives it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from pathlib import Path

from joblet.errors import ExecutionError

MS_NOSUID, MS_NODEV = 0x2, 0x4
MNT_DETACH = 0x2
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def mount_tmpfs(target: Path, size_bytes: int, mode: int = 0o755) -> None:
    """A private tmpfs of `size_bytes` at `target` (made if missing)."""
    target.mkdir(parents=True, exist_ok=True)
    options = f"size={size_bytes},mode={mode:o}".encode()
    if _libc.mount(b"joblet-work", str(target).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise ExecutionError(f"failed to mount /work of {size_bytes} bytes at {target}: {os.strerror(err)}")


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first. One search of the mount table first:
    with hundreds of jobs it has thousands of lines, and splitting each for every job's
    teardown took a good share of the worker's time."""
    base = str(path).rstrip("/").encode()
    with open("/proc/self/mountinfo", "rb") as fh:
        table = fh.read()
    if b" " + base not in table:
        return []
    points = [line.split()[4] for line in table.splitlines() if b" " + base in line]
    inside = {p.decode() for p in points if p == base or p.startswith(base + b"/")}
    return sorted(inside, key=len, reverse=True)


def unmount_all(path: Path) -> None:
    """Detach every mount at or below `path`; none is success."""
    for point in mounts_under(path):
        if _libc.umount2(point.encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (22, 2):  # EINVAL: not a mount point (any more); ENOENT: gone
                raise ExecutionError(f"failed to unmount {point}: {os.strerror(err)}")


def remove_dirs(dirs: list[Path]) -> None:
    """Unmount and delete a job's directories; missing ones are success."""
    for path in dirs:
        unmount_all(path)
        shutil.rmtree(path, ignore_errors=True)
