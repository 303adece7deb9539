"""Output byte caps, sizes, backoff, resilient loops and fault arming, without root or Redis."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest
from click.testing import CliRunner

from joblet.api.keys import END_FIELD, STDERR_FIELD, STDOUT_FIELD
from joblet.api.limits import Limits, parse_bytes
from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.config import Settings, load
from joblet.errors import ConfigError
from joblet.worker import faults
from joblet.worker.output import Budget, Capture, OutputPump, truncation_notice
from joblet.worker.resilient import Backoff, resilient


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64M", 64 << 20),
        ("512K", 512 << 10),
        ("1G", 1 << 30),
        ("8MiB", 8 << 20),
        ("2kb", 2048),
        ("100", 100),
        ("1.5m", 3 << 19),
        (4096, 4096),
        (" 7 b ", 7),
    ],
)
def test_sizes(text, size):
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["big", "-1M", "1X", "M", "1e9", "", True, 1.5, None])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_bytes(text)


def test_max_output_in_limits_and_settings():
    assert Limits(max_output="8M").max_output == 8 << 20
    assert Limits().max_output is None
    with pytest.raises(ValueError):
        Limits(max_output="10")  # under 1 KiB: refused, naming the field
    assert load().output_max_bytes == 64 << 20
    assert load(output_max_bytes="8M").output_max_bytes == 8 << 20
    with pytest.raises(ConfigError, match="output_max_bytes"):
        load(output_max_bytes="lots")


def test_budget_cuts_at_the_cap_exactly_once():
    budget = Budget(10)
    assert budget.take(b"123456") == (b"123456", False)
    assert budget.take(b"7890") == (b"7890", False)  # exactly at the cap: not truncated
    assert budget.take(b"x") == (b"", True)
    assert budget.take(b"more") == (b"", False)
    assert budget.used == 10 and budget.over and budget.discarded == 5
    cut = Budget(4)
    assert cut.take(b"abcdef") == (b"abcd", True)


def test_budget_counts_entries_and_a_joined_read_takes_none():
    budget = Budget(100, entries=2)
    assert budget.take(b"a") == (b"a", False)
    assert budget.take(b"b", entry=False) == (b"b", False)  # joins the entry before
    assert budget.take(b"c") == (b"c", False)  # the second and last entry
    assert budget.take(b"d") == (b"", True) and budget.by_entries
    assert budget.take(b"e") == (b"", False) and budget.discarded == 2
    assert b"truncated at 92 entries (log_max_entries)" in truncation_notice(100, 92)


def test_notice_names_the_cap():
    assert b"truncated at 8388608 bytes" in truncation_notice(8 << 20)


def test_record_reports_truncation():
    rec = JobRecord(id="a" * 32, status=JobStatus.RUNNING, spec=JobSpec(command="yes"))
    assert rec.public()["output_truncated"] is False
    assert rec.replace(output_truncated=True).public()["output_truncated"] is True


def test_cli_passes_max_output(monkeypatch):
    from joblet.cli import main

    sent = {}

    class FakeClient:
        settings = Settings()

        def submit(self, spec):
            sent["spec"] = spec
            return JobRecord(id="b" * 32, status=JobStatus.PENDING, spec=spec)

        def nodes(self):
            return [{"name": "n"}]

    monkeypatch.setattr(main.Ctx, "client", property(lambda self: FakeClient()))
    result = CliRunner().invoke(main.cli, ["run", "--max-output", "8M", "-d", "yes"])
    assert result.exit_code == 0, result.output
    assert sent["spec"].limits.max_output == 8 << 20
    bad = CliRunner().invoke(main.cli, ["run", "--max-output", "lots", "-d", "yes"])
    assert bad.exit_code != 0 and "--max-output" in bad.output


def test_backoff_doubles_to_its_cap_and_resets():
    b = Backoff(0.1, 5.0)
    assert [b.failed() for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    b.succeeded()
    assert b.failed() == 0.1


def test_resilient_survives_any_exception_and_goes_on():
    stop, calls = threading.Event(), []
    errors = [BlockingIOError(11, "no pids"), RuntimeError("x"), KeyError("y"), MemoryError()]

    def step():
        calls.append(time.monotonic())
        if errors:
            raise errors.pop(0)
        if len(calls) >= 6:
            stop.set()

    thread = threading.Thread(target=resilient, args=("t", step, stop), kwargs={"first": 0.01, "cap": 0.04})
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive() and len(calls) == 6
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps[0] >= 0.01 and gaps[2] >= 0.04  # backed off, doubling up to the cap


def test_faults_fire_as_armed(tmp_path, monkeypatch):
    path, marker = tmp_path / "faults", tmp_path / "marker"
    monkeypatch.setenv("JOBLET_FAULT_FILE", str(path))
    monkeypatch.setenv("JOBLET_FAULT_MARKER", str(marker))
    monkeypatch.setattr(faults, "_faults", faults._Faults())
    faults.fail("beat")  # nothing armed: no fault
    faults.arm(path, "beat", "BlockingIOError", 2)
    faults.arm(path, "output-read", "OSError", 1, "job1")
    for _ in range(2):
        with pytest.raises(BlockingIOError):
            faults.fail("beat")
    faults.fail("beat")
    faults.fail("output-read", "job2")  # another job: untouched
    with pytest.raises(OSError):
        faults.fail("output-read", "job1")
    assert faults.fired(marker, "beat") == 2 and faults.fired(marker, "output-read") == 1
    with pytest.raises(ValueError):
        faults.arm(path, "nowhere", "OSError", 1)


class FakeStore:
    """Records what the pump writes; writes of `failing` jobs raise (unit test only)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, bytes, object]] = []
        self.failing: set[str] = set()
        self.times_out: set[tuple[str, str]] = set()  # fails once
        self.tried: list[tuple[str, str]] = []
        self.flagged: list[str] = []
        self.ttls: dict[str, int] = {}  # job -> the TTL its end marker gave its stream

    def job_output_limit(self, job_id):
        return None

    def append_output(self, job_id, field, data, cap, entry_id="*"):
        self.tried.append((job_id, entry_id))
        if job_id in self.failing or (job_id, entry_id) in self.times_out:
            self.times_out.discard((job_id, entry_id))
            raise RuntimeError("broken")
        self.entries.append((job_id, field, data))

    def end_output(self, job_id, summary, cap, ttl, entry_id="*"):
        self.ttls[job_id] = ttl
        self.append_output(job_id, END_FIELD, summary, cap, entry_id)

    def mark_output_truncated(self, job_id):
        self.flagged.append(job_id)


