"""What clients see: models, the Client, and the `run_job` Celery signature.

`from joblet.api import run_job` gives a signature sent by task name, so
`run_job.delay(command="echo", args=["hi"], network="none").get()` returns the job's final
record as a dict. Celery is imported only when it is first used.
"""

from __future__ import annotations

from typing import Any

from joblet.api.client import Client
from joblet.api.models import JobRecord, JobSpec, JobStatus, Upload

__all__ = ["Client", "JobRecord", "JobSpec", "JobStatus", "Upload", "run_job"]


def __getattr__(name: str) -> Any:
    if name == "run_job":
        from joblet.api.tasks import run_job_signature

        return run_job_signature()
    raise AttributeError(name)
