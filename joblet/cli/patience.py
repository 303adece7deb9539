"""An outage of Redis waited out by a command that follows a job (`rnx run` attached,
`rnx log -f`): the job goes on meanwhile and its worker keeps its output until Redis is back,
so leaving at the first failed read lost the rest of it for nothing."""

from __future__ import annotations

import sys
import time

from joblet import wakeup
from joblet.errors import BackendUnavailable

REDIS_PATIENCE = 60.0  # seconds a follower waits for Redis to come back
RETRY_EVERY = 0.5


class Patience:
    """Called with each failed read of one job's output: says once that it waits, waits a
    moment and returns (read again), or raises once REDIS_PATIENCE has passed since the
    outage's first failure, naming the job. Called with None after a read that worked: the
    outage is over (a read that hangs 30 s before it fails must not start a new wait each time)."""

    def __init__(self, short_id: str, kind: str = "job", follow: str = "rnx log -f") -> None:
        self.short_id = short_id
        self.kind = kind  # "job" or "workflow", and the command that follows it again
        self.follow = follow
        self.due: float | None = None

    def __call__(self, exc: BackendUnavailable | None) -> None:
        if exc is None:
            self.due = None
            return
        now, what = time.monotonic(), f"{self.kind} {self.short_id}"
        if self.due is None:
            self.due = now + REDIS_PATIENCE
            sys.stderr.write(f"rnx: {exc}; waiting up to {REDIS_PATIENCE:g} s ({what} goes on)\n")
        if now >= self.due:
            raise BackendUnavailable(f"{exc}; {what} may still be running ({self.follow} {self.short_id})") from None
        wakeup.sleep(RETRY_EVERY)
