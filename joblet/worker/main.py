"""`joblet-worker`: run a privileged Celery worker for this host."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import click

from joblet import config
from joblet.errors import JobletError
from joblet.worker import rlimits

log = logging.getLogger(__name__)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--node", help="This host's name in the fleet (default: the hostname).")
@click.option(
    "--concurrency",
    type=int,
    metavar="N",
    help=f"Jobs run at once (default {config.default('concurrency')}, JOBLET_CONCURRENCY).",
)
@click.option("--loglevel", default="INFO", show_default=True, help="Log level.")
def main(node: str | None, concurrency: int | None, loglevel: str) -> None:
    """Run jobs from the joblet queues on this host (needs root)."""
    overrides = {k: v for k, v in (("node", node), ("concurrency", concurrency)) if v is not None}
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:  # a line per job received and done, with its
        for name in ("celery.app.trace", "celery.worker.strategy"):  # result (its output's first
            logging.getLogger(name).setLevel(logging.WARNING)  # KiB: a job's secrets): debug only
    _require_worker_extra()
    if os.geteuid() != 0:
        sys.exit("joblet-worker: must run as root (it builds namespaces, links and firewall rules)")
    rlimits.raise_fd_limit()
    try:
        cfg = config.load(**overrides)
        from joblet.network_agent.host import jobs_cgroup_root
        from joblet.worker import cgroups, ns_lock

        cgroup_root = jobs_cgroup_root(cfg)
        cgroups.check_root(cgroup_root)  # before any state is made: nothing half-built to leave
        cgroups.check_own_root(cgroup_root)
        ns_lock.hold(cgroup_root)  # first: a second worker is refused before it says anything else
        rlimits.halve_uid_budgets()
        rlimits.spare_core_handlers()
        _check_fleet_settings(cfg)
        _own_state_dir(cfg)
        ns_lock.hold_dir(cfg.state_dir, "state_dir")  # its journal names the jobs its reconcile ends
        from joblet.worker.app import connect, make_app, trusted_signers
        from joblet.worker.supervisor import Supervisor

        trusts = trusted_signers(cfg)  # before Celery reads them: its errors are tracebacks

        sup = Supervisor(cfg)
        app = make_app(cfg, sup)
        connect(sup, cfg, trusts)
        sup.start()
    except JobletError as exc:
        sys.exit(f"joblet-worker: {exc}")
    queues = f"{cfg.queue},{cfg.node_queue(cfg.node)}"
    # Celery warns a root worker at every start ("absolutely not recommended"): this one must
    # be root (namespaces, links, cgroups, nftables), takes JSON only (Celery refuses pickle
    # as root itself), and drops everything for its jobs: the warning only alarmed operators
    warnings.filterwarnings("ignore", message="You're running the worker with superuser privileges")
    app.worker_main(
        [
            "worker",
            "-P",
            "threads",
            "-c",
            str(cfg.concurrency),
            "-Q",
            queues,
            "-n",
            f"joblet@{cfg.node}",
            "-l",
            loglevel,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def _own_state_dir(cfg: config.Settings) -> None:
    """A state_dir holds one installation's volumes and journal: a worker of another key
    prefix there read them, and a `volume delete` under its prefix removed the first one's
    data. The first worker writes its prefix in `<state_dir>/owner`; another is refused."""
    owner = cfg.state_dir / "owner"
    try:
        held = owner.read_text().strip()
    except FileNotFoundError:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        owner.write_text(cfg.key_prefix + "\n")
        return
    if held != cfg.key_prefix:
        raise JobletError(
            f"state_dir {cfg.state_dir} belongs to the installation with key prefix {held!r}, not "
            f"{cfg.key_prefix!r}: give this one its own JOBLET_STATE_DIR (or remove {owner})"
        )


def _check_fleet_settings(cfg: config.Settings) -> None:
    """Settings that broke the fleet without a word (fleet run): a heartbeat slower than half
    of node_down_after showed the node down between its beats, and the sweep made its healthy
    jobs LOST; an underlay address no interface here holds got the overlay's traffic nowhere."""
    if cfg.heartbeat_interval * 2 > cfg.node_down_after:
        raise JobletError(
            f"heartbeat_interval {cfg.heartbeat_interval:g} s is more than half of node_down_after "
            f"({cfg.node_down_after:g} s): other nodes would see this one down between its beats, "
            "and its jobs LOST (JOBLET_HEARTBEAT_INTERVAL, JOBLET_NODE_DOWN_AFTER; the same on every node)"
        )
    if cfg.overlay and cfg.underlay_address:
        from joblet.network_agent import links

        if links.mtu_holding(cfg.underlay_address) is None:
            raise JobletError(
                f"underlay_address {cfg.underlay_address} (JOBLET_UNDERLAY_ADDRESS) is on no interface of "
                "this host: other nodes' overlay traffic to it would never arrive"
            )


def _require_worker_extra() -> None:
    """The worker's own dependencies come with the `worker` extra; say so instead of a traceback."""
    import importlib.util

    missing = [m for m in ("pyroute2", "pyseccomp") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"joblet-worker: {', '.join(missing)} is not installed: the worker needs pip install 'joblet[worker]'")


if __name__ == "__main__":
    main()
