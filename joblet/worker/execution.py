"""Start a job's process in its sandbox (bubblewrap).

The start has two halves. `start` spawns a shell (with vfork: no preexec_fn) from the job's
thread, which lives in the job's network and mount namespaces (worker/nsthread.py), so the
shell starts in them; it joins the job's cgroups and execs bwrap. bwrap makes new
pid, ipc, uts and cgroup namespaces, builds the job's root (sandbox.py), pivots into it and
drops what it does not keep of its privileges, then blocks on its `--block-fd`: all that runs
while the worker wires the job's network. `go` unblocks it: bwrap loads the seccomp filter,
keeps Docker's capabilities (less mknod; less net_raw in host mode) with no_new_privs and
execs the command as pid 2 under its own init. bwrap reports a death by signal N as exit
status 128+N (as a shell does).

bwrap takes end of file on its block descriptor for a go too. Its descriptor is therefore the
go pipe opened for reading and writing (through /proc): bwrap itself holds a writer, so no end
of file ever comes, not when the worker calls the start off and not when the worker dies; only
the go byte lets it on. A start that is called off is killed (`close`); one whose worker died
waits, with nothing run, until the restarted worker removes the job's cgroup (reconcile.py).
bwrap closes the descriptor before the command starts.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joblet.errors import ExecutionError
from joblet.network_agent.netns import Runner
from joblet.worker import landlock
from joblet.worker.cgroups import JobCgroup
from joblet.worker.seccomp_filter import job_filter

TOOL_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")  # where tool() looks, in order


def tool(name: str) -> str:
    path = shutil.which(name, path=":".join(TOOL_DIRS))
    if path is None:
        package = {"bwrap": "bubblewrap", "sh": "dash"}.get(name, "util-linux")
        raise ExecutionError(f"{name} not found: install {package}")
    return path


@dataclass
class Launch:
    """What a job's sandbox runs, with which options, in which cgroup, spawned by which thread
    (the job's: in its namespaces, alive until the sandbox is reaped)."""

    job_id: str
    cgroup: JobCgroup
    bwrap_args: list[str]
    argv: list[str]
    env: dict[str, str]
    spawn_in: Runner
    oom_score_adj: int = 0  # the job's processes' (pinned if the worker holds CAP_SYS_RESOURCE)
    login_uid: int = 0  # the audit login uid of the job's processes: the uid it runs as


# Sets its OOM score adjustment to its first argument, its open files' soft and hard limits
# to the next two (inherited by bwrap and the job) and its audit login uid to the fourth,
# joins the cgroups named by its next N arguments, then execs the rest (bwrap). A shell's
# builtins do it because a preexec_fn makes Python fork the whole worker (~5 ms, PITFALLS 30)
# where Popen without one uses vfork (~0.5 ms). The shell gets a fixed environment and only
# paths (the cgroups' as the job's thread's descriptors: the job's namespace has none of them);
# the job's environment reaches bwrap through --args (a memfd). No /dev/null there either: a
# failed login uid write's message goes to a closed stderr.
# The login uid: a process may set its own once while it is unset (the worker's, under
# systemd), so a job could have put any user's name on its actions in the host's audit log
# (red-team run); set here, changing it takes CAP_AUDIT_CONTROL, which jobs lack. Best effort:
# a kernel without audit has no such file, and one set immutable by auditd keeps the worker's.
JOIN = (
    'echo "$1" >/proc/self/oom_score_adj || exit 126; ulimit -S -n "$2" && ulimit -H -n "$3" || exit 126; '
    '{ echo "$4" >/proc/self/loginuid; } 2>&-; '
    'n=$5; shift 5; while [ "$n" -gt 0 ]; do echo 0 >"$1" || exit 126; shift; n=$((n - 1)); done; exec "$@"'
)
SHELL_ENV = {"PATH": "/usr/bin:/bin"}
# A job's open files, soft and hard, as a container's under Docker 25+ (systemd's defaults):
# not the worker's own (raised to its unit's 1,048,576), where programs that close or select
# over every possible descriptor crawl, and where 3 processes of one job could hold what
# the host's whole file table (fs.file-max) counts. A job raises its soft limit with `ulimit -n`.
JOB_NOFILE = (1024, 524288)


def job_nofile() -> tuple[int, int]:
    """JOB_NOFILE, each at most the worker's own hard limit (which a job could not exceed)."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return JOB_NOFILE
    return min(JOB_NOFILE[0], hard), min(JOB_NOFILE[1], hard)


CAP_SYS_RESOURCE = 24


def oom_floor(wanted: int, status: str = "/proc/self/status", adj: str = "/proc/self/oom_score_adj") -> str | None:
    """Check that jobs can be given `wanted` as their OOM score adjustment; returns a warning
    when they could lower it again. A process may lower its own only down to the last value
    set by one holding CAP_SYS_RESOURCE: with it, the worker's write pins jobs at `wanted`;
    without it (some containers and VMs drop it), a job can go back down to the worker's own
    value, and a `wanted` below that cannot be set at all."""
    own = int(Path(adj).read_text())
    caps = next(line for line in Path(status).read_text().splitlines() if line.startswith("CapEff:"))
    if int(caps.split()[1], 16) >> CAP_SYS_RESOURCE & 1:
        if own >= wanted:
            return f"the worker's own OOM score adjustment ({own}) is not below its jobs' ({wanted}): it may go first"
        return None
    if wanted < own:
        raise ExecutionError(
            f"job_oom_score_adj {wanted} is below the worker's own ({own}) and the worker lacks "
            "CAP_SYS_RESOURCE to lower it"
        )
    return f"the worker lacks CAP_SYS_RESOURCE: jobs can lower their OOM score adjustment from {wanted} to {own}"


BWRAP_MAX_ARGS = 9000  # bubblewrap's MAX_ARGS: its argv and what --args holds, together


def options_file(env: dict[str, str], bwrap_args: list[str]) -> int:
    """A memfd of NUL-separated bwrap options: the job's environment (not in any argv that
    `ps` shows on the host) and its root."""
    parts = ["--clearenv"]
    for key, value in env.items():
        parts += ["--setenv", key, value]
    # a value that is not UTF-8 arrives as rnx read it from its argv (surrogate escapes):
    # the job gets its bytes, as it gets its arguments' (os.fsencode)
    data = "\0".join([*parts, *bwrap_args]).encode(errors="surrogateescape") + b"\0"
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
        self._go: int | None = None  # the write end of bwrap's block descriptor until the go
        self.released = False  # the go was given: bwrap and the command are on their way
        self._procs: list[int] = []  # the cgroups' procs files, open until the reaping (start)

    def start(self) -> subprocess.Popen[bytes]:
        """Spawn the job's process: it joins the cgroups, builds the job's root and waits for
        `go`; stdin reads end-of-file at once, stdout and stderr are pipes."""
        la = self.launch
        count = 8 + 1 + 3 * len(la.env) + len(la.bwrap_args) + len(la.argv)  # as bwrap counts them
        if count > BWRAP_MAX_ARGS:  # preflight's bounds leave room, but a host's many covers add more
            raise ExecutionError(
                f"the job's arguments, environment and sandbox options are {count} words, more than "
                f"bubblewrap takes ({BWRAP_MAX_ARGS}): fewer arguments or environment variables"
            )
        passed: list[int] = []  # closed here whatever happens: bwrap holds its own copies
        try:
            seccomp = self._filter_pipe(passed)
            go_r, self._go = os.pipe()  # ours is closed by `go` or `close`, whatever happens
            try:
                block = os.open(f"/proc/self/fd/{go_r}", os.O_RDWR)  # reads, and holds a writer
                passed.append(block)
            finally:
                os.close(go_r)
            options = options_file(la.env, la.bwrap_args)
            passed.append(options)
            # The job's namespace (a copy of the mount template) has no /sys or cgroups, which
            # bwrap would read at each of its binds: the worker opens the procs files, and the
            # shell reaches them through the job's thread's descriptors (its Landlock domain
            # keeps the worker's other threads out of reach). Not passed: bwrap would pass them
            # on to the job. Closed at the reaping, when the shell is long done with them.
            for path in la.cgroup.procs_files:  # one by one: those opened before a failure are closed
                self._procs.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
            soft, hard = job_nofile()
            head = [tool("sh"), "-c", JOIN, "sh", str(la.oom_score_adj), str(soft), str(hard), str(la.login_uid)]
            tail = [tool("bwrap"), "--block-fd", str(block), "--args", str(options), "--seccomp", str(seccomp)]
            tail += ["--", *la.argv]

            def argv() -> list[str]:  # in the job's thread
                fds = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/fd"
                return [*head, str(len(self._procs)), *(f"{fds}/{fd}" for fd in self._procs), *tail]

            self.main = self.spawn(argv, SHELL_ENV, tuple(passed))
        except (OSError, subprocess.SubprocessError) as exc:
            self._close_procs()
            raise ExecutionError(f"failed to start the sandbox: {exc}") from None
        finally:
            for fd in passed:
                os.close(fd)
        return self.main

    def _close_procs(self) -> None:
        for fd in self._procs:
            os.close(fd)
        self._procs = []

    @staticmethod
    def _filter_pipe(passed: list[int]) -> int:
        """A pipe holding the seccomp filter; its read end (added to `passed`)."""
        filter_r, filter_w = os.pipe()
        passed.append(filter_r)
        try:
            os.write(filter_w, job_filter())  # < 1 KiB: fits the pipe, so no reader is needed yet
        finally:
            os.close(filter_w)
        return filter_r

    def spawn(
        self, argv: list[str] | Callable[[], list[str]], env: dict[str, str], fds: tuple[int, ...], **popen: Any
    ) -> subprocess.Popen[bytes]:
        """`argv` (or what it returns, called there) spawned by the job's thread, once it
        reaches no abstract unix socket made outside the job (landlock.py): stdin a pipe no one
        writes (it reads end-of-file at once, as /dev/null), stdout and stderr pipes, no
        descriptor but `fds` passed on. Not the host's /dev/null: the command holds its stdin,
        and a root job's fchmod(0) and fchown(0) (CAP_FOWNER, CAP_CHOWN) changed the host's node
        (red-team run; its own /dev is read-only, mounts.make_dev)."""

        null, writer = os.pipe2(os.O_CLOEXEC)
        os.close(writer)

        def in_job_thread() -> subprocess.Popen[bytes]:
            if landlock.can_scope():
                landlock.scope_abstract_sockets()
            return subprocess.Popen(
                argv() if callable(argv) else argv,
                stdin=null,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd="/",  # the shell exports PWD, which bwrap's init (the job's pid 1) keeps
                close_fds=True,
                pass_fds=fds,
                **popen,
            )

        try:
            return self.launch.spawn_in(in_job_thread)
        finally:
            os.close(null)

    def go(self) -> None:
        """Let bwrap go on from its block to the command (it may still be building the root)."""
        assert self._go is not None, "go once, after start"
        try:
            os.write(self._go, b"g")
        except BrokenPipeError:
            pass  # bwrap died (its cgroup killed): the wait reports it
        os.close(self._go)
        self._go = None
        self.released = True

    def output_fds(self) -> tuple[int, int]:
        """The command's stdout and stderr as descriptors of the caller's own (the pipes'
        file objects are closed); neither is left open when the other cannot be made."""
        assert self.main is not None and self.main.stdout is not None and self.main.stderr is not None
        out = os.dup(self.main.stdout.fileno())
        try:
            err = os.dup(self.main.stderr.fileno())
        except OSError:
            os.close(out)
            raise
        self.main.stdout.close()
        self.main.stderr.close()
        return out, err

    def exit_fd(self) -> int:
        """A descriptor that turns readable when bwrap has exited (a pidfd; the caller closes
        it). Call before reaping: the pid is still bwrap's until then."""
        assert self.main is not None, "after start"
        return os.pidfd_open(self.main.pid)

    def close(self) -> None:
        """Reap bwrap (after the cgroup was killed) and release our ends. A start that never
        got its go is killed here: bwrap itself first (so it clones nothing more), then what it
        cloned (the job's pid 1 ignores the death signal of its parent)."""
        try:
            if self.main is not None:
                self._reap(self.main)
        finally:
            self._close_procs()
            if self._go is not None:
                os.close(self._go)
                self._go = None

    def _reap(self, main: subprocess.Popen[bytes]) -> None:
        if not self.released:
            main.kill()  # not reaped yet: the pid is still ours
            self.launch.cgroup.kill()
        for stream in (main.stdout, main.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        try:
            main.wait(timeout=5)
        except subprocess.TimeoutExpired:
            main.kill()
            main.wait()


def children(pid: int) -> list[int]:
    """The direct children of `pid` (bwrap's init, inside the job's pid namespace)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except (OSError, ValueError):
        return []


def wait_for_command(bwrap_pid: int, timeout: float = 1.0) -> None:
    """Until bwrap's init has started the command (its child), so a SIGTERM reaches it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(children(init) for init in children(bwrap_pid)):
            return
        time.sleep(0.002)


def await_exit(
    sandbox: Sandbox, stop_fd: int, stopped: threading.Event, timeout: float | None, grace: float
) -> tuple[float | None, bool]:
    """Until bwrap has exited. A stop (`stopped` set, then `stop_fd` written) or the job's
    timeout sends SIGTERM to the command and what it started; SIGKILL to all after the grace
    period. (the timeout, when it struck; whether a stop did): a stop that came once the
    command had ended stopped nothing (its job was recorded STOPPED, exit 0: review)."""
    assert sandbox.main is not None, "after start"
    bwrap_pid, cgroup = sandbox.main.pid, sandbox.launch.cgroup
    exited = sandbox.exit_fd()
    poll = select.poll()
    poll.register(exited, select.POLLIN)
    poll.register(stop_fd, select.POLLIN)
    due = None if timeout is None else time.monotonic() + timeout  # the next step's time
    timed_out, terminated = None, False
    try:
        while True:
            # poll() takes at most 2**31 - 1 ms (24.8 days): a longer timeout waits in turns
            wait_ms = None if due is None else min(max(0.0, (due - time.monotonic()) * 1000), 2**31 - 1)
            if any(fd == exited for fd, _ in poll.poll(wait_ms)):
                return timed_out, terminated and timed_out is None
            now = time.monotonic()
            if terminated and due is not None and now >= due:
                cgroup.kill()  # bwrap too: `exited` turns readable
                due = None
            elif not terminated and (stopped.is_set() or (due is not None and now >= due)):
                timed_out = None if stopped.is_set() else timeout
                # the command and what it started; bwrap outside and its init inside pass the
                # command's end on, they are not the job
                wait_for_command(bwrap_pid)  # a stop that raced with the start: the command is there
                cgroup.signal(signal.SIGTERM, exclude={bwrap_pid, *children(bwrap_pid)})
                terminated, due = True, now + grace
                poll.unregister(stop_fd)
    finally:
        os.close(exited)
