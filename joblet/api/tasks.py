"""The client side of Celery: an app that only sends joblet's tasks by name.

Nothing here imports worker or network code, so clients run without root or pyroute2.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from joblet.api import wire
from joblet.api.keys import RUN_TASK
from joblet.api.message import is_job_id, new_job_id, stamp
from joblet.config import Settings, settings


def celery_config(cfg: Settings) -> dict[str, Any]:
    """Settings shared by the client and the worker apps."""
    return {
        "broker_url": cfg.broker,
        "result_backend": cfg.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_default_queue": cfg.queue,
        "result_expires": cfg.log_ttl,
        # unacked messages (a dead worker's) are looked for every 10 s, not kombu's ~100 s
        "broker_transport_options": {
            "visibility_timeout": cfg.visibility_timeout,
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
            "max_connections": 1024,
        },
        # redis-py 8 caps a pool at 100 connections and then fails: hundreds of job threads
        # acknowledge and store results at once when many jobs end together
        "redis_max_connections": 1024,
        "result_backend_transport_options": {"visibility_timeout": cfg.visibility_timeout},
        "broker_connection_retry_on_startup": True,
        "enable_utc": True,
    }


def signing_config(cfg: Settings, verify: bool) -> dict[str, Any]:
    """Celery's auth serializer: sign with signing_key; a verifying worker trusts only
    signing_trust. Empty when signing is not configured."""
    from joblet.errors import ConfigError

    if not (cfg.signing_key or cfg.signing_trust):
        return {}
    if not (cfg.signing_key and cfg.signing_cert):
        raise ConfigError("signed messages need both signing_key and signing_cert")
    if verify and not cfg.signing_trust:
        raise ConfigError("a worker with signing_key needs signing_trust (trusted certificates)")
    for path in (cfg.signing_key, cfg.signing_cert):
        if not path.is_file():
            raise ConfigError(f"signing file {path} does not exist")
    # Celery wants a store and accept_content == ["auth"] even on the sending side; a client
    # that verifies nothing gets its own certificate as its store
    return {
        "security_key": str(cfg.signing_key),
        "security_certificate": str(cfg.signing_cert),
        "security_cert_store": cfg.signing_trust or str(cfg.signing_cert),
        "security_digest": "sha256",
        "task_serializer": "auth",
        "event_serializer": "auth",
        "accept_content": ["auth"],
    }  # unsigned or untrusted messages are refused


def setup_signing(app: Any, cfg: Settings, verify: bool) -> None:
    conf = signing_config(cfg, verify)
    if not conf:
        return
    app.conf.update(conf)
    # json stays enabled: it is the signed payload's inner format and the results' format
    app.setup_security(
        allowed_serializers=["json"],
        key=conf["security_key"],
        cert=conf["security_certificate"],
        store=conf["security_cert_store"],
        digest="sha256",
        serializer="json",
    )


@lru_cache(maxsize=4)
def client_app(cfg: Settings | None = None) -> Any:
    """A Celery app for sending (no tasks registered); signs when signing_key is set."""
    from celery import Celery

    cfg = cfg or settings()
    app = Celery("joblet-client", set_as_current=False)
    app.conf.update(celery_config(cfg))
    setup_signing(app, cfg, verify=False)
    return app


def queue_for(cfg: Settings, node: str | None) -> str:
    return cfg.node_queue(node) if node else cfg.queue


def run_job_signature(cfg: Settings | None = None) -> Any:
    """`run_job.delay(command="echo", args=["hi"], network="none")` runs a job."""
    from celery.canvas import Signature

    conf = cfg or settings()

    class RunJob(Signature):  # type: ignore[misc]
        """Each call gets a joblet job id and its stamps (workers take no other ids)."""

        def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
            if args:  # the worker drops such a message unread: .get() waited for good (usability run)
                raise TypeError("run_job takes keyword arguments only: run_job.delay(command='echo', args=['hi'])")
            job_id = options.pop("task_id", None) or new_job_id()
            if not is_job_id(job_id):  # a uuid4() with dashes: dropped unread, .get() waited for good (review)
                raise ValueError(f"task_id {job_id!r} is not a job id: 32 lowercase hex digits (uuid.uuid4().hex)")
            stamped = {**(kwargs or {}), **stamp(job_id, conf.message_ttl, time.time())}
            try:
                return super().apply_async(args, stamped, task_id=job_id, **options)
            except Exception as exc:  # Celery's own ("Retry limit exceeded ...") escaped (usability run)
                from joblet.api.redis_conn import safe_url
                from joblet.errors import BackendUnavailable

                where = safe_url(conf.broker)
                why = " ".join(str(exc).split())  # one line: Celery's spans three
                raise BackendUnavailable(f"cannot queue the job on {where}: {type(exc).__name__}: {why}") from None

    return RunJob(RUN_TASK, queue=conf.queue, app=client_app(conf))


def send_run(cfg: Settings, job_id: str, spec: dict[str, Any], node: str | None, prefix: str | None = None) -> None:
    """Queue a job by task name; the task id is the job id, repeated in the (signed) body
    with a nonce and an expiry (`joblet.api.message`). A Redis broker gets the message
    straight onto its list (`joblet.api.wire`, no Celery import); others go through Celery."""
    if wire.is_redis(cfg.broker):
        push(cfg, [run_message(cfg, job_id, spec, node, prefix)])
        return
    send_run_celery(cfg, job_id, spec, node, prefix)


def send_runs(cfg: Settings, jobs: list[tuple[str, dict[str, Any], str | None]], prefix: str | None = None) -> None:
    """send_run for many (job id, spec, node): one round trip on a Redis broker."""
    if wire.is_redis(cfg.broker):
        push(cfg, [run_message(cfg, *job, prefix) for job in jobs])
        return
    for job in jobs:
        send_run_celery(cfg, *job, prefix)


def placed(spec: dict[str, Any], node: str | None) -> dict[str, Any]:
    """The spec as queued: a job placed on a node names it in the (signed) body, not only in
    the queue's name, so a message moved to another node's queue is refused there (the
    worker checks a spec's node) instead of running on a node it was not placed on."""
    return spec if node is None or spec.get("node") else {**spec, "node": node}


def run_body(cfg: Settings, job_id: str, spec: dict[str, Any], node: str | None, prefix: str | None) -> dict[str, Any]:
    """A run-job message's (signed) body: the spec as placed, and its stamps; `prefix`, the
    sender's key prefix where every live worker reads it (`Store.prefix_stamp`)."""
    return {"spec": placed(spec, node), **stamp(job_id, cfg.message_ttl, time.time(), prefix)}


def run_message(
    cfg: Settings, job_id: str, spec: dict[str, Any], node: str | None, prefix: str | None = None
) -> tuple[str, bytes]:
    """(queue, queue entry) of one run-job message, signed when signing is configured."""

    queue = queue_for(cfg, node)
    body = run_body(cfg, job_id, spec, node, prefix)
    return queue, wire.envelope(job_id, body, queue, client_signer(cfg))


def client_signer(cfg: Settings) -> wire.Signer | None:
    """This client's signer (its key and certificate, checked to be a pair), None when it
    does not sign; ConfigError when they do not load."""
    from joblet.errors import ConfigError

    conf = signing_config(cfg, verify=False)
    try:
        return wire.signer(conf["security_key"], conf["security_certificate"]) if conf else None
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"cannot load the signing key or certificate: {exc}") from None


