"""Start a job's process in its sandbox (bubblewrap).

By the time the sandbox starts, the worker has built the job's network namespace and
configured it (network_agent/netns.py), and mounted /work. bwrap is started inside the job's
cgroups and that network namespace (both joined between fork and exec), makes new pid, ipc,
uts and cgroup namespaces, builds the job's root (sandbox.py), loads the seccomp filter,
keeps Docker's capabilities (less mknod) with no_new_privs and execs the command as pid 2
under its own init. bwrap reports a death by signal N as exit status 128+N (as a shell does).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
from dataclasses import dataclass

from joblet.errors import ExecutionError
from joblet.worker.cgroups import JobCgroup
from joblet.worker.seccomp_filter import job_filter

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def tool(name: str) -> str:
    path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        package = "bubblewrap" if name == "bwrap" else "util-linux"
        raise ExecutionError(f"{name} not found: install {package}")
    return path


@dataclass
class Launch:
    """What a job's sandbox runs, with which options, in which cgroup and network namespace."""

    job_id: str
    cgroup: JobCgroup
    bwrap_args: list[str]
    argv: list[str]
    env: dict[str, str]
    netns_fd: int | None = None  # None: the host's network (host mode)


class Sandbox:
    """One job's bwrap process, from start to reaping."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch
        self.main: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        """Start the command in its sandbox; stdout and stderr on pipes."""
        la = self.launch
        filter_r, filter_w = os.pipe()
        os.write(filter_w, job_filter())  # < 1 KiB: fits the pipe, so no reader is needed yet
        os.close(filter_w)
        argv = [tool("bwrap"), *la.bwrap_args, "--seccomp", str(filter_r), "--", *la.argv]
        procs = [os.open(f, os.O_WRONLY) for f in la.cgroup.procs_files]
        netns = la.netns_fd

        def enter() -> None:  # between fork and exec: only numbers and one syscall
            for fd in procs:
                os.write(fd, b"0")
            if netns is not None and _libc.setns(netns, CLONE_NEWNET) != 0:
                os._exit(126)

        try:
            self.main = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=la.env, close_fds=True,
                                         pass_fds=(filter_r,), preexec_fn=enter)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ExecutionError(f"failed to start the sandbox: {exc}") from None
        finally:
            for fd in (*procs, filter_r):
                os.close(fd)
        return self.main

    def close(self) -> None:
        """Reap bwrap (after the cgroup was killed) and release our ends."""
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
