"""A sized volume's image on the host, with mkfs and mount faked (the real ones: test_volumes)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from joblet.api.volumes import VolumeDef
from joblet.errors import ExecutionError
from joblet.worker import volumes


def test_a_failed_mkfs_leaves_no_image_that_later_jobs_cannot_mount(tmp_path: Path, monkeypatch):
    calls: list[str] = []
    broken = [True]

    def run(*argv: str) -> None:
        calls.append(argv[0])
        if argv[0] == "mkfs.ext4" and broken[0]:
            raise ExecutionError("mkfs.ext4 failed: No space left on device")

    monkeypatch.setattr(volumes, "_run", run)
    host = volumes.HostVolumes(tmp_path)
    vol = VolumeDef(name="data", size_mb=1)
    with pytest.raises(ExecutionError, match="mkfs.ext4 failed"):
        host.ensure(vol)
    assert not (tmp_path / "volumes" / "data" / "image").exists()  # no half-made image taken for made
    assert not (tmp_path / "volumes" / "data" / "image.new").exists()  # nor its blocks kept
    assert not (tmp_path / "volumes" / "data").exists()  # nor the volume: its first use failed
    broken[0] = False
    host.ensure(vol)  # the next job: made again, then mounted
    assert calls == ["mkfs.ext4", "mkfs.ext4", "mount"]
    assert (tmp_path / "volumes" / "data" / "image").stat().st_size == 1 << 20


def test_a_size_the_state_disk_cannot_hold_is_refused(tmp_path: Path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(volumes, "_run", lambda *argv: calls.append(argv[0]))
    host = volumes.HostVolumes(tmp_path)
    free = volumes.shutil.disk_usage(tmp_path).free >> 20
    with pytest.raises(ExecutionError, match=r"its size \(\d+ MB\) is more than this host's state disk can give"):
        host.ensure(VolumeDef(name="huge", size_mb=free + 1024))
    assert calls == [] and not (tmp_path / "volumes" / "huge" / "image").exists()
    host.ensure(VolumeDef(name="small", size_mb=1))  # the control: one that fits is made
    assert calls == ["mkfs.ext4", "mount"]


def test_a_volume_may_not_take_the_last_free_space_of_the_state_disk(tmp_path: Path, monkeypatch):
    """The image's blocks are reserved at once: a size up to all the free space let any rnx user
    fill the state disk (often `/`) with one volume and one job. A margin stays free: a
    twentieth of the disk by default, or volume_keep_free MB."""
    calls: list[str] = []
    monkeypatch.setattr(volumes, "_run", lambda *argv: calls.append(argv[0]))
    disk = SimpleNamespace(free=40 << 20, total=400 << 20)  # 20 MB is a twentieth
    monkeypatch.setattr(volumes.shutil, "disk_usage", lambda path: disk)
    host = volumes.HostVolumes(tmp_path)
    with pytest.raises(ExecutionError, match=r"40 MB free at .*, of which 20 MB stays free \(volume_keep_free\)"):
        host.ensure(VolumeDef(name="most", size_mb=21))
    assert calls == [] and host.local() == []
    host.ensure(VolumeDef(name="fits", size_mb=20))  # the control: up to the margin, made
    assert calls == ["mkfs.ext4", "mount"]
    strict = volumes.HostVolumes(tmp_path, keep_free_mb=35)  # an operator's own margin
    with pytest.raises(ExecutionError, match="of which 35 MB stays free"):
        strict.ensure(VolumeDef(name="eight", size_mb=8))
    volumes.HostVolumes(tmp_path, keep_free_mb=0).ensure(VolumeDef(name="all", size_mb=40))  # none kept
    assert sorted(host.local()) == ["all", "fits"]


def test_a_size_the_disk_lacks_leaves_nothing_and_is_made_once_there_is_room(tmp_path: Path, monkeypatch):
    """The refusal came after the volume's `created` and `data` were written: they stayed, as
    if the volume had been made here. Nothing stays; once there is room the next job makes it."""
    calls: list[str] = []
    monkeypatch.setattr(volumes, "_run", lambda *argv: calls.append(argv[0]))
    free_mb = [100]
    monkeypatch.setattr(
        volumes.shutil, "disk_usage", lambda path: SimpleNamespace(free=free_mb[0] << 20, total=2000 << 20)
    )
    host = volumes.HostVolumes(tmp_path, keep_free_mb=0)
    vol = VolumeDef(name="big", size_mb=500, created=1.0)
    with pytest.raises(
        ExecutionError, match=r"its size \(500 MB\) is more than this host's state disk can give: 100 MB free"
    ):
        host.ensure(vol)
    assert calls == [] and host.local() == [] and not (tmp_path / "volumes" / "big").exists()
    free_mb[0] = 1000  # space freed
    assert host.ensure(vol) == tmp_path / "volumes" / "big" / "data"
    assert calls == ["mkfs.ext4", "mount"] and host.generation("big") == 1.0
    image = (tmp_path / "volumes" / "big" / "image").stat()
    assert image.st_size == 500 << 20 and image.st_blocks * 512 >= image.st_size  # reserved, not sparse


def test_blocks_mkfs_punches_out_are_reserved_again(tmp_path: Path, monkeypatch):
    """mkfs.ext4 zeroes by punching holes where the disk is tmpfs: a 300 MB volume held 274 MB
    there (red-team run), so its jobs' writes took the rest from the state disk later."""

    def run(*argv: str) -> None:
        if argv[0] == "mkfs.ext4":  # as a hole-punching mkfs leaves it: sparse
            os.truncate(argv[-1], 0)
            os.truncate(argv[-1], 8 << 20)

    monkeypatch.setattr(volumes, "_run", run)
    volumes.HostVolumes(tmp_path, keep_free_mb=0).ensure(VolumeDef(name="tight", size_mb=8))
    image = (tmp_path / "volumes" / "tight" / "image").stat()
    assert image.st_size == 8 << 20 and image.st_blocks * 512 >= image.st_size, image