def pump_job(pump: OutputPump, job_id: str, payload: bytes, **kw):
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    cap = pump.watch(job_id, out_r, err_r, 1 << 20, **kw)
    os.write(out_w, payload)
    os.close(out_w)
    os.close(err_w)
    assert cap.closed.wait(5)
    pump.finish(cap, {"status": "COMPLETED"})
    return cap


class StalledStore(FakeStore):
    """A Redis that does not answer a write until `release` is set (or 30 s pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def append_output(self, job_id, field, data, cap, entry_id="*"):
        self.release.wait(30)
        super().append_output(job_id, field, data, cap, entry_id)


def until(check, seconds: float = 10) -> None:  # type: ignore[no-untyped-def]
    """Wait for `check()` to hold (polled), and assert it does."""
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert check()


def watched(pump: OutputPump, job_id: str, payload: bytes, ended: bool = True) -> tuple[Capture, int]:
    """A job's pipes given to the pump, `payload` written to its stdout, its stderr closed,
    and its stdout too when it `ended`; the capture, and stdout's write end (-1: closed)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    cap = pump.watch(job_id, out_r, err_r, 1 << 20)
    os.write(out_w, payload)
    os.close(err_w)
    if ended:
        os.close(out_w)
    return cap, -1 if ended else out_w


def stdout_of(store: FakeStore, job_id: str) -> bytes:
    return b"".join(d for j, f, d in store.entries if j == job_id and f == STDOUT_FIELD)


def test_pump_caps_bytes_and_marks_once():
    store = FakeStore()
    pump = OutputPump(store, 1000, max_bytes=1 << 20, ttl=600)  # type: ignore[arg-type]
    cap = pump_job(pump, "big", b"z" * 50_000, max_output=10_000)
    assert cap.flushed.wait(5)
    assert stdout_of(store, "big") == b"z" * 10_000 and cap.truncated
    notices = [d for j, f, d in store.entries if f == STDERR_FIELD]
    # its last kept line was cut: the notice starts a line of its own
    assert notices == [b"\n" + truncation_notice(10_000)] and store.flagged == ["big"]
    lines = pump_job(pump, "lines", b"z\n" * 25_000, max_output=10_000)  # cut at a line's end
    assert lines.flushed.wait(5)
    assert [d for j, f, d in store.entries if f == STDERR_FIELD and j == "lines"] == [truncation_notice(10_000)]
    small = pump_job(pump, "small", b"s" * 10_000, max_output=10_000)  # positive control
    assert small.flushed.wait(5)
    assert stdout_of(store, "small") == b"s" * 10_000 and not small.truncated
    assert store.flagged == ["big", "lines"]
    assert store.ttls == {"big": 600, "lines": 600, "small": 600}  # the end marker gives its stream log_ttl
    ceiling = pump_job(pump, "ceil", b"c" * 5000, max_output=1 << 40)
    assert ceiling.limit == 1 << 20  # a job cannot raise the worker's ceiling


