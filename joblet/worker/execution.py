"""Start a job's process in its sandbox (bubblewrap), in two stages.

1. `bwrap` makes new pid, ipc, uts, cgroup (and, unless host mode, network) namespaces, builds
   the job's root (sandbox.py) and pivots into it, then waits on its block pipe. Its info pipe
   tells the worker the sandbox's pid, so the worker can wire veths into its namespace.
2. The worker configures the network inside (one `nsenter` running `ip -batch`, `tc -batch`
   and mounting the namespace's own read-only sysfs on /sys), then unblocks bwrap, which loads
   the seccomp filter, drops to Docker's capabilities with no_new_privs and execs the command.

bwrap is started inside the job's cgroups, so everything of the job is in them from its first
instruction. bwrap reports a death by signal N as exit status 128+N (as a shell does).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import IO

from joblet.errors import ExecutionError
from joblet.worker.cgroups import JobCgroup
from joblet.worker.seccomp_filter import job_filter

NET_SETUP = """
ip -batch - || exit 93
if [ -n "$1" ]; then printf '%s' "$1" | tc -batch - || exit 89; fi
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys || exit 98
if [ -d /sys/firmware ]; then mount -t tmpfs -o ro,nosuid,nodev,noexec,size=4k none /sys/firmware || exit 98; fi
"""
SETUP_FAILURES = {93: "could not configure the network", 89: "could not limit the job's bandwidth",
                  98: "could not mount /sys"}


def tool(name: str) -> str:
    path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        package = "bubblewrap" if name == "bwrap" else "util-linux"
        raise ExecutionError(f"{name} not found: install {package}")
    return path


@dataclass
class Launch:
    """What a job's sandbox runs, with which options, in which cgroup."""

    job_id: str
    cgroup: JobCgroup
    bwrap_args: list[str]
    argv: list[str]
    env: dict[str, str]
    own_netns: bool = True
    setup_timeout: float = 30.0


class Sandbox:
    """One job's bwrap process, from start to reaping."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch
        self.main: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # the sandbox's init, as the host sees it
        self._block: int | None = None

    def start(self) -> int:
        """Build the sandbox and stop it before the command; returns its init's pid."""
        la = self.launch
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        filter_r, filter_w = os.pipe()
        os.write(filter_w, job_filter())  # < 1 KiB: fits the pipe, so no reader is needed yet
        os.close(filter_w)
        argv = [tool("bwrap"), *la.bwrap_args, "--info-fd", str(info_w), "--block-fd", str(block_r),
                "--seccomp", str(filter_r), "--", *la.argv]
        procs = [os.open(f, os.O_WRONLY) for f in la.cgroup.procs_files]

        def join() -> None:  # only writes numbers: bwrap and all it forks start in the cgroups
            for fd in procs:
                os.write(fd, b"0")

        try:
            self.main = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=la.env, close_fds=True,
                                         pass_fds=(info_w, block_r, filter_r), preexec_fn=join)
        except OSError as exc:
            raise ExecutionError(f"failed to start the sandbox: {exc}") from None
        finally:
            for fd in (*procs, info_w, block_r, filter_r):
                os.close(fd)
        self._block = block_w
        try:
            self.pid = self._read_info(info_r)
        finally:
            os.close(info_r)
        self._wait_blocked(block_r)
        return self.pid

    def _wait_blocked(self, block_fd: int) -> None:
        """Until bwrap has built the root and waits on its block pipe: it writes its info as
        soon as the namespaces exist, while its own mounts are still being made."""
        assert self.main is not None and self.pid is not None
        waiting = f"0 {block_fd:#x} "  # read(2) on that descriptor, as /proc shows a blocked call
        deadline = time.monotonic() + self.launch.setup_timeout
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.pid}/syscall") as fh:
                    if fh.read().startswith(waiting):
                        return
            except OSError:
                break  # the sandbox ended during setup
            if self.main.poll() is not None:
                break
            time.sleep(0.0002)
        raise ExecutionError(f"job setup failed: {self._failure()}")

    def _read_info(self, fd: int) -> int:
        """bwrap's JSON about the sandbox (it may come in several reads)."""
        poller = select.poll()  # poll, not select: a busy worker has > 1024 descriptors
        poller.register(fd, select.POLLIN)
        data = b""
        while poller.poll(self.launch.setup_timeout * 1000):
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
            with contextlib.suppress(ValueError):
                return int(json.loads(data)["child-pid"])
        raise ExecutionError(f"job setup failed: {self._failure()}")

    def go(self, net_batch: str | None, tc_batch: str | None) -> None:
        """Configure the job's network inside its namespaces, then let the command start."""
        assert self.pid is not None and self._block is not None
        if self.launch.own_netns:
            self._net_setup(net_batch or "link set lo up\n", tc_batch or "")
        try:
            os.write(self._block, b"1")
        except BrokenPipeError:
            raise ExecutionError(f"job setup failed: {self._failure()}") from None
        finally:
            os.close(self._block)
            self._block = None

    def _net_setup(self, net_batch: str, tc_batch: str) -> None:
        # -r: bwrap chroots into its new root inside the namespace; the tools are the host's
        # read-only /usr, and the job has not run yet, so nothing in there is the job's
        argv = [tool("nsenter"), "-t", str(self.pid), "-n", "-m", "-r", "--", "/bin/sh", "-c",
                NET_SETUP, "joblet-net", tc_batch]
        proc = subprocess.run(argv, input=net_batch.encode(), capture_output=True, timeout=30,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if proc.returncode != 0:
            reason = SETUP_FAILURES.get(proc.returncode, f"network setup exited with {proc.returncode}")
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            raise ExecutionError(f"job setup failed: {reason}" + (f": {detail[-1]}" if detail else ""))

    def _failure(self) -> str:
        """Why bwrap ended before the command: its last line on stderr."""
        assert self.main is not None
        try:
            code = self.main.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "the sandbox did not answer in time"
        err: IO[bytes] | None = self.main.stderr
        text = err.read().decode(errors="replace").strip() if err is not None else ""
        lines = text.splitlines()
        return lines[-1] if lines else f"bwrap exited with {code}"

    def close(self) -> None:
        """Reap bwrap (after the cgroup was killed) and release our ends."""
        if self._block is not None:
            os.close(self._block)
            self._block = None
        if self.main is None:
            return
        for stream in (self.main.stdout, self.main.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        try:
            self.main.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.main.kill()
            self.main.wait()
