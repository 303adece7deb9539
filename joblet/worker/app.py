"""The worker's Celery app: JSON only, late acks, prefetch 1, threads pool.

Jobs block a pool thread for as long as they run (servers never end), so the worker uses
Celery's threads pool with a large concurrency (512 by default) instead of a few prefork
processes.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down
from kombu import Queue

from joblet.api.keys import RUN_TASK
from joblet.api.tasks import celery_config, setup_signing, signing_config
from joblet.config import Settings
from joblet.worker import broker_guard

_supervisor: Any = None


def make_app(cfg: Settings) -> Celery:
    broker_guard.install(cfg, signed=requires_signing(cfg))
    app = Celery("joblet-worker", set_as_current=True)
    app.conf.update(celery_config(cfg))
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=cfg.concurrency,
        worker_pool="threads",
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        task_queues=[Queue(cfg.queue), Queue(cfg.node_queue(cfg.node))],
        # Celery's remote control (pidbox) messages are never signed: a worker takes none
        worker_enable_remote_control=False,
    )
    setup_signing(app, cfg, verify=True)
    from joblet.worker.tasks import register

    register(app)
    app.finalize()
    for name in [n for n in app.tasks if n != RUN_TASK]:  # Celery's built-ins: run nothing else
        app.tasks.pop(name)
    return app


def requires_signing(cfg: Settings) -> bool:
    return bool(signing_config(cfg, verify=True))


def supervisor() -> Any:
    if _supervisor is None:
        raise RuntimeError("the joblet supervisor is not running in this process")
    return _supervisor


def install_supervisor(cfg: Settings) -> Any:
    """Create the worker's supervisor once; hooked to Celery's start and shutdown."""
    global _supervisor
    from joblet.worker.supervisor import Supervisor

    _supervisor = Supervisor(cfg)
    # published with every heartbeat: clients refuse to send what this worker would refuse
    _supervisor.store.node_info["signed"] = requires_signing(cfg)

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        _supervisor.beat()

    @worker_shutting_down.connect(weak=False)
    def _down(**_: Any) -> None:
        _supervisor.stop_all()
        _supervisor.store.drop_node(cfg.node)
        try:
            _supervisor.volumes.release_all()
        except Exception as exc:  # noqa: BLE001 - shutting down: report and go on
            print(f"joblet-worker: unmounting volumes: {exc}")

    _supervisor.start()
    return _supervisor