def test_one_jobs_failing_writes_do_not_hold_back_others():
    store = FakeStore()
    store.failing.add("bad")
    pump = OutputPump(store, 1000, max_bytes=1 << 20)  # type: ignore[arg-type]
    bad = pump_job(pump, "bad", b"b" * 100)
    good = pump_job(pump, "good", b"g" * 100)
    assert good.flushed.wait(5) and stdout_of(store, "good") == b"g" * 100
    assert bad.flushed.wait(10)  # given up after a few tries; the job thread is not kept waiting
    assert stdout_of(store, "bad") == b""


def bare_pump() -> OutputPump:
    """A pump with no threads and no store: _admit alone."""
    import collections
    import threading

    pump = OutputPump.__new__(OutputPump)
    pump._outbox, pump.cap = collections.deque(), 100
    pump._out_lock, pump._queued = threading.Lock(), threading.Event()
    pump._backlog = 0
    return pump


def test_a_read_joins_the_waiting_entry_of_its_own_stream_only():
    """Reads that wait for Redis join one entry: not across streams or jobs, not into an
    entry being retried, not past CHUNK; joined bytes still count against the byte cap."""
    from joblet.worker.output import CHUNK, Capture

    pump = bare_pump()
    a, b = Capture("a" * 32, keep=0, limit=100_000, entries=50), Capture("b" * 32, keep=0, limit=10, entries=50)
    pump._admit(a, STDOUT_FIELD, b"1")
    pump._admit(a, STDOUT_FIELD, b"2")  # joins
    pump._admit(a, STDERR_FIELD, b"e")  # another stream: its own entry
    pump._admit(b, STDERR_FIELD, b"x")  # another job: its own entry
    pump._admit(a, STDERR_FIELD, b"f")  # the last entry is b's: its own
    pump._outbox[-1].tries = 1  # being retried: not joined
    pump._admit(a, STDERR_FIELD, b"g")
    pump._admit(a, STDERR_FIELD, bytes(CHUNK))  # would pass CHUNK: its own
    kinds = [(i.cap.job_id[0], i.kind, bytes(i.data)[:2]) for i in pump._outbox]
    assert kinds == [
        ("a", STDOUT_FIELD, b"12"),
        ("a", STDERR_FIELD, b"e"),
        ("b", STDERR_FIELD, b"x"),
        ("a", STDERR_FIELD, b"f"),
        ("a", STDERR_FIELD, b"g"),
        ("a", STDERR_FIELD, b"\0\0"),
    ]
    assert a.budget.entries == 50 - 5  # five entries of a's: the joined read took none
    pump._admit(b, STDERR_FIELD, b"1234")
    pump._admit(b, STDERR_FIELD, b"56789012")  # joins, and crosses b's 10 bytes
    assert b.truncated and bytes(pump._outbox[-3].data) == b"123456789"  # with the x: the cap


def test_a_retried_entry_keeps_its_stream_id():
    """An entry resent after a failed write goes with the id of its first try (Redis refuses
    it if the first one landed after all: no output twice), and ids grow in the job's order."""
    store = FakeStore()
    pump = OutputPump(store, 1000, max_bytes=1 << 20)  # type: ignore[arg-type]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    cap = pump.watch("late", out_r, err_r, 1 << 20)
    store.times_out = {("late", f"{cap.first_ms}-1")}
    os.write(out_w, b"one")
    os.close(out_w)
    os.close(err_w)
    assert cap.closed.wait(5)
    pump.finish(cap, {"status": "COMPLETED"})
    assert cap.flushed.wait(10)
    ids = [entry_id for job, entry_id in store.tried if job == "late"]
    assert ids == [f"{cap.first_ms}-1", f"{cap.first_ms}-1", f"{cap.first_ms}-2"], ids
    assert stdout_of(store, "late") == b"one"


