"""Settings, read once from the environment (JOBLET_*) and an optional TOML file.

Each is checked by its own function in joblet/config_checks.py, which also reads the text
of an environment variable (`JOBLET_CONCURRENCY=64`, `JOBLET_OVERLAY=false`).

The file is `$JOBLET_CONFIG` if set, else `/etc/joblet/joblet.toml` when it exists.
Environment variables win over the file.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from joblet.config_checks import (
    BROKER_SCHEMES,
    PRIVATE_RANGES,
    REDIS_SCHEMES,
    absolute_path,
    address,
    choice,
    cidr,
    endpoint,
    flag,
    link_name,
    listed,
    network,
    nonempty,
    optional_absolute_path,
    optional_path,
    optional_text,
    optional_url,
    optional_whole,
    outside_etc,
    path,
    real,
    size,
    underlay,
    url,
    whole,
)
from joblet.errors import ConfigError
from joblet.fields import FieldError, checked, text

DEFAULT_FILE = Path("/etc/joblet/joblet.toml")


def quarter_of_memory_mb(meminfo: str = "/proc/meminfo") -> int:
    """A quarter of this host's memory in MB (the largest --max-disk allowed where /proc is not)."""
    try:
        with open(meminfo) as fh:
            total_kb = int(next(line for line in fh if line.startswith("MemTotal:")).split()[1])
    except (OSError, StopIteration, ValueError, IndexError):
        return 1_048_576
    return max(1, total_kb // 4096)


def _config_file() -> Path | None:
    named = os.environ.get("JOBLET_CONFIG")
    if named:
        return Path(named)
    return DEFAULT_FILE if DEFAULT_FILE.exists() else None


def setting(default: Any, check: Callable[[Any], Any], doc: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A field of Settings: its default, the check that parses and validates a value (also
    one written as text, as environment variables are), and what it is for."""
    meta = {"check": check, "doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of joblet, for the CLI, the Python API and the worker."""

    redis_url: str = setting("redis://127.0.0.1:6379/0", url(REDIS_SCHEMES), "state store and default broker")
    broker_url: str | None = setting(None, optional_url(BROKER_SCHEMES), "Celery broker; defaults to redis_url")
    key_prefix: str = setting("joblet:", text, "prefix of every Redis key joblet writes")
    queue: str = setting("joblet", nonempty, "shared Celery queue; per-node queues add .host.NODE")
    state_dir: Path = setting(Path("/var/lib/joblet"), path)
    run_dir: Path = setting(Path("/run/joblet"), path)
    cgroup_root: Path | None = setting(None, optional_absolute_path, "cgroup v2 directory for jobs; auto-detected")
    node: str = setting(None, nonempty, factory=socket.gethostname)
    concurrency: int = setting(512, whole(1, 4096), "jobs one worker runs at once")
    stop_grace: float = setting(10.0, real(ge=0), "seconds between SIGTERM and SIGKILL")
    record_patience: float = setting(
        600.0,
        real(ge=0),
        "seconds a job's claim and its final record wait out a Redis outage; after that the worker's "
        "heartbeat writes the record once Redis is back",
    )
    log_max_entries: int = setting(100_000, whole(100), "cap of a job's output stream")
    output_max_bytes: int = setting(
        64 << 20,
        size(1024),
        "bytes of output (stdout and stderr) a job's stream keeps, default and ceiling of its max_output; e.g. 64M",
    )
    log_ttl: int = setting(7 * 86400, whole(60), "seconds output and records live after a job")
    result_output_limit: int = setting(1 << 20, whole(0), "bytes of stdout kept in a result")
    upload_max_bytes: int = setting(16 << 20, whole(0), "total size of a job's uploads")
    workflow_max_jobs: int = setting(
        1000, whole(1), "most jobs in one workflow (each job's end reads every job's status)"
    )
    spec_max_bytes: int = setting(24 << 20, whole(64 << 10), "largest job spec (JSON, uploads included) a client sends")
    message_max_bytes: int = setting(
        64 << 20,
        whole(256 << 10),
        "worker: larger queue messages are dropped unread (a signed spec grows ~2.4x on the queue)",
    )
    message_ttl: int = setting(
        86400,
        whole(10, 30 * 86400),
        "seconds a queued job message stays valid; a later one is refused and its job FAILED",
    )
    allow_host_network: bool = setting(
        False,
        flag,
        "allow --network=host on this worker (the job still gets its sandbox, less the network namespace)",
    )
    allow_public_networks: bool = setting(
        False,
        flag,
        "allow user networks over public address space (outside 10/8, 172.16/12, 192.168/16, 100.64/10 and "
        "the documentation and benchmarking ranges): the host routes such a range to the network's jobs",
    )
    network_ranges: tuple[str, ...] = setting(
        PRIVATE_RANGES,
        listed(cidr),
        "the ranges user networks may take (unless allow_public_networks): a network's route takes "
        "its range from the host's default route, so give ranges no host reaches elsewhere (your LAN's "
        "and VPC's other subnets: a network over one took the host's and the jobs' traffic to them); "
        "set it on the workers and the clients",
    )
    job_net_raw: bool = setting(
        False,
        flag,
        "jobs run as root keep CAP_NET_RAW: raw and packet sockets (Docker's default; podman's is off)",
    )
    job_max_pids: int = setting(4096, whole(8), "a job's process limit without --max-pids (at most job_pids_ceiling)")
    job_oom_score_adj: int = setting(
        500,
        whole(-1000, 1000),
        "the OOM score adjustment of jobs' processes: above the host's services, so that when "
        "memory runs out the kernel kills a job first (jobs cannot lower it when the worker holds "
        "CAP_SYS_RESOURCE)",
    )
    job_max_disk: int = setting(
        1024,
        whole(1),
        "MB of a job's /work and of its /tmp without --max-disk (tmpfs: memory the job uses as it writes); "
        "at most job_disk_ceiling",
    )
    job_disk_ceiling: int = setting(
        None,
        whole(1),
        "MB a job may ask for its /work and for its /tmp (--max-disk; tmpfs, so memory): a larger "
        "ask is refused; default a quarter of this host's memory",
        factory=quarter_of_memory_mb,
    )
    job_pids_ceiling: int = setting(
        32768, whole(8), "processes a job may ask for (--max-pids): a larger ask is refused"
    )
    jobs_max_pids: int = setting(
        0,
        whole(0),
        "processes and threads all jobs on a host may have together (their parent cgroup); 0: the "
        "host's limit (kernel.pid_max, threads-max) less a quarter of it, at least 4096 (half on "
        "small hosts) left to the host",
    )
    jobs_max_memory: int = setting(
        0,
        whole(0),
        "MB of memory all jobs on a host may charge together (their parent cgroup): memory a job "
        "handed another (a memfd passed over a socket in a shared volume) stays charged there "
        "after it ends; 0: the host's memory less a tenth of it, at least 512 MB, left to the host",
    )
    job_max_connections: int = setting(
        32768,
        whole(0),
        "connections one job address may have in the host's connection tracking table at once "
        "(new ones past it are dropped); 0: no cap",
    )
    jobs_max_connections: int = setting(
        0,
        whole(-1),
        "connections all jobs on a host may have tracked together; 0: half of the host's "
        "nf_conntrack_max (the rest is the host's own); -1: no cap",
    )
    job_shm: int = setting(64, whole(1), "MB of a job's /dev/shm")
    volume_keep_free: int | None = setting(
        None,
        optional_whole(0),
        "MB of the state disk a sized volume's image may not take (its blocks are reserved when "
        "made): a volume that would leave less free is refused; default a twentieth of the disk",
    )
    sandbox_ro_paths: tuple[str, ...] = setting(
        (), listed(outside_etc), "more host paths jobs see read-only (besides /usr, /bin, /sbin, /lib*, /etc)"
    )
    sandbox_masked_paths: tuple[str, ...] = setting(
        (), listed(absolute_path), "more host paths (globs) jobs see empty, besides shadow, sudoers, ssh host keys..."
    )
    runtimes_dir: Path = setting(
        Path("/opt/joblet/runtimes"), path, "one directory with a bin/ per runtime, named as in --runtime"
    )
    bridge_cidr: str = setting("172.20.0.0/16", cidr)
    bridge_name: str = setting("joblet0", link_name)
    isolated_pool: str = setting("10.254.0.0/16", cidr, "isolated mode: one /30 per job from here")
    overlay: bool = setting(
        True,
        flag,
        "user networks span hosts: a VXLAN port on each network's bridge, peers learned from Redis "
        "(their MTU is the uplink's - 50)",
    )
    underlay_address: str | None = setting(
        None,
        underlay,
        "this node's address other nodes send overlay (VXLAN) traffic to; "
        "default: the address of the default-route interface",
    )
    vxlan_port: int = setting(4789, whole(1, 65535), "UDP port of the overlay (the same fleet-wide)")
    dns_servers: tuple[str, ...] = setting(
        (), listed(address), "jobs' DNS servers when a network sets none; default: the host's upstream servers"
    )
    resolv_conf: Path | None = setting(
        None,
        optional_path,
        "where the host's upstream DNS servers are read; default: systemd-resolved's file, else /etc/resolv.conf",
    )
    foreign_forward: str = setting(
        "refuse",
        choice("refuse", "insert", "warn"),
        "another tool's forward chain with a drop policy: refuse bridged jobs with an explanation, "
        "insert joblet's accept rules into it, or only warn",
    )
    visibility_timeout: int = setting(
        3600,
        whole(10),
        "seconds before an unacknowledged message is delivered again (a job's claim makes that a no-op)",
    )
    heartbeat_interval: float = setting(5.0, real(gt=0))
    node_down_after: float = setting(
        20.0, real(gt=0), "seconds without a heartbeat after which a node is shown down and gets no new jobs"
    )
    node_lost_grace: float = setting(
        60.0,
        real(ge=0),
        "seconds a node may stay down before its running jobs become LOST and their addresses are freed",
    )
    signing_key: Path | None = setting(
        None, optional_path, "PEM private key: sign task messages (Celery's auth serializer)"
    )
    signing_cert: Path | None = setting(None, optional_path, "PEM certificate of signing_key")
    signing_trust: str | None = setting(
        None,
        optional_text,
        "worker: glob of trusted PEM certificates; when set, only messages signed by one of them run",
    )
    job_blocked_addresses: tuple[str, ...] = setting(
        (),
        listed(endpoint),
        "host:port pairs no job may connect to, besides the broker and state store "
        "(their addresses in redis_url and broker_url are always blocked)",
    )
    job_blocked_networks: tuple[str, ...] = setting(
        ("169.254.0.0/16", "168.63.129.16/32", "100.100.100.200/32", "fd00:ec2::254/128"),
        listed(network),
        "networks no job may reach but for DNS (port 53): by default the cloud metadata "
        "services (link-local 169.254.0.0/16, Azure's wire server, Alibaba's, AWS's IPv6 one); "
        "empty to allow them",
    )
    default_path: str = setting("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", text)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            try:
                object.__setattr__(self, f.name, checked(f.name, f.metadata["check"], getattr(self, f.name)))
            except FieldError as exc:
                raise ConfigError(f"invalid setting {f.name} (JOBLET_{f.name.upper()}): {exc.msg}") from None

    @property
    def default_disk_mb(self) -> int:
        """The /work and /tmp of a job without --max-disk: job_max_disk, held to the ceiling
        (a host with little memory gets a lower ceiling by default, not a refusal to start)."""
        return min(self.job_max_disk, self.job_disk_ceiling)

    @property
    def default_pids(self) -> int:
        """The process limit of a job without --max-pids: job_max_pids, held to the ceiling."""
        return min(self.job_max_pids, self.job_pids_ceiling)

    @property
    def broker(self) -> str:
        return celery_url(self.broker_url or self.redis_url)

    @property
    def result_backend(self) -> str:
        return celery_url(self.redis_url)

    @property
    def unstarted_ttl(self) -> int:
        """How long a job a client ends before any worker took it (stopped, or FAILED when its
        send seemed to fail) keeps its record and stop flag: its message may still reach a
        worker for message_ttl, which made a job whose record had expired anew and ran it
        (review; a worker refuses a log_ttl below message_ttl, a client's own log_ttl is not
        checked: the longer of the two here)."""
        return max(self.log_ttl, self.message_ttl)

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
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start + 1})") from None


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def default(name: str) -> Any:
    """A setting's default value."""
    f = FIELDS[name]
    return f.default if f.default_factory is dataclasses.MISSING else f.default_factory()


