"""A job's mounts on the real kernel: they live in the job's own mount namespace, never in
the host's table; and its directories are removed without ever entering a mount
(mounts.remove_dirs): tmpfs, stacked and bind mounts under them are detached, what they
showed stays."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from joblet.worker.mounts import mount_tmpfs, remove_dirs
from tests.conftest import mounts_under
from tests.integration.helpers import wait_running


@pytest.fixture
def tmp(mount_dir: Path) -> Path:
    return mount_dir


def test_a_job_tree_goes_and_what_its_mounts_showed_stays(tmp: Path) -> None:
    keep = tmp / "keep"  # a host directory bound into the job's tree (same filesystem)
    keep.mkdir()
    (keep / "precious").write_text("x")
    outside = tmp / "outside"
    outside.write_text("y")

    job = tmp / "job"
    (job / "run" / "sub" / "deeper").mkdir(parents=True)
    (job / "run" / "sub" / "deeper" / "file").write_text("z")
    (job / "run" / "link").symlink_to(outside)
    (job / "run" / "dirlink").symlink_to(keep)
    mount_tmpfs(job / "work", 1 << 20)
    (job / "work" / "data").write_text("job data")
    mount_tmpfs(job / "stack", 1 << 20)
    mount_tmpfs(job / "stack", 1 << 20)  # one mount over another
    (job / "bind").mkdir()
    subprocess.run(["mount", "--bind", str(keep), str(job / "bind")], check=True)
    # positive controls: the mounts are there and show what they hold
    assert len(mounts_under(job)) == 4
    assert (job / "bind" / "precious").read_text() == "x"
    assert (job / "work" / "data").exists()

    remove_dirs([job, tmp / "missing"])

    assert not job.exists()
    assert mounts_under(tmp) == []
    assert (keep / "precious").read_text() == "x"  # not deleted through the bind
    assert outside.read_text() == "y"  # nor through a symlink


def test_a_tree_that_is_a_mount_itself_is_detached(tmp: Path) -> None:
    work = tmp / "work"
    mount_tmpfs(work, 1 << 20)
    (work / "f").write_text("x")
    assert mounts_under(tmp) == [str(work)]
    remove_dirs([work])
    assert not work.exists() and mounts_under(tmp) == []


def test_a_running_jobs_mounts_are_its_own_not_the_hosts(client, host) -> None:
    job = client.run("sh", ("-c", "echo x > /work/f; sleep 60"), network="bridge")
    wait_running(client, job.id)
    try:
        group = Path(host.env["JOBLET_CGROUP_ROOT"]) / job.id / "cgroup.procs"
        mine = ""
        deadline = time.monotonic() + 10
        while "/work" not in mine:  # positive control: the job has its /work tmpfs and sysfs
            assert time.monotonic() < deadline, mine
            mine = "".join(read_text(f"/proc/{pid}/mountinfo") for pid in group.read_text().split())
            time.sleep(0.05)
        assert " /work " in mine and " /sys " in mine
        # ... and none of them is in the host's mount table (every start would copy it)
        assert mounts_under(host.tmp) == []
    finally:
        client.stop(job.id)
        client.wait(job.id, timeout=30)


def read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
