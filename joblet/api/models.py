"""Validated, frozen messages: what a job is (JobSpec) and what became of it (JobRecord)."""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from joblet.api.limits import Limits

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
VOLUME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RUNTIME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")
USER_RE = re.compile(r"^(\d{1,10})(?::(\d{1,10}))?$")
ARG_MAX_BYTES = 128 << 10  # the kernel's MAX_ARG_STRLEN: execve refuses a longer string
ARGV_MAX_BYTES = 1 << 20  # all arguments together (the kernel allows ~2 MiB for argv and env)
ENV_MAX_BYTES = 512 << 10


class JobStatus(StrEnum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    LOST = "LOST"
    CANCELED = "CANCELED"

    @property
    def final(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING)


def _no_nul(value: str, what: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte")
    return value


class Upload(BaseModel):
    """One file to place under /work; `content` is base64."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    mode: int = Field(0o644, ge=0, le=0o7777)
    content: str = ""

    @field_validator("path")
    @classmethod
    def _relative_inside_work(cls, value: str) -> str:
        _no_nul(value, "upload path")
        norm = posixpath.normpath(value)
        if value.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
            raise ValueError(f"upload path {value!r} escapes /work")
        return norm

    @field_validator("content")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("upload content is not valid base64") from None
        return value

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.content)

    @property
    def size(self) -> int:
        return len(self.content) * 3 // 4


class JobSpec(BaseModel):
    """What to run and how; every field is checked before anything is queued."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: str = Field(min_length=1, max_length=4096)
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    name: str | None = None
    network: tuple[str, ...] = ("bridge",)
    uploads: tuple[Upload, ...] = ()
    node: str | None = None
    timeout: float | None = Field(None, gt=0)
    volumes: tuple[str, ...] = ()
    runtime: str | None = None
    user: str | None = None
    limits: Limits = Field(default_factory=Limits)

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("command is empty")
        return _no_nul(value, "command")

    @field_validator("args")
    @classmethod
    def _args(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        total = 0
        for arg in value:
            _no_nul(arg, "argument")
            size = len(arg.encode(errors="surrogatepass"))
            if size > ARG_MAX_BYTES:
                raise ValueError(f"an argument of {size} bytes is over the limit of {ARG_MAX_BYTES}")
            total += size + 1
        if total > ARGV_MAX_BYTES:
            raise ValueError(f"the arguments total {total} bytes, over the limit of {ARGV_MAX_BYTES}")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        total = 0
        for key, val in value.items():
            if not ENV_KEY_RE.match(key):
                raise ValueError(f"invalid environment variable name {key[:64]!r}")
            _no_nul(val, f"value of {key}")
            total += len(key) + len(val.encode(errors="surrogatepass")) + 2
        if total > ENV_MAX_BYTES:
            raise ValueError(f"the environment totals {total} bytes, over the limit of {ENV_MAX_BYTES}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_RE.match(value):
            raise ValueError(
                f"invalid job name {value!r}: use letters, digits, '.', '_' or '-' "
                "(at most 63, starting with a letter or digit)"
            )
        return value

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = (value,)
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("at least one network is needed")
            for net in value:
                if not isinstance(net, str) or not NETWORK_RE.match(net):
                    raise ValueError(f"invalid network name {net!r}")
            if len(set(value)) != len(value):
                raise ValueError("a network is named twice")
        return value

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for vol in value:
            if not VOLUME_RE.match(vol):
                raise ValueError(f"invalid volume name {vol!r}")
        if len(set(value)) != len(value):
            raise ValueError("a volume is named twice")
        return value

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, value: str | None) -> str | None:
        if value is not None and not RUNTIME_RE.match(value):
            raise ValueError(f"invalid runtime name {value!r}")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None:
            m = USER_RE.match(value)
            if not m or any(int(g) > 2**32 - 2 for g in m.groups() if g):
                raise ValueError(f"invalid user {value!r}: use UID or UID:GID")
        return value

    @field_validator("node")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        if value is not None and not NODE_RE.match(value):
            raise ValueError(f"invalid node name {value!r}")
        return value

    @property
    def upload_bytes(self) -> int:
        return sum(u.size for u in self.uploads)


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class JobRecord(BaseModel):
    """The state of one job as kept in Redis and returned to users."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: JobStatus
    spec: JobSpec
    name: str | None = None
    node: str | None = None
    ips: dict[str, str] = Field(default_factory=dict)
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    workflow: str | None = None  # the workflow's id, for its jobs
    output_truncated: bool = False  # its output passed its byte cap (max_output)

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
        }


def validation_message(exc: pydantic.ValidationError, what: str = "job") -> str:
    """One line naming the field and what is wrong with it."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or what
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"invalid {what} field {_single_quoted(field)}: {msg}"


def _single_quoted(text: str) -> str:
    """`text` as repr writes it (one line, escapes), always in single quotes: a field named
    after an env key holding a ' must read like every other field."""
    shown = repr(text)
    return shown if shown.startswith("'") else "'" + shown[1:-1].replace("'", "\\'") + "'"


def make_spec(command: str, args: Any = (), **fields: Any) -> JobSpec:
    """A checked JobSpec, or ValidationError with one line naming the field."""
    from joblet.errors import ValidationError

    try:
        args = tuple(args) if isinstance(args, list | tuple) else args  # else pydantic says why
        return JobSpec(command=command, args=args, **fields)
    except pydantic.ValidationError as exc:
        raise ValidationError(validation_message(exc)) from None
