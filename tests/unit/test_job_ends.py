"""A claimed job always ends, with in-memory fakes (tests/unit/test_job_life.py): a failure
after its final record still ends its stream and frees its addresses, and a run that cannot
even be made (no descriptors left) still gets a final record."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.errors import BackendUnavailable
from joblet.worker import job as job_module
from joblet.worker.claims import Claimed
from joblet.worker.job import JobRun
from joblet.worker.supervisor import Supervisor
from tests.unit.test_job_life import Log, services

JOB = "a" * 32
SPEC = JobSpec(command="sh", args=("-c", "true"), network=("net1",))


def test_a_failure_after_the_final_record_still_ends_the_stream_and_frees(tmp_path: Path) -> None:
    log = Log()
    svc = services(tmp_path, log)
    finish = svc.records.finish

    def finish_then_redis_fails(*args: Any, **kw: Any) -> dict[str, Any]:
        done = finish(*args, **kw)

        def gone(*_: Any, **__: Any) -> None:  # the peers' lookup (another job's): Redis is gone
            raise BackendUnavailable("cannot reach Redis at redis://x: Connection refused")

        svc.discovery.refresh = gone  # type: ignore[method-assign]
        return done

    svc.records.finish = finish_then_redis_fails  # type: ignore[method-assign]
    result = JobRun(svc, JOB, SPEC).execute()
    assert result["status"] == "COMPLETED" and svc.store.records[JOB]["status"] == JobStatus.COMPLETED  # type: ignore[attr-defined]
    after = log.calls[log.calls.index("cgroup remove") :]
    assert after[1:] == ["end output", "net links gone, port rules removed", "net free"], after


def claimed_at_once(record: JobRecord, node: str, token: str | None = None, retake: bool = False) -> Claimed:
    return Claimed(record, False)


@pytest.mark.parametrize("descriptors_left", [True, False])
def test_a_claimed_job_whose_run_cannot_be_made_still_ends(tmp_path, monkeypatch, descriptors_left):
    log = Log()
    svc = services(tmp_path, log)
    svc.records.claims.claim = claimed_at_once  # type: ignore[attr-defined]
    svc.store.redis = None  # type: ignore[attr-defined]  # the node store's client: never used here
    if not descriptors_left:

        def no_eventfd(*_: Any) -> int:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

        monkeypatch.setattr(job_module.os, "eventfd", no_eventfd)
    result = Supervisor(svc.cfg, svc).run(JOB, SPEC)
    record = svc.store.records[JOB]  # type: ignore[attr-defined]
    if descriptors_left:  # the control: the same job runs
        assert result["status"] == "COMPLETED" and record["status"] == JobStatus.COMPLETED
        return
    assert result["status"] == "FAILED" and record["status"] == JobStatus.FAILED
    assert record["error"] == "internal error: OSError: [Errno 24] Too many open files", record
    assert log.calls == ["end output"]  # its stream ended; nothing was set up


@pytest.mark.parametrize("closing", [False, True])
def test_a_job_claimed_during_the_shutdown_is_stopped_before_it_starts(tmp_path, closing):
    """A delivery between its claim and its run's start when stop_all went through the
    running jobs: the job ran to its end, unstopped, after its node had left (review)."""
    svc = services(tmp_path, Log())
    svc.records.claims.claim = claimed_at_once  # type: ignore[attr-defined]
    svc.store.redis = None  # type: ignore[attr-defined]  # the node store's client: never used here
    sup = Supervisor(svc.cfg, svc)
    if closing:
        sup.stop_all()
    result = sup.run(JOB, SPEC)
    record = svc.store.records[JOB]  # type: ignore[attr-defined]
    if not closing:  # the control: the same job runs
        assert result["status"] == "COMPLETED" and record["status"] == JobStatus.COMPLETED
        return
    assert result["status"] == "STOPPED" and record["status"] == JobStatus.STOPPED
    assert record["error"] == "stopped by the shutdown of its worker (node n1), before it started", record


@pytest.mark.parametrize("broken", ["options_file", "spawn"])
def test_a_sandbox_that_fails_to_start_leaves_no_descriptor(monkeypatch, broken):
    from joblet.errors import ExecutionError
    from joblet.worker import execution
    from joblet.worker.execution import Launch, Sandbox

    def emfile(*_: Any, **__: Any) -> Any:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    if broken == "options_file":
        monkeypatch.setattr(execution, "options_file", emfile)
    else:
        monkeypatch.setattr(Sandbox, "spawn", emfile)
    cgroup = type("Cgroup", (), {"procs_files": []})()
    box = Sandbox(Launch(JOB, cgroup, [], ["true"], {}, lambda fn: fn()))  # type: ignore[arg-type]
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(ExecutionError, match="failed to start the sandbox: .*Too many open files"):
        box.start()
    box.close()  # the go pipe's end, as the job's undo does
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_a_final_record_redis_missed_is_written_by_the_heartbeat_once_it_is_back(tmp_path):
    """Redis gone longer than record_patience when the job ended: the task gives up, the job's
    outcome waits in svc.records.finals (its journal entry kept), added after its release ran; a beat
    writes the record, then leaves its networks and frees its addresses (which the outage
    failed), ends its stream and forgets the entry, each step once though Redis flaps."""
    import dataclasses

    from joblet.worker.journal import Journal

    log = Log()
    svc = services(tmp_path, log)
    svc.cfg = svc.records.cfg = dataclasses.replace(svc.cfg, record_patience=0)
    down = {"finish": True, "leave": True, "free": True}

    def unless_down(step: str, fn: Any) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            log(f"try {step}")
            if down[step]:
                raise BackendUnavailable("cannot reach Redis at redis://x: Connection refused")
            return fn(*args, **kw)

        return call

    svc.records.claims.finish = unless_down("finish", svc.records.claims.finish)  # type: ignore[attr-defined]
    svc.store.leave_networks = unless_down("leave", svc.store.leave_networks)  # type: ignore[attr-defined]
    svc.agent.free = unless_down("free", svc.agent.free)  # type: ignore[method-assign]
    added: list[list[str]] = []
    add = svc.records.finals.add
    svc.records.finals.add = lambda key, what, write: (added.append(list(log.calls)), add(key, what, write))  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailable):
        JobRun(svc, JOB, SPEC).execute()
    assert svc.records.finals.pending() == [f"job {JOB}"] and svc.store.records[JOB]["status"] == JobStatus.RUNNING  # type: ignore[attr-defined]
    assert added and added[0][-1] == "try free"  # added after the release (which failed too)
    assert [e.job_id for e in Journal(svc.cfg.state_dir).entries()] == [JOB]
    assert "end output" not in log.calls  # the stream's end follows the record
    svc.records.finals.retry()  # Redis still gone: it waits, nothing raised
    assert svc.records.finals.pending() == [f"job {JOB}"] and "end output" not in log.calls
    down["finish"] = False  # back, but it flaps: the record goes, leaving its networks fails
    mark = len(log.calls)
    svc.records.finals.retry()
    assert svc.store.records[JOB]["status"] == JobStatus.COMPLETED  # type: ignore[attr-defined]
    assert svc.records.finals.pending() == [f"job {JOB}"] and log.calls[mark:] == ["try finish", "try leave"]
    down["leave"] = down["free"] = False
    mark = len(log.calls)
    svc.records.finals.retry()
    assert log.calls[mark:] == [
        "try leave",
        "leave networks",
        "try free",
        "net free",
        "end output",
    ]  # not the record again
    assert svc.records.finals.pending() == [] and Journal(svc.cfg.state_dir).entries() == []


def test_a_workflow_step_redis_missed_is_taken_by_the_heartbeat(tmp_path, monkeypatch):
    """A workflow's next step that failed on Redis right after its job's record stalled the
    workflow for good (no other job of it would end to advance it): the heartbeat takes it."""
    from joblet.api import workflow_store

    svc = services(tmp_path, Log())
    calls: list[str] = []
    down = [True]

    def advance(store: Any, cfg: Any, wf_id: str, token: str) -> None:
        calls.append(f"{wf_id} {token}")
        if down[0]:
            raise BackendUnavailable("cannot reach Redis at redis://x: Connection refused")

    monkeypatch.setattr(workflow_store, "advance", advance)
    svc.records.advance_workflow("w" * 32)
    assert svc.records.finals.pending() == [f"workflow {calls[0]}"]
    svc.records.finals.retry()  # still gone
    down[0] = False
    svc.records.finals.retry()
    assert calls == [calls[0]] * 3 and svc.records.finals.pending() == []  # one token: the retry's


def test_a_step_added_again_while_its_retry_ran_is_kept():
    """The heartbeat's try of a workflow step succeeds while a job's end adds the same step
    again (a later state to act on): the new one stays for the next beat."""
    from joblet.worker.records import Finals

    finals = Finals()
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        finals.add("workflow w", "workflow w's next step", lambda: ran.append("second"))

    finals.add("workflow w", "workflow w's next step", first)
    finals.retry()
    assert finals.pending() == ["workflow w"] and ran == ["first"]
    finals.retry()
    assert finals.pending() == [] and ran == ["first", "second"]


def test_an_entry_redis_refuses_holds_back_no_other_and_is_given_up():
    """A WRONGTYPE at one job's record (an error reply, not an outage) held every entry
    behind it for good: the others are written; it is tried REFUSALS beats, then dropped."""
    from joblet.errors import BackendRefused, BackendUnavailable
    from joblet.worker.records import Finals

    finals = Finals()
    written: list[str] = []

    def refused() -> None:
        raise BackendRefused("Redis at x: WRONGTYPE Operation against a key holding the wrong kind of value")

    def gone() -> None:
        raise BackendUnavailable("cannot reach Redis at x")

    finals.add("job a", "job a's final record", refused)
    finals.add("job b", "job b's final record", lambda: written.append("b"))
    finals.retry()
    assert finals.pending() == ["job a"] and written == ["b"]
    for _ in range(Finals.REFUSALS - 2):
        finals.retry()
    assert finals.pending() == ["job a"]  # an OOM reply may pass: it is tried again meanwhile
    finals.add("job c", "job c's final record", gone)  # the control: an outage still waits
    finals.retry()
    assert finals.pending() == ["job c"]
    finals.retry()
    assert finals.pending() == ["job c"]


def test_a_kept_outcome_is_recorded_at_the_next_start_and_an_unreadable_one_is_not(tmp_path):
    """reconcile.py: a journal entry's kept outcome becomes the job's final record with the
    time it ended; one written by another version (no such status) records nothing (LOST)."""
    svc = services(tmp_path, Log())
    kept = {"status": "FAILED", "exit_code": 3, "signal": None, "error": None, "finished": 12.5}
    assert svc.records.settle(JOB, kept)
    record = svc.store.records[JOB]  # type: ignore[attr-defined]
    assert (record["status"], record["exit_code"], record["finished"]) == (JobStatus.FAILED, 3, 12.5)
    other = "b" * 32
    assert not svc.records.settle(other, {**kept, "status": "VANISHED"})
    assert not svc.records.settle(other, {"status": "FAILED"})  # no time it ended
    assert other not in svc.store.records  # type: ignore[attr-defined]


def test_no_presence_beat_is_written_once_the_worker_stops(tmp_path):
    """A presence beat under way at the shutdown wrote the node's key again after its leave,
    without `left`: clients placed jobs there for up to three intervals (review)."""
    svc = services(tmp_path, Log())
    svc.store.redis = None  # type: ignore[attr-defined]  # the node store's client: never used here
    sup = Supervisor(svc.cfg, svc)
    written: list[str] = []
    left: list[str] = []

    class Beats:
        def heartbeat(self, node: str, info: dict[str, Any], ttl: int) -> None:
            written.append(node)

    sup._beats = Beats()  # type: ignore[assignment]
    sup.store.drop_node = left.append  # type: ignore[attr-defined]
    sup.nodes.mark_left = left.append  # type: ignore[method-assign]
    sup._beat_presence()
    assert written == ["n1"]  # the control: a running worker beats
    sup.stop_all()
    sup.leave()
    sup._beat_presence()
    assert written == ["n1"] and left == ["n1", "n1"]


def test_a_refused_step_is_not_retried_for_the_patience_and_an_outage_is(monkeypatch):
    """retrying(): an error reply raised at once (a WRONGTYPE at a job's key held its thread
    for the whole record patience); an outage that passes is waited out (the control)."""
    from joblet.errors import BackendRefused, BackendUnavailable
    from joblet.worker import records
    from joblet.worker.records import retrying

    monkeypatch.setattr(records.time, "sleep", lambda _: None)  # its pause between tries
    tries: list[str] = []

    def refused() -> None:
        tries.append("refused")
        raise BackendRefused("Redis at x: WRONGTYPE")

    with pytest.raises(BackendRefused):
        retrying(refused, patience=30)
    assert tries == ["refused"]

    def back_at_the_second() -> str:
        tries.append("gone")
        if tries.count("gone") < 2:
            raise BackendUnavailable("cannot reach Redis at x")
        return "written"

    assert retrying(back_at_the_second, patience=30) == "written"
