"""One exception tree for joblet.

    JobletError
    ├── ConfigError            bad settings file or environment
    ├── ValidationError        bad user input (names the field)
    ├── NotFound               unknown job, network, ...
    │   └── AmbiguousId        an id prefix that matches several jobs
    ├── Conflict               the thing exists, is in use, or overlaps
    ├── BackendUnavailable     Redis / broker cannot be reached
    ├── NetworkError           building or tearing down a job's network failed
    │   └── TeardownError      several teardown steps failed (collects them)
    └── ExecutionError         the job's process could not be started

redis, celery and pyroute2 errors are translated at the boundary (api.store, the client's
send, network_agent.links) and never escape it.
"""

from __future__ import annotations


class JobletError(Exception):
    """Base of every error joblet raises on purpose."""


class ConfigError(JobletError):
    """The settings are invalid."""


class ValidationError(JobletError):
    """User input is invalid; the message names the field."""


class NotFound(JobletError):
    """A job, network or other object does not exist."""


class AmbiguousId(NotFound):
    """An id prefix matches more than one job."""


class Conflict(JobletError):
    """The object already exists, is in use, or overlaps another."""


class BackendUnavailable(JobletError):
    """Redis (or the broker) cannot be reached."""


class BackendRefused(BackendUnavailable):
    """Redis was reached and answered with an error reply (WRONGTYPE, OOM, a script's error):
    a BackendUnavailable to every caller, told apart only where an outage waits and a refusal
    must not (the output pump: review)."""


class PermissionDenied(JobletError):
    """Redis refused the command for this user (ACL) or the credentials."""


class NetworkError(JobletError):
    """A network could not be built or torn down."""


class TeardownError(NetworkError):
    """Several teardown steps failed; all were attempted."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class ExecutionError(JobletError):
    """The job's process could not be started."""