def test_an_outage_is_said_once_not_at_each_retry(caplog):
    """The pump tries again twice a second while Redis is away: its log said so each time."""
    from joblet.errors import BackendUnavailable

    class GoneStore(FakeStore):
        def __init__(self) -> None:
            super().__init__()
            self.gone = 4

        def append_output(self, job_id, field, data, cap, entry_id="*"):
            if self.gone:
                self.gone -= 1
                raise BackendUnavailable("cannot reach Redis at unix:///r.sock: Connection refused")
            super().append_output(job_id, field, data, cap, entry_id)

    store = GoneStore()
    pump = OutputPump(store, 1000, max_bytes=1 << 20)  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="joblet.worker.output"):
        cap = pump_job(pump, "away", b"kept")
        assert cap.flushed.wait(30)
    assert stdout_of(store, "away") == b"kept" and store.gone == 0  # the control: it failed 4 times
    said = [r.getMessage() for r in caplog.records if r.name == "joblet.worker.output"]
    assert [m.split(":")[0] for m in said] == ["jobs' output waits for Redis (kept meanwhile)", "Redis is back"]


def test_a_trickling_pipe_is_read_in_windows_and_a_fast_one_at_once(monkeypatch):
    """A job writing a byte at a time cost the worker a wakeup and a read each (three took 68 %
    of a core: red-team run); such a pipe is left unwatched for the rest of its window, its
    bytes gathering meanwhile. A writer of large pieces is read as fast as it writes."""
    from joblet.worker import output

    store = FakeStore()
    pump = OutputPump(store, 1_000_000, max_bytes=1 << 30)  # type: ignore[arg-type]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(output.os, "read", lambda fd, n: reads.append(fd) or real_read(fd, n))
    cap = pump.watch("trickle", out_r, err_r, 0)
    started = time.monotonic()
    for i in range(4000):
        os.write(out_w, bytes([i % 256]))
        time.sleep(0.0001)
    elapsed = time.monotonic() - started
    os.close(out_w)
    os.close(err_w)
    assert cap.closed.wait(5)
    pump.finish(cap, {"status": "COMPLETED"})
    assert cap.flushed.wait(5)
    assert stdout_of(store, "trickle") == bytes(i % 256 for i in range(4000))  # all of it, in order
    windows = elapsed / output.WINDOW + 2  # read at once, about 4,000 times (the test's control)
    assert pump.parks >= 1 and reads.count(out_r) <= windows * output.TRICKLE_READS + 1, (len(reads), elapsed)
    parks = pump.parks  # the control: large pieces as fast as they come, never held back
    fast = pump_job(pump, "fast", b"f" * (8 << 20))
    assert fast.flushed.wait(10) and len(stdout_of(store, "fast")) == 8 << 20 and pump.parks == parks


def test_only_a_few_pipes_past_their_caps_are_made_large_at_once():
    """A pipe past its cap is drained from 1 MiB, but the worker makes every job's pipes, so
    their pages are root's budget (fs.pipe-user-pages-soft) whatever user the job runs as:
    32 `--user` jobs took it all (red-team run). DISCARD_PIPES at most at once; the rest
    drain at their size, and a closed pipe gives its place back."""
    import fcntl

    from joblet.worker.output import DISCARD_PIPE, DISCARD_PIPES

    store = FakeStore()
    pump = OutputPump(store, 1000, max_bytes=1 << 20, ttl=600)  # type: ignore[arg-type]
    pipes = [os.pipe() for _ in range(DISCARD_PIPES + 2)]
    for _, w in pipes:
        os.set_blocking(w, False)
    caps = [
        pump.watch(f"job{i}", r, os.open(os.devnull, os.O_RDONLY), 1 << 20, max_output=10)
        for i, (r, _) in enumerate(pipes)
    ]

    def size(w: int) -> int:
        return fcntl.fcntl(w, 1032)  # F_GETPIPE_SZ, the writer's end: the same pipe

    for _, w in pipes:
        os.write(w, b"x" * 4096)  # past the cap of 10 bytes: drained from now on
    deadline = time.monotonic() + 10
    while sum(size(w) == DISCARD_PIPE for _, w in pipes) < DISCARD_PIPES and time.monotonic() < deadline:
        for _, w in pipes:
            with contextlib.suppress(BlockingIOError):
                os.write(w, b"x" * 4096)
        time.sleep(0.01)
    sizes = [size(w) for _, w in pipes]
    assert sizes.count(DISCARD_PIPE) == DISCARD_PIPES and sizes.count(1 << 16) == 2, sizes  # the rest: 64 KiB
    large = next(i for i, n in enumerate(sizes) if n == DISCARD_PIPE)
    os.close(pipes[large][1])  # that job ends: its place goes to another pipe past its cap
    assert caps[large].closed.wait(5)
    deadline = time.monotonic() + 10
    while sum(size(w) == DISCARD_PIPE for i, (_, w) in enumerate(pipes) if i != large) < DISCARD_PIPES:
        assert time.monotonic() < deadline, [size(w) for i, (_, w) in enumerate(pipes) if i != large]
        for i, (_, w) in enumerate(pipes):
            if i != large:
                with contextlib.suppress(BlockingIOError):
                    os.write(w, b"x" * 4096)
        time.sleep(0.01)
    for i, (_, w) in enumerate(pipes):
        if i != large:
            os.close(w)
    assert all(c.closed.wait(5) for c in caps)


