"""The jobs' mount template on the real kernel: a job's namespace lacks the host's mounts that
no job uses and keeps the rest; a mount the host makes later is there for the next job."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from joblet.worker.mount_template import MountTemplate
from joblet.worker.mounts import mount_tmpfs


@pytest.fixture
def tmp(mount_dir: Path) -> Path:
    return mount_dir


def seen_by_a_job(template: MountTemplate, *paths: Path) -> dict[str, bool]:
    """Whether each path holds a marker, seen from a fresh thread in the template, where a
    job's thread copies its namespace from."""
    seen: dict[str, bool] = {}

    def job() -> None:
        template.enter()
        for path in paths:
            seen[str(path)] = (path / "marker").exists()

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    return seen


def test_a_jobs_namespace_lacks_the_mounts_no_job_uses(tmp: Path) -> None:
    kept, other = tmp / "kept", tmp / "other"
    # kept is a private mount: nothing mounted under it later propagates into copies of it, so
    # a job sees a later mount only if its start renewed the template (as where Docker binds
    # joblet's state directory, and a sized volume is mounted for the job about to start)
    mount_tmpfs(kept, 1 << 20)
    subprocess.run(["mount", "--make-private", str(kept)], check=True)
    for base in (kept, other):
        mount_tmpfs(base / "m", 1 << 20)
        (base / "m" / "marker").write_text("x")
    keep = ("/usr", "/proc", sys.prefix, sys.base_prefix, str(kept))
    template = MountTemplate(keep)
    try:
        seen = seen_by_a_job(template, kept / "m", other / "m")
        assert seen == {str(kept / "m"): True, str(other / "m"): False}  # the first is the control
        assert (other / "m" / "marker").exists()  # the host keeps its mount
        assert template.builds == 1

        mount_tmpfs(kept / "later", 1 << 20)  # on the host, then at once the next job's start
        (kept / "later" / "marker").write_text("y")
        assert seen_by_a_job(template, kept / "later") == {str(kept / "later"): True}
        assert seen_by_a_job(template, other / "m") == {str(other / "m"): False}
    finally:
        template.close()


def test_a_path_a_job_reaches_is_kept_from_then_on(tmp: Path) -> None:
    """A runtime linked, after the worker started, to a filesystem the template left out: the
    job's start names its path, and the template is made again with it (bwrap found no
    source path in the job's copy)."""
    other = tmp / "other"
    mount_tmpfs(other / "m", 1 << 20)
    (other / "m" / "marker").write_text("x")
    template = MountTemplate(("/usr", "/proc", sys.prefix, sys.base_prefix))
    try:
        assert seen_by_a_job(template, other / "m") == {str(other / "m"): False}  # the control: left out
        seen: dict[str, bool] = {}

        def job() -> None:
            template.enter(reach=(str(other / "m" / "bin"),))
            seen["m"] = (other / "m" / "marker").exists()

        thread = threading.Thread(target=job)
        thread.start()
        thread.join()
        assert seen == {"m": True} and template.builds == 2
        assert seen_by_a_job(template, other / "m") == {str(other / "m"): True}  # kept since
        assert template.builds == 2  # once made again, not at each start
    finally:
        template.close()


def test_a_sealed_program_is_read_only_and_its_upgrade_is_seen(tmp: Path) -> None:
    """bwrap is bound read-only onto itself in the template (a root job changed the host's
    through /proc/1/exe); a new file renamed over it, as a package upgrade does, is what
    the next start binds, not the old one the bind held."""
    kept = tmp / "kept"
    kept.mkdir()
    program, neighbour = kept / "program", kept / "neighbour"
    program.write_text("old")
    neighbour.write_text("n")
    template = MountTemplate(("/usr", "/proc", sys.prefix, sys.base_prefix, str(kept)), sealed=(str(program),))

    def job() -> dict[str, str]:
        seen: dict[str, str] = {}

        def inside() -> None:
            template.enter()
            seen["text"] = program.read_text()
            for path in (program, neighbour):
                try:
                    os.chmod(path, 0o600)
                    seen[path.name] = "ok"
                except OSError as exc:
                    seen[path.name] = errno.errorcode[exc.errno]

        thread = threading.Thread(target=inside)
        thread.start()
        thread.join()
        return seen

    try:
        assert job() == {"text": "old", "program": "EROFS", "neighbour": "ok"}  # the neighbour: the control
        assert os.stat(program).st_mode & 0o777 == 0o644  # the host's is unchanged
        upgrade = kept / "program.new"
        upgrade.write_text("new")
        os.rename(upgrade, program)
        assert job() == {"text": "new", "program": "EROFS", "neighbour": "ok"}
        assert template.builds == 2
        assert job()["text"] == "new" and template.builds == 2  # made again once, not at each start
    finally:
        template.close()


