"""The worker's start: a jobs' cgroup root that cannot be made (`ip netns exec` mounts a
/sys of its own, without the cgroup hierarchies) is refused with one line naming the missing
path and its setting, before the worker takes its lock or makes any state."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from joblet.errors import ConfigError, ExecutionError, JobletError
from joblet.worker import cgroups, rlimits


def fresh_sysfs(tmp_path: Path) -> Path:
    """/sys as `ip netns exec` leaves it: /sys/fs/cgroup an empty directory, no hierarchy."""
    cgroup = tmp_path / "sys" / "fs" / "cgroup"
    cgroup.mkdir(parents=True)
    return cgroup


def test_a_root_under_no_cgroup_is_refused_naming_the_missing_path(tmp_path):
    root = fresh_sysfs(tmp_path) / "unified" / "joblet"
    with pytest.raises(ConfigError) as caught:
        cgroups.check_root(root)
    message = str(caught.value)
    assert f"{tmp_path}/sys/fs/cgroup/unified does not exist" in message and "\n" not in message
    assert "JOBLET_CGROUP_ROOT" in message and "ip netns exec" in message and "nsenter --net=" in message


def test_a_root_in_a_hybrid_hosts_v1_directory_is_pointed_to_its_v2_hierarchy(tmp_path):
    """`JOBLET_CGROUP_ROOT=/sys/fs/cgroup/x` on a hybrid host (v1 hierarchies there, v2 under
    unified/) was blamed on `ip netns exec`, which the operator had not used."""
    cgroup = fresh_sysfs(tmp_path)
    (cgroup / "unified").mkdir()
    (cgroup / "unified" / "cgroup.procs").write_text("")
    with pytest.raises(ConfigError) as caught:
        cgroups.check_root(cgroup / "x")
    message = str(caught.value)
    assert f"the cgroup v2 hierarchy is {cgroup / 'unified'}: e.g. {cgroup / 'unified' / 'x'}" in message
    assert "ip netns exec" not in message and "\n" not in message


def test_a_root_the_worker_can_make_passes(tmp_path):
    unified = fresh_sysfs(tmp_path) / "unified"
    unified.mkdir()
    (unified / "cgroup.procs").write_text("")  # a cgroup directory: the worker makes joblet/ in it
    cgroups.check_root(unified / "joblet")
    cgroups.check_root(unified / "nested" / "joblet")
    (tmp_path / "made").mkdir()
    cgroups.check_root(tmp_path / "made")  # there already: as before, not judged


def test_the_worker_says_it_in_one_line_and_makes_nothing(tmp_path, monkeypatch):
    from joblet.worker import main as worker_main
    from joblet.worker import ns_lock, supervisor

    class Reached:
        def __init__(self, *_: object) -> None:
            raise JobletError("reached the supervisor")

    locks: list[Path] = []
    for key in [k for k in os.environ if k.startswith("JOBLET_")]:
        monkeypatch.delenv(key)
    (tmp_path / "joblet.toml").write_text("")
    root = fresh_sysfs(tmp_path) / "unified" / "joblet"
    monkeypatch.setenv("JOBLET_CONFIG", str(tmp_path / "joblet.toml"))
    monkeypatch.setenv("JOBLET_CGROUP_ROOT", str(root))
    monkeypatch.setenv("JOBLET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("JOBLET_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(rlimits, "raise_fd_limit", lambda: None)
    monkeypatch.setattr(rlimits, "halve_uid_budgets", lambda: None)
    monkeypatch.setattr(rlimits, "spare_core_handlers", lambda: None)
    monkeypatch.setattr(ns_lock, "hold", locks.append)
    monkeypatch.setattr(supervisor, "Supervisor", Reached)
    result = CliRunner().invoke(worker_main.main, [])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"joblet-worker: cgroup_root {root} (JOBLET_CGROUP_ROOT)")
    assert locks == [] and not (tmp_path / "state").exists() and not (tmp_path / "run").exists()


def test_a_cgroup_root_mkdir_refuses_is_one_error(tmp_path):
    from joblet.worker.supervisor import Supervisor

    (tmp_path / "file").write_text("")
    sup = Supervisor.__new__(Supervisor)
    sup.svc = SimpleNamespace(cgroup_root=tmp_path / "file" / "joblet")  # type: ignore[assignment]
    sup.cfg = SimpleNamespace(state_dir=tmp_path, node="n1")  # type: ignore[assignment]
    sup.store = SimpleNamespace(node_beat=lambda node: None, node_info={})  # type: ignore[assignment]
    with pytest.raises(ExecutionError, match=r"^failed to make the jobs' cgroup root .*/file/joblet: Not a directory$"):
        sup.start()


def test_the_bridge_repair_takes_only_jobs_whose_command_started():
    """A heartbeat's repair made again the bridge a failed setup had just removed (the job was
    still in the running table, its plan made): the bridge stayed behind (CI run)."""
    from joblet.worker.supervisor import started_plans

    def run(released: bool | None, plan: str | None = "plan", netns: object = "ns") -> SimpleNamespace:
        sandbox = None if released is None else SimpleNamespace(released=released)
        return SimpleNamespace(sandbox=sandbox, plan=plan, netns=netns)

    runs = [
        run(True, "started"),
        run(False, "in setup"),
        run(None, "no sandbox yet"),
        run(True, None),
        run(True, "x", None),
    ]
    assert started_plans(runs) == ["started"]


def test_jobs_inherit_a_core_limit_that_spares_the_hosts_core_handler(tmp_path):
    """A soft RLIMIT_CORE of 1 byte: the kernel runs no `core_pattern` program for such a
    process, and writes no core file; the hard limit stays, for a job that wants cores. A
    pipe without `core_pipe_limit` is said at the start. In a child: it changes the caller."""
    import subprocess
    import sys

    (tmp_path / "core_pattern").write_text("|/usr/lib/systemd/systemd-coredump %P %u\n")
    (tmp_path / "core_pipe_limit").write_text("0\n")
    probe = (
        "import logging, resource, sys; from pathlib import Path; from joblet.worker import rlimits\n"
        "logging.basicConfig(stream=sys.stdout, format='%(levelname)s %(message)s')\n"
        "resource.setrlimit(resource.RLIMIT_CORE, (0, resource.RLIM_INFINITY))\n"
        "rlimits.spare_core_handlers(Path(sys.argv[1]))\n"
        "print(resource.getrlimit(resource.RLIMIT_CORE) == (1, resource.RLIM_INFINITY))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "True", out
    assert "WARNING cores go to /usr/lib/systemd/systemd-coredump:" in out.stdout, out.stdout
    (tmp_path / "core_pipe_limit").write_text("4\n")  # the control: bounded, nothing to say
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True", out
