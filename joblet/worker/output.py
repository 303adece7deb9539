"""Stream every job's stdout and stderr to Redis as they are produced.

One thread watches the pipes of all jobs (a selector), so a host with hundreds of jobs does
not need a reader thread per pipe. Chunks go out in one FIFO: order holds within and across
streams of a job, the end marker is queued after the last byte, and while Redis is
unreachable chunks wait in memory and go out when it is back.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import threading
from dataclasses import dataclass, field
from typing import Any

from joblet.api.keys import STDERR_FIELD, STDOUT_FIELD
from joblet.api.store import Store
from joblet.errors import BackendUnavailable

log = logging.getLogger(__name__)
CHUNK = 64 * 1024


@dataclass
class Capture:
    """What the pump knows of one job's output."""

    job_id: str
    keep: int
    stdout: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    open_pipes: int = 2
    closed: threading.Event = field(default_factory=threading.Event)
    flushed: threading.Event = field(default_factory=threading.Event)

    def kept(self, data: bytes) -> None:
        room = self.keep - len(self.stdout)
        if room > 0:
            self.stdout += data[:room]
        if len(data) > room:
            self.truncated = True


class OutputPump:
    """The worker's single output thread."""

    def __init__(self, store: Store, cap: int) -> None:
        self.store = store
        self.cap = cap
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._incoming: collections.deque[tuple[Any, ...]] = collections.deque()
        self._outbox: collections.deque[tuple[Capture, bytes, Any]] = collections.deque()
        self._thread = threading.Thread(target=self._loop, name="joblet-output", daemon=True)
        self._thread.start()

    def watch(self, job_id: str, stdout: int, stderr: int, keep: int) -> Capture:
        """Start pumping a job's pipes (file descriptors; the pump closes them at EOF)."""
        cap = Capture(job_id, keep)
        self._incoming.append(("watch", cap, stdout, stderr))
        os.write(self._wake_w, b"w")
        return cap

    def finish(self, cap: Capture, summary: dict[str, Any]) -> None:
        """Queue the end marker after the job's last byte."""
        self._incoming.append(("end", cap, summary))
        os.write(self._wake_w, b"e")

    def _loop(self) -> None:
        while True:
            timeout = 0.5 if self._outbox else None
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    self._take_incoming()
                else:
                    self._read(key)
            self._flush()

    def _take_incoming(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        while self._incoming:
            item = self._incoming.popleft()
            if item[0] == "watch":
                _, cap, out, err = item
                self.selector.register(out, selectors.EVENT_READ, (cap, STDOUT_FIELD))
                self.selector.register(err, selectors.EVENT_READ, (cap, STDERR_FIELD))
            else:
                _, cap, summary = item
                self._outbox.append((cap, b"end", summary))

    def _read(self, key: selectors.SelectorKey) -> None:
        cap, stream = key.data
        data = os.read(key.fd, CHUNK)
        if data:
            if stream == STDOUT_FIELD:
                cap.kept(data)
            self._outbox.append((cap, stream, data))
            return
        self.selector.unregister(key.fd)
        os.close(key.fd)
        cap.open_pipes -= 1
        if cap.open_pipes == 0:
            cap.closed.set()

    def _flush(self) -> None:
        while self._outbox:
            cap, stream, data = self._outbox[0]
            try:
                if stream == b"end":
                    self.store.end_output(cap.job_id, data, self.cap)
                else:
                    self.store.append_output(cap.job_id, stream, data, self.cap)
            except BackendUnavailable as exc:
                log.warning("output of job %s waits for Redis: %s", cap.job_id[:12], exc)
                return
            self._outbox.popleft()
            if stream == b"end":
                cap.flushed.set()
