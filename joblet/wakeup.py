"""Waits that a signal ends at once, for `rnx` (its Ctrl-C while it waits on Redis).

Python runs a signal's handler (Ctrl-C's KeyboardInterrupt) between bytecodes of the main
thread, and a blocking call only returns early when the kernel interrupts it. A signal that
comes after the last check and before the call blocks (a window of microseconds, about one
Ctrl-C in 600 here) is noticed only when the call returns: `rnx list` against a Redis that
never answers sat out its whole 30 s read timeout. The cure is the self-pipe: Python's own C
handler writes a byte to the descriptor `signal.set_wakeup_fd` names, whenever a signal
comes, and a wait that watches that pipe beside its socket returns, so the handler runs.

Only the main thread of a process that called `install` waits this way; the worker does not.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time

_read_end: int | None = None


def install() -> None:
    """From now on, every signal with a Python handler writes a byte to a pipe that `readable`
    and `sleep` watch (once per process, from its main thread)."""
    global _read_end
    if _read_end is not None:
        return
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    _read_end = r


def watching() -> bool:
    """Whether this thread's waits watch the pipe (the main thread, after `install`)."""
    return _read_end is not None and threading.current_thread() is threading.main_thread()


def readable(fd: int, timeout: float | None) -> bool:
    """Wait until `fd` can be read (True) or `timeout` seconds passed (False); a signal that
    comes meanwhile has its handler run, and what it raises is raised here. Only where
    `watching()`."""
    wake = _read_end
    assert wake is not None and watching(), "after install, in the main thread"
    poll = select.poll()
    poll.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    poll.register(wake, select.POLLIN)
    due = None if timeout is None else time.monotonic() + timeout
    while True:
        wait_ms = None if due is None else max(0, int((due - time.monotonic()) * 1000) + 1)
        ready = {f for f, _ in poll.poll(wait_ms)}
        if fd in ready:
            return True
        if wake in ready:
            _drain(wake)  # the handler runs at the loop's next turn (a bytecode boundary)
        elif due is not None and time.monotonic() >= due:
            return False


def sleep(seconds: float) -> None:
    """time.sleep that a signal ends without fail (its handler's exception is raised here)."""
    wake = _read_end
    if wake is None or not watching():
        time.sleep(seconds)
        return
    due = time.monotonic() + seconds
    while (left := due - time.monotonic()) > 0:
        if select.select([wake], [], [], left)[0]:
            _drain(wake)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