def test_a_read_never_joins_an_entry_that_was_sent():
    """An entry Redis stored whose reply was lost (BackendUnavailable) was put back, and reads
    meanwhile joined it: its resend under the same id was refused as a repeat, and the joined
    bytes were gone without a word (review)."""
    from joblet.worker.output import Capture, Item

    pump = bare_pump()
    a = Capture("a" * 32, keep=0, limit=100_000, entries=50)
    pump._outbox.append(Item(a, STDOUT_FIELD, b"one", entry_id=a.next_id()))  # sent once, put back
    pump._admit(a, STDOUT_FIELD, b"two")
    pump._admit(a, STDOUT_FIELD, b"three")  # the control: joins the unsent one
    assert [bytes(i.data) for i in pump._outbox] == [b"one", b"twothree"]


def test_an_error_reply_is_this_jobs_failure_not_an_outage():
    """Redis answering one job's writes with an error (WRONGTYPE on its key) was taken for
    Redis gone: every job's output and end markers waited behind it for good (review)."""
    from joblet.errors import BackendRefused

    class RefusingStore(FakeStore):
        def append_output(self, job_id, field, data, cap, entry_id="*"):
            if job_id == "bad":
                self.tried.append((job_id, entry_id))
                raise BackendRefused("Redis at unix:///r.sock: WRONGTYPE Operation against a key")
            super().append_output(job_id, field, data, cap, entry_id)

    store = RefusingStore()
    pump = OutputPump(store, 1000, max_bytes=1 << 20)  # type: ignore[arg-type]
    bad = pump_job(pump, "bad", b"b" * 100)
    good = pump_job(pump, "good", b"g" * 100)
    assert good.flushed.wait(5) and stdout_of(store, "good") == b"g" * 100
    assert bad.flushed.wait(10)  # its entries given up after WRITE_TRIES each
    assert stdout_of(store, "bad") == b"" and len([t for t in store.tried if t[0] == "bad"]) >= 5


def test_a_servers_state_reply_is_an_outage_and_a_commands_own_is_a_refusal():
    """OOM, MISCONF or a failover's READONLY refuse every write for a while: counted against
    each entry, they dropped every job's output and end markers after ~1.5 s (review). They
    are waited out as an outage; a command's own error (WRONGTYPE) is still this entry's."""
    import redis.exceptions as rp

    from joblet.api import resp
    from joblet.api.redis_conn import error_kind

    for text in ("OOM command not allowed when used memory > 'maxmemory'", "MISCONF Redis is unable to persist"):
        assert error_kind(resp._error(text)) == "unreachable", text
        assert error_kind(rp.ResponseError(text)) == "unreachable", text
    assert error_kind(rp.ReadOnlyError("You can't write against a read only replica.")) == "unreachable"
    assert error_kind(rp.InvalidResponse("Protocol Error: x")) == "unreachable"
    assert error_kind(resp._error("WRONGTYPE Operation against a key")) == "response"  # the controls
    assert error_kind(rp.ResponseError("WRONGTYPE Operation against a key")) == "response"


def test_the_end_marker_waits_for_the_last_output_a_stalled_pump_had_not_read():
    """Redis held the pump longer than a job's thread waits for its pipes (10 s): the job
    ended its stream meanwhile, and the marker went before the output still in its pipes,
    which no reader showed (review). It now goes after the pipes' EOF."""
    import threading

    class StallingStore(FakeStore):
        def __init__(self) -> None:
            super().__init__()
            self.stalled, self.release = threading.Event(), threading.Event()

        def append_output(self, job_id, field, data, cap, entry_id="*"):
            if job_id == "first":
                self.stalled.set()
                assert self.release.wait(10)
            super().append_output(job_id, field, data, cap, entry_id)

    store = StallingStore()
    pump = OutputPump(store, 1000, max_bytes=1 << 20)  # type: ignore[arg-type]

    first, _ = watched(pump, "first", b"held")
    assert store.stalled.wait(5)  # the pump waits on Redis from now on
    late, _ = watched(pump, "late", b"last line\n")
    for cap in (first, late):  # their threads gave up waiting for `closed`
        pump.finish(cap, {"status": "COMPLETED"})
    store.release.set()
    assert first.flushed.wait(5) and late.flushed.wait(5)
    assert [(f, d) for j, f, d in store.entries if j == "late"] == [
        (STDOUT_FIELD, b"last line\n"),
        (END_FIELD, {"status": "COMPLETED"}),
    ]