# JOBLET_ variables that are not settings, read by others: not warned about.
NOT_SETTINGS = frozenset(
    {
        "JOBLET_CONFIG",  # the settings file (here)
        "JOBLET_VENV",  # scripts/install.sh, quickstart.sh, test.sh
        "JOBLET_REDIS_PASSWORD",  # docker-compose.yml, from .env
        "JOBLET_REDIS_PORT",  # docker-compose.yml
        "JOBLET_JOB_ID",  # in every job's environment (a job may run rnx)
        "JOBLET_FAULT_PAUSE",  # worker/faults.py, tests only
        "JOBLET_FAULT_FILE",
        "JOBLET_FAULT_MARKER",
        "JOBLET_BENCH_BUSY_HOST",  # bench/bench_sandbox.py
    }
)


def _from_env() -> dict[str, Any]:
    # pydantic-settings does the same but costs ~120 ms of import time on every `rnx` call.
    values = {}
    for key, value in os.environ.items():
        if key.startswith("JOBLET_") and key not in NOT_SETTINGS:
            name = key[len("JOBLET_") :].lower()
            if name in FIELDS:
                values[name] = value
            elif "_RNX_COMPLETE" not in os.environ:  # a Tab's completion: nothing on the terminal
                _warn_unknown(key)
    return values


