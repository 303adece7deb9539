"""Background loops that no exception ends.

A worker's heartbeat drives the node's presence and the firewall's self-repair; its listener
and output pump serve every job. Each runs its step through `resilient`: any exception is
logged and the step retried after a pause that doubles (0.1 s up to 5 s by default) while
failures follow each other, and starts again from the shortest once a step succeeds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from joblet.errors import BackendUnavailable

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Pauses between failed attempts: first, doubling, at most `cap` (pure)."""

    first: float = 0.1
    cap: float = 5.0
    current: float = 0.0

    def failed(self) -> float:
        """The pause before the next attempt."""
        self.current = self.first if self.current == 0 else min(self.current * 2, self.cap)
        return self.current

    def succeeded(self) -> None:
        self.current = 0.0


def resilient(
    name: str,
    step: Callable[[], object],
    stop: threading.Event,
    *,
    every: float = 0.0,
    first: float = 0.1,
    cap: float = 5.0,
) -> None:
    """Call `step` until `stop` is set, waiting `every` seconds after each success.

    A step that raises is logged and retried after a backoff: with its traceback the first
    time in a row, but for BackendUnavailable (Redis out of reach), whose one line says it all
    (a restart of Redis traced every loop of the worker). A step that ran for longer than `cap`
    before failing counts as a first failure, so a long-lived step (a subscription) is not
    punished for an old streak.
    """
    backoff = Backoff(first, cap)
    while not stop.is_set():
        began = time.monotonic()
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the point: nothing ends this thread
            if time.monotonic() - began > cap:
                backoff.succeeded()
            pause = backoff.failed()
            traced = pause == first and not isinstance(exc, BackendUnavailable)
            log.warning("%s: %s: %s; retrying in %.1f s", name, type(exc).__name__, exc, pause, exc_info=traced)
            stop.wait(pause)
            continue
        backoff.succeeded()
        if every:
            stop.wait(every)


def start(name: str, step: Callable[[], object], stop: threading.Event, **kw: float) -> threading.Thread:
    """`resilient(name, step, stop, ...)` in a daemon thread named joblet-NAME."""
    thread = threading.Thread(target=resilient, args=(name, step, stop), kwargs=kw, name=f"joblet-{name}", daemon=True)
    thread.start()
    return thread
