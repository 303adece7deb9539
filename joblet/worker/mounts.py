"""A job's mounts, in a mount namespace of its own: a small tmpfs of its own files at the
worker's `<run_dir>/job` (the same path in every job's namespace), holding its /work (a
size-capped tmpfs, so the kernel enforces the size and nothing a job leaves survives it), a
new sysfs of its network namespace (the host's in host mode: bwrap binds it read-only at the
job's /sys: none of what the host mounted under its own /sys) with the covers of what a job
must not read under /sys bound on it here (two system calls each, where bwrap's bind of each
cost ~0.15 ms of the start: it reads the whole mount table at each), and its hostname, hosts
and resolv.conf, which bwrap binds on the job's /etc, and the empty file and directory bound
over what a job must not see (`cover`: every cover is a line of the mount table bwrap reads
at each bind, twice those under /sys; on this tmpfs each reads shorter and cheaper than from
the host's disk: docs/PERFORMANCE_LOG.md, item 45).

Why a namespace per job and not mounts on the host: every bwrap copies the mount namespace it
starts in and detaches the old root again, ~43 us per mount here. With each running job's two
mounts on the host, a start with 300 others running cost +26 ms, and 500 jobs' starts grew
quadratically. Now the host holds none of them: the job's thread (worker/nsthread.py, which
spawns the sandbox from inside this namespace later) unshares a mount namespace, makes it a
slave of the host's (volumes mounted later still appear, nothing mounted here goes back),
mounts the tmpfs, the sysfs (the thread is in the job's network namespace) and /work, writes
the uploads into it and keeps three descriptors: the namespace, the tmpfs (the worker writes
the job's /etc files through it, /etc/hosts again as peers come and go) and /work (the
worker's lookups, its usage for `rnx stats`). When the job's processes and the descriptors
are gone, the kernel drops the namespace with its mounts.

Why the files are not on the host's filesystem (they were, in `<run_dir>/jobs/<id>`): a
directory made and removed per job costs each job's start and end on a disk filesystem
(docs/PERFORMANCE_LOG.md, item 23), and what a crashed worker left there needed a sweep; nothing
of a job is on the host's filesystem now.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from joblet.api.uploads import Upload
from joblet.errors import ExecutionError, ValidationError
from joblet.libc import libc as _libc
from joblet.network_agent.netns import Runner
from joblet.worker.mount_template import MountTemplate
from joblet.worker.sandbox import DEV_NODES, make_cover

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 0x20, 0x1000, 0x4000, 0x80000
MNT_DETACH = 0x2
CLONE_NEWNS = 0x00020000


def mount_tmpfs(target: Path, size_bytes: int, mode: int = 0o755) -> None:
    """A private tmpfs of `size_bytes` at `target` (made if missing)."""
    target.mkdir(parents=True, exist_ok=True)
    options = f"size={size_bytes},mode={mode:o}".encode()
    if _libc.mount(b"joblet-work", str(target).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise ExecutionError(f"failed to mount /work of {size_bytes} bytes at {target}: {os.strerror(err)}")


def cover(source: str, target: Path) -> None:
    """Bind `source` (an empty file or directory) read-only over `target`."""
    where = str(target).encode()
    _check(_libc.mount(source.encode(), where, None, MS_BIND, None), f"cover {target}")
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(_libc.mount(None, where, None, flags, None), f"make the cover of {target} read-only")


JOB_FILES_BYTES = 16 << 20  # the job's /etc files: /etc/hosts of a /16 network's jobs fits
JOB_MAX_PTYS = 64  # pseudo-terminals a job may hold at once (its devpts's max)


class JobMounts:
    """One job's mount namespace, its files and its /work, held by descriptors."""

    def __init__(self, fd: int, dir_fd: int, work_fd: int) -> None:
        self.fd = fd
        self.dir_fd = dir_fd
        self.work_fd = work_fd
        self._lock = threading.Lock()  # a write from discovery never meets a closed descriptor

    @classmethod
    def create(
        cls,
        job_dir: Path,
        size_bytes: int,
        fill: Callable[[Path], None],
        call: Runner,
        template: MountTemplate | None = None,
        sys_covers: list[tuple[str, str]] | None = None,
        reach: tuple[str, ...] = (),
    ) -> JobMounts:
        """The job's namespace with its files' tmpfs at `job_dir` (`work` and `sys` in it): a
        sysfs at `sys` and /work at `work` (`fill` writes its files, from inside); made by
        `call`, the job's thread (worker/nsthread.py), which keeps it and is in the job's
        network namespace already (the host's in host mode): that sysfs shows the job's own
        interfaces, with `sys_covers` (sandbox.sys_covers) bound read-only on it. A copy of
        `template` (worker/mount_template.py), which keeps what `reach` holds (the sources of
        the job's binds), else of the host's."""
        job_dir.mkdir(parents=True, exist_ok=True)  # once per worker: every job mounts on it
        for name in DEV_NODES:  # the host's /dev, looked at here: the template has none
            _host_device(name)

        def make() -> tuple[int, int, int]:
            if template is not None:
                template.enter(reach)  # its mounts are slaves of the host's already, and so are copies
            _check(_libc.unshare(CLONE_NEWNS), "create a mount namespace")
            if template is None:
                slave = _libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None)
                _check(slave, "make the job's mounts a slave of the host's")
            options = f"size={JOB_FILES_BYTES},mode=755".encode()
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
            _check(_libc.mount(b"joblet-job", str(job_dir).encode(), b"tmpfs", flags, options), "mount the job's files")
            make_cover(job_dir)  # what bwrap and `cover` bind over hidden paths (sandbox.Host's empty_*)
            make_dev(job_dir / "dev")
            work, sys_dir = job_dir / "work", job_dir / "sys"
            sys_dir.mkdir()
            _check(_libc.mount(b"sysfs", str(sys_dir).encode(), b"sysfs", flags | MS_RDONLY, None), "mount sysfs")
            for source, hidden in sys_covers or ():
                cover(source, sys_dir / os.path.relpath(hidden, "/sys"))
            mount_tmpfs(work, size_bytes)
            fill(work)
            fds: list[int] = []
            try:
                for path in ("/proc/thread-self/ns/mnt", job_dir, work):
                    fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            except BaseException:
                for fd in fds:
                    os.close(fd)
                raise
            return fds[0], fds[1], fds[2]

        return cls(*call(make))

    @property
    def work(self) -> str:
        """The job's /work as the worker's own paths reach it."""
        return f"/proc/self/fd/{self.work_fd}"

    @property
    def covers(self) -> str:
        """The directory of the empty file and directory bound over what a job must not see
        (make_cover), as the worker's own paths reach it."""
        return f"/proc/self/fd/{self.dir_fd}/cover"

    def write(self, name: str, text: str) -> bool:
        """One of the job's files, written in place (bwrap's bind of it shows the same
        inode); False when the job's mounts are gone."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        with self._lock:  # whole: two rewrites of /etc/hosts (the job's, the fleet's) never mix
            if self.dir_fd < 0:
                return False
            with open(os.open(name, flags, 0o644, dir_fd=self.dir_fd), "w") as fh:
                fh.write(text)
        return True

    def usage(self) -> tuple[int | None, int | None]:
        """(bytes used, size) of /work."""
        with self._lock:  # not a descriptor number closed and taken by another job meanwhile
            if self.work_fd < 0:
                return None, None
            try:
                st = os.fstatvfs(self.work_fd)
            except OSError:
                return None, None
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize

    def close(self) -> None:
        """Drop the descriptors; the kernel drops the mounts with the job's last process."""
        with self._lock:
            for name in ("work_fd", "dir_fd", "fd"):
                fd = getattr(self, name)
                if fd >= 0:
                    setattr(self, name, -1)
                    os.close(fd)


DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "core": "/proc/kcore",
    "ptmx": "pts/ptmx",
}


def make_dev(directory: Path) -> None:
    """The job's /dev, read-only, which bwrap binds whole: its own device nodes
    (sandbox.DEV_NODES) made as the host's are (type, number, mode, owner), a devpts
    instance of its own, bwrap's links, and `shm` for bwrap's sized tmpfs. bwrap's own
    `--dev` binds the host's nodes, and a root job chmodded and chowned the host's /dev/null
    through them; it also cost seven binds per start, each reading the mount table, where
    this is one (docs/PERFORMANCE_LOG.md, item 24)."""
    directory.mkdir()
    options = b"size=65536,mode=755"
    _check(_libc.mount(b"joblet-dev", str(directory).encode(), b"tmpfs", MS_NOSUID | MS_NOEXEC, options), "mount /dev")
    for name in DEV_NODES:
        rdev, uid, gid, mode = _host_device(name)
        node = directory / name
        os.mknod(node, stat.S_IFCHR | 0o600, rdev)
        os.chown(node, uid, gid)
        os.chmod(node, mode)
    for sub in ("pts", "shm"):
        (directory / sub).mkdir()
    # as bwrap's --dev mounts it, with a cap: every devpts instance draws on one pool for the
    # whole host (kernel.pty.max less pty.reserve), and a job took all 3,072 (red-team run)
    pts = b"newinstance,ptmxmode=0666,mode=620,max=%d" % JOB_MAX_PTYS
    _check(
        _libc.mount(b"devpts", str(directory / "pts").encode(), b"devpts", MS_NOSUID | MS_NOEXEC, pts), "mount devpts"
    )
    for name, target in DEV_LINKS.items():
        os.symlink(target, directory / name)
    read_only = MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC
    _check(_libc.mount(None, str(directory).encode(), None, read_only, options), "make /dev read-only")


@functools.cache
def _host_device(name: str) -> tuple[int, int, int, int]:
    """(number, owner, group, mode) of the host's /dev/NAME, looked at once per worker."""
    host = os.stat(f"/dev/{name}")
    if not stat.S_ISCHR(host.st_mode):
        raise ExecutionError(f"/dev/{name} of this host is not a character device")
    return host.st_rdev, host.st_uid, host.st_gid, stat.S_IMODE(host.st_mode)


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


def write_uploads(work_dir: Path, uploads: tuple[Upload, ...]) -> None:
    """The job's uploads under its /work, with their modes; none may escape it."""
    root = work_dir.resolve()
    for upload in uploads:
        target = (root / upload.path).resolve()
        if root not in target.parents:
            raise ValidationError(f"upload path {upload.path!r} escapes /work")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(upload.data)
        target.chmod(upload.mode)
