"""Test-only fault points: pause a job thread, or make a background step raise.

Pause: with JOBLET_FAULT_PAUSE=<point> in the worker's environment, the job thread that reaches
that point writes the point's name to JOBLET_FAULT_MARKER (a file) and blocks for good, so a
test can SIGKILL the worker exactly there. Points: claimed, planned, attached, running, teardown.

Raise: with JOBLET_FAULT_FILE=<path>, a test arms faults while the worker runs by appending
lines `<point> <exception> <count> [<job id>]` to that file (see `arm`): the next <count>
calls of that point (for that job only, when one is named) raise <exception>. Each fault that
fires appends `fired <point> <job id>` to JOBLET_FAULT_MARKER, so the test can wait for them.
Raise points: beat, beat-facts (each part of the heartbeat's host facts), upkeep, listen,
output-read, output-flush, bridge-created (a network's bridge exists on this host, its rules
are not loaded yet), claim-reply (the claim ran in Redis, its reply is lost).

Unset (always, outside tests), a point costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass
from pathlib import Path

POINTS = ("claimed", "planned", "attached", "running", "teardown")
RAISE_POINTS = (
    "beat",
    "beat-facts",
    "upkeep",
    "listen",
    "output-read",
    "output-flush",
    "bridge-created",
    "claim-reply",
)


def _redis_error(message: str) -> Exception:
    import redis

    return redis.exceptions.ConnectionError(message)


EXCEPTIONS = {
    "BlockingIOError": lambda m: BlockingIOError(errno.EAGAIN, f"Resource temporarily unavailable ({m})"),
    "OSError": lambda m: OSError(errno.EIO, f"Input/output error ({m})"),
    "RedisConnectionError": _redis_error,
    "RuntimeError": RuntimeError,
    "ValueError": ValueError,
}


def point(name: str, job_id: str) -> None:
    if os.environ.get("JOBLET_FAULT_PAUSE") != name:
        return
    _mark(f"{name} {job_id}")
    threading.Event().wait()  # until the test kills the process


@dataclass
class Armed:
    point: str
    exception: str
    count: int
    job_id: str = ""


class _Faults:
    """The armed faults read so far from JOBLET_FAULT_FILE (appended lines only)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.offset = 0
        self.armed: list[Armed] = []

    def take(self, path: str, name: str, job_id: str) -> Armed | None:
        with self.lock:
            self._read_new(path)
            for fault in self.armed:
                if fault.count > 0 and fault.point == name and fault.job_id in ("", job_id):
                    fault.count -= 1
                    return fault
        return None

    def _read_new(self, path: str) -> None:
        try:
            with open(path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            parts = line.split()
            if len(parts) in (3, 4) and parts[1] in EXCEPTIONS:
                self.armed.append(Armed(parts[0], parts[1], int(parts[2]), *parts[3:]))


_faults = _Faults()


def fail(name: str, job_id: str = "") -> None:
    """Raise here if a test armed this point (for this job)."""
    path = os.environ.get("JOBLET_FAULT_FILE")
    if not path:
        return
    fault = _faults.take(path, name, job_id)
    if fault is None:
        return
    _mark(f"fired {name} {job_id or '-'}")
    raise EXCEPTIONS[fault.exception](f"injected at {name}")


def _mark(line: str) -> None:
    marker = os.environ.get("JOBLET_FAULT_MARKER")
    if marker:
        with open(marker, "a") as fh:
            fh.write(line + "\n")


def arm(path: Path, name: str, exception: str, count: int, job_id: str = "") -> None:
    """For tests: make the next `count` calls of point `name` raise `exception`."""
    if name not in RAISE_POINTS or exception not in EXCEPTIONS:
        raise ValueError(f"unknown fault point {name!r} or exception {exception!r}")
    with open(path, "a") as fh:
        fh.write(f"{name} {exception} {count} {job_id}".rstrip() + "\n")


def fired(marker: Path, name: str) -> int:
    """For tests: how many faults of point `name` fired so far."""
    try:
        lines = marker.read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if line.split()[:2] == ["fired", name])
