"""Start a job's process in fresh namespaces, in two stages.

1. `unshare` makes new net, mount, pid, uts and ipc namespaces whose pid 1 is launcher.sh.
   It reports "ready" once the namespaces exist; the worker then wires the network into them
   and says "go"; the launcher configures addresses, mounts /work and the per-job files and
   reports where the command is.
2. `nsenter` starts the command inside those namespaces (pid 2, in the job's cgroup, with
   Docker's default capabilities and no_new_privs). nsenter passes the command's exact exit
   status or signal on, which a shell as pid 1 could not.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from joblet.errors import ExecutionError
from joblet.worker.cgroups import JobCgroup

LAUNCHER = (Path(__file__).with_name("launcher.sh")).read_text()
DEFAULT_CAPS = ("chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid",
                "setpcap", "net_bind_service", "net_raw", "sys_chroot", "mknod", "audit_write",
                "setfcap")
SETUP_FAILURES = {
    90: "could not join the job's cgroup", 91: "could not set the hostname",
    92: "the worker went away during setup", 93: "could not configure the network",
    94: "could not mount /work", 95: "could not mount /etc/hosts",
    96: "could not mount /etc/resolv.conf", 97: "could not enter /work", 98: "could not mount /sys",
    99: "could not mount a volume or runtime", 89: "could not limit the job's bandwidth",
}


def _tool(name: str) -> str:
    path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        raise ExecutionError(f"{name} not found: install util-linux")
    return path


@dataclass
class Launch:
    """Where and as what a job's process starts."""

    job_id: str
    hostname: str
    cgroup: JobCgroup
    work_dir: Path
    run_dir: Path
    env: dict[str, str]
    command: str
    args: tuple[str, ...]
    own_netns: bool = True
    setup_timeout: float = 30.0
    user: tuple[int, int] | None = None  # (uid, gid); None: root with Docker's capabilities


@dataclass
class Sandbox:
    """The namespaces of one job, held by their pid 1."""

    launch: Launch
    init: subprocess.Popen[bytes] | None = None
    main: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> int:
        """Create the namespaces; returns a pid inside the new network namespace."""
        la = self.launch
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "JL_CGS": " ".join(str(f) for f in la.cgroup.procs_files),
            "JL_HOSTNAME": la.hostname, "JL_RUN": str(la.run_dir), "JL_WORK": str(la.work_dir),
            "JL_PATH": la.env.get("PATH", "/usr/bin:/bin"),
        }
        net = ["--net"] if la.own_netns else []  # host mode shares the host's network
        argv = [_tool("unshare"), *net, "--mount", "--uts", "--ipc", "--pid", "--fork",
                "--kill-child", "--mount-proc", "/bin/sh", "-c", LAUNCHER, "joblet-init",
                la.command]
        self._log = open(la.run_dir / "init.log", "w+b")  # noqa: SIM115 - closed in close()
        self.init = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=env, close_fds=True)
        self._expect("ready")
        return self.init.pid

    def go(self) -> str | None:
        """Let the launcher finish setup; the command's path, or None if it does not exist."""
        assert self.init is not None and self.init.stdin is not None
        try:
            self.init.stdin.write(b"go\n")
            self.init.stdin.flush()
        except BrokenPipeError:
            pass
        reply = self._expect("ok", "notfound")
        self.init.stdin.close()  # the launcher is done reading: free our descriptors early
        self.init.stdout.close()  # type: ignore[union-attr]
        return None if reply == "notfound" else reply[3:]

    def exec(self, path: str) -> subprocess.Popen[bytes]:
        """Start the command as pid 2 of the job, stdout and stderr on pipes."""
        assert self.init is not None
        la, pid = self.launch, self.init.pid
        caps = ",".join(f"+{c}" for c in DEFAULT_CAPS)
        net = ["-n"] if la.own_netns else []
        ids = [] if la.user is None else [f"--reuid={la.user[0]}", f"--regid={la.user[1]}",
                                          "--clear-groups"]
        argv = [_tool("nsenter"), "-t", str(pid), "-m", "-u", "-i", *net,
                f"--pid=/proc/{pid}/ns/pid_for_children", "--wdns=/work", "--",
                _tool("setpriv"), *ids, "--no-new-privs", "--inh-caps=-all",
                f"--bounding-set=-all,{caps}", "--", path, *la.args]
        procs = [os.open(f, os.O_WRONLY) for f in la.cgroup.procs_files]

        def join() -> None:
            for fd in procs:
                os.write(fd, b"0")

        try:
            # preexec only writes numbers: joining the cgroups before exec means the
            # command and all it forks are in them from the first instruction.
            self.main = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=la.env, close_fds=True, preexec_fn=join,
            )
        except OSError as exc:
            raise ExecutionError(f"failed to start {la.command}: {exc}") from None
        finally:
            for fd in procs:
                os.close(fd)
        return self.main

    def _expect(self, *words: str) -> str:
        assert self.init is not None and self.init.stdout is not None
        # poll, not select: a busy worker has far more than 1024 descriptors open
        poller = select.poll()
        poller.register(self.init.stdout, select.POLLIN)
        ready = poller.poll(self.launch.setup_timeout * 1000)
        line = self.init.stdout.readline().decode(errors="replace").strip() if ready else ""
        if line.split(" ", 1)[0] in words:
            return line
        raise ExecutionError(f"job setup failed: {self._failure()}")

    def _failure(self) -> str:
        assert self.init is not None
        try:
            code = self.init.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "the job's init did not answer in time"
        log = b""
        if self._log is not None:
            self._log.seek(0)
            log = self._log.read()[-2000:]
        detail = log.decode(errors="replace").strip().splitlines()
        reason = SETUP_FAILURES.get(code, f"init exited with {code}")
        return f"{reason}: {detail[-1]}" if detail else reason

    def close(self) -> None:
        """Wait for the init (after the cgroup was killed) and release our ends."""
        if self.init is not None:
            for stream in (self.init.stdin, self.init.stdout):
                if stream is not None and not stream.closed:
                    with contextlib.suppress(BrokenPipeError):
                        stream.close()
            try:
                self.init.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.init.kill()
                self.init.wait()
        if self._log is not None:
            self._log.close()
