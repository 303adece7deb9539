"""One thread of the worker per job that lives in the job's namespaces, from their making to
the job's reaping: it makes the network namespace, the mount namespace and /work, configures
the job's end of its veths, and spawns the sandbox.

Why a thread that lasts as long as the job: spawned from inside the job's namespaces, the
sandbox needs no `nsenter` to join them (one exec less on every start, ~1 ms here), and
bwrap's `--die-with-parent` follows the thread that spawned it (the parent-death signal fires
when that thread ends, not the process), so the thread must outlive bwrap. Only the job's own
namespace work ever runs in it (STYLE.md 7: nothing else lands in a thread that switched
namespaces); it ends once the job's processes are reaped. It is never reused for another
job: before it spawns the sandbox it enters the job's Landlock domain (worker/landlock.py),
which no thread can leave.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Call = tuple[Callable[[], Any], "queue.SimpleQueue[tuple[bool, Any]]"]


class JobThread:
    """Runs functions, one at a time, in a thread of its own that keeps its namespace changes."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=f"joblet-job-{name}", daemon=True)
        self._thread.start()
        self._closed = False

    def __call__(self, fn: Callable[[], T]) -> T:
        """`fn()` in the job's thread; what it raises is raised here."""
        if self._closed:
            raise RuntimeError("the job's thread has ended")
        reply: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._calls.put((fn, reply))
        ok, value = reply.get()
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, reply = call
            try:
                reply.put((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller
                reply.put((False, exc))

    def close(self) -> None:
        """End the thread: after the job's processes are reaped (it is their spawner). Twice is
        harmless."""
        if not self._closed:
            self._closed = True
            self._calls.put(None)
            self._thread.join()
