"""The kernel side of a job's setup outside the network agent, behind one seam so a job's
life can be unit-tested with a fake: its cgroup, network namespace, /work and sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from joblet.network_agent.netns import JobNetns
from joblet.worker.cgroups import JobCgroup
from joblet.worker.execution import Launch, Sandbox
from joblet.worker.mounts import mount_tmpfs, remove_dirs


class Kernel(Protocol):
    def cgroup(self, path: Path) -> JobCgroup: ...

    def netns(self, sys_dir: Path) -> JobNetns: ...

    def sandbox(self, launch: Launch) -> Sandbox: ...

    def mount_work(self, path: Path, size_bytes: int) -> None: ...

    def remove_dirs(self, dirs: list[Path]) -> None: ...


class LinuxKernel:
    """The real thing."""

    def cgroup(self, path: Path) -> JobCgroup:
        return JobCgroup(path)

    def netns(self, sys_dir: Path) -> JobNetns:
        return JobNetns.create(sys_dir)

    def sandbox(self, launch: Launch) -> Sandbox:
        return Sandbox(launch)

    def mount_work(self, path: Path, size_bytes: int) -> None:
        mount_tmpfs(path, size_bytes)

    def remove_dirs(self, dirs: list[Path]) -> None:
        remove_dirs(dirs)