def test_a_failure_on_a_volume_in_use_keeps_its_data(tmp_path: Path, monkeypatch):
    """The control: only a first use is undone; a later one that fails (its mount) keeps the data."""
    monkeypatch.setattr(volumes, "_run", lambda *argv: None)
    host = volumes.HostVolumes(tmp_path)
    vol = VolumeDef(name="kept", size_mb=8, created=1.0)
    host.ensure(vol)

    def mount_fails(*argv: str) -> None:
        raise ExecutionError("mount failed: no free loop device")

    monkeypatch.setattr(volumes, "_run", mount_fails)
    with pytest.raises(ExecutionError, match="no free loop device"):
        host.ensure(vol)
    assert (tmp_path / "volumes" / "kept" / "image").exists() and host.generation("kept") == 1.0


class Defs:
    """The fleet's volume definitions and deleted ones, in memory (a VolumeStore's part)."""

    def __init__(self) -> None:
        self.live: dict[str, VolumeDef] = {}
        self.gone: dict[str, VolumeDef | None] = {}

    def all(self) -> list[VolumeDef]:
        return list(self.live.values())

    def get(self, name: str) -> VolumeDef:
        return self.live[name]

    def use(self, name: str, job_id: str) -> VolumeDef:
        return self.live[name]

    def deleted(self) -> dict[str, VolumeDef | None]:
        return dict(self.gone)

    def delete(self, name: str) -> None:
        self.gone[name] = self.live.pop(name)

    def leave(self, names: tuple[str, ...], job_id: str) -> None: ...


def test_only_a_deleted_generation_of_a_volume_loses_its_data(tmp_path: Path):
    """A volume Redis does not know (it lost its data, or another key prefix shares this
    state_dir) keeps its data; `volume delete` of that generation removes it, and a volume
    made again under that name starts empty even where the sweep had not run."""
    defs, host = Defs(), volumes.HostVolumes(tmp_path)
    mounts = volumes.JobMounts(host, defs, tmp_path / "runtimes")  # type: ignore[arg-type]
    for name, created in (("kept", 1.0), ("forgotten", 2.0), ("old", 3.0)):
        defs.live[name] = VolumeDef(name=name, created=created)
        (Path(mounts.binds_for((name,), None, "j" * 32)[0][0][0]) / "f").write_text(name)
    (tmp_path / "volumes" / "legacy" / "data").mkdir(parents=True)  # an older worker's: no marker
    defs.live.pop("forgotten")  # Redis lost it: never deleted
    defs.delete("old")
    assert mounts.sweep(in_use=set()) == ["old"]
    assert sorted(host.local()) == ["forgotten", "kept", "legacy"]
    defs.gone["legacy"] = VolumeDef(name="legacy", created=9.0)  # deleted, and no volume has the name
    assert mounts.sweep(in_use={"legacy"}) == []  # a job still uses it
    assert mounts.sweep(in_use=set()) == ["legacy"]
    defs.live["kept"] = VolumeDef(name="kept", created=1.0)
    defs.delete("kept")
    defs.live["kept"] = VolumeDef(name="kept", created=5.0)  # made again before this host swept
    data = Path(mounts.binds_for(("kept",), None, "j" * 32)[0][0][0])
    assert list(data.iterdir()) == [] and host.generation("kept") == 5.0


