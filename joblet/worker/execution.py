"""Start a job's process in its sandbox (bubblewrap).

By the time the sandbox starts, the worker has built the job's network namespace and
configured it (network_agent/netns.py), and mounted /work. bwrap is started inside the job's
cgroups and that network namespace: nsenter joins the namespace and execs a shell that waits
until the worker has moved it into the cgroups, then execs bwrap. bwrap makes new pid, ipc,
uts and cgroup namespaces, builds the job's root (sandbox.py), loads the seccomp filter,
keeps Docker's capabilities (less mknod) with no_new_privs and execs the command as pid 2
under its own init. bwrap reports a death by signal N as exit status 128+N (as a shell does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

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


# Waits on stdin until the worker has moved it into the job's cgroups, then execs the rest
# (bwrap) with stdin from /dev/null. The worker moves it, not a preexec_fn: that makes Python
# fork the whole worker (~5 ms, PITFALLS 30) where Popen without one uses vfork (~0.5 ms). It
# writes to all of the job's cgroup.procs at once: each move waits out an RCU grace period
# on this kernel (~4-5 ms; PITFALLS 28), and concurrent moves share one. The shell gets a
# fixed environment and only paths; the job's environment reaches bwrap through --args.
GO = 'read -r _ || exit 126; exec "$@" </dev/null'
SHELL_ENV = {"PATH": "/usr/bin:/bin"}


def join_cgroups(pid: int, procs_files: list[Path]) -> None:
    """Move `pid` into every cgroup of `procs_files`, the moves running concurrently."""
    errors: list[OSError] = []

    def move(path: Path) -> None:
        try:
            path.write_text(str(pid))
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=move, args=(p,), name="joblet-cgroup") for p in procs_files[1:]]
    for thread in threads:
        thread.start()
    move(procs_files[0])
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


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
            view = view[os.write(fd, view):]
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
        # nsenter, not a setns in a short-lived thread: bwrap's --die-with-parent follows the
        # thread that spawned it, so a thread that ends kills the job
        netns = [] if la.netns_fd is None else [tool("nsenter"), f"--net=/proc/{os.getpid()}/fd/{la.netns_fd}"]
        argv = [*netns, tool("sh"), "-c", GO, "sh",
                tool("bwrap"), "--args", str(fds[1]), "--seccomp", str(fds[0]), "--", *la.argv]
        go_r, go_w = os.pipe()
        try:
            self.main = subprocess.Popen(argv, stdin=go_r, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         env=SHELL_ENV, close_fds=True, pass_fds=fds)
            join_cgroups(self.main.pid, la.cgroup.procs_files)
            os.write(go_w, b"go\n")
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(go_w)
            go_w = -1
            self.close()  # the shell reads EOF and exits: bwrap never ran
            raise ExecutionError(f"failed to start the sandbox: {exc}") from None
        finally:
            for fd in (*fds, go_r, go_w):
                if fd >= 0:
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
