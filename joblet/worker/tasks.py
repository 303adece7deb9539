"""joblet's only task: run one job. Short on purpose; the work is in Supervisor and JobRun.

This is the boundary where a queue message becomes a job. In order: the id and the body's
stamps are checked (`joblet.api.message`) before any path, cgroup or key is built from the
id; the nonce is claimed (a replay is dropped); the spec is validated and must be for this
node. A dropped message leaves one log line, a counter and no record; a refused job (bad
spec, wrong node) is claimed and recorded FAILED with the reason, so it never runs anywhere.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore

from joblet.api.keys import RUN_TASK
from joblet.api.limits import above_ceiling
from joblet.api.message import Refused, TaskMessage, check, nonce_ttl
from joblet.api.models import JobRecord, JobSpec, JobStatus, check_fresh
from joblet.errors import ValidationError
from joblet.worker import broker_guard
from joblet.worker.fleet import draining_refusal, place_elsewhere
from joblet.worker.records import Outcome
from joblet.worker.supervisor import Duplicate, Supervisor

log = logging.getLogger(__name__)
PLACEHOLDER = JobSpec(command="-")  # recorded instead of a spec that failed its checks
OTHER_INSTALLATION = "other-installation"  # a message naming another key prefix (Refused.reason)


def register(app: Celery, sup: Supervisor) -> None:
    """joblet.run_job on `app`, run by `sup`."""
    signed = app.conf.task_serializer == "auth"

    @app.task(name=RUN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_job(task: Task, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            msg = accept(sup, task.request.id, args, kwargs, signed)
        except Refused as exc:
            dropped(sup, exc)
            raise Ignore() from None
        try:
            return run(sup, msg, keep_stdout=not task.request.ignore_result)
        except Duplicate:
            log.warning("job %s was delivered again; it runs only once", msg.job_id)
            raise Ignore() from None


def accept(sup: Any, header_id: Any, args: Any, kwargs: Any, signed: bool) -> TaskMessage:
    """The checked message; its nonce claimed, unless this is its job's first run after all."""
    msg = check(header_id, args, kwargs, signed, time.time())
    if msg.prefix is not None and msg.prefix != sup.cfg.key_prefix:
        why = _other_installation(sup, msg.prefix)
        raise Refused(OTHER_INSTALLATION, f"job {msg.job_id}: {why}", job_id=msg.job_id, prefix=msg.prefix)
    if msg.nonce is None or msg.expires is None:
        return msg
    if sup.store.claim_nonce(msg.nonce, msg.job_id, nonce_ttl(msg.expires, time.time())):
        return msg
    holder = sup.store.claim_holder(msg.job_id)
    if (holder is None or (holder == sup.cfg.node and not sup.handles(msg.job_id))) and _waiting(sup, msg.job_id):
        # the first delivery ended before it claimed the job, or (here) before it started it
        # (the claim's reply lost, this worker's previous process dead): this one runs it
        return msg
    raise Refused(
        "replay",
        f"job {msg.job_id} was delivered again; it runs only once (its nonce "
        "was claimed before: a redelivery or a replay)",
    )


def _waiting(sup: Any, job_id: str, here: bool = False) -> bool:
    """Its record is PENDING; `here`: and names this node or none (the shared queue), not one
    it was placed on since (a lost node's queued job: fleet.place_unstarted)."""
    record = sup.store.find_job(job_id)
    if record is None or record.status is not JobStatus.PENDING:
        return False
    return not here or record.node in (None, sup.cfg.node)


def dropped(sup: Any, exc: Refused) -> None:
    """Log and count; an expired message of a job waiting here ends that job FAILED, and so does
    another installation's (under its own keys: its sender learns why)."""
    broker_guard.drops().drop(exc.reason, str(exc))
    if exc.reason == OTHER_INSTALLATION and exc.job_id is not None and exc.prefix is not None:
        _fail_elsewhere(sup, exc.job_id, exc.prefix, _other_installation(sup, exc.prefix))
    if exc.reason == "expired" and exc.job_id is not None and _waiting(sup, exc.job_id, here=True):
        try:
            refuse(sup, exc.job_id, PLACEHOLDER, "its queue message expired before a worker took it (message_ttl)")
        except Duplicate:
            pass  # another delivery claimed it first


def _other_installation(sup: Any, prefix: str) -> str:
    return (
        f"not run: its key prefix {prefix!r} is not the one of node {sup.cfg.node!r} ({sup.cfg.key_prefix!r}), "
        f"and both installations take queue {sup.cfg.queue!r} (give each its own JOBLET_QUEUE)"
    )


def _fail_elsewhere(sup: Any, job_id: str, prefix: str, why: str) -> None:
    """End another installation's waiting job FAILED with `why`, under its keys
    (Store.fail_waiting): only a record that is there, waiting and unclaimed (nothing is made
    for a prefix a message names; one of its own workers is setting it up), and not where this
    worker's Redis user may not write them (ACL users: its log line says why). A workflow's job
    is not advanced past."""
    from joblet.api.store import Store

    cfg = sup.cfg
    try:
        other = Store(cfg.redis_url, prefix, client=sup.store.redis)
        if other.claim_holder(job_id) is None:
            waiting = (JobStatus.PENDING,)
            other.fail_waiting(job_id, why, cfg.log_ttl, cfg.log_max_entries, waiting)
    except Exception as exc:  # noqa: BLE001 - the drop stands; telling its sender is a courtesy
        log.warning("could not fail job %s of key prefix %r: %s", job_id, prefix, exc)