def test_data_of_an_older_generation_goes_when_a_later_one_is_deleted(tmp_path: Path):
    """A host down through delete, create, delete of a name kept the first data (only the last
    deleted definition is recorded), and the next volume of that name got its files; so did
    a Redis restarted empty where the name was defined and deleted again."""
    defs, host = Defs(), volumes.HostVolumes(tmp_path)
    mounts = volumes.JobMounts(host, defs, tmp_path / "runtimes")  # type: ignore[arg-type]
    defs.live["v1"] = VolumeDef(name="v1", created=1.0)
    (Path(mounts.binds_for(("v1",), None, "j" * 32)[0][0][0]) / "secret").write_text("gen1")
    defs.delete("v1")  # this host is down from here
    defs.live["v1"] = VolumeDef(name="v1", created=2.0)
    defs.delete("v1")
    defs.live["v1"] = VolumeDef(name="v1", created=3.0)
    data = Path(mounts.binds_for(("v1",), None, "j" * 32)[0][0][0])  # back: a job of the new one
    assert list(data.iterdir()) == [] and host.generation("v1") == 3.0
    (data / "kept").write_text("gen3")
    assert mounts.sweep(in_use=set()) == []  # the control: the current one keeps its data
    defs.gone.clear()  # Redis restarted empty: the data stays, the name defined again takes it
    defs.live = {"v1": VolumeDef(name="v1", created=4.0)}
    assert mounts.sweep(in_use=set()) == [] and (data / "kept").exists()
    defs.delete("v1")  # defined and deleted before any job took the data over: it goes too
    assert mounts.sweep(in_use=set()) == ["v1"]


def test_a_deleted_volumes_data_a_job_here_still_binds_is_not_removed_under_it(tmp_path: Path):
    """Redis restarted empty lost who used a volume: its delete went through while a job here
    still ran on it, and the next job of the volume defined again removed that data under the
    running job (review). The next job is refused until the first has left."""
    defs, host = Defs(), volumes.HostVolumes(tmp_path)
    mounts = volumes.JobMounts(host, defs, tmp_path / "runtimes")  # type: ignore[arg-type]
    defs.live["v1"] = VolumeDef(name="v1", created=1.0)
    data = Path(mounts.binds_for(("v1",), None, "a" * 32)[0][0][0])
    (data / "work").write_text("job a's")
    defs.delete("v1")
    defs.live["v1"] = VolumeDef(name="v1", created=2.0)
    with pytest.raises(ExecutionError, match="in use by job\\(s\\) aaaaaaaaaaaa: this job can run once they end"):
        mounts.binds_for(("v1",), None, "b" * 32)
    assert (data / "work").read_text() == "job a's"
    mounts.leave(("v1",), "b" * 32)  # the refused job's undo
    mounts.leave(("v1",), "a" * 32)
    fresh = Path(mounts.binds_for(("v1",), None, "b" * 32)[0][0][0])  # the control: once a has left
    assert list(fresh.iterdir()) == [] and host.generation("v1") == 2.0


def test_two_jobs_of_a_volume_made_again_starting_together_both_start(tmp_path: Path, monkeypatch):
    """The first job of a volume made again removes the deleted one's data; a second starting
    meanwhile was counted among its users and refused "in use by" the first, which bound the
    new data, not the deleted (review). The data's check, removal and making are one job's
    at a time; only jobs bound to the deleted generation hold it (the test above)."""
    import threading
    import time

    defs, host = Defs(), volumes.HostVolumes(tmp_path)
    mounts = volumes.JobMounts(host, defs, tmp_path / "runtimes")  # type: ignore[arg-type]
    defs.live["v1"] = VolumeDef(name="v1", created=1.0)
    mounts.binds_for(("v1",), None, "a" * 32)
    mounts.leave(("v1",), "a" * 32)
    defs.delete("v1")
    defs.live["v1"] = VolumeDef(name="v1", created=2.0)
    slow_remove, inside = host.remove, threading.Event()

    def remove(name: str, **kw: object) -> bool:
        inside.set()
        time.sleep(0.3)  # the second job arrives meanwhile
        return slow_remove(name, **kw)

    monkeypatch.setattr(host, "remove", remove)
    errors: list[Exception] = []

    def start(job_id: str) -> None:
        try:
            mounts.binds_for(("v1",), None, job_id)
        except ExecutionError as exc:
            errors.append(exc)

    first = threading.Thread(target=start, args=("b" * 32,))
    first.start()
    assert inside.wait(5)  # b removes the deleted volume's data
    start("c" * 32)
    first.join()
    assert errors == [] and host.generation("v1") == 2.0
    assert mounts._users["v1"] == {"b" * 32: 2.0, "c" * 32: 2.0}