def _warn_unknown(key: str) -> None:
    """A misspelt variable (JOBLET_RUNDIR) was silently ignored, while the same typo in the file
    is refused. Only a warning: other tools may set JOBLET_ variables of their own."""
    import difflib  # only now: rnx's start-up is measured

    known = [name.upper() for name in FIELDS] + sorted(k[len("JOBLET_") :] for k in NOT_SETTINGS)
    close = difflib.get_close_matches(key[len("JOBLET_") :], known, n=1)  # the prefix would match all
    hint = f" (did you mean JOBLET_{close[0]}?)" if close else ""
    sys.stderr.write(f"joblet: warning: {key} is not a joblet setting, ignored{hint}\n")


def celery_url(url: str) -> str:
    """Celery/kombu spell redis-py's `unix:///path` as `redis+socket:///path`."""
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://") :]
    return url


def load(**overrides: Any) -> Settings:
    """Read the settings (file, then environment, then overrides); errors name the setting."""
    path = _config_file()
    from_file = _from_file(path)
    if path is not None:
        _check_file(path, from_file)
    values = {**from_file, **_from_env(), **overrides}
    for name in values:
        if name not in FIELDS:
            raise ConfigError(f"invalid setting {name} (JOBLET_{name.upper()}): there is no such setting")
    return Settings(**values)


def _check_file(path: Path, values: dict[str, Any]) -> None:
    """Every key and value of the settings file, in its own terms: a typo there was named by
    its variable (`run_dri (JOBLET_RUN_DRI)`), with no hint, `[worker]` was `invalid setting
    worker`, and a bad value went unseen while a variable overrode it, to break the worker on
    the day the variable went (operator's run)."""
    for name, value in values.items():
        if name not in FIELDS:
            raise ConfigError(f"config file {path}: {_unknown_key(name, value)}")
        try:
            checked(name, FIELDS[name].metadata["check"], value)
        except FieldError as exc:
            raise ConfigError(f"config file {path}: invalid {name}: {exc.msg}") from None


def _unknown_key(name: str, value: Any) -> str:
    import difflib

    if isinstance(value, dict):
        return f"[{name}] is a table: settings are top-level keys (e.g. concurrency = 64), with no table"
    bare = name.lower().removeprefix("joblet_")
    if bare in FIELDS:
        return f"{name!r} is not a setting: keys are the settings' lowercase names ({bare} = ...)"
    close = difflib.get_close_matches(bare, list(FIELDS), n=1)
    return f"{name!r} is not a setting" + (f" (did you mean {close[0]}?)" if close else "")


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings."""
    return load()
