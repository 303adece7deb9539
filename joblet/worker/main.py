"""`joblet-worker`: run a privileged Celery worker for this host."""

from __future__ import annotations

import logging
import os
import sys

import click

from joblet import config
from joblet.errors import JobletError

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
    _raise_fd_limit()
    _halve_uid_budgets()
    try:
        cfg = config.load(**overrides)
        _one_per_network_namespace(cfg)
        from joblet.worker.app import connect, make_app
        from joblet.worker.supervisor import Supervisor

        sup = Supervisor(cfg)
        app = make_app(cfg, sup)
        connect(sup, cfg)
        sup.start()
    except JobletError as exc:
        sys.exit(f"joblet-worker: {exc}")
    queues = f"{cfg.queue},{cfg.node_queue(cfg.node)}"
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


_HELD: list[int] = []  # the lock's descriptor, open for the worker's life


def lock_path(namespace: str = "/proc/self/ns/net") -> str:
    """The worker lock of a network namespace (its nsfs file, or a /run/netns/NAME of it).
    Left when the worker ends (removing it could let two workers lock two files); whoever
    deletes the namespace may delete it."""
    ns = os.stat(namespace)
    return f"/run/joblet-worker.{ns.st_dev}-{ns.st_ino}.lock"


def _one_per_network_namespace(cfg: config.Settings) -> None:
    """A worker owns its network namespace's joblet objects: the `inet joblet` tables, the
    jb bridges and jv/ji links it sweeps when Redis does not name them. A second worker there
    (another installation: its own Redis, key prefix or state_dir) took the first one's
    bridges and rules under its running jobs; it is refused. The lock (flock, released when
    the process ends, however it ends) is in the host's /run, named by the namespace."""
    import fcntl

    try:
        fd = os.open(lock_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # a read-only /run (a container's): no check, as before
        log.warning("cannot take the one-worker lock (%s): a second worker here would not be refused", exc)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "its pid unknown"
        os.close(fd)
        raise JobletError(
            f"another joblet worker runs in this network namespace ({holder}); one worker per host "
            "(or per network namespace: its links, bridges and nft tables are the namespace's)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, node {cfg.node}, state_dir {cfg.state_dir}".encode(), 0)
    _HELD.append(fd)


def _require_worker_extra() -> None:
    """The worker's own dependencies come with the `worker` extra; say so instead of a traceback."""
    import importlib.util

    missing = [m for m in ("pyroute2", "pyseccomp") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"joblet-worker: {', '.join(missing)} is not installed: the worker needs pip install 'joblet[worker]'")


def _raise_fd_limit() -> None:
    """Each running job holds a few pipes; 1024 descriptors would cap a host near 150 jobs."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _halve_uid_budgets() -> None:
    """Jobs run as the host's uid 0 (no user namespace), and the kernel counts pending
    signals and POSIX message queue bytes per uid, against the limit of the process that
    queues or creates: one job queued root's whole budget (96,365 signals), and the host's
    root processes got EAGAIN from timer_create and sigqueue. The worker's own limits, which
    its jobs inherit and cannot raise (no CAP_SYS_RESOURCE), are halved: jobs together take
    at most half, and the host's root keeps the rest."""
    import resource

    budgets = {
        resource.RLIMIT_SIGPENDING: "pending signals (RLIMIT_SIGPENDING)",
        resource.RLIMIT_MSGQUEUE: "bytes of POSIX message queues (RLIMIT_MSGQUEUE)",
    }
    for which, what in budgets.items():
        soft, hard = resource.getrlimit(which)
        if hard == resource.RLIM_INFINITY or hard <= 1:
            continue  # no budget to share, or none left to halve
        half = hard // 2
        resource.setrlimit(which, (min(soft, half), half))
        log.info("jobs here: at most %d of root's %d %s", half, hard, what)


if __name__ == "__main__":
    main()
