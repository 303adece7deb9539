"""A job's own cgroup (v2 hierarchy): holds every process of the job, kills them all at once.

On hybrid hosts (v1 controllers, v2 at /sys/fs/cgroup/unified) the v2 tree still tracks
processes and has `cgroup.kill`, so the whole job tree is found and ended there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from joblet.errors import ExecutionError

CANDIDATES = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


def detect_root() -> Path:
    """The cgroup v2 mount point of this host."""
    for path in CANDIDATES:
        if (path / "cgroup.procs").exists() and (path / "cgroup.subtree_control").exists():
            return path
    raise ExecutionError("no cgroup v2 hierarchy found (looked at /sys/fs/cgroup[/unified])")


class JobCgroup:
    """The directory <cgroup root>/<job id>."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExecutionError(f"failed to create cgroup {self.path}: {exc.strerror}") from None

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs_file.read_text().split()]
        except FileNotFoundError:
            return []

    def signal(self, sig: int, exclude: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        for pid in self.pids():
            if pid not in exclude:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (and those forked meanwhile)."""
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(FileNotFoundError):
                kill_file.write_text("1")
            return
        for _ in range(10):  # no cgroup.kill (kernel < 5.14): loop until nothing is left
            if not self.pids():
                return
            self.signal(signal.SIGKILL)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left and remove the directory; a missing one is success."""
        deadline = time.monotonic() + timeout
        while self.path.exists():
            self.kill()
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:  # EBUSY while the last processes exit
                if time.monotonic() > deadline:
                    raise ExecutionError(f"failed to remove cgroup {self.path}: {exc.strerror}") from None
                time.sleep(0.01)
