"""`joblet-worker`: run a privileged Celery worker for this host."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import click

from joblet import config
from joblet.errors import JobletError
from joblet.worker import check, rlimits

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
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Check the settings, the host and the broker as a start would, start nothing, and exit (0: all good).",
)
def main(node: str | None, concurrency: int | None, loglevel: str, check_only: bool) -> None:
    """Run jobs from the joblet queues on this host (needs root)."""
    overrides = {k: v for k, v in (("node", node), ("concurrency", concurrency)) if v is not None}
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:  # a line per job received and done, with its
        for name in ("celery.app.trace", "celery.worker.strategy"):  # result (its output's first
            logging.getLogger(name).setLevel(logging.WARNING)  # KiB: a job's secrets): debug only
    _require_worker_extra()
    if os.geteuid() != 0:
        sys.exit("joblet-worker: must run as root (it builds namespaces, links and firewall rules)")
    if check_only:
        _check(overrides)
        return
    rlimits.raise_fd_limit()
    try:
        cfg = config.load(**overrides)
        from joblet.worker import ns_lock

        cgroup_root = check.check_cgroup_root(cfg)  # before any state is made: nothing half-built to leave
        ns_lock.hold(cgroup_root)  # first: a second worker is refused before it says anything else
        rlimits.halve_uid_budgets()
        rlimits.spare_core_handlers()
        check.check_fleet_settings(cfg)
        check.check_runtimes_dir(cfg)
        _own_state_dir(cfg)
        ns_lock.hold_dir(cfg.state_dir, "state_dir")  # its journal names the jobs its reconcile ends
        from joblet.worker.app import connect, make_app, trusted_signers
        from joblet.worker.supervisor import Supervisor

        trusts = trusted_signers(cfg)  # before Celery reads them: its errors are tracebacks

        sup = Supervisor(cfg)
        app = make_app(cfg, sup)
        connect(sup, cfg, trusts)
        sup.start()
        _restore_own(app, cfg)
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


def _restore_own(app: object, cfg: config.Settings) -> None:
    """Its node queue's messages a killed run of this worker had taken (worker/unacked.py);
    a failure is logged: they come back after visibility_timeout all the same."""
    from joblet.worker.unacked import restore_own

    try:
        restore_own(app, cfg.node_queue(cfg.node))
    except Exception as exc:  # noqa: BLE001 - the start goes on
        log.warning("could not put back the messages a previous run had taken: %s: %s", type(exc).__name__, exc)


def _check(overrides: dict[str, object]) -> None:
    """`--check`: what a start would refuse, one line and exit 1; else what was found, exit 0."""
    try:
        cfg = config.load(**overrides)
        found = check.check(cfg)
    except JobletError as exc:
        sys.exit(f"joblet-worker: {exc}")
    click.echo("joblet-worker: the settings hold")
    for line in found:
        click.echo(f"  {line}")


def _own_state_dir(cfg: config.Settings) -> None:
    """Refuse a state_dir of another installation; claim it for this one when it has no owner."""
    if not check.check_state_dir_owner(cfg):
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        (cfg.state_dir / "owner").write_text(cfg.key_prefix + "\n")


def _require_worker_extra() -> None:
    """The worker's own dependencies come with the `worker` extra; say so instead of a traceback."""
    import importlib.util

    missing = [m for m in ("pyroute2", "pyseccomp") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"joblet-worker: {', '.join(missing)} is not installed: the worker needs pip install 'joblet[worker]'")


if __name__ == "__main__":
    main()
