"""The /etc that jobs see: a copy of the host's without its secrets, kept in step by a thread.

Why a copy and not the host's /etc with each secret covered by a bind mount (as before): a
mount sits on one file, and when the host replaces that file by renaming a new one over it (as
passwd, useradd, visudo and ssh-keygen do), the kernel lazily unmounts whatever was mounted on
the old file in every mount namespace. A running job then read the new /etc/shadow. What was
never copied cannot be uncovered: here a secret (a file, directory or link matching one of
the patterns) is an empty read-only file or directory of the same name, and so is what the
host lets only its owner and group read (no read bit for others on a file, no search bit on
a directory): a job is root with CAP_DAC_OVERRIDE, so modes alone would not keep it out.

One copy per worker, in its run directory; every job's bwrap binds it read-only at /etc (one
bind where each secret used to cost bwrap another: see docs/PERFORMANCE_LOG.md). A thread watches
every directory of the host's /etc (inotify) and, after any change, brings the copy in step:
files that changed are written beside their old copy and renamed over it, so a running job
reads either the old or the new file, as it would on the host. Three files are written in
place instead, never renamed: hosts, resolv.conf and hostname, on which bwrap mounts the job's
own (a rename would unmount them, as above); a host-mode job reads the host's through them.
Where inotify is refused (its watch limit) or an entry could not be copied: every few seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import glob
import logging
import os
import re
import select
import shutil
import stat
import threading
from collections.abc import Callable, Iterable

from joblet.libc import libc as _libc

log = logging.getLogger(__name__)

NET_FILES = ("hosts", "resolv.conf", "hostname")  # bwrap mounts the job's own on these
FALLBACK_INTERVAL = 5.0  # seconds between syncs when inotify is refused
# modify, attrib, close_write, moved_from/to, create, delete, delete_self, move_self; onlydir, dont_follow
WATCH_MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x01000000 | 0x02000000
TEMP_PREFIX = ".joblet-sync-"


class Secrets:
    """Which host paths are secrets: patterns (shell globs over whole paths; `*` also spans
    `/`). A path is one too when its name, stripped of what tools put around the file they
    write before renaming it over the old one (`.#shadowXXXXXX` of systemd-sysusers,
    `.shadow.swp` of an editor, `shadow.new`, `shadow~`), matches."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(_forms(patterns))
        self._match = re.compile("|".join(fnmatch.translate(p) for p in self.patterns) or "(?!)").match

    def __contains__(self, path: str) -> bool:
        head, _, name = path.rpartition("/")
        return any(self._match(f"{head}/{n}") is not None for n in _undecorated(name))


def _forms(patterns: Iterable[str]) -> Iterable[str]:
    """Each pattern as written (normalised: `/etc/ssl/private/` is `/etc/ssl/private`) and
    with the directories before its first wildcard resolved, where they are links."""
    for pattern in patterns:
        pattern = os.path.normpath(os.path.abspath(pattern)) if pattern else pattern
        yield pattern
        cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
        head = pattern[:cut].rpartition("/")[0]
        if head and os.path.realpath(head) != head:
            yield os.path.realpath(head) + pattern[len(head) :]


def _undecorated(name: str) -> set[str]:
    names = {name}
    for prefix in (".#", "."):
        names |= {n[len(prefix) :] for n in names if n.startswith(prefix) and len(n) > len(prefix)}
    for suffix in ("~", ".swp", ".swx", ".new", ".tmp", ".bak", ".old", ".lock", ".edit"):
        names |= {n[: -len(suffix)] for n in names if n.endswith(suffix) and len(n) > len(suffix)}
    return names


def sync(source: str, target: str, secrets: Secrets) -> int:
    """Copy `source` to `target` once (bench and tests; EtcView keeps one Copier)."""
    copier = Copier(secrets)
    changed = copier.sync(source, target)
    if copier.errors:
        raise OSError(copier.errors[0])
    return changed