@lru_cache(maxsize=4)
def broker_redis(url: str) -> Any:
    from joblet.api.redis_conn import connect

    return connect(url)


def push(cfg: Settings, messages: list[tuple[str, bytes]]) -> None:
    """LPUSH queue entries in one round trip (kombu's Redis transport pops with BRPOP)."""
    from joblet.api.redis_conn import error_kind, safe_url
    from joblet.errors import BackendUnavailable

    try:
        pipe = broker_redis(wire.redis_url(cfg.broker)).pipeline(transaction=False)
        for queue, entry in messages:
            pipe.lpush(queue, entry)
        pipe.execute()
    except Exception as exc:
        if error_kind(exc) is None:
            raise
        raise BackendUnavailable(f"cannot queue on the broker at {safe_url(cfg.broker)}: {exc}") from None


def send_run_celery(
    cfg: Settings, job_id: str, spec: dict[str, Any], node: str | None, prefix: str | None = None
) -> None:
    """send_run through Celery's send_task (any broker Celery supports)."""
    from joblet.api.redis_conn import safe_url
    from joblet.errors import BackendUnavailable

    body = run_body(cfg, job_id, spec, node, prefix)
    try:
        client_app(cfg).send_task(
            RUN_TASK,
            kwargs=body,
            task_id=job_id,
            queue=queue_for(cfg, node),
            retry=False,
            ignore_result=True,  # as wire.headers: nobody reads it
        )
    except Exception as exc:
        # kombu's OperationalError, and amqp's own (a vhost refused: NotAllowed, a password:
        # AccessRefused), which were tracebacks (operator's run); the password is not shown
        if not type(exc).__module__.startswith(("kombu", "amqp")):
            raise
        raise BackendUnavailable(f"cannot reach the broker at {safe_url(cfg.broker)}: {exc}") from None


