"""Stream every job's stdout and stderr to Redis as they are produced.

One thread watches the pipes of all jobs (a selector), so a host with hundreds of jobs does
not need a reader thread per pipe; another writes what it read to Redis. Chunks go out in one
FIFO: order holds within and across streams of a job, the end marker is queued after the last
byte (after its pipes' EOF), and while Redis is unreachable, or slow to answer, chunks wait in
memory and go out when it is back: the reader never waits on Redis (one thread did both, and a
Redis that stalled instead of refusing held every job's pipes ~10 s a write, review).

Each job's output is capped in bytes (stdout and stderr together, `max_output`, at most the
worker's `output_max_bytes`), and in entries: a stream holds at most `log_max_entries`, and
Redis would drop its oldest beyond that (a job printing a line at a time lost its first
30,000 lines that way, unflagged). Past either cap the stream gets one notice on stderr, the
record `output_truncated`, and the job keeps running: further output is read and discarded,
so the job never blocks on a full pipe, Redis holds at most the cap plus the notice, and what
a stream holds is always the output's beginning. A read that follows one of the same stream
still waiting to be written joins its entry (up to CHUNK), so a job that writes small pieces
faster than Redis takes them uses fewer entries.

A pipe that trickles (more than TRICKLE_READS reads within a WINDOW, together under
TRICKLE_BYTES: a job writing a byte every 70 us) is left unwatched until its window ends,
its writes gathering in the pipe meanwhile: each read cost the worker a wakeup and a system
call, and three such jobs held at 20 % of a core by --max-cpu took 68 % of one from the
worker (red-team run), read and discarded past their caps as before them. A writer of large
pieces (its reads full) is never held back, a chatty one of small pieces only once a pipe's
worth (64 KiB) a window, over 2.5 MB/s; a job's last bytes by one window at most.

Past its cap a job's pipe is drained into /dev/null by splice (no copy through the worker),
made 1 MiB (F_SETPIPE_SZ; root's pages: eight pipes at once at most, DISCARD_PIPES) and left
unwatched for a WINDOW after each drain: discarding took the worker as much CPU as the jobs
writing (five jobs at `--max-cpu=10`: 6.5 s of the worker's in 10 s, red-team run); it is now
at most 40 drains a second a pipe, 40 MiB/s of output past the cap (2.5 MiB/s from a pipe
left at 64 KiB), the job waiting on its full pipe beyond that.

A fault in one job's read or write costs that job (retried, then given up with a log line),
never the other jobs' output; the loop itself runs under `resilient`.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import selectors
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from joblet.api.keys import END_FIELD, STDERR_FIELD, STDOUT_FIELD
from joblet.api.store import Store
from joblet.errors import BackendRefused, BackendUnavailable, JobletError
from joblet.worker import faults
from joblet.worker.resilient import resilient

log = logging.getLogger(__name__)
CHUNK = 63 * 1024  # the largest stream entry: with its listpack, within a 64 KiB allocation
READ_FAILURES = 5  # failed reads in a row before a pipe is given up
WRITE_TRIES = 5  # failed writes of one entry (Redis reachable) before it is dropped
RETRY_FIRST, RETRY_CAP = 0.1, 2.0  # seconds between those tries: doubling, capped
FLAG = b"flag"  # outbox kind: mark the job's record output_truncated


END_WAIT = 30.0  # seconds the end marker waits, once the pump takes it, for the job's pipes to close
RESERVED_ENTRIES = 8  # of a stream's entries, kept for the worker's own: the notice, the end
WINDOW = 0.025  # seconds a pipe's reads are counted in: at most 1,600 reads a second of a trickle
TRICKLE_READS, TRICKLE_BYTES = 40, 256 * 1024  # more reads in a window, fewer bytes: it trickles
DISCARD_PIPE = 1 << 20  # a pipe's size once its output is discarded (pipe-max-size's default)
# pipes made DISCARD_PIPE at once: the worker makes every job's pipes, so their pages count
# against root's fs.pipe-user-pages-soft (16384 pages), whatever user the job runs as; 32
# `--user` jobs past their caps took it all, and root's processes without CAP_SYS_RESOURCE
# (root jobs, capability-less services) got 8 KiB pipes and EPERM from F_SETPIPE_SZ
# (red-team run). Eight take 2048 pages; the rest drain at their size, more often
DISCARD_PIPES = 8
F_SETPIPE_SZ = 1031
# Output read and not written yet, in the worker's memory (outside every job's cgroup): past
# JOB_BACKLOG of one job's, or TOTAL_BACKLOG of all, the pipe just read is left unwatched
# until the writer has brought them to half (the job waits on its full pipe meanwhile, as a
# job whose output goes to a slow disk would). 32 jobs writing 64 MB each at once took the
# worker from 80 MB to 1.5 GB (kept after), and another job's line waited 7 s behind them
# in the one queue (red-team run).
JOB_BACKLOG = 4 << 20
TOTAL_BACKLOG = 64 << 20
# An entry weighs at least this in those bounds: each is a round trip of the writer's (~9,000
# a second here, against ~130 MB/s), and jobs writing a byte at a time to stdout and stderr
# in turn (never joined) queued 150,000 entries of 90 bytes, far below the bytes' bound: a
# victim's lines and end waited 6-17 s behind them (red-team run). 4 MiB: 256 entries a job.
ENTRY_COST = 16 << 10


def truncation_notice(limit: int, entries: int | None = None) -> bytes:
    what = f"at {limit} bytes (max-output)" if entries is None else f"at {entries} entries (log_max_entries)"
    return f"joblet: output truncated {what}; the job keeps running and its further output is discarded\n".encode()


@dataclass
class Budget:
    """How many bytes of a job's output may still go to its stream (pure)."""

    limit: int
    entries: int | None = None  # stream entries it may still add (None: not counted)
    used: int = 0
    over: bool = False
    discarded: int = 0
    by_entries: bool = False  # the entries ran out (not the bytes)

    def take(self, data: bytes, entry: bool = True) -> tuple[bytes, bool]:
        """The part of `data` within the caps, and whether this chunk crossed one; `entry`:
        it would make a new stream entry (not join the one before)."""
        if self.over:
            self.discarded += len(data)
            return b"", False
        if entry and self.entries is not None:
            if self.entries <= 0:
                self.over, self.by_entries, self.discarded = True, True, len(data)
                return b"", True
            self.entries -= 1
        room = self.limit - self.used
        if len(data) <= room:
            self.used += len(data)
            return data, False
        self.used, self.over, self.discarded = self.limit, True, len(data) - room
        return data[:room], True


