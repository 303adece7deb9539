"""Settings, read once from the environment (JOBLET_*) and an optional TOML file.

The file is `$JOBLET_CONFIG` if set, else `/etc/joblet/joblet.toml` when it exists.
Environment variables win over the file.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from joblet.errors import ConfigError

DEFAULT_FILE = Path("/etc/joblet/joblet.toml")


def _config_file() -> Path | None:
    named = os.environ.get("JOBLET_CONFIG")
    if named:
        return Path(named)
    return DEFAULT_FILE if DEFAULT_FILE.exists() else None


class Settings(BaseModel):
    """Every knob of joblet, for the CLI, the Python API and the worker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="state store and default broker")
    broker_url: str | None = Field(None, description="Celery broker; defaults to redis_url")
    key_prefix: str = Field("joblet:", description="prefix of every Redis key joblet writes")
    queue: str = Field("joblet", description="shared Celery queue; per-node queues add .host.NODE")
    state_dir: Path = Path("/var/lib/joblet")
    run_dir: Path = Path("/run/joblet")
    cgroup_root: Path | None = Field(None, description="cgroup v2 directory for jobs; auto-detected")
    node: str = Field(default_factory=socket.gethostname)
    concurrency: int = Field(512, ge=1, le=4096, description="jobs one worker runs at once")
    stop_grace: float = Field(10.0, ge=0, description="seconds between SIGTERM and SIGKILL")
    log_max_entries: int = Field(100_000, ge=100, description="cap of a job's output stream")
    output_max_bytes: int = Field(
        64 << 20,
        ge=1024,
        description="bytes of output (stdout and stderr) "
        "a job's stream keeps, default and ceiling of its max_output; "
        "e.g. 64M",
    )
    log_ttl: int = Field(7 * 86400, ge=60, description="seconds output and records live after a job")
    result_output_limit: int = Field(1 << 20, ge=0, description="bytes of stdout kept in a result")
    upload_max_bytes: int = Field(16 << 20, ge=0, description="total size of a job's uploads")
    spec_max_bytes: int = Field(
        24 << 20, ge=64 << 10, description="largest job spec (JSON, uploads included) a client sends"
    )
    message_max_bytes: int = Field(
        64 << 20,
        ge=256 << 10,
        description="worker: larger queue messages are dropped unread (a signed spec grows ~2.4x on the queue)",
    )
    message_ttl: int = Field(
        86400,
        ge=10,
        le=30 * 86400,
        description="seconds a queued job message stays valid; a later one is refused and its job FAILED",
    )
    allow_host_network: bool = Field(
        False,
        description="allow --network=host on this worker (the job still gets its sandbox, less the network namespace)",
    )
    job_max_pids: int = Field(4096, ge=8, description="a job's process limit without --max-pids")
    job_max_disk: int = Field(
        1024,
        ge=1,
        description="MB of a job's /work and of its /tmp without --max-disk (tmpfs: memory the job uses as it writes)",
    )
    job_shm: int = Field(64, ge=1, description="MB of a job's /dev/shm")
    sandbox_ro_paths: tuple[str, ...] = Field(
        (), description="more host paths jobs see read-only (besides /usr, /bin, /sbin, /lib*, /etc)"
    )
    sandbox_masked_paths: tuple[str, ...] = Field(
        (), description="more host paths (globs) jobs see empty, besides shadow, sudoers, ssh host keys..."
    )
    runtimes_dir: Path = Field(
        Path("/opt/joblet/runtimes"), description="one directory with a bin/ per runtime, named as in --runtime"
    )
    bridge_cidr: str = "172.20.0.0/16"
    bridge_name: str = "joblet0"
    isolated_pool: str = Field("10.254.0.0/16", description="isolated mode: one /30 per job from here")
    overlay: bool = Field(
        True,
        description="user networks span hosts: a VXLAN port on each "
        "network's bridge, peers learned from Redis (their MTU is the uplink's - 50)",
    )
    underlay_address: str | None = Field(
        None,
        description="this node's address other nodes send "
        "overlay (VXLAN) traffic to; default: the address of the "
        "default-route interface",
    )
    vxlan_port: int = Field(4789, ge=1, le=65535, description="UDP port of the overlay (the same fleet-wide)")
    dns_servers: tuple[str, ...] = Field(
        (), description="jobs' DNS servers when a network sets none; default: the host's upstream servers"
    )
    resolv_conf: Path | None = Field(
        None,
        description="where the host's upstream DNS servers are "
        "read; default: systemd-resolved's file, else /etc/resolv.conf",
    )
    foreign_forward: Literal["refuse", "insert", "warn"] = Field(
        "refuse",
        description="another tool's forward chain with a drop policy: refuse bridged "
        "jobs with an explanation, insert joblet's accept rules into it, or only warn",
    )
    visibility_timeout: int = Field(
        3600,
        ge=10,
        description="seconds before an unacknowledged message is delivered again (a job's claim makes that a no-op)",
    )
    heartbeat_interval: float = Field(5.0, gt=0)
    node_down_after: float = Field(
        20.0, gt=0, description="seconds without a heartbeat after which a node is shown down and gets no new jobs"
    )
    node_lost_grace: float = Field(
        60.0,
        ge=0,
        description="seconds a node may stay down before its running jobs become LOST and their addresses are freed",
    )
    signing_key: Path | None = Field(None, description="PEM private key: sign task messages (Celery's auth serializer)")
    signing_cert: Path | None = Field(None, description="PEM certificate of signing_key")
    signing_trust: str | None = Field(
        None, description="worker: glob of trusted PEM certificates; when set, only messages signed by one of them run"
    )
    job_blocked_addresses: tuple[str, ...] = Field(
        (),
        description="host:port pairs no job may connect to, besides the broker and state store "
        "(their addresses in redis_url and broker_url are always blocked)",
    )
    default_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    @field_validator("dns_servers", "sandbox_ro_paths", "sandbox_masked_paths", "job_blocked_addresses", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else value

    @field_validator("dns_servers")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_address(v)) for v in value)

    @field_validator("underlay_address")
    @classmethod
    def _underlay(cls, value: str | None) -> str | None:
        return str(ipaddress.IPv4Address(value)) if value else None

    @field_validator("sandbox_ro_paths", "sandbox_masked_paths")
    @classmethod
    def _absolute(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not path.startswith("/") or any(c.isspace() for c in path) or "/../" in f"{path}/":
                raise ValueError(f"{path!r} is not an absolute path without blanks or '..'")
        return value

    @field_validator("output_max_bytes", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> Any:
        from joblet.api.limits import parse_bytes

        return parse_bytes(value)

    @field_validator("job_blocked_addresses")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{item!r} is not host:port")
        return value

    @field_validator("bridge_cidr", "isolated_pool")
    @classmethod
    def _cidr(cls, value: str) -> str:
        net = ipaddress.IPv4Network(value, strict=True)
        if net.prefixlen > 29:
            raise ValueError("must be /29 or larger")
        return str(net)

    @property
    def broker(self) -> str:
        return celery_url(self.broker_url or self.redis_url)

    @property
    def result_backend(self) -> str:
        return celery_url(self.redis_url)

    def node_queue(self, node: str) -> str:
        return f"{self.queue}.host.{node}"


def _from_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import tomllib

    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} (from JOBLET_CONFIG) does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _from_env() -> dict[str, Any]:
    # pydantic-settings does the same but costs ~120 ms of import time on every `rnx` call.
    names = Settings.model_fields
    values = {}
    for key, value in os.environ.items():
        if key.startswith("JOBLET_") and key != "JOBLET_CONFIG":
            name = key[len("JOBLET_") :].lower()
            if name in names:
                values[name] = value
    return values


def celery_url(url: str) -> str:
    """Celery/kombu spell redis-py's `unix:///path` as `redis+socket:///path`."""
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://") :]
    return url


def load(**overrides: Any) -> Settings:
    """Read the settings (file, then environment, then overrides); errors name the setting."""
    values = {**_from_file(_config_file()), **_from_env(), **overrides}
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {field} (JOBLET_{field.upper()}): {first['msg']}") from None


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings."""
    return load()