def test_an_end_marker_goes_even_so_when_a_pipe_stays_open(monkeypatch):
    """A pipe some process outside the job still holds: the marker goes END_WAIT after the
    pump took it, not never (the control: the pipe holds no EOF, only its first bytes)."""
    from joblet.worker import output

    monkeypatch.setattr(output, "END_WAIT", 0.2)
    store = FakeStore()
    pump = OutputPump(store, 1000, max_bytes=1 << 20)  # type: ignore[arg-type]
    cap, out_w = watched(pump, "held", b"x", ended=False)
    try:
        pump.finish(cap, {"status": "COMPLETED"})
        assert cap.flushed.wait(5) and not cap.closed.is_set()
        assert [(f, d) for j, f, d in store.entries if j == "held"] == [
            (STDOUT_FIELD, b"x"),
            (END_FIELD, {"status": "COMPLETED"}),
        ]
    finally:
        os.close(out_w)


def test_a_reply_that_is_not_redis_reads_as_not_reaching_it():
    """redis-py on a port that speaks HTTP said Redis `takes no writes now` (review): a server
    that is not Redis is not reached; a READONLY reply still says it takes none (control)."""
    import redis.exceptions as rp

    from joblet.api.redis_conn import translated
    from joblet.errors import BackendUnavailable

    class Talks:
        url = "redis://127.0.0.1:8080/0"

        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        @translated(lambda self: self.url)
        def call(self) -> None:
            raise self.exc

    with pytest.raises(BackendUnavailable, match=r"^cannot reach Redis at redis://127.0.0.1:8080/0: "):
        Talks(rp.InvalidResponse("Protocol Error: b'HTTP/1.1 400 Bad Request'")).call()
    with pytest.raises(BackendUnavailable, match="takes no writes now"):
        Talks(rp.ReadOnlyError("READONLY You can't write against a read only replica.")).call()


def test_a_job_finished_twice_is_listed_once(monkeypatch):
    """A second finish while its pipes were open listed the job twice among the ends waiting:
    one stayed for good, and the pump's loop spun at a full core (review)."""
    from joblet.worker import output

    monkeypatch.setattr(output, "END_WAIT", 0.2)
    store = FakeStore()
    pump = OutputPump(store, 1000, max_bytes=1 << 20)  # type: ignore[arg-type]
    cap, out_w = watched(pump, "twice", b"", ended=False)
    try:
        pump.finish(cap, {"status": "COMPLETED"})
        pump.finish(cap, {"status": "COMPLETED"})
        assert cap.flushed.wait(5)
        assert pump._ending == []  # its marker went: no second listing left behind
    finally:
        os.close(out_w)


def test_a_redis_that_stalls_holds_no_jobs_pipe():
    """One thread read the pipes and wrote to Redis: a Redis that hung instead of refusing
    (~10 s a write with redis-py's timeout and retry) held every job's pipes, jobs blocked on
    full pipes (review). The reader goes on while a write hangs; all arrives, in order."""

    store = StalledStore()  # hangs until the test lets Redis answer
    pump = OutputPump(store, 1000, max_bytes=1 << 20)  # type: ignore[arg-type]
    payload = bytes(range(256)) * 2048  # 512 KiB: eight pipes' worth
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    cap = pump.watch("s" * 32, out_r, err_r, 0)
    os.close(err_w)
    wrote = threading.Thread(target=lambda: (os.write(out_w, payload), os.close(out_w)))
    wrote.start()
    wrote.join(timeout=20)
    assert not wrote.is_alive()  # the job's writes went through while Redis hung
    assert store.entries == []  # the control: nothing was written yet
    store.release.set()
    pump.finish(cap, {"status": "COMPLETED"})
    assert cap.flushed.wait(20)
    assert stdout_of(store, "s" * 32) == payload


