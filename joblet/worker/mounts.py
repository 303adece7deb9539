"""A job's /work: a size-capped tmpfs the worker mounts on the host before the job starts and
unmounts when it ends, so the kernel enforces the size and nothing a job leaves survives it."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
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
    """Delete a job's directories, detaching each mount met on the way (its /work tmpfs, its
    namespace's sysfs) instead of entering it; missing ones are success.

    A mount is told by its mount id (the kernel's, in /proc/self/fdinfo), so a bind mount of
    the same filesystem is one too. Nothing here reads the mount table: with hundreds of
    jobs it has thousands of lines, and reading it at every job's end made the ends of many
    jobs quadratic. What cannot be deleted stays for the worker's leftover sweep."""
    for path in dirs:
        path = Path(os.path.abspath(path))
        try:
            parent = _mount_id_of(str(path.parent))
        except FileNotFoundError:
            continue
        _remove(str(path), parent)


def _remove(path: str, parent_mount: int) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError:  # not a directory (or a symlink to one): the entry itself goes
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    try:
        if _mount_id(fd) != parent_mount:  # a mount point: detach, then what it covered
            os.close(fd)
            fd = -1
            _detach(path)
            _remove(path, parent_mount)
            return
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                _remove(f"{path}/{entry.name}", parent_mount)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.name, dir_fd=fd)
    finally:
        if fd >= 0:
            os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _detach(point: str) -> None:
    if _libc.umount2(point.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise ExecutionError(f"failed to unmount {point}: {os.strerror(err)}")


def _mount_id_of(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _mount_id(fd)
    finally:
        os.close(fd)


def _mount_id(fd: int) -> int:
    """The id of the mount that `fd` is on (/proc/self/fdinfo: `mnt_id`)."""
    with open(f"/proc/self/fdinfo/{fd}", "rb") as fh:
        for line in fh:
            if line.startswith(b"mnt_id:"):
                return int(line.split()[1])
    raise ExecutionError("this kernel shows no mnt_id in /proc/self/fdinfo")
