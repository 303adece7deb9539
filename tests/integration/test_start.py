"""The sandbox's two-step start on the real kernel (execution.Sandbox): bwrap builds the job's
root before the go and runs the command only after it; a start called off, or whose worker
died before the go, runs nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from joblet.network_agent.netns import JobNetns
from joblet.worker.cgroups import JobCgroup
from joblet.worker.etc_view import Secrets, sync
from joblet.worker.execution import Launch, Sandbox
from joblet.worker.mounts import JobMounts, remove_dirs
from joblet.worker.nsthread import JobThread
from joblet.worker.sandbox import SECRETS, Layout, bwrap_args, make_cover, survey
from tests.conftest import cgroup_base, need

MARK = "echo ran; touch /work/ran"


class Box:
    """A job's kernel objects without a worker: cgroup, network and mount namespaces, run dir."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="joblet-start-"))
        self.cgroup = JobCgroup(cgroup_base() / f"joblet-start-{os.getpid()}")
        self.cgroup.create()
        self.cgroup.limit_pids(64)
        run = self.tmp / "run"
        cover = make_cover(run)
        self.inside = JobThread("start")
        self.netns = JobNetns.create(self.inside)
        job = run / "job"
        self.mounts = JobMounts.create(job, 16 << 20, lambda work: None, self.inside)
        self.mounts.write("hostname", "start\n")
        self.work = Path(self.mounts.work)  # the job's /work, as the worker reaches it
        layout = Layout(hostname="start", work_dir=str(job / "work"), run_dir=str(job), sys_dir=str(job / "sys"))
        sync("/etc", str(run / "etc"), Secrets(SECRETS))  # the worker's copy of /etc
        self.args = bwrap_args(survey(cover, (), SECRETS, str(run / "etc")), layout)

    def sandbox(self, script: str) -> Sandbox:
        argv = ["/bin/sh", "-c", script]
        env = {"PATH": "/usr/bin:/bin"}
        return Sandbox(Launch("start", self.cgroup, self.args, argv, env, self.inside))

    def close(self) -> None:
        self.cgroup.kill()
        self.mounts.close()
        self.netns.close()
        self.inside.close()
        self.cgroup.remove()  # and its v1 twins
        remove_dirs([self.tmp])


@pytest.fixture
def box() -> Iterator[Box]:
    need(os.geteuid() == 0, "needs root (cgroups, namespaces, mounts)")
    made = Box()
    try:
        yield made
    finally:
        made.close()


