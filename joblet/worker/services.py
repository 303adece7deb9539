"""What one job's run needs from its worker, and nothing more: narrow collaborators that the
supervisor builds once and hands to every JobRun (tests hand in fakes)."""

from __future__ import annotations

import contextlib
import glob
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from joblet.api.models import JobSpec, JobStatus
from joblet.api.store import Store
from joblet.config import Settings
from joblet.errors import ExecutionError
from joblet.network_agent.agent import NetworkAgent
from joblet.network_agent.netns import JobNetns
from joblet.network_agent.plan import NetFacts, NetPlan
from joblet.worker.discovery import Discovery
from joblet.worker.etc_view import EtcView
from joblet.worker.execution import TOOL_DIRS, tool
from joblet.worker.journal import Journal
from joblet.worker.kernel import Kernel, LinuxKernel
from joblet.worker.output import OutputPump
from joblet.worker.records import Records
from joblet.worker.sandbox import SECRETS, SYSTEM_DIRS, Host, survey
from joblet.worker.volumes import JobMounts


class JobStore(Protocol):
    """What a job's run asks of the state store (joblet.api.store.Store; fakes in tests)."""

    def transition(self, job_id: str, allowed: Iterable[JobStatus], **fields: Any) -> bool: ...

    def statuses(self, job_ids: list[str]) -> list[JobStatus | None]: ...

    def append_output(self, job_id: str, field: bytes, data: bytes, cap: int) -> None: ...

    def end_output(self, job_id: str, summary: dict[str, Any], cap: int, ttl: int) -> None: ...


class NetAgent(Protocol):
    """What a job's run asks of the network agent (joblet.network_agent.agent.NetworkAgent)."""

    def facts(self, spec: JobSpec) -> NetFacts: ...

    def reserve(self, job_id: str, spec: JobSpec, facts: NetFacts) -> dict[str, int]: ...

    def free(self, job_id: str, reserved: dict[str, int]) -> None: ...

    def setup(self, plan: NetPlan, netns: JobNetns | None) -> None: ...

    def teardown(self, plan: NetPlan) -> None: ...

    def released(self, plan: NetPlan) -> None: ...


@dataclass
class Services:
    """The worker's shared parts a job uses."""

    cfg: Settings
    store: Store
    agent: NetworkAgent
    journal: Journal
    pump: OutputPump
    mounts: JobMounts
    discovery: Discovery
    records: Records
    host: Callable[[], Host]  # what a job's root binds and covers, looked at before each job
    cgroup_root: Path
    cgroup_v2: bool = False  # limits in the job's own v2 group, else in v1 twins (hybrid hosts)
    jobs_memory_mb: int = 0  # all jobs' memory together, where the worker capped it (JOBLET_JOBS_MAX_MEMORY)
    kernel: Kernel = field(default_factory=LinuxKernel)
    etc: EtcView | None = None  # the jobs' /etc, kept in step with the host's (started with the worker)


def secret_patterns(cfg: Settings) -> tuple[str, ...]:
    """What jobs must not read: the usual secrets, the configured ones, and joblet's own key
    and config file wherever an operator put them."""
    own = [str(p) for p in (cfg.signing_key,) if p is not None]
    own += [os.environ[v] for v in ("JOBLET_CONFIG",) if os.environ.get(v)]
    return (*SECRETS, *cfg.sandbox_masked_paths, *(glob.escape(os.path.abspath(p)) for p in own))


def template_keep(cfg: Settings) -> tuple[str, ...]:
    """What a job's start reaches in its mount namespace (worker/mount_template.py): what
    bwrap binds, the tools it runs, and this Python (a module imported lazily in a job's
    thread is read there). Of /proc only its mount; none of /sys and /dev: a job gets its
    own sysfs and /dev, the worker opens the cgroup files the sandbox joins
    (execution.Sandbox) and looks at the host's device nodes (mounts.JobMounts) outside
    it, and bwrap reads the whole table at each of its ~25 binds: the host's sysfs, its
    cgroup hierarchies (seven mounts on a hybrid host), devtmpfs, securityfs, debugfs,
    binfmt_misc... cost every start (docs/PERFORMANCE_LOG.md, items 28 and 45)."""
    tools = []
    for name in ("sh", "bwrap"):
        with contextlib.suppress(ExecutionError):  # missing: the job's start says so
            tools.append(os.path.dirname(tool(name)))
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # editable installs
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, here, *(p for p in sys.path if os.path.isabs(p))}
    dirs = (cfg.run_dir, cfg.state_dir, cfg.runtimes_dir)
    runtimes = glob.glob(os.path.join(glob.escape(str(cfg.runtimes_dir)), "*"))  # links to elsewhere too
    system = ("/usr", *SYSTEM_DIRS, "/etc", "/proc/self")  # each keeps its mount, not those below
    return (*system, *map(str, dirs), *runtimes, *cfg.sandbox_ro_paths, *tools, *sorted(python))


def template_sealed() -> tuple[str, ...]:
    """The programs the mount template binds read-only (worker/mount_template.py): bwrap, whose
    init is each job's pid 1, its /proc/1/exe a job's root could fchmod and fchown. The shell
    before it execs it: no job sees that process. Every path a start may run it from, there
    or not yet: one installed or relinked after the worker started is sealed too (it ran
    unsealed for the worker's life when it was missing at its start)."""
    return tuple(os.path.join(d, "bwrap") for d in TOOL_DIRS)


def host_survey(cfg: Settings, cover: Path, etc: EtcView) -> Callable[[], Host]:
    """Looks at the host before each job (a key added later is covered too), with the
    copy's secret patterns (links before a wildcard resolved: /etc/ssl -> /usr/lib/ssl)."""
    secrets = etc.copier.secrets.patterns
    return lambda: survey(cover, cfg.sandbox_ro_paths, secrets, etc.path, etc.copier.secret_links)
