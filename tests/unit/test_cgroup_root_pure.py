"""The jobs' cgroup root must be joblet's alone (cgroups.check_own_root), on fake trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from joblet.errors import ConfigError
from joblet.worker.cgroups import check_own_root


def group(path: Path, procs: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.procs").write_text(procs)
    return path


def test_the_top_of_a_hierarchy_is_refused_and_a_group_under_it_is_not(tmp_path: Path):
    top = group(tmp_path / "unified")  # its parent is no cgroup: a mount point
    with pytest.raises(ConfigError, match=r"is the top of a cgroup hierarchy, the host's own: give a directory"):
        check_own_root(top)
    check_own_root(group(top / "joblet"))  # the control
    check_own_root(top / "not-yet")  # the worker makes it


def test_a_root_with_foreign_groups_or_processes_is_refused(tmp_path: Path):
    root = group(group(tmp_path / "unified") / "joblet")
    group(root / ("0" * 32))  # a killed worker's job: its reconcile removes it
    check_own_root(root)
    for name in ("a.service", "b.scope", "c", "d"):
        group(root / name)
    with pytest.raises(ConfigError, match=r"not joblet's jobs \(a\.service, b\.scope, c and 1 more\)"):
        check_own_root(root)
    busy = group(group(tmp_path / "unified") / "svc", procs="123\n")
    with pytest.raises(ConfigError, match="holds processes of its own"):
        check_own_root(busy)
