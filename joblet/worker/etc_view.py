"""The /etc that jobs see: a copy of the host's without its secrets, kept in step by a thread.

Why a copy and not the host's /etc with each secret covered by a bind mount (as before): a
mount sits on one file, and when the host replaces that file by renaming a new one over it (as
passwd, useradd, visudo and ssh-keygen do), the kernel lazily unmounts whatever was mounted on
the old file in every mount namespace. A running job then read the new /etc/shadow. What was
never copied cannot be uncovered: here a secret (a file, directory or link matching one of
the patterns) is an empty read-only file or directory of the same name.

One copy per worker, in its run directory; every job's bwrap binds it read-only at /etc (one
bind where each secret used to cost bwrap another: see docs/PERFORMANCE.md). A thread watches
every directory of the host's /etc (inotify) and, after any change, brings the copy in step:
files that changed are written beside their old copy and renamed over it, so a running job
reads either the old or the new file, as it would on the host. Three files are written in
place instead, never renamed: hosts, resolv.conf and hostname, on which bwrap mounts the job's
own (a rename would unmount them, as above); a host-mode job reads the host's through them.
Where inotify is refused (its watch limit), the copy is brought in step every few seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fnmatch
import logging
import os
import re
import select
import shutil
import stat
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)

NET_FILES = ("hosts", "resolv.conf", "hostname")  # bwrap mounts the job's own on these
FALLBACK_INTERVAL = 5.0  # seconds between syncs when inotify is refused
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
# modify, attrib, close_write, moved_from/to, create, delete, delete_self, move_self; onlydir, dont_follow
WATCH_MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x01000000 | 0x02000000
TEMP_PREFIX = ".joblet-sync-"
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class Secrets:
    """Which host paths are secrets: patterns (shell globs, matched against whole paths)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._match = re.compile("|".join(fnmatch.translate(p) for p in self.patterns) or "(?!)").match

    def __contains__(self, path: str) -> bool:
        return self._match(path) is not None


def sync(source: str, target: str, secrets: Secrets) -> int:
    """Bring `target` in step with `source` (a directory tree): returns how many entries
    changed. Secrets become empty placeholders, never read; sockets, FIFOs and devices are
    left out; the net files are written in place."""
    os.makedirs(target, exist_ok=True)
    _meta(os.stat(source), target)
    return _sync_dir(source, target, secrets, top=True)


def _sync_dir(src: str, dst: str, secrets: Secrets, top: bool = False) -> int:
    changed = 0
    wanted: set[str] = set()
    for entry in os.scandir(src):
        path, copy = entry.path, f"{dst}/{entry.name}"
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # gone meanwhile
            continue
        if top and entry.name in NET_FILES:
            changed += _net_file(path, copy)
        elif path in secrets:
            changed += _placeholder(copy, stat.S_ISDIR(st.st_mode))
        elif stat.S_ISDIR(st.st_mode):
            changed += _ensure_dir(copy, st)
            _meta(st, copy)
            changed += _sync_dir(path, copy, secrets)
        elif stat.S_ISLNK(st.st_mode):
            changed += _symlink(path, copy)
        elif stat.S_ISREG(st.st_mode):
            changed += _file(path, copy, st)
        else:
            continue  # a socket, FIFO or device: not part of a job's /etc
        wanted.add(entry.name)
    if top:
        for name in NET_FILES:
            if name not in wanted:
                changed += _net_file(f"{src}/{name}", f"{dst}/{name}")
                wanted.add(name)
    for entry in os.scandir(dst):
        if entry.name not in wanted:
            _remove(entry.path)
            changed += 1
    return changed


def _same_type(path: str, mode: int) -> bool:
    try:
        return stat.S_IFMT(os.lstat(path).st_mode) == stat.S_IFMT(mode)
    except FileNotFoundError:
        return False


def _ensure_dir(path: str, st: os.stat_result) -> int:
    """A directory at `path` (what else was there goes); 1 if it had to be made."""
    if _same_type(path, st.st_mode):
        return 0
    _remove(path)
    os.mkdir(path, 0o700)
    return 1


def _meta(st: os.stat_result, path: str) -> None:
    """Mode and owner of `st` on `path` (not a link), where they differ."""
    now = os.lstat(path)
    if (now.st_uid, now.st_gid) != (st.st_uid, st.st_gid):
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    if stat.S_IMODE(now.st_mode) != stat.S_IMODE(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))


def _file(src: str, dst: str, st: os.stat_result) -> int:
    try:
        now = os.lstat(dst)
        if stat.S_ISREG(now.st_mode) and _same_file(now, st):
            return 0
    except FileNotFoundError:
        pass
    temp = _temp(dst)
    try:
        shutil.copyfile(src, temp, follow_symlinks=False)
        _meta(st, temp)
        os.utime(temp, ns=(st.st_atime_ns, st.st_mtime_ns))
        _replace(temp, dst)
    except FileNotFoundError:  # the source went meanwhile: the next sync removes the copy
        _remove(temp)
        return 0
    except BaseException:
        _remove(temp)
        raise
    return 1


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_mode, a.st_uid, a.st_gid) == (
        b.st_size,
        b.st_mtime_ns,
        b.st_mode,
        b.st_uid,
        b.st_gid,
    )


