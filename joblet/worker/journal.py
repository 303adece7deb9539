"""The per-host journal: each job's plan, written before any kernel object is made.

A worker that starts after a crash reads it to remove what no live job owns.

It is one append-only file, `<state_dir>/journal/log`: a job's entry is one JSON line (the
latest line of a job wins), its end a `{"forget": ID}` line. No file is made or deleted per
job: on ext4 that cost up to ~2 ms of CPU per job, with its recent deletions
(docs/PERFORMANCE_LOG.md, item 16). Each line is one `write` on an O_APPEND descriptor (the rest
written again if the disk filled part-way, else the line ended), so a killed worker leaves
whole lines; a line torn by a power loss is skipped when read, and
ended before anything more is appended. Once enough jobs have ended, the file is rewritten
with the live entries only (a new file renamed over it). Per-job files of older workers
(`<id>.json`) are read too, and deleted when their job is forgotten.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from joblet.network_agent.plan import NetPlan

log = logging.getLogger(__name__)
COMPACT_AFTER = 1024  # forgotten entries after which the log is rewritten with the live ones


class Entry(BaseModel):
    """What one job has on this host."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    cgroup: str
    work_dir: str
    run_dir: str
    plan: NetPlan | None = None
    outcome: dict[str, Any] | None = None  # its end, which Redis missed: recorded at the next start


class Journal:
    """The journal of one worker (one per state_dir); safe to call from any thread."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "journal"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "log"
        self._lock = threading.Lock()
        self._live, torn = read_log(self.path)  # job id -> its line
        self._legacy = {p.stem: p for p in self.dir.glob("*.json")}
        self._forgotten = 0
        self._fd = self._open(self.path, os.O_APPEND)
        if torn:  # end it, or the next line appended would be read as part of it
            _write_all(self._fd, b"\n")

    def record(self, entry: Entry) -> None:
        line = entry.model_dump_json() + "\n"
        with self._lock:
            _write_all(self._fd, line.encode())  # first: a failed write (ENOSPC) leaves no live entry
            self._live[entry.job_id] = line

    def keep_outcome(self, job_id: str, outcome: dict[str, Any]) -> None:
        """A job's end that Redis missed, with its entry: a restarted worker records it (not LOST)."""
        with self._lock:
            line = self._live.get(job_id)
        if line is None:
            return
        try:
            self.record(Entry.model_validate_json(line).model_copy(update={"outcome": outcome}))
        except OSError as exc:  # the entry stays as it was: a restart records the job LOST
            log.warning("journal: could not keep job %s's outcome: %s", job_id[:12], exc)

    def forget(self, job_id: str) -> None:
        with self._lock:
            legacy = self._legacy.pop(job_id, None)
            if legacy is not None:
                with contextlib.suppress(FileNotFoundError):
                    legacy.unlink()
            if self._live.pop(job_id, None) is None:
                return
            try:
                _write_all(self._fd, (json.dumps({"forget": job_id}) + "\n").encode())
            except OSError as exc:  # the entry stays in the file: the next start reconciles it again
                log.warning("journal: could not forget job %s: %s", job_id[:12], exc)
                return
            self._forgotten += 1
            if self._forgotten >= COMPACT_AFTER:
                try:
                    self._compact()
                except OSError as exc:  # the log stays as it is, longer; tried at the next forget
                    log.warning("journal: could not rewrite %s: %s", self.path, exc)

    def entries(self) -> list[Entry]:
        """Every job not forgotten, by id (an older worker's files included)."""
        with self._lock:
            lines = dict(self._live)
            legacy = {k: v for k, v in self._legacy.items() if k not in lines}
        found = {}
        for job_id, line in lines.items():
            with contextlib.suppress(ValueError):
                found[job_id] = Entry.model_validate_json(line)
        for job_id, path in legacy.items():
            with contextlib.suppress(OSError, ValueError):
                found[job_id] = Entry.model_validate_json(path.read_text())
        return [found[k] for k in sorted(found)]

    @staticmethod
    def _open(path: Path, flags: int) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | flags, 0o600)

    def _compact(self) -> None:
        """Rewrite the log with the live entries (called with the lock held)."""
        tmp = self.dir / "log.tmp"
        fd = self._open(tmp, os.O_TRUNC | os.O_APPEND)  # the log's descriptor once renamed
        try:
            _write_all(fd, "".join(self._live.values()).encode())
            os.fsync(fd)  # whole on disk before it takes the log's name: a power loss after the
            os.replace(tmp, self.path)  # rename left an empty log on filesystems that allow it
            _fsync_dir(self.dir)
        except OSError:
            os.close(fd)
            tmp.unlink(missing_ok=True)  # the log is not replaced by a short copy
            raise
        old, self._fd = self._fd, fd  # no open after the rename: nothing left to fail there
        os.close(old)
        self._forgotten = 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """All of `data`, or OSError. A short write (the disk full part-way) is retried for the
    rest; if that fails too, the torn line is ended where possible, so the next line appended
    is not read as part of it."""
    view, wrote = memoryview(data), False
    try:
        while view:
            n = os.write(fd, view)
            if n == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view, wrote = view[n:], True
    except OSError:
        if wrote:
            with contextlib.suppress(OSError):
                os.write(fd, b"\n")
        raise


def read_log(path: Path) -> tuple[dict[str, str], bool]:
    """The live lines of a log, by job id (later lines win, a forget drops the job, a line
    that is not a whole JSON object is skipped), and whether its last line is torn (unended)."""
    live: dict[str, str] = {}
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return live, False
    for line in text.split("\n"):  # not splitlines(): U+2028 and U+0085 are JSON's text (review)
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("forget"), str):
            live.pop(item["forget"], None)
        elif isinstance(item.get("job_id"), str):
            live[item["job_id"]] = line + "\n"
    return live, bool(text) and not text.endswith("\n")
