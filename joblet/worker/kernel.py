"""The kernel side of a job's setup outside the network agent, behind one seam so a job's
life can be unit-tested with a fake: its cgroup, its thread, network and mount namespaces,
sandbox."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from joblet.network_agent.netns import JobNetns, Runner
from joblet.worker.cgroups import JobCgroup
from joblet.worker.execution import Launch, Sandbox
from joblet.worker.mount_template import MountTemplate
from joblet.worker.mounts import JobMounts
from joblet.worker.nsthread import JobThread


class Kernel(Protocol):
    def cgroup(self, path: Path) -> JobCgroup: ...

    def thread(self, name: str) -> JobThread: ...

    def netns(self, call: Runner) -> JobNetns: ...

    def sandbox(self, launch: Launch) -> Sandbox: ...

    def mounts(
        self,
        job_dir: Path,
        size_bytes: int,
        fill: Callable[[Path], None],
        call: Runner,
        sys_covers: list[tuple[str, str]],
        reach: tuple[str, ...],
    ) -> JobMounts: ...


class LinuxKernel:
    """The real thing; jobs' mount namespaces copied from `template` when given."""

    def __init__(self, template: MountTemplate | None = None) -> None:
        self.template = template

    def cgroup(self, path: Path) -> JobCgroup:
        return JobCgroup(path)

    def thread(self, name: str) -> JobThread:
        return JobThread(name)

    def netns(self, call: Runner) -> JobNetns:
        return JobNetns.create(call)

    def sandbox(self, launch: Launch) -> Sandbox:
        return Sandbox(launch)

    def mounts(
        self,
        job_dir: Path,
        size_bytes: int,
        fill: Callable[[Path], None],
        call: Runner,
        sys_covers: list[tuple[str, str]],
        reach: tuple[str, ...],
    ) -> JobMounts:
        return JobMounts.create(job_dir, size_bytes, fill, call, self.template, sys_covers, reach)
