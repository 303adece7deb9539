"""A sized volume's image on the host, with mkfs and mount faked (the real ones: test_volumes)."""

from __future__ import annotations

from pathlib import Path

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
    broken[0] = False
    host.ensure(vol)  # the next job: made again, then mounted
    assert calls == ["mkfs.ext4", "mkfs.ext4", "mount"]
    assert (tmp_path / "volumes" / "data" / "image").stat().st_size == 1 << 20


def test_a_size_the_state_disk_cannot_hold_is_refused(tmp_path: Path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(volumes, "_run", lambda *argv: calls.append(argv[0]))
    host = volumes.HostVolumes(tmp_path)
    free = volumes.shutil.disk_usage(tmp_path).free >> 20
    with pytest.raises(ExecutionError, match=r"its size \(\d+ MB\) is more than this host's state disk has free"):
        host.ensure(VolumeDef(name="huge", size_mb=free + 1024))
    assert calls == [] and not (tmp_path / "volumes" / "huge" / "image").exists()
    host.ensure(VolumeDef(name="small", size_mb=1))  # the control: one that fits is made
    assert calls == ["mkfs.ext4", "mount"]
