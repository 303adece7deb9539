"""The jobs' cgroup root must be joblet's alone (cgroups.check_own_root), on fake trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from joblet.errors import ConfigError
from joblet.worker.cgroups import JobCgroup, check_own_root, make_v1_parents


def group(path: Path, procs: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.procs").write_text(procs)
    return path


def test_the_top_of_a_hierarchy_is_refused_and_a_group_under_it_is_not(tmp_path: Path):
    top = group(tmp_path / "unified")  # its parent is no cgroup: a mount point
    with pytest.raises(ConfigError, match=r"is the top of a cgroup hierarchy, the host's own: give a directory"):
        check_own_root(top, tmp_path / "v1")
    check_own_root(group(top / "joblet"), tmp_path / "v1")  # the control
    check_own_root(top / "not-yet", tmp_path / "v1")  # the worker makes it


def test_a_root_with_foreign_groups_or_processes_is_refused(tmp_path: Path):
    root = group(group(tmp_path / "unified") / "joblet")
    group(root / ("0" * 32))  # a killed worker's job: its reconcile removes it
    check_own_root(root, tmp_path / "v1")
    for name in ("a.service", "b.scope", "c", "d"):
        group(root / name)
    with pytest.raises(ConfigError, match=r"not joblet's jobs \(a\.service, b\.scope, c and 1 more\)"):
        check_own_root(root, tmp_path / "v1")
    busy = group(group(tmp_path / "unified") / "svc", procs="123\n")
    with pytest.raises(ConfigError, match="holds processes of its own"):
        check_own_root(busy, tmp_path / "v1")


def test_v1_parents_are_made_where_a_v1_hierarchy_is_and_jobs_join_them(tmp_path: Path):
    """A job without a cpu or memory limit joins the jobs' parent twin, never the worker's own
    groups (hybrid hosts); with a limit, its own directory."""
    v1 = tmp_path / "v1"
    for controller in ("cpu", "memory"):  # no blkio, no pids hierarchy on this fake host
        group(v1 / controller)
    root = tmp_path / "unified" / "joblet"
    assert make_v1_parents(root, v1) == [v1 / "cpu" / "joblet", v1 / "memory" / "joblet"]
    job = JobCgroup(root / ("0" * 32), v1_base=v1)
    group(v1 / "memory" / "joblet" / job.path.name)  # a memory limit made its own
    assert job.procs_files == [
        job.path / "cgroup.procs",
        v1 / "cpu" / "joblet" / "cgroup.procs",
        v1 / "memory" / "joblet" / job.path.name / "cgroup.procs",
    ]


def test_v1_twins_are_checked_and_a_job_named_root_is_refused(tmp_path: Path):
    """Twins are named by the root's last component alone: a root named as a host group's
    (memory/process_api here) adopted it; a root inside another's jobs' groups was removed
    by that worker's restart (red-team run)."""
    import os

    v1 = tmp_path / "v1"
    group(v1 / "memory")
    root = group(group(tmp_path / "unified") / "svc")
    check_own_root(root, v1)  # the control: no twin yet
    group(v1 / "memory" / "svc" / "user.slice")
    with pytest.raises(ConfigError, match=r"cgroup_root's v1 twin, holds cgroups that are not joblet's jobs"):
        check_own_root(root, v1)
    (v1 / "memory" / "svc" / "user.slice" / "cgroup.procs").unlink()
    (v1 / "memory" / "svc" / "user.slice").rmdir()
    (v1 / "memory" / "svc" / "cgroup.procs").write_text(f"{os.getpid()}\n")  # a process of no job's
    with pytest.raises(ConfigError, match=r"cgroup_root's v1 twin, holds processes of its own"):
        check_own_root(root, v1)
    inside = tmp_path / "unified" / "joblet" / ("a" * 32) / "joblet"
    with pytest.raises(ConfigError, match=r"is named like a job's cgroup \(32 hex digits\)"):
        check_own_root(inside, v1)