def sandbox_child(bwrap_pid: int, timeout: float = 10.0) -> int:
    """The pid of bwrap's child once bwrap has cloned it into the job's namespaces."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{bwrap_pid}/task/{bwrap_pid}/children") as fh:
                children = fh.read().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.001)
    raise AssertionError("bwrap never cloned its sandbox child")


def root_built(pid: int, work: Path, timeout: float = 10.0) -> bool:
    """Is `pid` in a root of its own (not the host's), with the job's /work in it?"""
    host_root, job_work = os.stat("/"), os.stat(work)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            root, inside = os.stat(f"/proc/{pid}/root"), os.stat(f"/proc/{pid}/root/work")
            if (root.st_dev, root.st_ino) != (host_root.st_dev, host_root.st_ino) and inside.st_dev == job_work.st_dev:
                return True
        except OSError:
            pass
        time.sleep(0.001)
    return False


def test_the_root_is_built_before_the_go_and_the_command_runs_after_it(box: Box) -> None:
    sandbox = box.sandbox(MARK)
    main = sandbox.start()
    child = sandbox_child(main.pid)
    assert root_built(child, box.work), "bwrap's child is not in the job's root before the go"
    assert not (box.work / "ran").exists()  # blocked: the command has not run
    sandbox.go()
    assert main.wait(timeout=10) == 0
    assert main.stdout is not None and main.stdout.read() == b"ran\n"
    assert (box.work / "ran").exists()
    sandbox.close()


def test_the_command_holds_no_descriptor_but_its_three(box: Box) -> None:
    # the block descriptor is the go pipe read-write: bwrap must not hand it (or any other
    # of the start's) on to the command
    # (the glob's own descriptor of the directory is closed again once it is expanded)
    sandbox = box.sandbox('cd /proc/$$/fd && for f in *; do [ -e "$f" ] && echo "$f"; done; true')
    main = sandbox.start()
    sandbox.go()
    assert main.wait(timeout=10) == 0
    assert main.stdout is not None and main.stdout.read() == b"0\n1\n2\n"
    sandbox.close()


@pytest.mark.parametrize("when", ["at once", "once the root is built"])
def test_a_start_called_off_runs_nothing(box: Box, when: str) -> None:
    control = box.sandbox("echo control")  # positive control: the same start with its go
    control.start()
    control.go()
    assert control.main is not None and control.main.wait(timeout=10) == 0
    assert control.main.stdout is not None and control.main.stdout.read() == b"control\n"
    control.close()

    sandbox = box.sandbox(MARK)
    main = sandbox.start()
    if when != "at once":
        assert root_built(sandbox_child(main.pid), box.work)
    assert main.stdout is not None
    out = os.dup(main.stdout.fileno())
    try:
        sandbox.close()  # what the job's undo does when its setup fails before the go
        assert main.returncode == -9
        assert os.read(out, 100) == b""
    finally:
        os.close(out)
    assert not (box.work / "ran").exists()


DYING_WORKER = """
import ctypes, os, sys
from pathlib import Path
from joblet.worker.cgroups import JobCgroup
from joblet.worker.execution import Launch, Sandbox
from joblet.worker.nsthread import JobThread
cgroup, netns_fd, mountns_fd, args = JobCgroup(Path(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
libc = ctypes.CDLL(None, use_errno=True)
def enter():  # the job's thread joins the namespaces the test made (CLONE_FS, NEWNET, NEWNS)
    assert libc.unshare(0x200) == 0 and libc.setns(netns_fd, 0x40000000) == 0 and libc.setns(mountns_fd, 0x20000) == 0
inside = JobThread("dying")
inside(enter)
argv = ["/bin/sh", "-c", "touch /work/ran"]
sandbox = Sandbox(Launch("start", cgroup, args, argv, {"PATH": "/bin"}, inside))
print(sandbox.start().pid, flush=True)
sys.stdin.readline()  # the test has seen bwrap's child in the job's root
os._exit(0)  # dies like a killed worker, before the go: no close, no reaping
"""


def blocked_in_read(pid: int) -> bool:
    """Asleep inside read(2) (syscall 0 on x86-64, 63 on arm64), not woken."""
    with open(f"/proc/{pid}/stat") as fh:
        state = fh.read().rsplit(")", 1)[1].split()[0]
    with open(f"/proc/{pid}/syscall") as fh:
        number = fh.read().split()[0]
    return state == "S" and number in ("0", "63")


def block_fd(pid: int) -> int:
    """The descriptor bwrap blocks on, from its command line."""
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        argv = fh.read().split(b"\0")
    return int(argv[argv.index(b"--block-fd") + 1])


def until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_a_start_whose_worker_dies_before_the_go_runs_nothing(box: Box) -> None:
    # the worker is a process of its own that dies; the namespaces' descriptors are passed to it
    fds = (box.netns.fd, box.mounts.fd)
    argv = [sys.executable, "-c", DYING_WORKER, str(box.cgroup.path), *map(str, fds), *box.args]
    worker = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=fds)
    assert worker.stdout is not None and worker.stdin is not None
    bwrap = int(worker.stdout.readline())
    child = sandbox_child(bwrap)
    assert root_built(child, box.work)
    fd = block_fd(child)
    worker.stdin.close()
    assert worker.wait(timeout=10) == 0
    assert until(lambda: not os.path.exists(f"/proc/{bwrap}"))  # bwrap died with its parent
    # no writer left but bwrap's child's own: it still sleeps in its read, nothing ran
    assert blocked_in_read(child)
    assert not (box.work / "ran").exists()
    # positive control: the go byte, and only it, lets the same child on to the command
    with open(f"/proc/{child}/fd/{fd}", "wb", buffering=0) as go:
        go.write(b"g")
    assert until((box.work / "ran").exists)
