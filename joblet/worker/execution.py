"""Start a job's process in its sandbox (bubblewrap).

The start has two halves. `start` spawns a shell (with vfork: no preexec_fn) that joins the
job's cgroups and then waits for the worker's go; the worker builds the job's network
meanwhile, so the cgroup moves, which wait out RCU grace periods (~4-15 ms here, PITFALLS 28),
overlap the veth setup. `go` lets the shell exec nsenter, which joins the job's network
namespace (made before the shell, network_agent/netns.py) and execs bwrap. bwrap makes new pid, ipc,
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


# Joins the cgroups named by its first N arguments, waits for a line on stdin (the go; end of
# file: called off, exit 125), then execs the rest (nsenter, bwrap) with stdin on /dev/null. A
# shell's builtins do it because a preexec_fn makes Python fork the whole worker (~5 ms,
# PITFALLS 30) where Popen without one uses vfork (~0.5 ms). The shell gets a fixed environment
# and only paths: the job's environment reaches bwrap through --args (a memfd).
JOIN = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do echo 0 >"$1" || exit 126; shift; n=$((n - 1)); done; '
    'read -r go || exit 125; exec </dev/null; exec "$@"'
)
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
        self._go: int | None = None  # the write end of the shell's stdin until the go
        self.released = False  # the go was given: bwrap and the command are on their way

    def start(self) -> subprocess.Popen[bytes]:
        """Spawn the job's process: it joins the cgroups and waits for `go`; stdout and stderr
        on pipes."""
        la = self.launch
        filter_r, filter_w = os.pipe()
        os.write(filter_w, job_filter())  # < 1 KiB: fits the pipe, so no reader is needed yet
        os.close(filter_w)
        go_r, self._go = os.pipe()  # ours is closed by `go` or `close`, whatever happens
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
                stdin=go_r,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=SHELL_ENV,
                close_fds=True,
                pass_fds=fds,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ExecutionError(f"failed to start the sandbox: {exc}") from None
        finally:
            for fd in (*fds, go_r):
                os.close(fd)
        return self.main

    def go(self) -> None:
        """Let the waiting shell exec bwrap (it may still be joining the cgroups)."""
        assert self._go is not None, "go once, after start"
        try:
            os.write(self._go, b"go\n")
        except BrokenPipeError:
            pass  # the shell died (its cgroup killed): the wait reports it
        self._call_off()
        self.released = True

    def _call_off(self) -> None:
        if self._go is not None:
            os.close(self._go)  # before the go: the shell reads end of file and exits 125
            self._go = None

    def close(self) -> None:
        """Reap bwrap or the waiting shell (after the cgroup was killed) and release our ends."""
        self._call_off()
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