def _symlink(src: str, dst: str) -> int:
    try:
        target = os.readlink(src)
    except FileNotFoundError:
        return 0
    with contextlib.suppress(OSError):
        if os.readlink(dst) == target:
            return 0
    temp = _temp(dst)
    _remove(temp)  # left by a sync that died
    os.symlink(target, temp)
    _replace(temp, dst)
    return 1


def _placeholder(dst: str, directory: bool) -> int:
    """An empty read-only directory or file, root's, standing for a secret."""
    mode = stat.S_IFDIR | 0o555 if directory else stat.S_IFREG | 0o444
    owner = (os.geteuid(), os.getegid())  # root's, in the worker
    try:
        now = os.lstat(dst)
        if now.st_mode == mode and (now.st_uid, now.st_gid) == owner:
            if not (os.listdir(dst) if directory else now.st_size):
                return 0
    except FileNotFoundError:
        pass
    _remove(dst)
    if directory:
        os.mkdir(dst, 0o555)
    else:
        os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    os.chmod(dst, stat.S_IMODE(mode))
    return 1


def _net_file(src: str, dst: str) -> int:
    """The host's content (a link followed, nothing if it leads nowhere) written into the
    same regular file, in place: jobs have their own mounted on it."""
    try:
        with open(src, "rb") as fh:
            data = fh.read()
    except OSError:
        data = b""
    if not _same_type(dst, stat.S_IFREG):
        _remove(dst)
    fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "r+b", closefd=False) as fh:
            if fh.read() == data:
                return 0
            fh.seek(0)
            fh.write(data)
            fh.truncate()
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    return 1


def _temp(dst: str) -> str:
    head, _, name = dst.rpartition("/")
    return f"{head}/{TEMP_PREFIX}{name}"


def _replace(temp: str, dst: str) -> None:
    try:
        os.rename(temp, dst)
    except IsADirectoryError:  # a directory stands there now: it goes first
        _remove(dst)
        os.rename(temp, dst)


def _remove(path: str) -> None:
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            for root, dirs, _ in os.walk(path):
                for d in dirs:  # placeholders are read-only: make them removable
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(root, d), 0o700)
            os.chmod(path, 0o700)
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


class EtcView:
    """The worker's copy of /etc for jobs, and the thread that keeps it in step."""

    def __init__(self, target: str, secrets: Secrets, source: str = "/etc") -> None:
        if os.path.commonpath([os.path.abspath(target), source]) == source:
            raise ValueError(f"the copy of {source} cannot be inside it: {target}")
        self.source, self.path, self.secrets = source, target, secrets
        self._inotify = -1
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread: threading.Thread | None = None
        self.syncs = 0

    def start(self) -> None:
        """Copy now (a failure here is the worker's to report), then keep in step."""
        self._watch()
        self.sync()
        self._thread = threading.Thread(target=self._loop, name="joblet-etc", daemon=True)
        self._thread.start()

    def sync(self) -> int:
        changed = sync(self.source, self.path, self.secrets)
        self.syncs += 1
        if self._inotify >= 0:
            self._watch_dirs()  # directories made since
        return changed

    def close(self) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join()
            self._thread = None
        for fd in (self._inotify, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._inotify = self._wake_r = self._wake_w = -1

    def _watch(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            self._refused(ctypes.get_errno())
            return
        self._inotify = fd
        self._watch_dirs()

    def _watch_dirs(self) -> None:
        for root, dirs, _ in os.walk(self.source):
            dirs[:] = [d for d in dirs if f"{root}/{d}" not in self.secrets]
            if _libc.inotify_add_watch(self._inotify, root.encode(), WATCH_MASK) < 0:
                err = ctypes.get_errno()
                if err in (errno.ENOENT, errno.ENOTDIR):  # gone meanwhile
                    continue
                os.close(self._inotify)
                self._inotify = -1
                self._refused(err)
                return

    def _refused(self, err: int) -> None:
        log.warning(
            "inotify refused (%s): jobs' /etc is brought in step with the host's every %.0f s",
            os.strerror(err),
            FALLBACK_INTERVAL,
        )

    def _loop(self) -> None:
        while True:
            fds = [self._wake_r] + ([self._inotify] if self._inotify >= 0 else [])
            timeout = None if self._inotify >= 0 else FALLBACK_INTERVAL
            ready, _, _ = select.select(fds, [], [], timeout)
            if self._wake_r in ready:
                return
            if self._inotify in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._inotify, 65536):
                        pass
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - keep the last copy, try again on the next change
                log.exception("failed to bring jobs' /etc in step with the host's")
