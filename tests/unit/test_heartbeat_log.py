"""The heartbeat's log after a Redis restart: Redis out of reach is one line a beat, not a
traceback; an unexpected error keeps its traceback (the first time in a row)."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from joblet.errors import BackendUnavailable
from joblet.worker import fleet, stats
from joblet.worker.resilient import resilient
from joblet.worker.supervisor import Supervisor

GONE = "cannot reach Redis at redis://127.0.0.1:6379/0: Connection refused"


class GoneStore:
    """A store whose Redis restarted: every write fails."""

    def put_stats(self, samples: dict[str, Any], ttl: float) -> None:
        raise BackendUnavailable(GONE)

    def sweep_jobs_index(self, now: float) -> int:
        raise BackendUnavailable(GONE)


def supervisor(retry: Any) -> Supervisor:
    """A supervisor with one running job to sample, its store gone, and the given finals retry."""
    sup = Supervisor.__new__(Supervisor)
    sup.cfg = SimpleNamespace(heartbeat_interval=5.0)  # type: ignore[assignment]
    sup.store = GoneStore()  # type: ignore[assignment]
    sup.svc = SimpleNamespace(records=SimpleNamespace(finals=SimpleNamespace(retry=retry)))  # type: ignore[assignment]
    sup._lock = threading.Lock()
    sup.running = {"a" * 32: SimpleNamespace(sandbox=object())}  # type: ignore[dict-item]
    sup._sampler = stats.Sampler()
    sup._beat_stops = lambda: None  # type: ignore[method-assign]
    sup._beat_upkeep = lambda: None  # type: ignore[method-assign]
    sup._closing = threading.Event()
    sup.present_since = None  # its heartbeat has not gone through: no sweep of the jobs index
    return sup


def beat_once(sup: Supervisor) -> None:
    """One heartbeat under resilient(), as the worker's heartbeat thread runs it."""

    def step() -> None:
        sup._closing.set()  # the loop ends after this beat, its failure logged
        sup.beat()

    resilient("heartbeat", step, sup._closing)


@pytest.fixture(autouse=True)
def one_sample(monkeypatch):
    monkeypatch.setattr(stats.Sampler, "take", lambda self, runs: {"a" * 32: {"cpu_percent": 0.0}})


def fine() -> None:
    return None


def test_redis_out_of_reach_is_one_line_not_a_traceback(monkeypatch, caplog):
    monkeypatch.setattr(fleet, "sweep_lost", lambda sup: None)
    with caplog.at_level(logging.WARNING):
        beat_once(supervisor(fine))
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.getMessage() == f"heartbeat: BackendUnavailable: {GONE}; retrying in 0.1 s"
    assert not record.exc_info and "Traceback" not in caplog.text


def test_an_outage_that_fails_several_parts_is_one_line_a_beat(monkeypatch, caplog):
    """Each part that failed for the same outage was a line of its own: six a beat, with the
    backoff's tries ten lines a second (operator's run)."""

    def gone(*_: Any) -> None:
        raise BackendUnavailable(GONE)

    monkeypatch.setattr(fleet, "sweep_lost", gone)
    with caplog.at_level(logging.WARNING):
        beat_once(supervisor(gone))  # the finals, the samples and the sweep: all the outage
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.getMessage() == f"heartbeat: BackendUnavailable: {GONE}; retrying in 0.1 s"


def test_an_unexpected_error_keeps_its_traceback_after_redis_parts(monkeypatch, caplog):
    def gone() -> None:
        raise BackendUnavailable(GONE)

    def broken(sup: Supervisor) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fleet, "sweep_lost", broken)  # the last part; two Redis failures before it
    with caplog.at_level(logging.WARNING):
        beat_once(supervisor(gone))
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    traced = [r for r in records if r.exc_info]
    assert [r.getMessage() for r in traced] == ["heartbeat: RuntimeError: a bug; retrying in 0.1 s"]
    assert [r.getMessage() for r in records if not r.exc_info] == [f"heartbeat: BackendUnavailable: {GONE}"] * 2


def test_a_job_that_ends_while_sampled_is_left_out_not_every_jobs_sample(monkeypatch):
    """Its cgroup gone mid-sample (ENODEV) failed the whole beat's stats, with a traceback
    logged at each (usability run)."""
    monkeypatch.undo()  # the real Sampler.take
    monkeypatch.setattr(stats, "link_counters", lambda: {})

    def one(self, run, links):
        if run.job_id == "gone":
            raise OSError(19, "No such device")
        return {"cpu_percent": 1.0}

    monkeypatch.setattr(stats.Sampler, "one", one)
    runs = [SimpleNamespace(job_id="gone"), SimpleNamespace(job_id="alive")]
    assert stats.Sampler().take(runs) == {"alive": {"cpu_percent": 1.0}}  # type: ignore[arg-type]
