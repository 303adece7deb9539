"""The worker's Celery app: JSON only, late acks, prefetch 1, threads pool.

Jobs block a pool thread for as long as they run (servers never end), so the worker uses
Celery's threads pool with a large concurrency (512 by default) instead of a few prefork
processes.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down
from kombu.entity import Queue

from joblet.api.keys import RUN_TASK
from joblet.api.tasks import broker_kind, celery_config, setup_signing, signing_config
from joblet.config import Settings
from joblet.worker import broker_guard
from joblet.worker.supervisor import Supervisor


def make_app(cfg: Settings, sup: Supervisor) -> Celery:
    """The worker's Celery app, whose one task runs jobs through `sup`."""
    broker_guard.install(cfg, signed=requires_signing(cfg))
    app = Celery("joblet-worker", set_as_current=True)
    app.conf.update(celery_config(cfg))
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=cfg.concurrency,
        worker_pool="threads",
        # one result backend for all threads: otherwise each of hundreds of threads builds
        # its own on its first job (~10-20 ms of the GIL each: redis-py reads its package
        # metadata for every new client), which made 500 concurrent jobs' start and end slow
        result_backend_thread_safe=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        task_queues=[Queue(cfg.queue), Queue(cfg.node_queue(cfg.node))],
        # Celery's remote control (pidbox) messages are never signed: a worker takes none
        worker_enable_remote_control=False,
    )
    setup_signing(app, cfg, verify=True)
    from joblet.worker.tasks import register

    register(app, sup)
    app.finalize()
    for name in [n for n in app.tasks if n != RUN_TASK]:  # Celery's built-ins: run nothing else
        app.tasks.pop(name)
    return app


def requires_signing(cfg: Settings) -> bool:
    return bool(signing_config(cfg, verify=True))


def trusted_signers(cfg: Settings) -> list[str]:
    """The signer ids this worker's signing_trust holds, published so that a client whose
    certificate is not among them is refused before it sends (its job stayed PENDING for
    good, operator's run); its own key and certificate checked to be a pair."""
    from joblet.api import wire
    from joblet.errors import ConfigError

    if not requires_signing(cfg):
        return []
    try:
        wire.signer(str(cfg.signing_key), str(cfg.signing_cert))
        return wire.trusted_ids(str(cfg.signing_trust))
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"signing: {exc}") from None


def connect(sup: Supervisor, cfg: Settings, trusts: list[str]) -> None:
    """Beat once when Celery is ready; stop every job and leave the fleet when it shuts down."""
    # published with every heartbeat: clients refuse to send what this worker would refuse
    sup.store.node_info["signed"] = requires_signing(cfg)
    sup.store.node_info["trusts"] = trusts  # trusted_signers(cfg), read at the start
    sup.store.node_info["queue"] = cfg.queue  # and where it reads jobs: rnx refuses to queue elsewhere
    sup.store.node_info["broker"] = broker_kind(cfg.broker)

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        sup.ready()

    @worker_shutting_down.connect(weak=False)
    def _down(**_: Any) -> None:
        sup.stop_all()
        # each step on its own: Redis out of reach at the leave left every volume mounted (review)
        steps = (("leaving the fleet", sup.leave), ("unmounting volumes", sup.svc.mounts.volumes.release_all))
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - shutting down: report and go on
                print(f"joblet-worker: {what}: {exc}")
