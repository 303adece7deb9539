"""A job's mounts, in a mount namespace of its own: its /work (a size-capped tmpfs, so the
kernel enforces the size and nothing a job leaves survives it) and a new sysfs of its network
namespace, the host's in host mode (bwrap binds it read-only at the job's /sys: none of what
the host mounted under its own /sys).

Why a namespace per job and not mounts on the host: every bwrap copies the mount namespace it
starts in and detaches the old root again, ~43 us per mount here. With each running job's two
mounts on the host, a start with 300 others running cost +26 ms, and 500 jobs' starts grew
quadratically. Now the host holds none of them: the job's thread (worker/nsthread.py, which
spawns the sandbox from inside this namespace later) unshares a mount namespace, makes it a
slave of the host's (volumes mounted later still appear, nothing mounted here goes back),
mounts a sysfs of the job's network namespace (the thread is in it), mounts
/work, writes the uploads into it and keeps two descriptors: the namespace and /work (the
worker's lookups, its usage for `rnx stats`). When the job's processes and the descriptors
are gone, the kernel drops the namespace with its mounts.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Callable
from pathlib import Path

from joblet.errors import ExecutionError
from joblet.libc import libc as _libc
from joblet.network_agent.netns import Runner

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REC, MS_SLAVE = 0x4000, 0x80000
MNT_DETACH = 0x2
CLONE_NEWNS = 0x00020000


def mount_tmpfs(target: Path, size_bytes: int, mode: int = 0o755) -> None:
    """A private tmpfs of `size_bytes` at `target` (made if missing)."""
    target.mkdir(parents=True, exist_ok=True)
    options = f"size={size_bytes},mode={mode:o}".encode()
    if _libc.mount(b"joblet-work", str(target).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise ExecutionError(f"failed to mount /work of {size_bytes} bytes at {target}: {os.strerror(err)}")


class JobMounts:
    """One job's mount namespace and its /work, held by descriptors."""

    def __init__(self, fd: int, work_fd: int) -> None:
        self.fd = fd
        self.work_fd = work_fd

    @classmethod
    def create(
        cls,
        work_dir: Path,
        size_bytes: int,
        sys_dir: Path,
        fill: Callable[[Path], None],
        call: Runner,
    ) -> JobMounts:
        """The job's namespace with /work at `work_dir` (`fill` writes its files, from inside)
        and a sysfs at `sys_dir`; made by `call`, the job's thread
        (worker/nsthread.py), which keeps it and is in the job's network namespace already
        (the host's in host mode): that sysfs shows the job's own interfaces."""
        work_dir.mkdir(parents=True, exist_ok=True)
        sys_dir.mkdir(parents=True, exist_ok=True)

        def make() -> tuple[int, int]:
            _check(_libc.unshare(CLONE_NEWNS), "create a mount namespace")
            slave = _libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None)
            _check(slave, "make the job's mounts a slave of the host's")
            flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
            _check(_libc.mount(b"sysfs", str(sys_dir).encode(), b"sysfs", flags, None), f"mount sysfs at {sys_dir}")
            mount_tmpfs(work_dir, size_bytes)
            fill(work_dir)
            fd = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            try:
                return fd, os.open(work_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except BaseException:
                os.close(fd)
                raise

        return cls(*call(make))

    @property
    def work(self) -> str:
        """The job's /work as the worker's own paths reach it."""
        return f"/proc/self/fd/{self.work_fd}"

    def usage(self) -> tuple[int | None, int | None]:
        """(bytes used, size) of /work."""
        try:
            st = os.fstatvfs(self.work_fd)
        except OSError:  # ended meanwhile
            return None, None
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize

    def close(self) -> None:
        """Drop the descriptors; the kernel drops the mounts with the job's last process."""
        for name in ("work_fd", "fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)


def _check(result: int, what: str) -> None:
    if result != 0:
        raise ExecutionError(f"failed to {what}: {os.strerror(ctypes.get_errno())}")


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
