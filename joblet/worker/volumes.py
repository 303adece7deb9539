"""Volumes and runtimes on this host: where their files are and how a job gets them.

A volume without a size is a directory `<state_dir>/volumes/NAME/data`. With a size it is an
ext4 image `<state_dir>/volumes/NAME/image` loop-mounted once on the host at `.../data`; jobs
bind that mount, so concurrent jobs share one filesystem (never two mounts of one image).
A runtime is a directory `<runtimes_dir>/NAME` with a `bin/`, bound read-only at `/runtime` in
the job (names like `python:3.11-ml` hold a ':', which PATH cannot).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

from joblet.api.models import RUNTIME_RE
from joblet.api.volumes import VolumeDef, VolumeStore
from joblet.errors import ExecutionError, NotFound
from joblet.text import printable

log = logging.getLogger(__name__)
Bind = tuple[str, str, bool]  # host path, job path, read-only
RUNTIME_POINT = Path("/runtime")  # where a job sees its runtime (PATH cannot hold a ':')


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ExecutionError(f"{argv[0]} failed: {proc.stderr.strip() or proc.returncode}")


def is_mounted(path: Path) -> bool:
    """Whether `path` (canonical: mountinfo holds resolved paths) is a mount point; its
    field read unescaped (a blank is \\040 there)."""
    target = str(path)
    with open("/proc/self/mountinfo") as fh:
        return any(_unescaped(line.split()[4]) == target for line in fh)


def _unescaped(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field) if "\\" in field else field


def _plain(path: Path) -> str:
    if any(c.isspace() for c in str(path)):
        raise ExecutionError(f"path {path} contains blanks; joblet cannot mount it")
    return str(path)


ANY = object()  # HostVolumes.remove: whatever generation its data is
TRASH = ".deleting-"  # a removed volume's directory, set aside until deleted (no volume name starts with '.')


class HostVolumes:
    """The volumes of this host."""

    def __init__(self, state_dir: Path, keep_free_mb: int | None = None) -> None:
        # resolved: a state_dir through a symlink (/var/lib/joblet -> /data/joblet) never
        # matched mountinfo, and each start mounted a sized volume again (review)
        self.root = state_dir.resolve() / "volumes"
        self.keep_free_mb = keep_free_mb  # None: a twentieth of the state disk
        self._lock = threading.Lock()

    def data(self, name: str) -> Path:
        return self.root / name / "data"

    def generation(self, name: str) -> float | None:
        """The `created` of the definition this host's data of `name` was made for (None:
        made by an older worker, or none here)."""
        try:
            return float(json.loads((self.root / name / "created").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def ensure(self, vol: VolumeDef) -> Path:
        """The volume's data directory on this host, made (and mounted) on first use. A first
        use that fails leaves nothing of the volume here: a size the disk lacks left `created`
        and an empty `data`, as if the volume were made."""
        data = Path(_plain(self.data(vol.name)))  # before anything is made or mounted
        with self._lock:
            # root's alone: jobs are root and may leave setuid files in a volume, which a
            # local user reaching them would run as root (jobs see only the bind, not this)
            self.root.mkdir(parents=True, exist_ok=True)
            self.root.chmod(0o700)
            made = not os.path.lexists(self.root / vol.name)
            try:
                self._make(vol, data)
            except BaseException:
                if made and not is_mounted(data):  # new and shallow: no job has used it
                    shutil.rmtree(self.root / vol.name, ignore_errors=True)
                raise
        return data

    def _make(self, vol: VolumeDef, data: Path) -> None:
        """Check, then make what is missing: the data directory, its generation, the image
        and its mount."""
        self._check_form(vol, data)
        image = self.root / vol.name / "image"
        # never valid: what a worker killed while making the image left, whose blocks the
        # room check counted as used (the volume refused on this host for good: review)
        image.with_name("image.new").unlink(missing_ok=True)
        size = vol.size_mb if vol.size_mb is not None and not is_mounted(data) else None
        if size is not None and not image.exists():
            self._check_room(vol.name, size)  # before anything of the volume is written
        data.mkdir(parents=True, exist_ok=True)
        if self.generation(vol.name) != vol.created:  # new, an older worker's, or a name
            # defined again after Redis forgot it (a deleted generation was removed first);
            # whole or not at all: an empty file read as no generation (review)
            created = self.root / vol.name / "created"
            writing = created.with_name("created.new")
            writing.write_text(json.dumps(vol.created))
            writing.replace(created)
        if size is not None:
            if not image.exists():  # made under another name: a failed mkfs leaves no image
                self._make_image(vol.name, size, image)
            # noinit_itable: ext4's background init of the inode tables zeroes them through the
            # loop device, which punches holes in the image: 32 MB held 61,488 of its 65,536
            # blocks 6 s after its first mount (a CI run's failure), its reservation gone
            _run("mount", "-o", "loop,nodev,nosuid,noinit_itable", str(image), str(data))

    def room_mb(self) -> int:
        """MB a new sized volume may take on this host now (what the heartbeat tells, so
        `volume create` can warn of a size no node holds; usability run)."""
        free_mb, keep_mb = self._room()
        return max(0, free_mb - keep_mb)

    def _room(self) -> tuple[int, int]:
        """(MB free on the state disk, MB of it that stays free)."""
        disk = shutil.disk_usage(self.root if self.root.is_dir() else self.root.parent)
        keep_mb = self.keep_free_mb
        if keep_mb is None:
            keep_mb = (disk.total >> 20) // 20
        return disk.free >> 20, keep_mb

    def _check_room(self, name: str, size_mb: int) -> None:
        """Refuse a size past the state disk's free space less what stays free (the image
        takes its blocks at once). Without that margin one volume could take the whole disk,
        often `/`, and the host's own services fail their writes (review: any rnx user could)."""
        free_mb, keep_mb = self._room()
        if size_mb > free_mb - keep_mb:
            raise ExecutionError(
                f"volume {name}: its size ({size_mb} MB) is more than this host's state disk can give: "
                f"{free_mb} MB free at {self.root}, of which {keep_mb} MB stays free (volume_keep_free)"
            )

    def _make_image(self, name: str, size_mb: int, image: Path) -> None:
        making = image.with_name("image.new")  # that every later job fails to mount
        try:
            with open(os.open(making, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as fh:
                # its blocks reserved now, not sparse: two 50 GB volumes on 80 GB free were
                # both made, each promising 49 GB free (red-team run), and a full disk then
                # fails a volume's writes with I/O errors; mkfs must not punch them out again
                os.posix_fallocate(fh.fileno(), 0, size_mb * 1024 * 1024)
            _run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard", str(making))
            with open(making, "r+b") as fh:  # what mkfs punched out again (it zeroes by punching
                os.posix_fallocate(fh.fileno(), 0, size_mb * 1024 * 1024)  # holes on tmpfs)
            making.rename(image)
        except OSError as exc:
            raise ExecutionError(f"failed to make volume {name}'s image: {exc.strerror}") from None
        finally:
            making.unlink(missing_ok=True)  # what a failed mkfs wrote, not kept

    def _check_form(self, vol: VolumeDef, data: Path) -> None:
        """Refuse a definition this host's data of its name is not (a volume defined again
        otherwise after Redis lost its definition): without a size over an image, with a size
        over a directory holding files, another size than the image's. Mounted anyway, it hid
        the data or silently kept the image's size. Not grown: growing a mounted ext4 needs
        CAP_SYS_RESOURCE (not every host's root has it), and unmounting it first races the
        jobs that hold it."""
        image = self.root / vol.name / "image"
        held = image.stat().st_size >> 20 if image.exists() else None
        if held is not None and vol.size_mb is None:
            raise ExecutionError(
                f"volume {vol.name}: this host holds its data as a {held} MB image and its definition has "
                f"no size: define it again with --size={held}MB, or delete it to drop that data"
            )
        if held is None and vol.size_mb is not None and data.is_dir() and not is_mounted(data) and any(data.iterdir()):
            raise ExecutionError(
                f"volume {vol.name}: this host holds its data as a directory and its definition has a size: "
                "define it again without --size, or delete it to drop that data"
            )
        if held is not None and vol.size_mb is not None and vol.size_mb != held:
            raise ExecutionError(
                f"volume {vol.name}: this host holds its data as a {held} MB image and its definition asks "
                f"{vol.size_mb} MB: define it again with --size={held}MB, or delete it to drop that data"
            )

    def local(self) -> list[str]:
        """The volumes whose data is here (not what a removal set aside: TRASH)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(TRASH))

    def remove(self, name: str, if_generation: object = ANY) -> bool:
        """Unmount (if sized) and delete a volume's files here; a missing one is success.
        `if_generation`: only if its data is still that generation, read under the lock (a
        job on the volume defined again made its new data after the caller looked: two
        starts, or a start and the sweep, deleted it under the job: review); whether it went.
        Set aside under the lock in one rename, then deleted: a removal cut short (a killed
        worker, rm's timeout) left the data with no generation, which the volume defined
        again took over, the deleted files included (review). coreutils' rm, not
        shutil.rmtree: a job chooses the tree's depth, and rmtree recurses once per level (a
        job's 2,000 nested directories raised RecursionError); rm also stays on this
        filesystem."""
        with self._lock:
            if if_generation is not ANY and self.generation(name) != if_generation:
                return False
            data = self.data(name)
            if data.exists() and is_mounted(data):
                _run("umount", str(data))
            if not os.path.lexists(self.root / name):
                return True
            aside = self.root / f"{TRASH}{name}-{uuid.uuid4().hex[:8]}"
            (self.root / name).rename(aside)
        self._delete(aside)
        return True

    def drop_trash(self) -> None:
        """Delete what removals set aside and could not delete (a killed worker, a timeout)."""
        for path in self.root.glob(f"{TRASH}*") if self.root.is_dir() else []:
            self._delete(path)

    @staticmethod
    def _delete(path: Path) -> None:
        try:
            _run("rm", "-rf", "--one-file-system", "--", str(path))
        except (ExecutionError, subprocess.TimeoutExpired) as exc:  # set aside: the next sweep's
            log.warning("could not delete %s yet: %s", path, exc)

    def release_all(self) -> None:
        """Unmount every sized volume (worker shutdown); the data stays on disk. One that
        cannot be unmounted (busy) is logged, and the rest still go (review)."""
        for name in self.local():
            data = self.data(name)
            try:
                if is_mounted(data):
                    _run("umount", str(data))
            except (ExecutionError, subprocess.TimeoutExpired) as exc:
                log.warning("volume %s stays mounted: %s", name, exc)


# A runtime is bound whole into its jobs at /runtime: one that is the host's root, or holds
# or sits in what jobs must not see, gave them /etc/shadow, the volumes' data and Redis's
# socket (red-team run: an operator's `ln -s / <runtimes_dir>/hostroot`, offered and used).
HOST_ONLY = tuple(Path(p) for p in ("/etc", "/root", "/home", "/run", "/proc", "/sys", "/dev", "/boot"))


def exposes_host(path: Path, guarded: tuple[Path, ...] = ()) -> str | None:
    """Why binding `path` into a job would show it the host's own files (`guarded`: the
    worker's state and run directories too), or None."""
    real = path.resolve()
    for private in (*HOST_ONLY, *(g.resolve() for g in guarded)):
        if private.is_relative_to(real) or real.is_relative_to(private):
            return f"it is {real}, which {'holds' if private.is_relative_to(real) else 'is in'} {private}"
    return None


def runtimes(directory: Path, guarded: tuple[Path, ...] = ()) -> list[str]:
    """Names of the runtimes installed in `directory` (each a directory with a bin/), those
    `--runtime` can name: one it refuses (`bad name`) was offered by `rnx runtime list`. A
    directory left out is logged once (an operator could not tell why a runtime was missing)."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        why = None
        if not (path / "bin").is_dir():
            why = "it has no bin/ directory" if path.is_dir() else None  # a stray file: not meant as one
        elif not RUNTIME_RE.match(path.name):
            why = "--runtime cannot name it (letters, digits and . _ : + -, starting with a letter or digit)"
        elif (shown := exposes_host(path, guarded)) is not None:
            why = f"{shown}: jobs would see the host's own files"
        else:
            found.append(path.name)
        if why is not None and str(path) not in _told:
            _told.add(str(path))
            log.warning("runtime directory %s is not offered: %s", printable(str(path)), why)
    return sorted(found)


_told: set[str] = set()  # runtime directories whose leaving out was logged (each beat lists them)


def runtime_root(directory: Path, name: str, guarded: tuple[Path, ...] = ()) -> Path:
    root = directory / name
    if "/" in name or name in (".", "..") or not (root / "bin").is_dir():
        raise ExecutionError(f"runtime {name!r} is not installed on this host ({directory})")
    if (why := exposes_host(root, guarded)) is not None:
        raise ExecutionError(f"runtime {name!r} is not offered on this host: {why}")
    return Path(_plain(root))


def deleted_lineage(held: float | None, last: VolumeDef | None, was_deleted: bool = False) -> bool:
    """Whether data made for (or taken over by) the definition created at `held` was deleted:
    a definition of its name created then or later was (`last`: the last one deleted). Not
    only `held` itself: a host down through delete, create, delete kept the first data, and
    a Redis restarted empty had a definition made and deleted again before a job took the
    data over; either way the next volume of that name got the deleted files. `was_deleted`
    without `last`: one was, whose record does not read: taken for one made after `held`."""
    if held is None or (last is None and not was_deleted):
        return False
    return last is None or last.created >= held


class JobMounts:
    """What a job binds from this host: its volumes (made on first use) and its runtime."""

    def __init__(
        self, volumes: HostVolumes, store: VolumeStore, runtimes_dir: Path, guarded: tuple[Path, ...] = ()
    ) -> None:
        self.volumes = volumes
        self.store = store
        self.runtimes_dir = runtimes_dir
        self.guarded = guarded  # the worker's state and run dirs: no runtime may show them (exposes_host)
        # volume name: this host's jobs that bind its data now, and the generation each binds
        self._users: dict[str, dict[str, float | None]] = {}
        self._users_lock = threading.Lock()
        self._making: dict[str, threading.Lock] = {}  # volume name: its data's check, removal and making

    def binds_for(
        self, volume_names: tuple[str, ...], runtime: str | None, job_id: str
    ) -> tuple[list[Bind], str | None]:
        """(host path, job path, read-only) for each, and the PATH prefix a runtime adds. Each
        volume's data is this job's here until `leave` (its undo)."""
        binds: list[Bind] = []
        for name in volume_names:
            try:
                vol = self.store.use(name, job_id)  # counted among its users: VolumeStore.delete
            except NotFound:
                raise ExecutionError(f"volume {name!r} does not exist (any more)") from None
            with self._users_lock:
                making = self._making.setdefault(name, threading.Lock())
            # one job at a time per name: two jobs of a volume made again, starting together,
            # had the second refused for the first, which bound the new data (review)
            with making:
                held = self.volumes.generation(name)
                if held not in (None, vol.created) and self._deleted(name, held):  # not swept here yet
                    with self._users_lock:
                        users = self._users.get(name, {})
                        others = sorted(j for j, bound in users.items() if bound == held and j != job_id)
                    if others:  # Redis lost who used it: the delete went through; its data stays theirs
                        raise ExecutionError(
                            f"volume {name!r}: this host's data of the deleted volume of that name is in use by "
                            f"job(s) {', '.join(o[:12] for o in others)}: this job can run once they end"
                        )
                    self.volumes.remove(name, if_generation=held)
                data = self.volumes.ensure(vol)
                with self._users_lock:
                    self._users.setdefault(name, {})[job_id] = self.volumes.generation(name)
            binds.append((str(data), f"/volumes/{name}", False))
        if runtime is None:
            return binds, None
        root = runtime_root(self.runtimes_dir, runtime, self.guarded)
        return [*binds, (str(root), str(RUNTIME_POINT), True)], f"{RUNTIME_POINT}/bin"

    def leave(self, volume_names: tuple[str, ...], job_id: str) -> None:
        """The job no longer binds these volumes' data here, nor uses them in the fleet."""
        with self._users_lock:
            for name in volume_names:
                users = self._users.get(name, {})
                users.pop(job_id, None)
                if not users:
                    self._users.pop(name, None)
        self.store.leave(volume_names, job_id)

    def _deleted(self, name: str, held: float) -> bool:
        deleted = self.store.deleted()
        return deleted_lineage(held, deleted.get(name), name in deleted)

    def sweep(self, in_use: set[str]) -> list[str]:
        """Remove the data of deleted volumes that no local job uses; their names. Deleted is
        what `volume delete` named (`deleted_lineage`; for data an older worker made, any
        deleted definition while no volume has the name): a volume Redis does not know (it
        lost its data; another key prefix on this state_dir) keeps its data."""
        existing = {v.name: v.created for v in self.store.all()}
        deleted = self.store.deleted()
        gone = []
        for name in self.volumes.local():
            held, last = self.volumes.generation(name), deleted.get(name)
            if name in in_use or name not in deleted:  # never deleted
                continue
            if held is not None and existing.get(name) == held:  # the live definition's own data
                continue
            if deleted_lineage(held, last, True) or (held is None and name not in existing):
                gone.append((name, held))
        removed = []
        for name, held in gone:  # one that fails (busy) holds up no other (review)
            try:
                if self.volumes.remove(name, if_generation=held):
                    removed.append(name)
            except (ExecutionError, subprocess.TimeoutExpired, OSError) as exc:
                log.warning("could not remove deleted volume %s from this host yet: %s", name, exc)
        self.volumes.drop_trash()
        return removed