@dataclass
class Capture:
    """What the pump knows of one job's output."""

    job_id: str
    keep: int
    limit: int = 64 << 20
    entries: int | None = None  # its stream's entries for its output (None: not counted)
    stdout: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    open_pipes: int = 2
    read_failures: int = 0
    closed: threading.Event = field(default_factory=threading.Event)
    flushed: threading.Event = field(default_factory=threading.Event)
    budget: Budget = field(init=False)
    # its entries' stream ids, ms-seq: one ms (its first) and a count, so a resent entry (a
    # command timed out during a stall of Redis, then retried) is refused, not stored twice
    first_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    written: int = 0
    ends_line: bool = True  # its last byte kept (either stream) was a newline, or none was kept
    ending: dict[str, Any] | None = None  # its end marker's summary, waiting for its pipes to close
    end_by: float = 0.0  # monotonic time the end marker goes even so (END_WAIT)
    queued: int = 0  # bytes of its output read and not written yet, ENTRY_COST an entry at least (JOB_BACKLOG)
    held: int = 0  # its pipes unwatched until the writer catches up
    ended: bool = False  # its processes are gone: what its pipes hold is read past TOTAL_BACKLOG

    def next_id(self) -> str:
        self.written += 1
        return f"{self.first_ms}-{self.written}"

    def __post_init__(self) -> None:
        self.budget = Budget(self.limit, self.entries)

    def cap_text(self) -> str:
        """The cap its output passed, for the log."""
        return f"{self.entries} entries" if self.budget.by_entries else f"{self.limit} bytes"

    def kept(self, data: bytes) -> None:
        room = self.keep - len(self.stdout)
        if room > 0:
            self.stdout += data[:room]
        if len(data) > room:
            self.truncated = True


@dataclass(slots=True)
class Item:
    """One write waiting in the outbox: a chunk, the end marker, or the truncation flag."""

    cap: Capture
    kind: bytes
    data: Any
    tries: int = 0
    retry_at: float = 0.0  # monotonic time of the next try after a failed write
    entry_id: str = ""  # its stream id, given at its first try (a job's entries go in order)
    counted: int = 0  # its bytes in the backlog (JOB_BACKLOG), given back once written or dropped