def test_a_followers_end_grace_starts_again_when_output_arrives(monkeypatch):
    """EndWatch's grace counted from the first quiet look at a final record, whatever came
    after: a job's backlog still streaming 45 s later ended `rnx run` at its first gap, the
    rest unread (review). Output heard starts the grace again; quiet for it (the control)
    ends the follow."""
    from types import SimpleNamespace

    from joblet.api import store_output

    clock = [0.0]
    monkeypatch.setattr(store_output.time, "monotonic", lambda: clock[0])
    streams = SimpleNamespace(where_is=lambda job_id: (JobStatus.COMPLETED, "n1"))
    ended = store_output.EndWatch(streams, "j1")  # type: ignore[arg-type]
    clock[0] = 5.0
    assert not ended.over()  # the first quiet look at the final record
    for second in range(6, 60):  # output streams on, a gap now and then
        clock[0] = float(second)
        ended.heard()
        assert not ended.over(), second
    clock[0] = 60.0
    assert not ended.over()  # quiet again: the grace begins
    clock[0] = 60.0 + store_output.END_GRACE
    assert ended.over()


def test_an_entry_set_aside_for_a_retry_is_written_while_others_stream_on():
    """A round of the writer ran until the outbox was empty: two jobs streaming faster than
    Redis took it kept it from ever ending, and a job whose write had failed once waited,
    its end marker with it, until they stopped (review). A round takes what was there at its
    start; the retried job's entries land while the others still stream."""

    class Slow(FakeStore):
        def append_output(self, job_id, field, data, cap, entry_id="*"):
            time.sleep(0.002)  # a Redis 2 ms away
            if job_id == "a" and not any(job == "a" for job, _ in self.tried):
                self.times_out.add((job_id, entry_id))  # its first write fails: a retry 0.1 s later
            super().append_output(job_id, field, data, cap, entry_id)

    store = Slow()
    pump = OutputPump(store, 1_000_000, max_bytes=1 << 30)  # type: ignore[arg-type]
    streaming = threading.Event()
    streaming.set()
    writers = []
    for job in ("b", "c"):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        os.close(err_w)
        pump.watch(job, out_r, err_r, 0)

        def chatter(fd: int = out_w, job: str = job) -> None:
            while streaming.is_set():
                os.write(fd, job.encode() * 8 + b"\\n")
                time.sleep(0.0005)
            os.close(fd)

        writers.append(threading.Thread(target=chatter))
        writers[-1].start()
    try:
        cap = pump_job(pump, "a", b"one line\\n")
        assert cap.flushed.wait(10)  # within the others' streaming
        assert streaming.is_set() and stdout_of(store, "a") == b"one line\\n"
        assert [job for job, _ in store.tried].count("a") == 3  # the control: its first write failed
    finally:
        streaming.clear()
        for writer in writers:
            writer.join()


def test_a_jobs_output_waiting_for_redis_is_bounded_in_the_workers_memory(monkeypatch):
    """Each job's output was read at once into one queue in the worker's memory: 32 jobs
    writing 64 MB each took the worker from 80 MB to 1.5 GB, and another job's line waited
    7 s behind them (red-team run). Past JOB_BACKLOG of a job's (TOTAL_BACKLOG of all) its
    pipe is left unwatched, the job waiting on it, until the writer has caught up to half;
    all of it arrives, in order (the control: the same output with Redis answering)."""
    from joblet.worker import output

    monkeypatch.setattr(output, "JOB_BACKLOG", 256 << 10)
    monkeypatch.setattr(output, "TOTAL_BACKLOG", 1 << 20)

    store = StalledStore()  # Redis slow to answer until the test lets it
    pump = OutputPump(store, 100_000, max_bytes=1 << 30)  # type: ignore[arg-type]
    payload = bytes(range(256)) * 8192  # 2 MiB, eight times the job's bound
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.close(err_w)
    cap = pump.watch("b" * 32, out_r, err_r, 0)
    wrote = threading.Thread(target=lambda: (os.write(out_w, payload), os.close(out_w)))
    wrote.start()
    until(lambda: cap.held != 0)
    assert cap.held == 1 and pump._backlog <= output.JOB_BACKLOG + output.CHUNK
    assert wrote.is_alive()  # the job waits on its full pipe: the worker reads no more
    store.release.set()  # Redis answers: the rest is read as the writer catches up
    wrote.join(timeout=20)
    assert not wrote.is_alive()
    pump.finish(cap, {"status": "COMPLETED"})
    assert cap.flushed.wait(20)
    assert stdout_of(store, "b" * 32) == payload and pump._backlog == 0 and cap.queued == 0