class Copier:
    """Brings a copy in step with a directory tree, remembering what it copied (a file is
    copied again when its inode, ctime, size or mtime differs: a rewrite of the same size
    that keeps its mtime, as `cp -p` or dpkg do, still changes the ctime)."""

    def __init__(self, secrets: Secrets, on_dir: Callable[[str], None] | None = None) -> None:
        self.secrets = secrets
        self.on_dir = on_dir  # called with each source directory before it is read (a watch)
        self.seen: dict[str, tuple[int, int, int, int]] = {}  # source file -> (inode, ctime, size, mtime) copied
        self._visited: set[str] = set()
        self.errors: list[str] = []  # of the last sync: what it could not copy
        # the secrets that are links (the last sync's): the link's placeholder hid the link,
        # not its target, read at its own path in /usr or /etc (red-team run); where each
        # leads is read before each job (sandbox.survey: a link outside /etc changes unseen)
        self.secret_links: tuple[str, ...] = ()
        self._links: set[str] = set()
        self._reached: set[str] = set()  # the real paths the patterns reach through links (sync)

    def sync(self, source: str, target: str) -> int:
        """Bring `target` in step with `source`: returns how many entries changed. Secrets,
        files others may not read and directories others may not enter become empty
        placeholders, never read; sockets, FIFOs and devices are left out; the
        net files are written in place. What fails is noted in `errors` and skipped."""
        self.errors, self._visited, self._links = [], set(), set()
        # a pattern read through a link on its way (`/etc/app*/conf/key` where conf is a link,
        # a directory swapped for a link since the worker started) matched no path the walk
        # meets, and the file was copied in the clear (red-team run): globbed at each sync,
        # following links, what each match really is is a secret too
        self._reached = {os.path.realpath(m) for pattern in self.secrets.patterns for m in glob.glob(pattern)}
        os.makedirs(target, exist_ok=True)
        _meta(os.stat(source), target)
        changed = self._dir(source, target, top=True)
        self.seen = {path: key for path, key in self.seen.items() if path in self._visited}
        self.secret_links = tuple(sorted(self._links))
        return changed

    def _dir(self, src: str, dst: str, top: bool = False) -> int:
        if self.on_dir is not None:
            self.on_dir(src)
        changed = 0
        wanted: set[str] = set()
        with os.scandir(src) as entries:
            for entry in entries:
                try:
                    changed += self._entry(entry, f"{dst}/{entry.name}", top)
                except FileNotFoundError:  # gone meanwhile: the next sync removes its copy
                    continue
                except OSError as exc:
                    self.errors.append(f"{entry.path}: {exc.strerror or exc}")
                wanted.add(entry.name)
        if top:
            for name in NET_FILES:
                if name not in wanted:
                    changed += _net_file(f"{src}/{name}", f"{dst}/{name}", self.secrets)
                    wanted.add(name)
        with os.scandir(dst) as copies:
            gone = [c.path for c in copies if c.name not in wanted]
        for path in gone:
            _remove(path)
        return changed + len(gone)

    def _entry(self, entry: os.DirEntry[str], copy: str, top: bool) -> int:
        """Copy one entry; raises FileNotFoundError for one that went meanwhile."""
        st = entry.stat(follow_symlinks=False)
        if top and entry.name in NET_FILES:
            return _net_file(entry.path, copy, self.secrets)
        if entry.path in self.secrets or entry.path in self._reached or _private(st):
            if stat.S_ISLNK(st.st_mode):  # a placeholder for the link; its target is covered (sandbox.survey)
                self._links.add(entry.path)
            return _placeholder(copy, stat.S_ISDIR(st.st_mode))
        if stat.S_ISDIR(st.st_mode):
            changed = _ensure_dir(copy)
            _meta(st, copy)
            return changed + self._dir(entry.path, copy)
        if stat.S_ISLNK(st.st_mode):
            return _symlink(entry.path, copy)
        if stat.S_ISREG(st.st_mode):
            return self._file(entry.path, copy, st)
        raise FileNotFoundError  # a socket, FIFO or device: not part of a job's /etc

    def _file(self, src: str, dst: str, st: os.stat_result) -> int:
        key = (st.st_ino, st.st_ctime_ns, st.st_size, st.st_mtime_ns)
        self._visited.add(src)
        if self.seen.get(src) == key and _same_type(dst, stat.S_IFREG):
            return 0
        _copy_file(src, dst, st)
        self.seen[src] = key
        return 1


def _private(st: os.stat_result) -> bool:
    """A file others may not read, or a directory others may not enter: on the host only its
    owner and group see it (shadow's mode, a keytab's, a connection file with a Wi-Fi key,
    a tool's temporary copy of one), so a job, root with CAP_DAC_OVERRIDE, sees it empty."""
    if stat.S_ISDIR(st.st_mode):
        return not st.st_mode & stat.S_IXOTH
    return stat.S_ISREG(st.st_mode) and not st.st_mode & stat.S_IROTH