class OutputPump:
    """The worker's single output thread."""

    def __init__(self, store: Store, cap: int, max_bytes: int | None = None, ttl: int | None = None) -> None:
        if max_bytes is None or ttl is None:
            from joblet.config import settings

            max_bytes = settings().output_max_bytes if max_bytes is None else max_bytes
            ttl = settings().log_ttl if ttl is None else ttl
        self.store = store
        self.cap = cap
        self.max_bytes = max_bytes
        self.ttl = ttl  # a stream's expiry, set with its end marker (log_ttl)
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pace: dict[int, list[float]] = {}  # fd -> [window start, reads, bytes]
        self._parked: list[tuple[float, int, Any]] = []  # (until, fd, key data): unwatched meanwhile
        self._held: list[tuple[int, Any]] = []  # (fd, key data): unwatched until the writer catches up
        self._backlog = 0  # bytes read and not written yet, all jobs (TOTAL_BACKLOG)
        self._devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)  # where output past a cap goes
        self._enlarged: set[int] = set()  # pipes past their caps made DISCARD_PIPE (DISCARD_PIPES at most)
        self._incoming: collections.deque[tuple[Any, ...]] = collections.deque()
        self._ending: list[Capture] = []  # jobs whose end marker waits for their pipes' EOF
        self._outbox: collections.deque[Item] = collections.deque()  # the reader adds, the writer takes
        self._out_lock = threading.Lock()  # the outbox's ends, and an entry grown in place (_admit)
        self._written = threading.Condition(self._out_lock)  # a job's backlog emptied (settle)
        self._queued = threading.Event()  # the writer's wake-up: something was queued
        self._redis_gone = False  # said once per outage, not at each retry (twice a second)
        self.parks = 0  # times a trickling pipe was unwatched for the rest of its window
        self._never = threading.Event()
        self._thread = threading.Thread(
            target=resilient, args=("output", self._step, self._never), name="joblet-output", daemon=True
        )
        self._writer = threading.Thread(
            target=resilient, args=("output writes", self._write_step, self._never), name="joblet-output-w", daemon=True
        )
        self._thread.start()
        self._writer.start()

    def watch(self, job_id: str, stdout: int, stderr: int, keep: int, max_output: int | None = None) -> Capture:
        """Start pumping a job's pipes (file descriptors; the pump closes them at EOF).

        `max_output`: the job's own cap; None reads it from the job's record.
        """
        asked = self.asked_limit(job_id) if max_output is None else max_output
        limit = self.max_bytes if asked is None else min(asked, self.max_bytes)
        cap = Capture(job_id, keep, limit, max(1, self.cap - RESERVED_ENTRIES))
        self._incoming.append(("watch", cap, stdout, stderr))
        os.write(self._wake_w, b"w")
        return cap

    def asked_limit(self, job_id: str) -> int | None:
        try:
            return self.store.job_output_limit(job_id)
        except (JobletError, ValueError, AttributeError) as exc:  # Redis gone, or an odd record
            log.warning("job %s: output cap unknown (%s); using %d bytes", job_id[:12], exc, self.max_bytes)
            return None

    def ended(self, cap: Capture) -> None:
        """The job's processes are gone (its cgroup killed): its pipes hold at most what is in
        them, read now past all jobs' bound (a job ending while others' output waited for a
        slow Redis kept 64 KiB of its 300 KB, unsaid, review). Its own bound stays: a
        process outside it that holds one of its pipes (handed over a shared volume's
        socket) would otherwise fill the worker's memory up to the job's output cap."""
        cap.ended = True
        os.write(self._wake_w, b"x")

    def settle(self, cap: Capture, timeout: float) -> bool:
        """Wait, at most `timeout`, until what was read of the job's pipes is written (or
        dropped); whether it was. Its final record then comes after its output: a client's
        wait() returned COMPLETED, and its logs read at once lacked the last line (a test's
        flake on a slow machine; an API user's `wait` then `logs` alike)."""
        deadline = time.monotonic() + timeout
        with self._written:
            while cap.queued > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._written.wait(left)
        return True

    def finish(self, cap: Capture, summary: dict[str, Any]) -> None:
        """Queue the end marker after the job's last byte: once its pipes are read to their
        end (the job's thread waits for that 10 s; a pump held longer by Redis has not read
        them yet, and the marker went before the job's last output, which no reader showed),
        or END_WAIT after the pump took it (a pipe some process outside the job still holds)."""
        self._incoming.append(("end", cap, summary))
        os.write(self._wake_w, b"e")

    def _step(self) -> None:
        timeout = None
        due = [until for until, _, _ in self._parked] + [cap.end_by for cap in self._ending]
        if due:
            timeout = max(0.0, min(due) - time.monotonic())
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                self._take_incoming()
            else:
                self._read(key)
        self._unpark()
        self._resume()
        self._end_overdue()

    def _write_step(self) -> None:
        """The writer: what was queued, then again at each queueing, or every 0.5 s while some
        entry waits (a retry, Redis away)."""
        with self._out_lock:
            pending = bool(self._outbox)
        self._queued.wait(0.5 if pending else None)
        self._queued.clear()
        self._flush()

    def _queue(self, item: Item) -> None:
        with self._out_lock:
            self._outbox.append(item)
        self._queued.set()

    def _end_overdue(self) -> None:
        now = time.monotonic()
        for cap in [c for c in self._ending if c.end_by <= now]:
            if cap.held:  # its pipes wait on the writer, not on a process outside the job
                cap.end_by = now + END_WAIT
                continue
            log.warning("output of job %s: its pipes are still open %.0f s after its end", cap.job_id[:12], END_WAIT)
            self._queue_end(cap)

    def _queue_end(self, cap: Capture) -> None:
        if cap.ending is not None:
            self._queue(Item(cap, END_FIELD, cap.ending))
            cap.ending = None
            self._ending = [c for c in self._ending if c is not cap]

    def _paced(self, fd: int, data: Any, size: int) -> None:
        """Count a read; a pipe that trickles is unwatched until its window ends."""
        now = time.monotonic()
        pace = self._pace.setdefault(fd, [now, 0, 0])
        if now - pace[0] >= WINDOW:
            pace[:] = [now, 0, 0]
        pace[1] += 1
        pace[2] += size
        if pace[1] >= TRICKLE_READS and pace[2] < TRICKLE_BYTES:
            self.selector.unregister(fd)
            self._parked.append((pace[0] + WINDOW, fd, data))
            self.parks += 1

    def _unpark(self) -> None:
        now = time.monotonic()
        due = [p for p in self._parked if p[0] <= now]
        if not due:
            return
        self._parked = [p for p in self._parked if p[0] > now]
        for _, fd, data in due:
            self.selector.register(fd, selectors.EVENT_READ, data)

    def _take_incoming(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        while self._incoming:
            item = self._incoming.popleft()
            if item[0] == "watch":
                self._register(*item[1:])
            else:
                cap = item[1]
                if cap.ending is None:  # listed once, however often it is finished (it spun)
                    self._ending.append(cap)
                cap.ending, cap.end_by = item[2], time.monotonic() + END_WAIT
                if cap.open_pipes == 0:
                    self._queue_end(cap)

    def _register(self, cap: Capture, out: int, err: int) -> None:
        for fd, stream in ((out, STDOUT_FIELD), (err, STDERR_FIELD)):
            try:
                self.selector.register(fd, selectors.EVENT_READ, (cap, stream))
            except (OSError, ValueError) as exc:
                log.error("output of job %s: cannot watch a pipe: %s", cap.job_id[:12], exc)
                self._close(fd, cap, registered=False)

    def _read(self, key: selectors.SelectorKey) -> None:
        cap, stream = key.data
        if cap.budget.over:
            self._drain(key, cap)
            return
        try:
            faults.fail("output-read", cap.job_id)
            data = os.read(key.fd, CHUNK)
        except Exception as exc:  # noqa: BLE001 - this job's pipe, not the pump
            self._read_failed(key.fd, cap, exc)
            return
        cap.read_failures = 0
        if data:
            self._admit(cap, stream, data)
            if not self._held_back(key):
                self._paced(key.fd, key.data, len(data))
        else:
            self._close(key.fd, cap)

    def _held_back(self, key: selectors.SelectorKey) -> bool:
        """Leave the pipe unwatched while its job's, or all jobs', backlog is past its bound."""
        cap = key.data[0]
        if cap.budget.over:  # past its cap: nothing more is queued (review)
            return False
        with self._out_lock:  # held under it: the writer's wake-up sees it (_given_back)
            behind = cap.queued > JOB_BACKLOG or (self._backlog > TOTAL_BACKLOG and not cap.ended)
            if behind:
                self._held.append((key.fd, key.data))
                cap.held += 1
        if behind:
            self.selector.unregister(key.fd)
        return behind

    def _resume(self) -> None:
        """Watch again the pipes held back whose job's backlog, and all jobs', are down to half."""
        if not self._held:
            return
        with self._out_lock:
            all_ok = self._backlog <= TOTAL_BACKLOG // 2
            ready = [h for h in self._held if h[1][0].queued <= JOB_BACKLOG // 2 and (all_ok or h[1][0].ended)]
            for fd, data in ready:
                self._held.remove((fd, data))
                data[0].held -= 1
        for fd, data in ready:
            self.selector.register(fd, selectors.EVENT_READ, data)

    def _drain(self, key: selectors.SelectorKey, cap: Capture) -> None:
        """Output past the cap: into /dev/null in the kernel, then the pipe rests a WINDOW."""
        fd = key.fd
        if fd not in self._enlarged and len(self._enlarged) < DISCARD_PIPES:  # a place (again)
            with contextlib.suppress(OSError):  # a smaller pipe drains all the same, more often
                fcntl.fcntl(fd, F_SETPIPE_SZ, DISCARD_PIPE)
                self._enlarged.add(fd)
        try:
            moved = os.splice(fd, self._devnull, DISCARD_PIPE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._read_failed(fd, cap, exc)
            return
        if not moved:
            self._close(fd, cap)
            return
        cap.budget.discarded += moved
        self.selector.unregister(fd)
        self._parked.append((time.monotonic() + WINDOW, fd, key.data))

    def _read_failed(self, fd: int, cap: Capture, exc: Exception) -> None:
        cap.read_failures += 1
        log.warning("output of job %s: read failed (%s: %s)", cap.job_id[:12], type(exc).__name__, exc)
        if cap.read_failures >= READ_FAILURES:
            message = f"joblet: output lost: reading it failed {READ_FAILURES} times ({exc})\n"
            self._queue(Item(cap, STDERR_FIELD, message.encode()))
            self._close(fd, cap)

    def _admit(self, cap: Capture, stream: bytes, data: bytes) -> None:
        with self._out_lock:  # the writer takes entries from the left: the last one stays until joined
            self._admit_locked(cap, stream, data)
        self._queued.set()

    def _admit_locked(self, cap: Capture, stream: bytes, data: bytes) -> None:
        last = self._outbox[-1] if self._outbox else None
        join = (
            last is not None
            and last.cap is cap
            and last.kind == stream
            and last.tries == 0
            and not last.entry_id  # never sent: one sent may have landed, its resend refused (review)
            and len(last.data) + len(data) <= CHUNK
        )
        part, crossed = cap.budget.take(data, entry=not join)
        if part:
            cap.ends_line = part.endswith(b"\n")
            if stream == STDOUT_FIELD:
                cap.kept(part)
            if join:
                assert last is not None
                if not isinstance(last.data, bytearray):  # grown in place, not copied per read
                    last.data = bytearray(last.data)
                last.data += part
                weight = len(part)
                last.counted += weight
            else:
                weight = max(len(part), ENTRY_COST)
                self._outbox.append(Item(cap, stream, part, counted=weight))
            cap.queued += weight
            self._backlog += weight
        if crossed:
            cap.truncated = True
            log.warning("output of job %s passed its cap of %s: truncated", cap.job_id[:12], cap.cap_text())
            entries = cap.entries if cap.budget.by_entries else None
            # on a line of its own: not glued to the end of the job's last, cut one
            notice = truncation_notice(cap.limit, entries)
            self._outbox.append(Item(cap, STDERR_FIELD, notice if cap.ends_line else b"\n" + notice))
            self._outbox.append(Item(cap, FLAG, None))

    def _close(self, fd: int, cap: Capture, registered: bool = True) -> None:
        if registered:  # counted as closed whatever goes wrong here
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(fd)
        self._pace.pop(fd, None)  # (a closed pipe is never parked: EOF is read while watched)
        self._enlarged.discard(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
        cap.open_pipes -= 1
        if cap.open_pipes == 0:
            if cap.budget.over:
                what = cap.cap_text()
                log.info(
                    "output of job %s: discarded %d bytes past its cap of %s",
                    cap.job_id[:12],
                    cap.budget.discarded,
                    what,
                )
            cap.closed.set()
            self._queue_end(cap)  # if the job's thread gave up waiting for this and ended it

    def _flush(self) -> None:
        """Write the outbox in order; a job whose write fails waits (its order kept) while the
        other jobs' entries go on; Redis unreachable stops the round for everyone. Entries are
        taken one at a time: the reader queues (and grows the last entry) meanwhile. A round
        takes what was there at its start: with others' output arriving faster than Redis
        took it, a round never ended and a job's entry set aside for a retry waited, its end
        marker with it, until they all stopped (review)."""
        blocked: set[int] = set()
        waiting: list[Item] = []
        now = time.monotonic()
        with self._out_lock:
            count = len(self._outbox)
        try:
            for _ in range(count):
                item = self._take()
                if item is None or not self._flush_one(item, blocked, waiting, now):
                    break
        finally:
            with self._out_lock:
                self._outbox.extendleft(reversed(waiting))

    def _take(self) -> Item | None:
        with self._out_lock:
            return self._outbox.popleft() if self._outbox else None

    def _flush_one(self, item: Item, blocked: set[int], waiting: list[Item], now: float) -> bool:
        """Write one entry, or set it aside; False when Redis is out of reach (the round ends)."""
        if id(item.cap) in blocked or item.retry_at > now:
            blocked.add(id(item.cap))
            waiting.append(item)
            return True
        try:
            self._send(item)
        except BackendRefused as exc:  # an error reply: this entry's, counted (not an outage)
            if not self._write_failed(item, exc):
                blocked.add(id(item.cap))
                waiting.append(item)
            else:
                self._given_back(item)
            return True
        except BackendUnavailable as exc:
            if not self._redis_gone:
                log.warning("jobs' output waits for Redis (kept meanwhile): %s", exc)
                self._redis_gone = True
            waiting.append(item)  # first of what goes back: before anything taken after it
            return False
        except Exception as exc:  # noqa: BLE001 - this job's entry, not the pump
            if not self._write_failed(item, exc):
                blocked.add(id(item.cap))
                waiting.append(item)
            else:
                self._given_back(item)
            return True
        if self._redis_gone:
            log.warning("Redis is back: jobs' output goes on")
            self._redis_gone = False
        if item.kind == END_FIELD:
            item.cap.flushed.set()
        self._given_back(item)
        return True

    def _given_back(self, item: Item) -> None:
        """An entry written (or dropped) leaves the backlog; the reader hears of it where
        some pipe waits for that (JOB_BACKLOG)."""
        if not item.counted:
            return
        with self._out_lock:
            cap, was, all_was = item.cap, item.cap.queued, self._backlog
            cap.queued -= item.counted
            self._backlog -= item.counted
            item.counted = 0
            # once, as a bound is crossed: a wake-up a write filled the pipe the reader drains
            wake = (cap.held and was > JOB_BACKLOG // 2 >= cap.queued) or (
                self._held and all_was > TOTAL_BACKLOG // 2 >= self._backlog
            )
            if cap.queued <= 0:
                self._written.notify_all()  # settle()
        if wake:
            os.write(self._wake_w, b"r")

    def _send(self, item: Item) -> None:
        faults.fail("output-flush", item.cap.job_id)
        if item.kind == FLAG:
            self.store.mark_output_truncated(item.cap.job_id)
            return
        item.entry_id = item.entry_id or item.cap.next_id()
        if item.kind == END_FIELD:
            self.store.end_output(item.cap.job_id, item.data, self.cap, self.ttl, item.entry_id)
        else:
            self.store.append_output(item.cap.job_id, item.kind, bytes(item.data), self.cap, item.entry_id)

    def _write_failed(self, item: Item, exc: Exception) -> bool:
        """Count a failed write; True when the entry is given up (dropped)."""
        item.tries += 1
        job = item.cap.job_id[:12]
        if item.tries < WRITE_TRIES:
            pause = min(RETRY_FIRST * 2 ** (item.tries - 1), RETRY_CAP)
            item.retry_at = time.monotonic() + pause
            log.warning(
                "output of job %s: write failed (%s: %s); retrying in %.1f s", job, type(exc).__name__, exc, pause
            )
            return False
        log.error("output of job %s: dropped an entry after %d failed writes: %s", job, item.tries, exc)
        if item.kind == END_FIELD:
            item.cap.flushed.set()
        return True