def test_runtimes_offered_are_those_runtime_can_name(tmp_path, caplog):
    """A runtime directory `bad name` was listed (rnx runtime list, completion, heartbeats)
    while --runtime refused its name."""
    from joblet.worker.volumes import runtimes

    for name in ("python:3.11-ml", "bad name", ".hidden"):
        (tmp_path / name / "bin").mkdir(parents=True)
    (tmp_path / "nobin").mkdir()
    (tmp_path / "README").write_text("not a runtime")
    with caplog.at_level("WARNING", logger="joblet.worker.volumes"):
        assert runtimes(tmp_path) == ["python:3.11-ml"]
        assert runtimes(tmp_path) == ["python:3.11-ml"]  # each heartbeat lists them: said once
    said = sorted(r.getMessage() for r in caplog.records)
    assert said == [
        f"runtime directory {tmp_path}/.hidden is not offered: --runtime cannot name it "
        "(letters, digits and . _ : + -, starting with a letter or digit)",
        f"runtime directory {tmp_path}/bad name is not offered: --runtime cannot name it "
        "(letters, digits and . _ : + -, starting with a letter or digit)",
        f"runtime directory {tmp_path}/nobin is not offered: it has no bin/ directory",
    ]


def test_a_deleted_record_that_does_not_read_takes_every_generation_but_the_live_one_for_deleted(tmp_path: Path):
    """Where a name's deleted record does not read (written by other means), when it was
    deleted is unknown: its data was never swept, and a volume made again got the old files.
    Now any data of that name but the live definition's is taken for deleted."""
    defs, host = Defs(), volumes.HostVolumes(tmp_path)
    mounts = volumes.JobMounts(host, defs, tmp_path / "runtimes")  # type: ignore[arg-type]
    for name in ("live", "gone", "again"):
        defs.live[name] = VolumeDef(name=name, created=1.0)
        (Path(mounts.binds_for((name,), None, "j" * 32)[0][0][0]) / "f").write_text(name)
        defs.gone[name] = None  # a record that does not read
    defs.live.pop("gone")
    defs.live["again"] = VolumeDef(name="again", created=2.0)  # made again before this host swept
    data = Path(mounts.binds_for(("again",), None, "j" * 32)[0][0][0])
    assert list(data.iterdir()) == [] and host.generation("again") == 2.0
    assert mounts.sweep(in_use=set()) == ["gone"]
    live = Path(mounts.binds_for(("live",), None, "j" * 32)[0][0][0])
    assert (live / "f").read_text() == "live"  # the control: the live definition's own data stays


def test_a_runtime_that_shows_jobs_the_hosts_own_files_is_not_offered(tmp_path):
    """`ln -s / <runtimes_dir>/hostroot` was offered, and a job read /etc/shadow, other
    volumes' data and Redis's socket through /runtime (red-team run)."""
    from joblet.errors import ExecutionError
    from joblet.worker.volumes import exposes_host, runtime_root, runtimes

    rts, state = tmp_path / "runtimes", tmp_path / "state"
    (rts / "python:3.11" / "bin").mkdir(parents=True)  # the control: a runtime of its own
    (state / "volumes" / "bin").mkdir(parents=True)
    (rts / "hostroot").symlink_to("/")
    (rts / "mystate").symlink_to(state / "volumes")
    assert runtimes(rts, (state,)) == ["python:3.11"]
    assert exposes_host(rts / "hostroot") == "it is /, which holds /etc"
    assert exposes_host(Path("/run/x")) == "it is /run/x, which is in /run" and exposes_host(Path("/usr")) is None
    with pytest.raises(ExecutionError, match="runtime 'hostroot' is not offered on this host: it is /, which holds"):
        runtime_root(rts, "hostroot")
    assert runtime_root(rts, "python:3.11", (state,)) == rts / "python:3.11"