def run(sup: Any, msg: TaskMessage, keep_stdout: bool = True) -> dict[str, Any]:
    """Run a checked message's job; `keep_stdout`: its result is stored (run_job.delay()),
    so the result carries its stdout's beginning (joblet's own sends store none)."""
    spec, error = parse_spec(msg.fields, sup.cfg.upload_max_bytes)
    if error is None:
        error = over_ceiling(spec, sup.cfg.job_disk_ceiling, sup.cfg.job_pids_ceiling, sup.cfg.output_max_bytes)
    if error is None and spec.node is not None and spec.node != sup.cfg.node:
        error = f"job is for node {spec.node!r} but node {sup.cfg.node!r} took it from its queue; refused, not run"
    if error is None and (error := draining_refusal(sup)) is not None:
        kept = keep_for_drain(sup, msg.job_id)
        if kept is not None:
            return kept
        if not sup.nodes.is_drained(sup.cfg.node):
            error = None  # undrained this instant: it runs here
    if error is not None:
        broker_guard.drops().count(_reason(error))
        return refuse(sup, msg.job_id, spec, error)
    if sup.closing and (moved := hand_on(sup, sup.store.find_job(msg.job_id))) is not None:
        return moved
    return sup.run(msg.job_id, spec, keep_stdout)  # type: ignore[no-any-return]


def hand_on(sup: Any, record: JobRecord | None) -> dict[str, Any] | None:
    """A waiting job that reached this node as its worker shuts down (taken in the moment
    before its consumer stopped) or drains, not pinned here (its record's spec, as submitted:
    the message's names the node it was placed on), is placed on another node where placement
    finds one: at a shutdown it ended STOPPED, never having run, where a crash would have had
    it placed elsewhere (fleet-failure run: 6 of 60 jobs at a SIGTERM). None: nowhere else."""
    if record is None or record.status != JobStatus.PENDING or record.spec.node is not None:
        return None
    target = place_elsewhere(sup.store, sup.cfg, record, sup.cfg.node)
    return None if target is None else {"job_id": record.id, "status": "PENDING", "node": target}


def keep_for_drain(sup: Any, job_id: str) -> dict[str, Any] | None:
    """A job that reached this node as it drains (queued behind busy slots before the drain,
    or sent by an undrain the instant before the next one) and is not pinned here is placed on
    another node where placement finds one: it was refused FAILED. A workflow's job that is
    pinned here (or finds no other node) is kept, PENDING, for this node's undrain
    (store_nodes.hold): refused, it failed its workflow (red-team run: 44 of 160 pinned jobs
    under drain and undrain toggled). None: refuse it (a plain job pinned here, or nowhere
    else to go; or undrained meanwhile)."""
    node = sup.cfg.node
    record = sup.store.find_job(job_id)
    if (moved := hand_on(sup, record)) is not None:
        return moved
    if record is None or record.status != JobStatus.PENDING:
        return None
    if record.workflow is None or not sup.nodes.hold(node, job_id):
        return None
    sup.store.transition(job_id, [JobStatus.PENDING], node=node)  # the undrain sends those still naming it
    log.info("job %s of a workflow reached node %s as it drains: kept for its undrain", record.short_id, node)
    return {"job_id": job_id, "status": "PENDING", "node": node}


def _reason(error: str) -> str:
    if error.startswith("job is for node"):
        return "wrong-node"
    return "draining" if " is draining " in error else "bad-spec"


def over_ceiling(spec: JobSpec, disk_mb: int, pids: int, output: int | None = None) -> str | None:
    """Why a job's limits ask more of this worker than it grants any job (its /work and /tmp
    are memory; a million processes would be the host's kernel memory; its output is Redis's
    memory), or None."""
    above = above_ceiling(spec.limits, disk_mb, pids, output)
    if above is None:
        return None
    field, asked, ceiling, unit = above
    return f"invalid job field '{field}': {asked}{unit} is above this worker's ceiling of {ceiling}{unit}"


def parse_spec(fields: dict[str, Any], upload_limit: int) -> tuple[JobSpec, str | None]:
    """The job's spec, or the placeholder and a one-line error naming the field."""
    raw: Any = fields
    if "spec" in fields:
        extra = sorted(set(fields) - {"spec"})
        if extra:
            return PLACEHOLDER, f"invalid job field {extra[0][:60]!r}: not a message field"
        raw = fields["spec"]
    try:
        spec = JobSpec.from_dict(raw)
        check_fresh(spec)  # a message is submitted now (run_job.delay passes no preflight)
    except ValidationError as exc:
        return PLACEHOLDER, str(exc)
    except Exception as exc:  # noqa: BLE001 - a check's own bug must not leave the job PENDING
        log.exception("a job spec could not be checked")
        return PLACEHOLDER, f"invalid job: its spec could not be checked ({type(exc).__name__})"
    if spec.upload_bytes > upload_limit:
        return PLACEHOLDER, (
            f"invalid job field 'uploads': {spec.upload_bytes} bytes exceed the limit of {upload_limit}"
        )
    return spec, None


def refuse(sup: Any, job_id: str, spec: JobSpec, error: str) -> dict[str, Any]:
    """Claim the job so it never runs, and record it FAILED with `error`."""
    log.error("job %s refused: %s", job_id, error)
    # the record is written if absent, then claimed: a refused job never runs
    if sup.svc.records.claims.claim(JobRecord.pending(job_id, spec), sup.cfg.node) is None:
        raise Duplicate(job_id)
    result: dict[str, Any] = sup.svc.records.finish(job_id, Outcome(JobStatus.FAILED, error=error))
    sup.store.end_output(job_id, {"status": "FAILED"}, sup.cfg.log_max_entries, sup.cfg.log_ttl)
    return result
