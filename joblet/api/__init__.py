"""What clients see: models, the Client, and the `run_job` Celery signature.

`from joblet.api import run_job` gives a signature sent by task name, so
`run_job.delay(command="echo", args=["hi"], network="none").get()` returns the job's final
record as a dict. Every name is imported when it is first used: `rnx --help` and modules
such as `joblet.api.keys` must not pay for pydantic, redis-py or Celery.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from joblet.api.client import Client
    from joblet.api.models import JobRecord, JobSpec, JobStatus, make_spec
    from joblet.api.uploads import Upload
    from joblet.errors import BackendUnavailable, JobletError, NotFound, ValidationError

__all__ = [
    "BackendUnavailable",
    "Client",
    "JobRecord",
    "JobSpec",
    "JobStatus",
    "JobletError",
    "NotFound",
    "Upload",
    "ValidationError",
    "make_spec",
    "run_job",
]

_HOMES = {
    "Client": "joblet.api.client",
    "JobRecord": "joblet.api.models",
    "JobSpec": "joblet.api.models",
    "JobStatus": "joblet.api.models",
    "Upload": "joblet.api.uploads",
    "make_spec": "joblet.api.models",  # Client.batch's specs
    # what the API raises, importable beside it
    "BackendUnavailable": "joblet.errors",
    "JobletError": "joblet.errors",
    "NotFound": "joblet.errors",
    "ValidationError": "joblet.errors",
}


def __getattr__(name: str) -> Any:
    if name == "run_job":
        from joblet.api.tasks import run_job_signature

        return run_job_signature()
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(name)
    return getattr(import_module(home), name)
