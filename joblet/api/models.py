"""Checked, frozen messages: what a job is (JobSpec) and what became of it (JobRecord)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from joblet.api.limits import Limits, parse_duration
from joblet.api.uploads import Upload, path_problem, uploads
from joblet.fields import (
    FieldError,
    boolean,
    brief,
    checked,
    checked_all,
    integer,
    known_fields,
    matching,
    no_nul,
    number,
    only_known,
    optional,
    required,
    string_map,
    strings,
    text,
)
from joblet.names import ALONE
from joblet.text import shown

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}\Z")
VOLUME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
RUNTIME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}\Z")
USER_RE = re.compile(r"^([0-9]{1,10})(?::([0-9]{1,10}))?\Z")
ARG_MAX_BYTES = (128 << 10) - 1  # the kernel's MAX_ARG_STRLEN less the string's NUL: execve refuses more
ARGV_MAX_BYTES = 1 << 20  # all arguments together (the kernel allows ~2 MiB for argv and env)
ENV_MAX_BYTES = 512 << 10


class JobStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    LOST = "LOST"
    CANCELED = "CANCELED"

    @property
    def final(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What to run and how; every field is checked when a spec is made (FieldError names it)."""

    command: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    network: tuple[str, ...] = ("bridge",)
    uploads: tuple[Upload, ...] = ()
    node: str | None = None
    timeout: float | None = None
    volumes: tuple[str, ...] = ()
    runtime: str | None = None
    user: str | None = None
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        checked_all(self, _SPEC_CHECKS)

    @classmethod
    def from_dict(cls, data: Any) -> JobSpec:
        """A spec from its JSON shape (a queue message, a stored record); unknown fields are refused."""
        return data if isinstance(data, JobSpec) else cls(**required(only_known(data, _SPEC_CHECKS), "command"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: what is queued and stored."""
        return {
            "command": self.command,
            "args": list(self.args),
            "env": dict(self.env),
            "name": self.name,
            "network": list(self.network),
            "uploads": [u.to_dict() for u in self.uploads],
            "node": self.node,
            "timeout": self.timeout,
            "volumes": list(self.volumes),
            "runtime": self.runtime,
            "user": self.user,
            "limits": self.limits.to_dict(),
        }

    def replace(self, **changes: Any) -> JobSpec:
        """A copy with `changes`, checked like a new spec."""
        return dataclasses.replace(self, **changes)

    @property
    def ids(self) -> tuple[int, int] | None:
        """(uid, gid) of `user` (the gid defaults to the uid), None when it is not set."""
        if self.user is None:
            return None
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)

    @property
    def upload_bytes(self) -> int:
        return sum(u.size for u in self.uploads)


def _command(value: Any) -> str:
    command = text(value, 1, 4096)
    if not command.strip():
        raise ValueError("command is empty")
    return no_nul(command, "command")


def _args(value: Any) -> tuple[str, ...]:
    total = 0
    for i, arg in enumerate(strings(value)):
        checked(str(i), no_nul, arg, "argument")
        size = len(arg.encode(errors="surrogatepass"))
        if size > ARG_MAX_BYTES:
            raise ValueError(f"an argument of {size} bytes is over the limit of {ARG_MAX_BYTES}")
        total += size + 1
    if total > ARGV_MAX_BYTES:
        raise ValueError(f"the arguments total {total} bytes, over the limit of {ARGV_MAX_BYTES}")
    return tuple(value)


def _env(value: Any) -> dict[str, str]:
    total = 0
    env = string_map(value)
    for key, val in env.items():
        if not ENV_KEY_RE.fullmatch(key):
            raise ValueError(f"invalid environment variable name '{shown(key)}'")  # escapes as elsewhere (\x0a)
        no_nul(val, f"value of {key}")
        size = len(key) + len(val.encode(errors="surrogatepass")) + 1  # KEY=VALUE, one execve string
        if size > ARG_MAX_BYTES:  # the job failed (exit 1, no word why) at its exec (red-team run)
            raise ValueError(f"{key}=... is {size} bytes, over the limit of {ARG_MAX_BYTES} bytes for one variable")
        total += size + 1
    if total > ENV_MAX_BYTES:
        raise ValueError(f"the environment totals {total} bytes, over the limit of {ENV_MAX_BYTES}")
    return env


LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")  # network_agent/plan.py's hosts file
SHORT_ID_RE = re.compile(r"^[0-9a-f]{12}\Z", re.IGNORECASE)  # a job's name in its peers' /etc/hosts, any case
# a longer start of an id: `rnx stop 6c4d...` (16 digits) found a job named so before the id's
# job (names come first) and stopped it (red-team run); bound on new specs only (check_fresh)
ID_PREFIX_RE = re.compile(r"^[0-9a-f]{12,32}\Z", re.IGNORECASE)


def _name(value: Any) -> str | None:
    hint = "use letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)"
    name = optional(matching, value, NAME_RE, "job name", hint)
    if name is not None and SHORT_ID_RE.match(name):
        raise ValueError(f"{name!r} has the shape of a job's short id (12 hex digits), which names jobs by id")
    if name is not None and (name.lower() in LOOPBACK_NAMES or name.lower().startswith("localhost.")):
        # listed in its peers' /etc/hosts beside their own localhost line, where resolvers
        # that return every match (glibc's `multi on`) gave `localhost` the job's address too
        raise ValueError(f"{name!r} names the loopback in every job's /etc/hosts")
    return name


def _network(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("at least one network is needed")
        for net in value:
            if not isinstance(net, str) or not NETWORK_RE.fullmatch(net):
                several = isinstance(net, str) and "," in net  # --status and --dns take commas
                hint = " (one network a --network: give it once for each)" if several else ""
                raise ValueError(f"invalid network name {brief(net)}{hint}")
        if len(set(value)) != len(value):
            raise ValueError("a network is named twice")
    return strings(value)


def _timeout(value: Any) -> float | None:
    if isinstance(value, str):  # a workflow file's `timeout: 5m`
        value = parse_duration(value)
    return optional(number, value, gt=0)


def _volumes(value: Any) -> tuple[str, ...]:
    for vol in strings(value):
        if not VOLUME_RE.fullmatch(vol):  # `v1:/data` as Docker's: where it goes is fixed
            name = brief(vol.split(":")[0])
            hint = f" (a volume mounts at /volumes/NAME: give its name, {name})" if ":" in vol else ""
            raise ValueError(f"invalid volume name {brief(vol)}{hint}")
    if len(set(value)) != len(value):
        raise ValueError("a volume is named twice")
    return tuple(value)


def _runtime(value: Any) -> str | None:
    return optional(matching, value, RUNTIME_RE, "runtime name")


def _user(value: Any) -> str | None:
    user = optional(matching, value, USER_RE, "user", "use UID or UID:GID")
    if user is not None and any(int(g) > 2**32 - 2 for g in user.split(":")):
        raise ValueError(f"invalid user {brief(user)}: use UID or UID:GID")
    return user


def _node(value: Any) -> str | None:
    return optional(matching, value, NODE_RE, "node name")


_SPEC_CHECKS: dict[str, Callable[[Any], Any]] = {
    "command": _command,
    "args": _args,
    "env": _env,
    "name": _name,
    "network": _network,
    "uploads": uploads,
    "node": _node,
    "timeout": _timeout,
    "volumes": _volumes,
    "runtime": _runtime,
    "user": _user,
    "limits": Limits.from_dict,
}


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string; None also for one no date holds (a record
    written past rnx with 1e18 failed `rnx network list` for everyone: review)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """The state of one job as kept in Redis and returned to users."""

    id: str
    status: JobStatus
    spec: JobSpec
    name: str | None = None
    node: str | None = None
    ips: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    workflow: str | None = None  # the workflow's id, for its jobs
    output_truncated: bool = False  # its output passed its byte cap (max_output)

    def __post_init__(self) -> None:
        checked_all(self, _RECORD_CHECKS)  # every field, as pydantic did on read

    @classmethod
    def pending(cls, job_id: str, spec: JobSpec, **fields: Any) -> JobRecord:
        """A new job's record, PENDING from now."""
        return cls(id=job_id, status=JobStatus.PENDING, spec=spec, name=spec.name, created=time.time(), **fields)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """A record from its stored fields; fields this version does not know are ignored."""
        known = known_fields(cls, data)
        for name in ("id", "status", "spec"):
            required(known, name)
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """The stored fields (JSON values), those that are None left out."""
        out = {name: getattr(self, name) for name in RECORD_FIELDS}
        out["status"] = self.status.value
        spec = self.spec.to_dict()
        spec["limits"] = {k: v for k, v in spec["limits"].items() if v is not None}
        out["spec"] = {k: v for k, v in spec.items() if v is not None}
        out["ips"] = dict(self.ips)
        return {k: v for k, v in out.items() if v is not None}

    def replace(self, **changes: Any) -> JobRecord:
        return dataclasses.replace(self, **changes)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def network(self) -> str:
        return self.spec.network[0]

    @property
    def ip(self) -> str | None:
        return self.ips.get(self.network)

    def public(self) -> dict[str, Any]:
        """The JSON shape users see (`rnx list --json`, `rnx status --json`)."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "command": self.spec.command,
            "args": list(self.spec.args),
            "network": self.network,
            "networks": list(self.spec.network),
            "ip": self.ip,
            "ips": dict(self.ips),
            "node": self.node,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "error": self.error,
            "created": iso(self.created),
            "started": iso(self.started),
            "finished": iso(self.finished),
            "workflow": self.workflow,
            "output_truncated": self.output_truncated,
            # what it was given beyond its command: only the limits set (the rest: the worker's defaults)
            "limits": {k: v for k, v in self.spec.limits.to_dict().items() if v is not None},
            "timeout": self.spec.timeout,
            "volumes": list(self.spec.volumes),
            "runtime": self.spec.runtime,
            "user": self.spec.user,
        }


MAX_TIMEOUT = 10 * 365 * 86400  # seconds; more reads as "never", which no timeout says
# bubblewrap takes at most 9,000 arguments, its own options included, and each environment
# variable is three (--setenv K V): 20,000 arguments failed the job as if its command had
# exited 1 (usability run). These leave ~1,800 for the sandbox's own (~150 on a plain host)
MAX_ARGS, MAX_ENV = 4096, 1024
# a job on 300 networks kept its worker making bridges for 54 s, then failed (ENOBUFS) and
# left every bridge until its network was deleted (red-team run): Docker's containers seldom
# join more than a few
MAX_NETWORKS = 16
LIMIT_FIELDS = frozenset(f.name for f in dataclasses.fields(Limits))  # given beside the spec's: refused


def check_fresh(spec: JobSpec) -> None:
    """Bounds on a spec submitted now (preflight, and the worker's check of a message), not
    on one read back: a record stored before a bound was added must still read (a JobSpec's
    own checks run on every stored record, and one they refuse drops out of every listing).
    FieldError naming the field."""
    if spec.name is not None and ID_PREFIX_RE.match(spec.name):  # 12 digits: _name, on every record
        raise FieldError(
            "name", f"{spec.name!r} has the shape of a job id's start (hex digits), which names jobs by id"
        )
    if spec.timeout is not None and spec.timeout > MAX_TIMEOUT:  # 1e20 was taken, shown as `1e+20 s`
        raise FieldError("timeout", f"must be at most {MAX_TIMEOUT} s (ten years; give none for no timeout)")
    if len(spec.network) > MAX_NETWORKS:
        raise FieldError("network", f"{len(spec.network)} networks, at most {MAX_NETWORKS}")
    for alone in ALONE:  # here, not with the networks' lookup: rnx batch looks a network up once
        if alone in spec.network and len(spec.network) > 1:
            raise FieldError("network", f"{alone!r} cannot be combined with other networks")
    if len(spec.args) > MAX_ARGS:
        long = "pass a long list in an uploaded file"
        raise FieldError("args", f"{len(spec.args)} arguments, at most {MAX_ARGS} ({long})")
    if len(spec.env) > MAX_ENV:
        raise FieldError("env", f"{len(spec.env)} environment variables, at most {MAX_ENV}")
    for i, upload in enumerate(spec.uploads):
        problem = path_problem(upload.path)
        if problem:
            raise FieldError(("uploads", str(i), "path"), problem)


def make_spec(command: str, args: Any = (), **fields: Any) -> JobSpec:
    """A checked new JobSpec (check_fresh too), or FieldError (a ValidationError) with one
    line naming the field."""
    args = tuple(args) if isinstance(args, list | tuple) else args  # else the check says why
    limit = next((k for k in fields if k in LIMIT_FIELDS), None)
    if limit is not None:  # `Client.run("echo", max_cpu=50)`: "unknown field", no more (usability run)
        raise FieldError(limit, f"a limit: give it in limits={{{limit!r}: ...}}")
    spec = JobSpec.from_dict({"command": command, "args": args, **fields})
    check_fresh(spec)
    return spec


RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(JobRecord))
_RECORD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "id": text,
    "status": JobStatus,
    "spec": JobSpec.from_dict,
    "ips": string_map,
    "output_truncated": boolean,
    **dict.fromkeys(("name", "node", "error", "workflow"), lambda v: optional(text, v)),
    **dict.fromkeys(("exit_code", "signal"), lambda v: optional(integer, v)),
    **dict.fromkeys(("created", "started", "finished"), lambda v: optional(number, v)),
}
