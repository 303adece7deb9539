"""Start a job's process in its sandbox (bubblewrap).

By the time the sandbox starts, the worker has built the job's network namespace and
configured it (network_agent/netns.py), and mounted /work. bwrap is started inside the job's
cgroups and that network namespace: a shell joins the cgroups and execs nsenter, which joins
the namespace and execs bwrap (spawned with vfork: no preexec_fn). bwrap makes new pid, ipc,
uts and cgroup namespaces, builds the job's root (sandbox.py), loads the seccomp filter,
keeps Docker's capabilities (less mknod) with no_new_privs and execs the command as pid 2
under its own init. bwrap reports a death by signal N as exit status 128+N (as a shell does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from joblet.errors import ExecutionError
from joblet.worker.cgroups import JobCgroup
from joblet.worker.seccomp_filter import job_filter


def tool(name: str) -> str:
    path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        package = {"bwrap": "bubblewrap", "sh": "dash"}.get(name, "util-linux")
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


# Joins the cgroups named by its first N arguments, then execs the rest (bwrap). A shell's
# builtins do it between exec and bwrap because a preexec_fn makes Python fork the whole worker
# (~5 ms, PITFALLS 30) where Popen without one uses vfork (~0.5 ms). The shell gets a fixed
# environment and only paths: the job's environment reaches bwrap through --args (a memfd).
JOIN = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo 0 >"$1" || exit 126; shift; n=$((n - 1)); done; exec "$@"'
SHELL_ENV = {"PATH": "/usr/bin:/bin"}


def options_file(env: dict[str, str], bwrap_args: list[str]) -> int:
    """A memfd of NUL-separated bwrap options: the job's environment (not in any argv that
    `ps` shows on the host) and its root."""
    parts = ["--clearenv"]
    for key, value in env.items():
        parts += ["--setenv", key, value]
    data = "\0".join([*parts, *bwrap_args]).encode() + b"\0"
    fd = os.memfd_create("joblet-bwrap-args", 0)  # no CLOEXEC: pass_fds hands it to bwrap
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


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
        fds = (filter_r, options_file(la.env, la.bwrap_args))
        procs = [str(f) for f in la.cgroup.procs_files]
        # nsenter, not a setns in a short-lived thread: bwrap's --die-with-parent follows the
        # thread that spawned it, so a thread that ends kills the job
        netns = [] if la.netns_fd is None else [tool("nsenter"), f"--net=/proc/{os.getpid()}/fd/{la.netns_fd}"]
        argv = [
            tool("sh"),
            "-c",
            JOIN,
            "sh",
            str(len(procs)),
            *procs,
            *netns,
            tool("bwrap"),
            "--args",
            str(fds[1]),
            "--seccomp",
            str(fds[0]),
            "--",
            *la.argv,
        ]
        try:
            self.main = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=SHELL_ENV,
                close_fds=True,
                pass_fds=fds,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ExecutionError(f"failed to start the sandbox: {exc}") from None
        finally:
            for fd in fds:
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
