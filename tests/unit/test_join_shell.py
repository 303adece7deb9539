"""The shell that starts a job's sandbox (execution.JOIN), run for real with a file standing
for the job's cgroup.procs: it sets its OOM score adjustment, open files and login uid, joins,
then execs the rest."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

from joblet.worker.execution import JOIN, job_nofile


def test_join_sets_the_oom_score_joins_each_group_then_execs(tmp_path: Path):
    own = int(Path("/proc/self/oom_score_adj").read_text())
    wanted = max(own, 0) + 100  # raising needs no capability
    procs = [tmp_path / "v2.procs", tmp_path / "v1.procs"]
    for p in procs:
        p.write_text("")
    soft, hard = job_nofile()
    rest = ["sh", "-c", "cat /proc/self/oom_score_adj; ulimit -S -n; ulimit -H -n; echo ran"]
    out = subprocess.run(
        ["sh", "-c", JOIN, "sh", str(wanted), str(soft), str(hard), "-1", str(len(procs)), *map(str, procs), *rest],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == [str(wanted), str(soft), str(hard), "ran"]  # inherited through exec
    assert [p.read_text() for p in procs] == ["0\n", "0\n"]


def test_join_stops_before_the_command_when_a_group_cannot_be_joined(tmp_path: Path):
    own = Path("/proc/self/oom_score_adj").read_text().strip()
    rest = ["sh", "-c", "echo ran"]
    missing = tmp_path / "no-such-dir" / "cgroup.procs"
    done = subprocess.run(
        ["sh", "-c", JOIN, "sh", own, "1024", "1024", "-1", "1", str(missing), *rest], capture_output=True, text=True
    )
    assert done.returncode == 126 and "ran" not in done.stdout


def test_join_stops_before_the_command_when_its_open_files_cannot_be_set(tmp_path: Path):
    """Limits the kernel refuses (a soft one above the hard one): nothing runs."""
    own = Path("/proc/self/oom_score_adj").read_text().strip()
    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    rest = ["sh", "-c", "echo ran"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ok = subprocess.run(  # the control: its own limits are accepted
        ["sh", "-c", JOIN, "sh", own, str(soft), str(hard), "-1", "1", str(procs), *rest],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and ok.stdout == "ran\n", ok
    bad = subprocess.run(
        ["sh", "-c", JOIN, "sh", own, "2048", "1024", "-1", "1", str(procs), *rest], capture_output=True, text=True
    )  # soft above hard
    assert bad.returncode == 126 and "ran" not in bad.stdout, bad


def test_join_sets_the_login_uid_and_goes_on_where_it_cannot(tmp_path: Path):
    """Its own login uid written again is kept (set, or the kernel's unset: 4294967295); a
    value the kernel refuses stops nothing and prints nothing (as a kernel without audit, or
    an immutable login uid, would). The job itself: test_sandbox.py's login uid test."""
    own = Path("/proc/self/oom_score_adj").read_text().strip()
    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    rest = ["sh", "-c", "cat /proc/self/loginuid"]
    kept = Path("/proc/self/loginuid").read_text()
    for login_uid in (kept, "not-a-uid"):
        done = subprocess.run(
            ["sh", "-c", JOIN, "sh", own, "1024", "1024", login_uid, "1", str(procs), *rest],
            capture_output=True,
            text=True,
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, kept, ""), (login_uid, done)
