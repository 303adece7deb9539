"""Jobs running here that Redis forgot (it restarted without its data, as the quickstart's
does): written again on the heartbeat, so they can be seen and stopped, their addresses are
not handed out twice and their peers find them by name.

What this worker knows of such a job is written back: its record (RUNNING, this node, its
addresses; `created` and `started` are the time of the restore, which the record says in
`error`), its name unless another job took it meanwhile, its addresses unless another job
took one meanwhile (both logged: the job keeps running, a peer may then reach the other
one), its place in its networks. Networks and volumes that Redis forgot are not: their
definitions are the user's (rnx network create, rnx volume create).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from joblet.api.models import JobRecord, JobStatus
from joblet.errors import JobletError
from joblet.worker.services import Services

log = logging.getLogger(__name__)
RESTORED = "restored by its worker after Redis lost its record (created and started: then)"


def restore_forgotten(svc: Services, runs: list[Any]) -> list[str]:
    """Restore each of these running jobs (JobRun, its command started) whose record is
    gone; the ids restored."""
    started = [r for r in runs if r.sandbox is not None and r.sandbox.released and r.plan is not None]
    if not started:
        return []
    statuses = svc.store.statuses([r.job_id for r in started])
    done = []
    for run, status in zip(started, statuses, strict=True):
        if status is not None or run.stopped.is_set():
            continue
        try:
            _restore(svc, run)
        except JobletError as exc:  # the next beat tries again
            log.error("job %s: could not restore its record: %s", run.job_id[:12], exc)
            continue
        done.append(run.job_id)
        log.warning("job %s: Redis had lost its record; restored it", run.job_id[:12])
    return done


def _restore(svc: Services, run: Any) -> None:
    now, plan, spec = time.time(), run.plan, run.spec
    record = JobRecord(
        id=run.job_id,
        status=JobStatus.RUNNING,
        spec=spec,
        name=spec.name,
        node=svc.cfg.node,
        ips=dict(plan.ips),
        created=now,
        started=now,
        workflow=run.scope or None,
        error=RESTORED,
    )
    for network, address in plan.reserved().items():
        other = svc.agent.ipam.hold(network, address, run.job_id)
        if other is not None:
            log.error("job %s: its %s address went to job %s meanwhile", run.job_id[:12], network, other[:12])
    holder = svc.store.create_named_job(record) if spec.name else None
    if holder is not None:
        log.error("job %s: its name %s went to job %s meanwhile", run.job_id[:12], spec.name, holder[:12])
    if holder is not None or not spec.name:
        svc.store.create_job(dataclasses.replace(record, name=None) if holder else record)
    names = [run.job_id[:12], *([spec.name] if spec.name and holder is None else [])]
    svc.discovery.join(run.job_id, plan.ips, names, run.write_hosts, run.scope)
    svc.discovery.refresh(list(plan.ips))