def test_an_ended_job_is_read_to_its_end_past_all_jobs_backlog_and_a_capped_one_never_held(monkeypatch):
    """With all jobs' backlog past its bound (a Redis that stalls), a job that ended was held
    at its next read: its thread gave up after 10 s and recorded 64 KB of its 300 KB as its
    whole result; a pipe past its cap was held too, its job blocked though nothing more of it
    would be queued (review). An ended job's pipes are read whatever all jobs' backlog; a
    capped pipe drains; the other job (the control) stays held until Redis answers."""
    from joblet.worker import output

    monkeypatch.setattr(output, "JOB_BACKLOG", 256 << 10)
    monkeypatch.setattr(output, "TOTAL_BACKLOG", 300 << 10)

    store = StalledStore()
    pump = OutputPump(store, 100_000, max_bytes=1 << 30)  # type: ignore[arg-type]

    def job(job_id: str, size: int, limit: int | None = None) -> tuple[Capture, threading.Thread]:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        os.close(err_w)
        cap = pump.watch(job_id, out_r, err_r, 1 << 20, max_output=limit)
        wrote = threading.Thread(target=lambda: (os.write(out_w, b"x" * size), os.close(out_w)), daemon=True)
        wrote.start()
        return cap, wrote

    big, big_writer = job("c" * 32, 2 << 20)
    until(lambda: big.held == 1)
    small, _ = job("a" * 32, 200_000)  # within its own bound
    until(lambda: small.held == 1)  # all jobs' backlog past its bound: held at its first read
    capped, capped_writer = job("d" * 32, 4 << 20, limit=50_000)  # crossed at its first read
    capped_writer.join(timeout=20)
    assert not capped_writer.is_alive() and capped.budget.over and capped.held == 0
    pump.ended(small)
    assert small.closed.wait(10) and bytes(small.stdout) == b"x" * 200_000
    assert big.held == 1 and big_writer.is_alive()  # the control: still held while Redis stalls
    store.release.set()
    big_writer.join(timeout=20)
    assert not big_writer.is_alive()


def test_a_job_writing_a_byte_at_a_time_to_both_streams_is_held_by_its_entries(monkeypatch):
    """The backlog's bounds counted bytes: jobs writing a byte at a time to stdout and stderr
    in turn (never joined) queued 150,000 entries of 90 bytes and another job's lines waited
    6-17 s behind them (red-team run). An entry weighs ENTRY_COST at least: such a job is
    held after JOB_BACKLOG / ENTRY_COST entries; all of it arrives once Redis answers."""
    from joblet.worker import output

    store = StalledStore()
    pump = OutputPump(store, 1_000_000, max_bytes=1 << 30)  # type: ignore[arg-type]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    cap = pump.watch("e" * 32, out_r, err_r, 0)
    pieces = 2 * output.JOB_BACKLOG // output.ENTRY_COST  # twice as many entries as it may queue

    def chatter() -> None:
        for _ in range(pieces):
            os.write(out_w, b"a")
            time.sleep(0.0005)  # each read alone: no join
            os.write(err_w, b"b")
            time.sleep(0.0005)
        os.close(out_w)
        os.close(err_w)

    wrote = threading.Thread(target=chatter, daemon=True)
    wrote.start()
    until(lambda: cap.held != 0, 20)
    assert cap.held >= 1 and len(pump._outbox) <= output.JOB_BACKLOG // output.ENTRY_COST + 2
    store.release.set()
    wrote.join(timeout=30)
    assert not wrote.is_alive()
    pump.finish(cap, {"status": "COMPLETED"})
    assert cap.flushed.wait(30) and stdout_of(store, "e" * 32) == b"a" * pieces


def test_settle_waits_until_a_jobs_output_is_written():
    """A job's final record went before its last output reached Redis: a client's wait()
    said COMPLETED and its logs, read at once, lacked the last line. The job's thread now
    settles first: it waits (bounded) until what was read of its pipes is written."""
    store = StalledStore()
    pump = OutputPump(store, 1000, max_bytes=1 << 20)  # type: ignore[arg-type]
    cap, _ = watched(pump, "w" * 32, b"last line\n")
    assert cap.closed.wait(10)  # read to its end, not written: Redis hangs
    assert pump.settle(cap, 0.2) is False and store.entries == []  # the bound: it waits no longer
    threading.Timer(0.2, store.release.set).start()
    assert pump.settle(cap, 20) is True
    assert stdout_of(store, "w" * 32) == b"last line\n"  # written before settle returned
    assert pump.settle(cap, 0) is True  # nothing left: at once
