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
NEW_OUTAGE_AFTER = 5.0  # a failure this long after the last one starts a new wait


class Patience:
    """Called with each failed read of one job's output: says once that it waits, waits a
    moment and returns (read again), or raises after REDIS_PATIENCE naming the job."""

    def __init__(self, short_id: str) -> None:
        self.short_id = short_id
        self.due: float | None = None
        self.last = 0.0

    def __call__(self, exc: BackendUnavailable) -> None:
        now, short = time.monotonic(), self.short_id
        if self.due is None or now - self.last > NEW_OUTAGE_AFTER:
            self.due = now + REDIS_PATIENCE
            sys.stderr.write(f"rnx: {exc}; waiting up to {REDIS_PATIENCE:g} s (job {short} goes on)\n")
        self.last = now
        if now >= self.due:
            raise BackendUnavailable(f"{exc}; job {short} may still be running (rnx log -f {short})") from None
        wakeup.sleep(RETRY_EVERY)
