"""The mount namespace every job's own is copied from: the host's, less the mounts no job uses.

Why: a job's start copies a mount namespace twice (its thread's unshare, then bwrap's), bwrap
reads the whole mount table at each of its binds and detaches every copied mount when it
pivots. On a host with containers, pods or snaps that is hundreds of mounts nothing in a job
reaches, ~55-70 us each per start (docs/PERFORMANCE_LOG.md, items 19 and 26). Detaching them per
job costs as much as it saves (each umount waits out an RCU grace period); detached once into
a template that jobs copy, they cost nothing per job.

What stays: every mount on the way to or under a path a job's start reaches (`keep`: /usr and
the system directories, /etc, the mounts of /proc, /sys and /dev but of those under them only
the jobs' cgroups, the worker's run and state directories with the volumes, the runtimes, the
extra read-only paths, the directories of the tools it runs; and a job's bind source beyond
them, from its start on: a runtime linked elsewhere after the worker started). The template is a slave of the
host's namespace, as each job's was: what the host mounts later under a kept mount still
appears where mounts propagate. Where they do not (a private mount, as Docker's bind of a
state directory), a change to the kept mounts drops the template: each start polls the
worker's mountinfo (POLLPRI on every change) before it enters, so a volume mounted on its
first use is in its job's copy. Between starts a watcher thread renews the template after
any change, at most every 2 s, outside the starts' lock: an unmounted volume is not held
alive by a stale template, and where mounts propagate a host's new mounts (a container's) do
not pile up in the template.

Sealed: the programs a job's start runs from the host (bwrap, whose init is the job's pid 1)
are bound read-only onto themselves in the template. A root job opened /proc/1/exe, the host's
/usr/bin/bwrap on its writable root, and its CAP_CHOWN and CAP_FOWNER made it set-id and
world-writable (red-team run: every later job failed, and any local user could have replaced
what the worker runs as root). Such a bind holds the file it was made on: a start whose
program was replaced since (a package upgrade renames a new one over it) makes the template
again, one stat of each per start.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable

from joblet.errors import ExecutionError
from joblet.libc import libc as _libc

log = logging.getLogger(__name__)

CLONE_FS, CLONE_NEWNS = 0x00000200, 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 0x1, 0x20, 0x1000, 0x4000, 0x80000
MNT_DETACH = 0x2
# statvfs's flag -> mount's, of the per-mount flags a read-only remount of a bind must give again
KEPT_FLAGS = {
    os.ST_NOSUID: 0x2,
    os.ST_NODEV: 0x4,
    os.ST_NOEXEC: 0x8,
    os.ST_NOATIME: 0x400,
    os.ST_NODIRATIME: 0x800,
    os.ST_RELATIME: 0x200000,  # not ST_RELATIME's value (0x1000 is MS_BIND)
}
RENEW_EVERY = 2.0  # seconds between two renewals of the template by the watcher


def mounts(mountinfo: str) -> list[tuple[str, str]]:
    """(mount id, mount point) of each line of a mountinfo text, in its order, the point's
    octal escapes decoded."""
    fields = (line.split(" ") for line in mountinfo.splitlines())
    return [(f[0], _unescape(f[4])) for f in fields if len(f) > 4]


def mount_points(mountinfo: str) -> list[str]:
    """The mount points of a mountinfo text, in its order."""
    return [point for _, point in mounts(mountinfo)]


def _unescape(field: str) -> str:
    raw = field.encode()
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i] == 0x5C and raw[i + 1 : i + 4].isdigit() and i + 4 <= len(raw):  # \040 is ' '
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode(errors="surrogateescape")


def trimmed(points: Iterable[str], keep: Iterable[str]) -> list[str]:
    """The topmost mount points neither on the way to nor under a kept path (detaching one
    detaches what is mounted under it), sorted."""
    kept = [_norm(k) for k in keep]
    drop = sorted({p for p in (_norm(p) for p in points) if not any(_related(p, k) for k in kept)})
    top: list[str] = []
    for point in drop:
        if not any(_within(point, t) for t in top):
            top.append(point)
    return top


def kept_mounts(mountinfo: str, keep: Iterable[str]) -> frozenset[tuple[str, str]]:
    """(mount id, mount point) of the mounts a template keeps: what it must be rebuilt for
    when they change."""
    kept = [_norm(k) for k in keep]
    named = ((mount_id, _norm(point)) for mount_id, point in mounts(mountinfo))
    return frozenset((mount_id, point) for mount_id, point in named if any(_related(point, k) for k in kept))


def _norm(path: str) -> str:
    return os.path.normpath(path) if path.startswith("/") else "/" + path


def _within(path: str, base: str) -> bool:
    return base == "/" or path == base or path.startswith(base + "/")


def _related(point: str, kept: str) -> bool:
    return _within(point, kept) or _within(kept, point)


class MountTemplate:
    """The trimmed copy of the host's mount namespace, held by a descriptor, made on demand."""

    def __init__(self, keep: Iterable[str], sealed: Iterable[str] = ()) -> None:
        paths = {os.path.abspath(p) for p in keep}
        self.keep = tuple(sorted(paths | {os.path.realpath(p) for p in paths}))
        self.sealed = tuple(sorted(set(sealed)))  # as a start names them: a link's target is looked at each time
        self._sealed: Files = ()  # the files the template's read-only binds hold
        self._lock = threading.Lock()
        self._fd = -1
        self._kept: frozenset[tuple[str, str]] = frozenset()  # the host's kept mounts it was built from
        self._version = 0  # counts the templates set or dropped under the lock (_renew's check)
        self._mountinfo = f"/proc/{os.getpid()}/mountinfo"  # the main thread's: the host's namespace
        # two descriptors, because a poll that reports a change consumes it for that descriptor
        self._changes = os.open(self._mountinfo, os.O_RDONLY | os.O_CLOEXEC)  # enter()'s, under the lock
        self._poller = select.poll()
        self._poller.register(self._changes, select.POLLPRI)
        self._watched = os.open(self._mountinfo, os.O_RDONLY | os.O_CLOEXEC)  # the watcher's
        self._closed = False
        self._closing = threading.Event()
        self.builds = 0
        self._count_lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="joblet-mount-template", daemon=True)
        self._watcher.start()

    def enter(self, reach: Iterable[str] = ()) -> None:
        """Move the calling thread into the template's namespace (a job's thread, before it
        unshares its own: its copy is then the template's). The thread must not share its
        filesystem attributes for that, so it stops sharing them first. A change to the host's
        kept mounts made before this call (a sized volume mounted for this very job) is in it:
        the check is here, not only in the watcher, whose poll may not have run yet. `reach`:
        paths this job binds (its runtime's, which may be a link made since the worker started
        to a filesystem the template left out): kept from now on, the template made again."""
        if _libc.unshare(CLONE_FS) != 0:
            raise ExecutionError(f"failed to unshare the thread's filesystem: {os.strerror(ctypes.get_errno())}")
        reached = [os.path.realpath(path) for path in reach]  # not under the lock: a hung mount stalls one start
        with self._lock:
            if self._closed:
                raise ExecutionError("the worker's mount template is closed")
            self._take(reached)
            if any(ev & select.POLLPRI for _, ev in self._poller.poll(0)):
                self._refresh()
            if self._fd >= 0 and files(self.sealed) != self._sealed:  # a program replaced
                self._drop()
            if self._fd < 0:
                self._kept = self._host_kept()  # before the copy: a change after it is seen next time
                self._fd, self._sealed = self._build()
                self._version += 1
            if _libc.setns(self._fd, CLONE_NEWNS) != 0:
                raise ExecutionError(f"failed to enter the jobs' mount template: {os.strerror(ctypes.get_errno())}")

    def _take(self, reached: list[str]) -> None:
        """Under the lock: keep the real paths `reached` beyond what is kept, and let the
        template go if that added anything."""
        new = {real for real in reached if not any(_within(real, k) for k in self.keep)}
        if new:
            self.keep = tuple(sorted({*self.keep, *new}))
            self._drop()

    def _host_kept(self) -> frozenset[tuple[str, str]]:
        with open(self._mountinfo) as fh:
            return kept_mounts(fh.read(), self.keep)

    def _refresh(self) -> None:
        """Under the lock, after the host's table changed: drop the template if a kept mount
        came, went or was replaced; a change elsewhere (a container's mounts) keeps it."""
        if self._fd >= 0 and self._host_kept() != self._kept:
            self._drop()

    def _drop(self) -> None:
        """Under the lock: let the template go; the next start makes another."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._version += 1

    def _build(self) -> tuple[int, Files]:
        """A new template, made by a short-lived thread (STYLE.md 7: a thread that switched
        namespaces ends), from the host's table as it is now; with the sealed files it holds."""
        result: list[tuple[int, Files] | BaseException] = []
        thread = threading.Thread(target=lambda: result.append(_capture(self._make)), name="joblet-template-build")
        thread.start()
        thread.join()
        if isinstance(result[0], BaseException):
            raise result[0]
        with self._count_lock:
            self.builds += 1
        return result[0]

    def _make(self) -> tuple[int, Files]:
        if _libc.unshare(CLONE_NEWNS) != 0:
            raise ExecutionError(f"failed to create the jobs' mount template: {os.strerror(ctypes.get_errno())}")
        if _libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None) != 0:
            raise ExecutionError(f"failed to make the mount template a slave: {os.strerror(ctypes.get_errno())}")
        with open("/proc/thread-self/mountinfo") as fh:
            drop = trimmed(mount_points(fh.read()), self.keep)
        for point in drop:
            # stacked mounts on one point: each umount detaches the top one; EINVAL at the bottom
            while _libc.umount2(point.encode(), MNT_DETACH) == 0:
                pass
        log.debug("mount template: %d mounts detached", len(drop))
        held = files(self.sealed)  # before the binds: what they hold
        for path in sorted({os.path.realpath(p) for p in self.sealed if os.path.exists(p)}):  # missing: none to seal
            _seal(path)
        return os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC), held

    def _watch(self) -> None:
        """After the host's table changes, between starts: a fresh template swapped in, at
        most every RENEW_EVERY seconds. Where the host's mounts propagate, its new ones (a
        container's) reach the template too and would pile up in every job's copy; and an
        unmounted volume is not held alive by a stale template."""
        poller = select.poll()
        poller.register(self._watched, select.POLLPRI)
        last = 0.0
        while not self._closing.is_set():
            if not any(ev & select.POLLPRI for _, ev in poller.poll(500)):
                continue
            if self._closing.wait(max(0.0, last + RENEW_EVERY - time.monotonic())):  # changes meanwhile: one renewal
                return
            last = time.monotonic()
            self._renew()

    def _renew(self) -> None:
        """A fresh template swapped in, unless a start set or dropped one meanwhile: built
        from the table before that start's, it could lack a volume the start mounted, whose
        next job then wrote into the empty directory under it, on the state disk (review).
        Any failure is logged and the watcher goes on: its thread ended on an OSError
        (EMFILE), and stale templates then kept unmounted volumes alive (review)."""
        with self._lock:
            version = self._version
        try:
            kept = self._host_kept()
            fd, held = self._build()
        except Exception as exc:  # noqa: BLE001 - the next job's start builds one itself
            log.warning("mount template: %s (the next job's start tries again)", exc)
            kept, fd, held = frozenset(), -1, ()
        with self._lock:
            if self._version != version:  # a start's own is newer: this one goes
                old = fd
            else:
                old, self._fd, self._kept, self._sealed = self._fd, fd, kept, held
                self._version += 1
        if old >= 0:
            os.close(old)  # jobs copied from it keep their copies

    def close(self) -> None:
        """Let the template go (tests, the bench); jobs copied from it keep their copies."""
        self._closed = True
        self._closing.set()
        self._watcher.join()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        for fd in (self._changes, self._watched):
            os.close(fd)


def _seal(path: str) -> None:
    """Bind `path` read-only onto itself. The remount replaces the bind's per-mount flags:
    those it had (nosuid, nodev, noexec, the atime ones) are given again, or the bind lost
    them, and in a user namespace, where they are locked, the remount failed (EPERM)."""
    found = os.statvfs(path).f_flag
    kept = sum(ms for st, ms in KEPT_FLAGS.items() if found & st)
    raw = path.encode()
    if _libc.mount(raw, raw, None, MS_BIND, None) != 0 or (
        _libc.mount(None, raw, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept, None) != 0
    ):
        why = os.strerror(ctypes.get_errno())
        raise ExecutionError(f"failed to bind {path} read-only in the jobs' mount template: {why}")


Files = tuple[tuple[int, int] | None, ...]  # (device, inode) of each path, None where missing


def files(paths: Iterable[str]) -> Files:
    """Which file each path names now (in the calling thread's namespace: the host's)."""
    found: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            found.append(None)
        else:
            found.append((st.st_dev, st.st_ino))
    return tuple(found)


def _capture(fn: Callable[[], tuple[int, Files]]) -> tuple[int, Files] | BaseException:
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
        return exc