def test_data_made_after_a_removal_was_decided_is_not_removed(tmp_path: Path):
    """A start (or the sweep) read the old generation, then another start on the volume defined
    again removed it and made the new data, and the first one removed that too, under the
    job using it (review). Removal happens only if the generation is still the one read."""
    host = volumes.HostVolumes(tmp_path)
    old = host.ensure(VolumeDef(name="v", created=1.0))
    (old / "f").write_text("gen1")
    seen = host.generation("v")  # read by a start, or the sweep
    assert host.remove("v", if_generation=seen) is True  # the other start: removed ...
    new = host.ensure(VolumeDef(name="v", created=2.0))  # ... and made anew
    (new / "g").write_text("gen2")
    assert host.remove("v", if_generation=seen) is False  # the late one: kept
    assert (new / "g").read_text() == "gen2" and host.local() == ["v"]
    assert host.remove("v", if_generation=2.0) is True and host.local() == []  # the control


def test_a_removal_cut_short_leaves_no_data_the_name_defined_again_takes_over(tmp_path: Path, monkeypatch):
    """rm removed `created` before a large `data/`, then was killed (or timed out): the data
    had no generation, and the volume defined again wrote its own over it, deleted files
    included (review). Removal sets the directory aside in one rename, then deletes it; what
    is left aside is deleted by the next sweep and is no volume meanwhile."""
    host = volumes.HostVolumes(tmp_path)
    (host.ensure(VolumeDef(name="v", created=1.0)) / "secret").write_text("gen1")

    def killed(*argv: str) -> None:
        raise volumes.subprocess.TimeoutExpired(argv, 120)

    real = volumes._run
    monkeypatch.setattr(volumes, "_run", killed)
    assert host.remove("v") is True
    assert host.local() == [] and len(list((tmp_path / "volumes").glob(".deleting-v-*"))) == 1
    assert list(host.ensure(VolumeDef(name="v", created=2.0)).iterdir()) == []  # defined again: empty
    monkeypatch.setattr(volumes, "_run", real)
    host.drop_trash()
    assert list((tmp_path / "volumes").glob(".deleting-*")) == [] and host.local() == ["v"]


def test_an_image_a_killed_worker_was_making_is_not_counted_against_the_room(tmp_path: Path, monkeypatch):
    """A worker killed during fallocate or mkfs left `created`, `data` and a whole `image.new`;
    the next start's room check counted its blocks as used, and the volume was refused on
    this host for good (review)."""
    calls: list[str] = []
    monkeypatch.setattr(volumes, "_run", lambda *argv: calls.append(argv[0]))
    host = volumes.HostVolumes(tmp_path, keep_free_mb=0)
    vol = VolumeDef(name="v", size_mb=8, created=1.0)
    home = tmp_path / "volumes" / "v"
    (home / "data").mkdir(parents=True)
    (home / "created").write_text("1.0")
    (home / "image.new").write_bytes(b"\0" * 4096)  # what the killed one was making
    seen: list[bool] = []
    real_usage = volumes.shutil.disk_usage
    monkeypatch.setattr(
        volumes.shutil, "disk_usage", lambda path: seen.append((home / "image.new").exists()) or real_usage(path)
    )
    host.ensure(vol)
    assert seen == [False] and calls == ["mkfs.ext4", "mount"]  # gone before the room was read
    assert (home / "image").stat().st_size == 8 << 20 and not (home / "image.new").exists()


def test_a_state_dir_through_a_symlink_reads_its_mounts(tmp_path: Path):
    """mountinfo holds resolved paths, escaped: a state_dir through a symlink (or with a blank)
    never matched, and every start mounted a sized volume again (review)."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    host = volumes.HostVolumes(tmp_path / "link")
    assert host.root == real / "volumes"
    assert volumes._unescaped(r"/srv/joblet\040state/volumes/v/data") == "/srv/joblet state/volumes/v/data"
    assert volumes.is_mounted(Path("/proc")) and not volumes.is_mounted(real)  # the control
    blank = volumes.HostVolumes(tmp_path / "with blank")
    with pytest.raises(ExecutionError, match="contains blanks"):
        blank.ensure(VolumeDef(name="v", created=1.0))
    assert not (tmp_path / "with blank").exists()  # refused before anything was made