def broker_kind(url: str) -> str:
    """ "redis" or "amqp": which broker a URL names (its scheme's family)."""
    return "redis" if wire.is_redis(url) else "amqp"


def route_mismatch(cfg: Settings, live: dict[str, dict[str, Any]], node: str | None) -> str | None:
    """Why no live worker that could take the job reads where this client would queue it
    (one line), or None. A client of another broker, or another JOBLET_QUEUE, queued jobs
    that stayed PENDING for good without a word (operator's and usability runs). Workers
    publish both in their heartbeat; those that do not say are given the benefit of the doubt."""
    targets = {n: i for n, i in live.items() if node is None or n == node}
    kind = broker_kind(cfg.broker)
    kinds = {n: i["broker"] for n, i in targets.items() if isinstance(i.get("broker"), str)}
    if targets and len(kinds) == len(targets) and kind not in kinds.values():
        names = ", ".join(repr(n) for n in sorted(kinds))
        return (
            f"cannot queue the job: worker(s) {names} take jobs from a {sorted(set(kinds.values()))[0]} broker, and "
            f"this client would send it to {kind} (JOBLET_BROKER_URL, else JOBLET_REDIS_URL): set it as the workers'"
        )
    queues = {n: i["queue"] for n, i in targets.items() if isinstance(i.get("queue"), str)}
    if targets and len(queues) == len(targets) and cfg.queue not in queues.values():
        read = ", ".join(repr(q) for q in sorted(set(queues.values())))
        return (
            f"cannot queue the job: no live worker reads queue {cfg.queue!r} (they read {read}): "
            "set JOBLET_QUEUE as the workers'"
        )
    return None


def signing_mismatch(
    signs: bool, live: dict[str, dict[str, Any]], node: str | None, signer: str | None = None
) -> str | None:
    """Why the live workers that could take a message would refuse it (one line), or None.

    Workers publish `signed` in their heartbeat; a worker that verifies refuses unsigned
    messages and one that does not refuses signed ones, and either way the job would stay
    PENDING. A verifying worker publishes the signers it trusts (`trusts`) too: a message
    signed by another (`signer`, this client's) is refused there. Workers that do not say are
    given the benefit of the doubt."""
    targets = {n: i for n, i in live.items() if node is None or n == node}
    wrong = sorted(n for n, i in targets.items() if isinstance(i.get("signed"), bool) and i["signed"] != signs)
    if not wrong and signer is not None:
        trusts = {n: i.get("trusts") for n, i in targets.items()}
        distrust = sorted(n for n, ids in trusts.items() if isinstance(ids, list) and signer not in ids)
        if distrust:
            return (
                f"cannot queue the job: worker(s) {', '.join(map(repr, distrust))} do not trust signing_cert "
                f"(issuer and serial {signer!r}); add it to their signing_trust, or sign with a certificate they trust"
            )
    if not wrong:
        return None
    names = ", ".join(repr(n) for n in wrong)
    if signs:
        return (
            f"cannot queue the job: worker(s) {names} accept only unsigned messages; unset "
            "signing_key/signing_cert or enable signing on the workers"
        )
    return (
        f"cannot queue the job unsigned: worker(s) {names} require signed messages; set "
        "signing_key and signing_cert (JOBLET_SIGNING_KEY, JOBLET_SIGNING_CERT)"
    )