def _same_type(path: str, mode: int) -> bool:
    try:
        return stat.S_IFMT(os.lstat(path).st_mode) == stat.S_IFMT(mode)
    except FileNotFoundError:
        return False


def _ensure_dir(path: str) -> int:
    """A directory at `path` (what else was there goes); 1 if it had to be made."""
    if _same_type(path, stat.S_IFDIR):
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


def _copy_file(src: str, dst: str, st: os.stat_result) -> None:
    """`src` copied beside `dst` and renamed over it. The new file is made 0600, never
    through a link, and gets its owner and mode before the rename: no job reads a file of
    root's 0600 while it is being copied."""
    temp = _temp(dst)
    _remove(temp)  # left by a sync that died
    out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            source = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                now = os.fstat(source)
                if not stat.S_ISREG(now.st_mode) or now.st_ino != st.st_ino or _private(now):
                    raise FileNotFoundError(src)  # replaced or made private meanwhile: the next pass
                _copy_content(source, out)
            finally:
                os.close(source)
            os.fchown(out, now.st_uid, now.st_gid)  # as it was when opened, not when listed
            os.fchmod(out, stat.S_IMODE(now.st_mode))
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
        _replace(temp, dst)
    except BaseException:
        _remove(temp)
        raise


def _copy_content(src: int, dst: int) -> None:
    while os.sendfile(dst, src, None, 1 << 20):
        pass


def _symlink(src: str, dst: str) -> int:
    target = os.readlink(src)
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


def _net_file(src: str, dst: str, secrets: Secrets) -> int:
    """The host's content (a link followed, nothing if it leads nowhere or to a secret)
    written into the same regular file, in place: jobs have their own mounted on it."""
    data = b""
    if src not in secrets and os.path.realpath(src) not in secrets:
        with contextlib.suppress(OSError), open(src, "rb") as fh:
            if not _private(os.fstat(fh.fileno())):
                data = fh.read()
    if not _same_type(dst, stat.S_IFREG):
        _remove(dst)
    fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
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
    """A file, link or tree of the copy gone (never anything a link in it points to)."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
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
        self.source, self.path = source, target
        self.copier = Copier(secrets, on_dir=self._watch)
        self._inotify = -1
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Copy now (a failure here is the worker's to report), then keep in step."""
        try:
            self._inotify = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)  # inotify's flags are these
            if self._inotify < 0:
                self._refused(ctypes.get_errno())
            self.sync()
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._loop, name="joblet-etc", daemon=True)
        self._thread.start()

    def sync(self) -> int:
        """One pass; each directory is watched before it is read, so a change made during the
        pass, even in a directory new since the last one, is an event that asks for the next."""
        for name in NET_FILES:  # a link out of /etc (systemd-resolved's stub): its directory too
            target = os.path.dirname(os.path.realpath(f"{self.source}/{name}"))
            if os.path.commonpath([target, self.source]) != self.source:
                self._watch(target)
        changed = self.copier.sync(self.source, self.path)
        if self.copier.errors:
            log.warning(
                "jobs' /etc lacks %d of the host's entries (%s); trying again in %.0f s",
                len(self.copier.errors),
                self.copier.errors[0],
                FALLBACK_INTERVAL,
            )
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

    def _watch(self, path: str) -> None:
        if self._inotify < 0 or _libc.inotify_add_watch(self._inotify, path.encode(), WATCH_MASK) >= 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOENT, errno.ENOTDIR):  # not gone meanwhile: the limit, say
            os.close(self._inotify)
            self._inotify = -1
            self._refused(err)

    def _refused(self, err: int) -> None:
        log.warning(
            "inotify refused (%s): jobs' /etc is brought in step with the host's every %.0f s",
            os.strerror(err),
            FALLBACK_INTERVAL,
        )

    def _loop(self) -> None:
        while True:
            fds = [self._wake_r] + ([self._inotify] if self._inotify >= 0 else [])
            polling = self._inotify < 0 or bool(self.copier.errors)
            ready, _, _ = select.select(fds, [], [], FALLBACK_INTERVAL if polling else None)
            if self._wake_r in ready:
                return
            if self._inotify in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._inotify, 65536):
                        pass
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - keep the last copy, try again soon
                log.exception("failed to bring jobs' /etc in step with the host's")
                self.copier.errors = [str(exc)]
