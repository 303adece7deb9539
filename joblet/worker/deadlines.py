"""The worker's deadlines on one thread: a stopped job's SIGKILL after its grace period.

A timer thread per stopped job started hundreds of threads when hundreds of jobs were stopped
at once, each contending for the GIL while the jobs ended (docs/PERFORMANCE.md). One thread
sleeps until the earliest deadline; a cancelled deadline is skipped when it comes up.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Deadlines:
    """`after(seconds, fn)` runs fn on the deadlines' thread once the time has come, unless the
    returned cancel was called first (as with threading.Timer, a cancel after it ran is a no-op)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, list[Callable[[], None] | None]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def after(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        slot: list[Callable[[], None] | None] = [fn]
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), slot))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="joblet-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

        def cancel() -> None:
            slot[0] = None

        return cancel

    def _next(self) -> Callable[[], None]:
        """Waits for the earliest deadline that was not cancelled, and takes it."""
        with self._cond:
            while True:
                while self._heap and self._heap[0][2][0] is None:
                    heapq.heappop(self._heap)
                if self._heap and self._heap[0][0] <= time.monotonic():
                    fn = heapq.heappop(self._heap)[2][0]
                    if fn is not None:
                        return fn
                    continue
                self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)

    def _run(self) -> None:
        while True:
            fn = self._next()
            try:
                fn()
            except Exception:  # one job's kill failing must not end the others' deadlines
                log.exception("a deadline's action failed")
