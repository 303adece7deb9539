"""joblet's only task: run one job. Short on purpose; the work is in Supervisor/JobRun."""

from __future__ import annotations

import logging
import time
from typing import Any

import pydantic
from celery import Celery, Task
from celery.exceptions import Ignore

from joblet.api.client import validation_message
from joblet.api.keys import RUN_TASK
from joblet.api.models import JobSpec
from joblet.worker.runner import Outcome
from joblet.worker.supervisor import Duplicate

log = logging.getLogger(__name__)


def register(app: Celery) -> None:
    @app.task(name=RUN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_job(self: Task, spec: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        from joblet.api.models import JobRecord, JobStatus
        from joblet.worker.app import supervisor

        sup = supervisor()
        job_id = self.request.id
        try:
            parsed = JobSpec.model_validate(spec if spec is not None else fields)
        except pydantic.ValidationError as exc:
            error = validation_message(exc)
            log.error("job %s rejected: %s", job_id, error)
            parsed = JobSpec(command="-")
            sup.store.create_job_if_absent(JobRecord(id=job_id, status=JobStatus.PENDING,
                                                     spec=parsed, created=time.time()))
            return sup.finish(job_id, Outcome(JobStatus.FAILED, error=error))
        try:
            return sup.run(job_id, parsed)
        except Duplicate:
            log.warning("job %s was delivered again; it runs only once", job_id)
            raise Ignore() from None
