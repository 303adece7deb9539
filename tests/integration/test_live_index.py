"""The index of jobs that have not ended, on a real Redis: every way a job is written puts it
there, every way it ends takes it out (or the next read does), and a Redis without the index
gets it whole from one read of every record."""

from __future__ import annotations

import time

import pytest

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.store import Store
from joblet.worker.claims import Claims

RUNNING_OR_WAITING = (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING)


@pytest.fixture
def store(redis_sock: str) -> Store:
    return Store(redis_sock, f"live{time.time_ns()}:")


def _job(n: int, status: JobStatus = JobStatus.PENDING, name: str | None = None) -> JobRecord:
    return JobRecord(id=f"{n:032x}", status=status, spec=JobSpec(command="true", name=name), name=name, created=n)


def _indexed(store: Store) -> list[str]:
    return [i.decode() for i in store.redis.zrange(store.keys.live, 0, -1)]


def test_each_way_a_job_is_written_indexes_it_and_each_end_takes_it_out(store: Store) -> None:
    claims = Claims(store)
    store.create_job(_job(1))
    store.create_jobs([_job(2), _job(3, JobStatus.COMPLETED)])  # an ended one is not indexed
    assert store.create_named_job(_job(4, name="web")) is None
    assert _indexed(store) == [_job(n).id for n in (1, 2, 4)]
    assert [r.id for r in store.live_jobs()] == _indexed(store)

    assert store.stop_job(_job(1).id, cap=100, ttl=600)  # stopped before any worker took it
    assert claims.claim(_job(2), "n1") is not None
    done, _ = claims.finish(_job(2).id, None, RUNNING_OR_WAITING, 600, status=JobStatus.COMPLETED)
    assert done
    assert store.fail_waiting(_job(4).id, "no node", 600, 100)
    assert _indexed(store) == []  # out at each end, not left for a read to find
    assert store.live_jobs() == []
    assert len(store.list_jobs()) == 4  # positive control: every record is still kept


def test_a_record_written_without_the_index_joins_it_at_its_claim(store: Store) -> None:
    old = _job(5)  # as another version's client writes it: the record and the jobs index only
    store.redis.hset(store.keys.job(old.id), mapping={"id": f'"{old.id}"', "status": '"PENDING"', "spec": "{}"})
    store.redis.zadd(store.keys.jobs, {old.id: 5})
    store.redis.set(store.keys.live_whole, "1")
    assert _indexed(store) == []
    assert Claims(store).claim(old, "n1") is not None
    assert _indexed(store) == [old.id]


def test_a_read_drops_jobs_that_ended_by_other_ways_but_keeps_one_written_again(store: Store) -> None:
    for n in (6, 7, 8):
        store.create_job(_job(n))
    assert len(store.live_jobs()) == 3  # the index is whole from here
    store.redis.hset(store.keys.job(_job(6).id), "status", '"LOST"')  # ended by a bare write
    store.redis.delete(store.keys.job(_job(7).id))  # its record expired
    assert [r.id for r in store.live_jobs()] == [_job(8).id]
    assert _indexed(store) == [_job(8).id]
    store._prune([_job(8).id])  # read as ended, then written again before the prune: it stays
    assert _indexed(store) == [_job(8).id]


def test_a_redis_without_the_index_gets_it_from_every_record_once(store: Store) -> None:
    for n in range(10, 40):
        store.create_job(_job(n, JobStatus.RUNNING if n % 10 == 0 else JobStatus.COMPLETED))
    store.redis.delete(store.keys.live, store.keys.live_whole)  # an older version's Redis
    live = [_job(n).id for n in (10, 20, 30)]
    assert [r.id for r in store.live_jobs()] == live
    assert _indexed(store) == live and store.redis.get(store.keys.live_whole) == b"1"
    store.redis.hset(store.keys.job(live[0]), "status", '"COMPLETED"')
    assert [r.id for r in store.live_jobs()] == live[1:]  # now from the index: the ended one pruned
    assert _indexed(store) == live[1:]


def _older_workers_job(store: Store, n: int, node: str) -> JobRecord:
    """A job an older worker claimed and runs: its record, not in the index."""
    job = _job(n, JobStatus.RUNNING).replace(node=node)
    store.create_job(job)
    store.redis.zrem(store.keys.live, job.id)
    return job


def test_while_an_older_worker_lives_every_record_is_read(store: Store) -> None:
    assert store.live_jobs() == []  # the index is whole
    job = _older_workers_job(store, 50, "old")
    store.heartbeat("new", {"indexes_live": True}, ttl=60)
    store._live_seen = (None, {})  # read the nodes now, not 5 s from now
    assert store.live_jobs() == []  # control: every live worker indexes, the index is read
    store.heartbeat("old", {}, ttl=60)  # an older version's heartbeat
    store._live_seen = (None, {})
    assert [r.id for r in store.live_jobs()] == [job.id]
    assert _indexed(store) == [job.id]  # and the read put it there


def test_the_sweep_of_an_older_node_reads_every_record(store: Store) -> None:
    from types import SimpleNamespace

    from joblet.worker.fleet import _unfinished_of

    assert store.live_jobs() == []  # the index is whole
    job = _older_workers_job(store, 60, "old")
    svc = SimpleNamespace(store=store)
    assert _unfinished_of(svc, "old", indexed=True) == []  # control: not in the index
    assert [r.id for r in _unfinished_of(svc, "old", indexed=False)] == [job.id]
