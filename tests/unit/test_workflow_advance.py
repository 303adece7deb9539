"""Workflow advancing against an in-memory store: each job is queued once its requirements
hold, canceled (transitively) once one cannot, and advancing again changes nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from joblet.api import workflow_store as wfs
from joblet.api.keys import Keys
from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.config import load
from joblet.errors import BackendUnavailable


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.ttls: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    def set(self, key: str, value: str, nx: bool = False, ex: int | None = None) -> bool:
        self.calls["set"] = self.calls.get("set", 0) + 1
        if nx and key in self.data:
            return False
        self.data[key] = value
        self.ttls.pop(key, None)
        if ex is not None:
            self.ttls[key] = ex
        return True

    def expire(self, key: str, ttl: int) -> None:
        if key in self.data:
            self.ttls[key] = ttl

    def get(self, key: str) -> Any:
        value = self.data.get(key)
        return value.encode() if isinstance(value, str) else value

    def mget(self, keys: list[str]) -> list[Any]:
        self.calls["mget"] = self.calls.get("mget", 0) + 1
        return [self.get(key) for key in keys]

    def zrange(self, key: str, start: int, end: int) -> list[bytes]:
        return [k.encode() for k in self.data.get(key, {})]

    def pipeline(self, transaction: bool = True) -> FakePipe:
        return FakePipe(self)

    def register_script(self, script: str) -> Any:
        return lambda keys, args: None  # the index's trim: an integration test's (real Redis)

    def zadd(self, key: str, mapping: dict[str, float]) -> None:
        self.data.setdefault(key, {}).update(mapping)

    def hset(self, key: str, field: str, value: str) -> None:
        self.data.setdefault(key, {})[field] = value

    def hget(self, key: str, field: str) -> Any:
        value = self.data.get(key, {}).get(field)
        return value.encode() if isinstance(value, str) else value


class FakePipe:
    """Commands queued, run at execute (one round trip, counted)."""

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.queued: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> FakePipe:
            self.queued.append((name, args, kwargs))
            return self

        return queue

    def execute(self) -> list[Any]:
        self.redis.calls["execute"] = self.redis.calls.get("execute", 0) + 1
        return [getattr(self.redis, name)(*args, **kwargs) for name, args, kwargs in self.queued]


class FakeStore:
    """The part of Store that workflows use, in memory."""

    url = "memory://"

    def __init__(self) -> None:
        self.keys = Keys("t:")
        self.redis = FakeRedis()
        self.jobs: dict[str, JobRecord] = {}
        self.ended: list[str] = []

    def get_job(self, job_id: str) -> JobRecord:
        return self.jobs[job_id]

    def statuses(self, job_ids: list[str]) -> list[JobStatus | None]:
        return [self.jobs[job_id].status if job_id in self.jobs else None for job_id in job_ids]

    def transition(self, job_id: str, allowed: Any, **fields: Any) -> bool:
        rec = self.jobs[job_id]
        if rec.status not in list(allowed):
            return False
        self.jobs[job_id] = rec.replace(**fields)
        return True

    def end_output(self, job_id: str, summary: Any, cap: int, ttl: int) -> None:
        self.ended.append(job_id)

    def expire_job(self, job_id: str, ttl: int) -> None: ...


def workflow(store: FakeStore) -> tuple[str, dict[str, str]]:
    needs = {
        "build": {},
        "test": {"build": JobStatus.COMPLETED},
        "rescue": {"build": JobStatus.FAILED},
        "report": {"rescue": JobStatus.COMPLETED},
    }
    ids = {name: f"{i:032x}" for i, name in enumerate(needs, start=1)}
    jobs = {n: (ids[n], JobSpec(command="true"), needs[n]) for n in needs}
    record = wfs.new_record("w" * 32, "demo", jobs)
    wfs.save(store, record, 60)  # type: ignore[arg-type]
    for name, job_id in ids.items():
        store.jobs[job_id] = JobRecord(
            id=job_id,
            status=JobStatus.PENDING,
            spec=JobSpec(command="true"),
            name=name,
            created=time.time(),
            workflow=record.id,
        )
    return record.id, ids


def test_jobs_are_queued_once_and_cancelled_transitively():
    store, sent = FakeStore(), []
    cfg = load(node="n1")
    wf_id, ids = workflow(store)

    def send(_cfg: Any, job_id: str, spec: Any, node: Any) -> None:
        sent.append(job_id)

    wfs.advance(store, cfg, wf_id, send=send)  # type: ignore[arg-type]
    assert sent == [ids["build"]]  # nothing else has its requirements yet
    wfs.advance(store, cfg, wf_id, send=send)  # type: ignore[arg-type]
    assert sent == [ids["build"]]  # queued once, however often it is advanced
    store.jobs[ids["build"]] = store.jobs[ids["build"]].replace(status=JobStatus.COMPLETED)
    wfs.advance(store, cfg, wf_id, send=send)  # type: ignore[arg-type]
    assert sent == [ids["build"], ids["test"]]
    status = {name: store.jobs[job_id].status for name, job_id in ids.items()}
    assert status["rescue"] == JobStatus.CANCELED and status["report"] == JobStatus.CANCELED  # transitively
    assert "cannot be met" in (store.jobs[ids["report"]].error or "")
    assert sorted(store.ended) == sorted([ids["rescue"], ids["report"]])


def test_an_advance_whose_send_failed_sends_again_on_its_retry_only():
    """Redis went between the queued mark and the send: the advance's retry (same token)
    sends the job it marked; another advance (a later job's end) does not send it twice."""
    store, sent = FakeStore(), []
    cfg = load(node="n1")
    wf_id, ids = workflow(store)

    def down(_cfg: Any, job_id: str, spec: Any, node: Any) -> None:
        raise BackendUnavailable("redis: gone")

    def send(_cfg: Any, job_id: str, spec: Any, node: Any) -> None:
        sent.append(job_id)

    with pytest.raises(BackendUnavailable):
        wfs.advance(store, cfg, wf_id, send=down, token="t1")  # type: ignore[arg-type]
    wfs.advance(store, cfg, wf_id, send=send, token="t2")  # type: ignore[arg-type]
    assert sent == []  # marked by t1: no one else queues it
    wfs.advance(store, cfg, wf_id, send=send, token="t1")  # type: ignore[arg-type]
    assert sent == [ids["build"]]
    store.jobs[ids["build"]] = store.jobs[ids["build"]].replace(status=JobStatus.RUNNING)
    wfs.advance(store, cfg, wf_id, send=send, token="t1")  # type: ignore[arg-type]
    assert sent == [ids["build"]]  # claimed meanwhile: the retry leaves it


def test_redis_gone_at_an_advances_read_of_the_marks_is_an_outage_it_retries(monkeypatch):
    """The marks' read alone of the advance's Redis steps raised redis-py's own error, which the
    worker took for the advance's and dropped (no retry: the workflow stalled for good, review)."""
    from redis.exceptions import ConnectionError as RedisGone

    store = FakeStore()
    wf_id, ids = workflow(store)

    def gone(keys: list[str]) -> list[Any]:
        raise RedisGone("Error 111 connecting to x. Connection refused.")

    monkeypatch.setattr(store.redis, "mget", gone)
    with pytest.raises(BackendUnavailable):
        wfs.advance(store, load(node="n1"), wf_id, send=lambda *a: None, token="t1")  # type: ignore[arg-type]
    monkeypatch.undo()  # the control: with Redis back, its retry sends the job
    sent: list[str] = []
    wfs.advance(store, load(node="n1"), wf_id, send=lambda _c, job_id, *a: sent.append(job_id), token="t1")  # type: ignore[arg-type]
    assert sent == [ids["build"]]


def test_a_retry_after_the_requirement_ended_otherwise_cancels_what_it_had_marked():
    """The advance at db's start marked app to be queued ("1:T") and failed to send it; db then
    failed; the retry (T) decided to cancel app, found the mark's verdict was not its own, and
    neither sent nor canceled it: the workflow waited for good (review)."""
    store, sent = FakeStore(), []
    store.stop_job = lambda *_: False  # type: ignore[attr-defined]
    cfg = load(node="n1")
    ids = {"db": "d" * 32, "app": "a" * 32}
    jobs = {
        "db": (ids["db"], JobSpec(command="true"), {}),
        "app": (ids["app"], JobSpec(command="true"), {"db": JobStatus.RUNNING}),
    }
    record = wfs.new_record("s" * 32, "w", jobs)
    wfs.save(store, record, 60)  # type: ignore[arg-type]
    for name, job_id in ids.items():
        store.jobs[job_id] = JobRecord(id=job_id, status=JobStatus.PENDING, spec=JobSpec(command="true"), name=name)

    def send(_cfg: Any, job_id: str, spec: Any, node: Any) -> None:
        sent.append(job_id)

    def down(_cfg: Any, job_id: str, spec: Any, node: Any) -> None:
        raise BackendUnavailable("redis: gone")

    wfs.advance(store, cfg, record.id, send=send)  # type: ignore[arg-type]  # db queued
    store.jobs[ids["db"]] = store.jobs[ids["db"]].replace(status=JobStatus.RUNNING)
    with pytest.raises(BackendUnavailable):
        wfs.advance(store, cfg, record.id, send=down, token="T")  # type: ignore[arg-type]  # app marked
    store.jobs[ids["db"]] = store.jobs[ids["db"]].replace(status=JobStatus.FAILED)
    wfs.advance(store, cfg, record.id, send=send, token="T2")  # type: ignore[arg-type]  # db's end: not its mark
    assert store.jobs[ids["app"]].status == JobStatus.PENDING and sent == [ids["db"]]
    wfs.advance(store, cfg, record.id, send=send, token="T")  # type: ignore[arg-type]  # the retry
    assert store.jobs[ids["app"]].status == JobStatus.CANCELED and sent == [ids["db"]]
    assert store.keys.workflow(record.id) in store.redis.ttls  # ended: it expires


def test_a_workflows_keys_expire_when_its_last_job_ends_not_before():
    """Its record expired log_ttl after the submit: a workflow running longer was lost, and
    its later jobs stayed PENDING for good. Now its keys expire once every job ended."""
    store, sent = FakeStore(), []
    cfg = load(node="n1", log_ttl=60, message_ttl=60)
    wf_id, ids = workflow(store)
    keys = [store.keys.workflow(wf_id), *(store.keys.workflow_queued(wf_id, name) for name in ids)]

    def send(_cfg: Any, job_id: str, spec: Any, node: Any) -> None:
        sent.append(job_id)

    wfs.advance(store, cfg, wf_id, send=send)  # type: ignore[arg-type]
    store.jobs[ids["build"]] = store.jobs[ids["build"]].replace(status=JobStatus.COMPLETED)
    wfs.advance(store, cfg, wf_id, send=send)  # type: ignore[arg-type]
    assert sent == [ids["build"], ids["test"]]  # test runs; rescue and report were canceled
    assert all(k in store.redis.data for k in keys)  # the record and each job's mark
    assert not store.redis.ttls.keys() & set(keys)  # test still runs: nothing expires
    store.jobs[ids["test"]] = store.jobs[ids["test"]].replace(status=JobStatus.COMPLETED)
    wfs.advance(store, cfg, wf_id, send=send)  # type: ignore[arg-type]
    assert {k: store.redis.ttls.get(k) for k in keys} == dict.fromkeys(keys, 60)


def test_a_workflows_keys_outlive_its_queued_jobs_messages():
    """A workflow ended with a job of it stopped while queued: its keys expired after this
    side's log_ttl, and the job's message, valid a day, could make it anew and run it
    (review). They live the longer of log_ttl and message_ttl, as a plain job's stop."""
    store = FakeStore()
    wf_id, ids = workflow(store)
    for job_id in ids.values():
        store.jobs[job_id] = store.jobs[job_id].replace(status=JobStatus.STOPPED)
    wfs.advance(store, load(node="n1", log_ttl=3600), wf_id, send=lambda *_: None)  # type: ignore[arg-type]
    assert store.redis.ttls[store.keys.workflow(wf_id)] == 86400
    wfs.advance(store, load(node="n1"), wf_id, send=lambda *_: None)  # type: ignore[arg-type]
    assert store.redis.ttls[store.keys.workflow(wf_id)] == 7 * 86400  # the control: log_ttl, the longer


def _ended(status: str, error: str | None = None) -> JobRecord:
    return JobRecord(id="x" * 32, status=JobStatus(status), spec=JobSpec(command="true"), error=error)


def test_a_workflows_status_names_why_it_ended() -> None:
    S = wfs.STOPPED_WHY
    cases = [
        ([("PENDING", None), ("PENDING", None)], "PENDING"),
        ([("COMPLETED", None), ("PENDING", None)], "RUNNING"),
        ([("COMPLETED", None), ("COMPLETED", None)], "COMPLETED"),
        # a branch not taken: `notify: requires build=FAILED` after a build that passed
        ([("COMPLETED", None), ("CANCELED", "requirement build=FAILED cannot be met")], "COMPLETED"),
        ([("FAILED", None), ("CANCELED", "requirement build=COMPLETED cannot be met")], "FAILED"),
        ([("LOST", None), ("COMPLETED", None)], "FAILED"),
        ([("STOPPED", None), ("COMPLETED", None), ("CANCELED", S)], "STOPPED"),
        ([("COMPLETED", None), ("CANCELED", S)], "STOPPED"),  # stopped before its next job was queued
        ([("FAILED", None), ("STOPPED", None)], "FAILED"),
    ]
    for jobs, want in cases:
        assert wfs.overall({f"j{i}": _ended(s, e) for i, (s, e) in enumerate(jobs)}) == want, jobs
    # a service's STOPPED is its end once the others ended; a service that failed fails it
    ended = {"db": _ended("STOPPED"), "app": _ended("COMPLETED")}
    assert wfs.overall(ended, ["db"]) == "COMPLETED" and wfs.overall(ended) == "STOPPED"
    assert wfs.overall({"db": _ended("FAILED"), "app": _ended("COMPLETED")}, ["db"]) == "FAILED"
    canceled = {"db": _ended("CANCELED", wfs.DONE_WHY), "app": _ended("COMPLETED")}
    assert wfs.overall(canceled, ["db"]) == "COMPLETED"


def test_a_service_lets_its_dependents_start_when_it_runs_and_is_stopped_when_they_end():
    """`requires: {db: RUNNING}` queues app once db has started; once every job that is not a
    service has ended, the services are stopped (the workflow then ends COMPLETED)."""
    store, sent, stopped = FakeStore(), [], []
    store.stop_job = lambda job_id, cap, ttl: stopped.append(job_id) or False  # type: ignore[attr-defined]
    cfg = load(node="n1")
    ids = {"db": "d" * 32, "app": "a" * 32}
    jobs = {
        "db": (ids["db"], JobSpec(command="true"), {}),
        "app": (ids["app"], JobSpec(command="true"), {"db": JobStatus.RUNNING}),
    }
    record = wfs.new_record("s" * 32, "svc", jobs, ["db"])
    wfs.save(store, record, 60)  # type: ignore[arg-type]
    for name, job_id in ids.items():
        store.jobs[job_id] = JobRecord(id=job_id, status=JobStatus.PENDING, spec=JobSpec(command="true"), name=name)

    def send(_cfg: Any, job_id: str, spec: Any, node: Any) -> None:
        sent.append(job_id)

    def step(name: str, status: JobStatus) -> None:
        store.jobs[ids[name]] = store.jobs[ids[name]].replace(status=status)
        wfs.advance(store, cfg, record.id, send=send)  # type: ignore[arg-type]

    wfs.advance(store, cfg, record.id, send=send)  # type: ignore[arg-type]
    assert sent == [ids["db"]] and stopped == []  # app waits for db to run
    step("db", JobStatus.RUNNING)
    assert sent == [ids["db"], ids["app"]] and stopped == []
    step("app", JobStatus.RUNNING)
    assert stopped == []  # the control: app still runs, db goes on
    step("app", JobStatus.COMPLETED)
    assert stopped == [ids["db"]]  # the others have ended: the service is stopped
    step("db", JobStatus.STOPPED)
    assert stopped == [ids["db"]]  # ended: not stopped again
    assert wfs.overall({n: store.jobs[i] for n, i in ids.items()}, record.services) == "COMPLETED"
    # only a start another job waits for advances the workflow (a fan-out's starts do not)
    assert wfs.required_running(store, record.id, "db") and not wfs.required_running(store, record.id, "app")  # type: ignore[arg-type]
    # a service that ended COMPLETED before its dependents were queued still counts as started
    assert wfs._verdict({"db": JobStatus.COMPLETED}, {"db": JobStatus.RUNNING}) == ("go", None)
    assert wfs._verdict({"db": JobStatus.FAILED}, {"db": JobStatus.RUNNING})[0] == "cancel"
    assert wfs._verdict({"db": JobStatus.PENDING}, {"db": JobStatus.RUNNING}) == ("wait", None)


def test_a_service_stopped_before_a_worker_took_it_lets_the_workflow_expire():
    """The other job ended while the service still waited in its queue: the advance stopped
    it (STOPPED at once, as Store.stop_job does a job no worker has taken), decided on the
    statuses it had read before, and never expired the workflow; no end of the service's own
    advanced it again (review): its records, marks and uploads stayed in Redis for good."""
    for queued_first in (True, False):  # the control: a service that runs is stopped by its worker
        store, sent = FakeStore(), []
        cfg = load(node="n1")

        def stop_job(job_id: str, cap: int, ttl: int, store: FakeStore = store) -> bool:
            record = store.jobs[job_id]
            if record.status != JobStatus.PENDING:
                return False  # running: its worker stops it, and its end advances the workflow
            store.jobs[job_id] = record.replace(status=JobStatus.STOPPED)
            return True

        store.stop_job = stop_job  # type: ignore[attr-defined]
        ids = {"svc": "d" * 32, "quick": "a" * 32}
        jobs = {name: (job_id, JobSpec(command="true"), {}) for name, job_id in ids.items()}
        record = wfs.new_record("s" * 32, "svc", jobs, ["svc"])
        wfs.save(store, record, 60)  # type: ignore[arg-type]
        for name, job_id in ids.items():
            store.jobs[job_id] = JobRecord(id=job_id, status=JobStatus.PENDING, spec=JobSpec(command="true"), name=name)

        def send(_c: Any, job_id: str, spec: Any, node: Any, sent: list[str] = sent) -> None:
            sent.append(job_id)

        wfs.advance(store, cfg, record.id, send=send)  # type: ignore[arg-type]
        assert sorted(sent) == sorted(ids.values())  # both queued
        if not queued_first:
            store.jobs[ids["svc"]] = store.jobs[ids["svc"]].replace(status=JobStatus.RUNNING)
        store.jobs[ids["quick"]] = store.jobs[ids["quick"]].replace(status=JobStatus.COMPLETED)
        wfs.advance(store, cfg, record.id, send=send)  # type: ignore[arg-type]  # at quick's end
        expiring = store.keys.workflow(record.id) in store.redis.ttls
        if queued_first:
            assert store.jobs[ids["svc"]].status == JobStatus.STOPPED and expiring
        else:
            assert store.jobs[ids["svc"]].status == JobStatus.RUNNING and not expiring


def test_an_advance_reads_the_others_marks_at_once():
    """A fan-out: every job's end advanced the workflow, and each job queued but not yet claimed
    (still PENDING) cost a SET NX and a GET each time: 3,000 jobs made millions of round trips,
    starved the worker's pool and its heartbeat (red-team run). The marks are read at once;
    only a job no advance has marked is marked."""
    store, sent = FakeStore(), []
    cfg = load(node="n1")
    root = f"{0:032x}"
    fan = {f"j{i}": {"root": JobStatus.COMPLETED} for i in range(200)}
    ids = {"root": root, **{name: f"{i:032x}" for i, name in enumerate(fan, start=1)}}
    jobs = {n: (ids[n], JobSpec(command="true"), fan.get(n, {})) for n in ids}
    record = wfs.new_record("f" * 32, "fan", jobs)
    wfs.save(store, record, 60)  # type: ignore[arg-type]
    for name, job_id in ids.items():
        status = JobStatus.COMPLETED if name == "root" else JobStatus.PENDING
        store.jobs[job_id] = JobRecord(id=job_id, status=status, spec=JobSpec(command="true"), name=name)
    wfs.advance(store, cfg, record.id, send=lambda _c, job_id, _s, _n: sent.append(job_id))  # type: ignore[arg-type]
    assert len(sent) == 200 and store.redis.calls["set"] >= 200  # the control: marked, sent once each
    before = dict(store.redis.calls)
    for _ in range(50):  # the next 50 jobs' ends, while the other 150 wait to be claimed
        wfs.advance(store, cfg, record.id, send=lambda _c, job_id, _s, _n: sent.append(job_id))  # type: ignore[arg-type]
    assert len(sent) == 200  # none sent twice
    assert store.redis.calls["set"] == before["set"] and store.redis.calls["mget"] == before["mget"] + 50


def test_a_job_pinned_to_a_node_whose_sweep_began_meanwhile_is_not_sent(monkeypatch):
    """The sweep of a silent node read its jobs before this one named the node, then marked
    the node swept: queued there, it stayed PENDING for good (red-team run, 2 in 60). Once
    its record names the node, a sweep begun since is looked for: FAILED, not sent."""
    from types import SimpleNamespace

    from joblet.api import preflight

    record = JobRecord(id="a" * 32, status=JobStatus.PENDING, spec=JobSpec(command="true", node="b"))
    changes: list[dict[str, Any]] = []

    def transition(job_id: str, allowed: Any, **fields: Any) -> bool:
        changes.append(fields)
        return True

    store = SimpleNamespace(
        get_job=lambda job_id: record,
        transition=transition,
        live_nodes=lambda: {"a": {}},
        end_output=lambda *args, **kw: None,
    )
    sent: list[str | None] = []
    cfg = load()
    for gone in (True, False):  # the control: a pin whose node is not gone is sent there
        changes.clear()
        monkeypatch.setattr(preflight, "node_gone", lambda store, cfg, node, view=None, gone=gone: gone)
        send, place = (lambda c, j, s, n: sent.append(n)), (lambda spec: "b")
        queued = wfs._queue(store, cfg, record.id, send, place, store.live_nodes, real=True)  # type: ignore[arg-type]
        assert queued is not gone and changes[0] == {"node": "b"}
        assert [c["status"] for c in changes[1:]] == ([JobStatus.FAILED] if gone else [])
    assert sent == ["b"]


def test_a_user_networks_job_is_placed_and_marked_while_its_networks_are_held():
    """Two advances (or an advance and a submit) at the same instant each read no home for
    the network and placed its jobs apart: the network is held from the placement until
    where the job goes is written, as Client.submit holds it; not in a fleet of one node."""
    import contextlib
    from types import SimpleNamespace

    record = JobRecord(id="a" * 32, status=JobStatus.PENDING, spec=JobSpec(command="true", network=("app", "none")))
    order: list[str] = []

    @contextlib.contextmanager
    def holding_networks(networks: Any) -> Any:
        order.append(f"hold {sorted(networks)}")
        yield
        order.append("let go")

    for live in ({"a": {}, "b": {}}, {"a": {}}):
        order.clear()
        store = SimpleNamespace(
            get_job=lambda job_id: record,
            transition=lambda job_id, allowed, **fields: order.append("record") or True,
            holding_networks=holding_networks,
            mark_placed=lambda job_id, networks, node: order.append("mark"),
        )
        send = lambda c, j, s, n: order.append("send")  # noqa: E731
        place = lambda spec: order.append("place") or "b"  # noqa: E731
        assert wfs._queue(store, load(), record.id, send, place, lambda live=live: live)  # type: ignore[arg-type]
        if len(live) > 1:
            assert order == ["hold ['app']", "place", "record", "mark", "let go", "send"]
        else:  # the control: one node, where a job went is read by nothing
            assert order == ["place", "record", "send"]


@pytest.mark.parametrize("failures", [1, 5])
def test_a_submits_first_step_is_retried_then_stops_the_workflow(failures):
    """A send that failed in the submit's advance left its mark: no later advance queued the
    job, and no job's end came to advance the workflow: PENDING for good (review). Retried
    with its token, it queues the job; failing still, the workflow is stopped and it raises."""
    store, sent, tries = FakeStore(), [], []
    store.find_jobs = lambda job_ids: [store.jobs.get(i) for i in job_ids]  # type: ignore[attr-defined]
    cfg = load(node="n1")
    wf_id, ids = workflow(store)

    def stop_job(job_id: str, *_: Any) -> None:  # queued, taken by no worker: STOPPED at once
        store.jobs[job_id] = store.jobs[job_id].replace(status=JobStatus.STOPPED)

    store.stop_job = stop_job  # type: ignore[attr-defined]

    def flaky(_cfg: Any, job_id: str, spec: Any, node: Any) -> None:
        tries.append(job_id)
        if len(tries) <= failures:
            raise BackendUnavailable("redis: gone")
        sent.append(job_id)

    if failures == 1:  # the control: Redis back at the second try
        wfs.start(store, cfg, wf_id, send=flaky, tries=3, pause=0)  # type: ignore[arg-type]
        assert sent == [ids["build"]] and store.jobs[ids["build"]].status == JobStatus.PENDING
        return
    with pytest.raises(BackendUnavailable):
        wfs.start(store, cfg, wf_id, send=flaky, tries=3, pause=0)  # type: ignore[arg-type]
    assert sent == [] and len(tries) == 3
    ended = {name: store.jobs[i].status for name, i in ids.items()}
    assert ended == {  # nothing waits for good: the job marked (and maybe sent) is stopped
        "build": JobStatus.STOPPED,
        "test": JobStatus.CANCELED,
        "rescue": JobStatus.CANCELED,
        "report": JobStatus.CANCELED,
    }


def test_a_workflow_id_that_names_another_key_or_an_unreadable_record_is_one_line():
    """`rnx workflow status 'ID:queued:a'` read the queued mark as a workflow record and raised
    JSONDecodeError (review); a record that does not read says so in one line."""
    from joblet.errors import JobletError, NotFound

    store = FakeStore()
    wf_id, _ = workflow(store)
    assert wfs.get(store, wf_id).id == wf_id  # the control: by its id
    assert wfs.get(store, "demo").id == wf_id  # and by its name
    store.redis.set(wfs.queued_key(store, wf_id, "build"), "1:t")
    with pytest.raises(NotFound, match="no such workflow"):
        wfs.get(store, f"{wf_id}:queued:build")
    store.redis.set(wfs.wf_key(store, "f" * 32), "not json")
    with pytest.raises(JobletError, match="its record does not read"):
        wfs.get(store, "f" * 32)