SEAL_IN_A_USER_NAMESPACE = """
import sys, threading
from joblet.worker.mount_template import MountTemplate
keep = ("/usr", "/proc", sys.prefix, sys.base_prefix, *sys.path[1:], sys.argv[1])
template = MountTemplate(keep, sealed=(sys.argv[2],))
seen = []
def job():
    template.enter()
    with open("/proc/thread-self/mountinfo") as fh:
        seen.extend(line.split()[5] for line in fh if line.split()[4] == sys.argv[2])
thread = threading.Thread(target=job)
thread.start()
thread.join()
print(seen[-1])
"""


def test_a_sealed_program_keeps_its_mounts_flags(tmp: Path) -> None:
    """The read-only remount replaces a bind's per-mount flags: a program on a nosuid,
    nodev, noexec mount lost them in the template, and in a user namespace (a worker in
    a container), where they are locked, the remount failed (EPERM) and no job started."""
    kept = tmp / "kept"
    kept.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev,noexec,noatime", "sealtest", str(kept)], check=True)
    program = kept / "program"
    program.write_text("p")
    template = MountTemplate(("/usr", "/proc", sys.prefix, sys.base_prefix, str(kept)), sealed=(str(program),))
    seen: list[str] = []

    def job() -> None:
        template.enter()
        with open("/proc/thread-self/mountinfo") as fh:
            seen.extend(line.split()[5] for line in fh if line.split()[4] == str(program))

    try:
        thread = threading.Thread(target=job)
        thread.start()
        thread.join()
    finally:
        template.close()
    assert set(seen[-1].split(",")) >= {"ro", "nosuid", "nodev", "noexec", "noatime"}, seen
    done = subprocess.run(
        ["unshare", "-U", "-m", "-r", "--propagation", "slave", sys.executable, "-c", SEAL_IN_A_USER_NAMESPACE,
         str(kept), str(program)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.strip().split(",")) >= {"ro", "nosuid", "nodev", "noexec", "noatime"}, done


def test_a_program_relinked_later_is_sealed(tmp: Path) -> None:
    """A link the start runs bwrap through (alternatives), pointed elsewhere since the
    worker started: its old target's identity was looked at, and the new one ran unsealed."""
    kept = tmp / "kept"
    kept.mkdir()
    link, first, second = kept / "program", kept / "first", kept / "second"
    first.write_text("1")
    second.write_text("2")
    link.symlink_to(first)
    template = MountTemplate(("/usr", "/proc", sys.prefix, sys.base_prefix, str(kept)), sealed=(str(link),))

    def chmod_in_a_job() -> str:
        got: list[str] = []

        def inside() -> None:
            template.enter()
            try:
                os.chmod(link, 0o600)
                got.append("ok")
            except OSError as exc:
                got.append(errno.errorcode[exc.errno])

        thread = threading.Thread(target=inside)
        thread.start()
        thread.join()
        return got[0]

    try:
        assert chmod_in_a_job() == "EROFS"
        link.unlink()
        link.symlink_to(second)
        assert chmod_in_a_job() == "EROFS"
        assert os.stat(first).st_mode & 0o777 == os.stat(second).st_mode & 0o777 == 0o644
    finally:
        template.close()


def test_bwrap_is_sealed_wherever_a_start_may_find_it() -> None:
    """Missing when the worker started, nothing was sealed for its life: bwrap installed
    later ran from the host's writable file."""
    from joblet.worker.execution import TOOL_DIRS
    from joblet.worker.services import template_sealed

    assert template_sealed() == tuple(f"{d}/bwrap" for d in TOOL_DIRS)
