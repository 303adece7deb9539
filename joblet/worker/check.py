"""`joblet-worker --check`: the worker's start-time checks of its settings and host, run
without starting it and without making anything (no state_dir, cgroup, lock or heartbeat),
as `nginx -t` does: for a deployment to run before it (re)starts a worker, also while one
runs. The settings that a worker's start refuses are refused here by the same code."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from joblet import config
from joblet.errors import JobletError


def check_fleet_settings(cfg: config.Settings) -> None:
    """Settings that broke the fleet without a word (fleet run): a heartbeat slower than half
    of node_down_after showed the node down between its beats, and the sweep made its healthy
    jobs LOST; an underlay address no interface here holds got the overlay's traffic nowhere;
    a job ended before it ran (stopped while queued, LOST with its node, its workflow ended),
    or cut short by a crash, whose record and claim expired after log_ttl, was made again and
    run by its message's arrival within message_ttl, or by its unacknowledged message's
    delivery again within visibility_timeout (reviews). A client's stop keeps its keys
    max(log_ttl, message_ttl) (Settings.unstarted_ttl) whatever the client's own log_ttl."""
    if cfg.heartbeat_interval * 2 > cfg.node_down_after:
        raise JobletError(
            f"heartbeat_interval {cfg.heartbeat_interval:g} s is more than half of node_down_after "
            f"({cfg.node_down_after:g} s): other nodes would see this one down between its beats, "
            "and its jobs LOST (JOBLET_HEARTBEAT_INTERVAL, JOBLET_NODE_DOWN_AFTER; the same on every node)"
        )
    if cfg.log_ttl < cfg.message_ttl:
        raise JobletError(
            f"log_ttl {cfg.log_ttl} s is less than message_ttl ({cfg.message_ttl} s): the record of a job "
            "ended before it ran (its node lost, its workflow ended) would expire before its message, "
            "which would then run it (JOBLET_LOG_TTL, JOBLET_MESSAGE_TTL; the same on every node and client)"
        )
    if cfg.log_ttl < cfg.visibility_timeout:
        raise JobletError(
            f"log_ttl {cfg.log_ttl} s is less than visibility_timeout ({cfg.visibility_timeout} s): the "
            "record of a job cut short by a worker's crash would expire before its message is delivered "
            "again, which would then run it anew (JOBLET_LOG_TTL, JOBLET_VISIBILITY_TIMEOUT)"
        )
    if cfg.overlay and cfg.underlay_address:
        from joblet.network_agent import links

        if links.mtu_holding(cfg.underlay_address) is None:
            raise JobletError(
                f"underlay_address {cfg.underlay_address} (JOBLET_UNDERLAY_ADDRESS) is on no interface of "
                "this host: other nodes' overlay traffic to it would never arrive"
            )


def check_state_dir_owner(cfg: config.Settings) -> bool:
    """A state_dir holds one installation's volumes and journal: a worker of another key
    prefix there read them, and a `volume delete` under its prefix removed the first one's
    data. The first worker writes its prefix in `<state_dir>/owner`; another is refused.
    Whether the owner file is there (False: the worker's start writes it)."""
    owner = cfg.state_dir / "owner"
    try:
        held = owner.read_text().strip()
    except FileNotFoundError:
        return False
    if held != cfg.key_prefix:
        raise JobletError(
            f"state_dir {cfg.state_dir} belongs to the installation with key prefix {held!r}, not "
            f"{cfg.key_prefix!r}: give this one its own JOBLET_STATE_DIR (or remove {owner})"
        )
    return True


def check_runtimes_dir(cfg: config.Settings) -> None:
    """A runtimes_dir every runtime of which would be refused (in the state or run directory,
    in or holding /etc, /root...): the worker ran, offered no runtime, and said why only in
    its log (`rnx runtime list`: "no live worker offers a runtime", usability run)."""
    from joblet.worker.volumes import exposes_host

    why = exposes_host(cfg.runtimes_dir, (cfg.state_dir, cfg.run_dir))
    if why is not None:
        raise JobletError(
            f"runtimes_dir {cfg.runtimes_dir}: {why}, and jobs would see the host's own files through a "
            "runtime: give runtimes a directory of their own (JOBLET_RUNTIMES_DIR, default /opt/joblet/runtimes)"
        )


def check_cgroup_root(cfg: config.Settings) -> Path:
    """The jobs' cgroup root, refused as a start refuses it (nothing is made)."""
    from joblet.network_agent.host import jobs_cgroup_root
    from joblet.worker import cgroups

    root = jobs_cgroup_root(cfg)
    cgroups.check_root(root)
    cgroups.check_own_root(root)  # a root not made yet passes: the worker makes it its own
    return root


def running_here(cfg: config.Settings) -> list[int]:
    """The pids of a worker that uses this state_dir now (its flock), if any."""
    from joblet.worker import ns_lock

    try:
        return ns_lock.holders_of(os.stat(cfg.state_dir))
    except OSError:
        return []


def check_broker(cfg: config.Settings) -> str:
    """Redis reached (and the node's name not another worker's), the broker too when it is
    not that Redis; how it was reached, for the report."""
    from joblet.api import wire
    from joblet.api.redis_conn import error_kind, safe_url
    from joblet.api.store import Store
    from joblet.worker import fleet

    store = Store(cfg.redis_url, cfg.key_prefix)
    store.node_beat(cfg.node)  # Redis out of reach: the store's one line (BackendUnavailable)
    fleet.refuse_taken_node(store, cfg.node, fleet.place(cfg.state_dir))
    redis = f"Redis {safe_url(cfg.redis_url)}"
    if wire.is_redis(cfg.broker) and wire.redis_url(cfg.broker) == cfg.redis_url:
        return f"{redis} reached (also the broker)"
    try:
        if wire.is_redis(cfg.broker):
            from joblet.api.tasks import broker_redis

            broker_redis(wire.redis_url(cfg.broker)).ping()
        else:
            from kombu import Connection

            with Connection(cfg.broker, connect_timeout=5) as conn:
                conn.ensure_connection(max_retries=1)
    except Exception as exc:  # redis-py's, kombu's and amqp's own (a refused login, a vhost)
        if error_kind(exc) is None and not type(exc).__module__.startswith(("kombu", "amqp")):
            raise
        raise JobletError(f"cannot reach the broker at {safe_url(cfg.broker)}: {exc}") from None
    return f"{redis} and the broker {safe_url(cfg.broker)} reached"


def check(cfg: config.Settings) -> list[str]:
    """Every check, in a start's order; the lines that say what was found, or JobletError."""
    from joblet.worker.app import trusted_signers

    root = check_cgroup_root(cfg)
    check_fleet_settings(cfg)
    check_runtimes_dir(cfg)
    owned = check_state_dir_owner(cfg)
    trusts = trusted_signers(cfg)
    reached = check_broker(cfg)
    workers = ", ".join(map(str, running_here(cfg)))
    lines = [
        f"node {cfg.node!r}, queue {cfg.queue!r}, key prefix {cfg.key_prefix!r}: {reached}",
        f"state_dir {cfg.state_dir}{'' if owned else ' (made at the first start)'}, run_dir {cfg.run_dir}, "
        f"cgroup_root {root}",
        f"signing: {f'on, {len(trusts)} trusted signer(s)' if trusts else 'off'}",
        f"a worker uses this state_dir now (pid {workers})" if workers else "no worker runs here now",
    ]
    if shutil.which("bwrap") is None:
        lines.append("warning: bwrap (bubblewrap) is not installed: jobs here will fail to start")
    return lines
