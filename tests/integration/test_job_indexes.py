"""The job indexes on a real Redis. The jobs that have not ended: every way a job is written
puts it there, every way it ends takes it out (or the next read does), and a Redis without
the index gets it whole from one read of every record. The newest jobs: read from the end of
every kept job's index, expired records skipped, their entries swept by the heartbeat."""

from __future__ import annotations

import time

import pytest

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.store import Store
from joblet.worker.claims import Claims

RUNNING_OR_WAITING = (JobStatus.PENDING, JobStatus.RUNNING)


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
    assert store.live_jobs() == []  # the index is whole
    job = _older_workers_job(store, 60, "old")
    assert store.unfinished_on("old", indexed=True) == []  # control: not in the index
    assert [r.id for r in store.unfinished_on("old", indexed=False)] == [job.id]


def _kept(store: Store) -> list[str]:
    return [i.decode() for i in store.redis.zrange(store.keys.jobs, 0, -1)]


def test_the_newest_jobs_are_read_without_the_older_ones(store: Store) -> None:
    store.create_jobs([_job(n, JobStatus.COMPLETED) for n in range(1, 31)])
    for n in (30, 28):  # among the newest, their records expired
        store.redis.delete(store.keys.job(_job(n).id))
    shown, older = store.recent_jobs(5)
    assert [r.id for r in shown] == [_job(n).id for n in (24, 25, 26, 27, 29)]  # oldest first
    assert older == 23  # 1..23
    assert _job(30).id not in _kept(store) and _job(28).id not in _kept(store)  # the expired left
    shown, older = store.recent_jobs(100)  # control: more than there are
    assert [r.id for r in shown] == [_job(n).id for n in (*range(1, 28), 29)] and older == 0
    assert store.recent_jobs(5)[0] == store.list_jobs()[-5:]  # the same as from every record


def test_the_sweep_drops_entries_of_expired_records_a_slice_at_a_time(store: Store, monkeypatch) -> None:
    from joblet.api import store_index

    monkeypatch.setattr(store_index, "SWEEP_SLICE", 4)
    now = 10_000.0
    store.create_jobs([_job(n, JobStatus.COMPLETED) for n in range(1, 11)])
    fresh = _job(0, JobStatus.COMPLETED).replace(created=now - 1)
    store.create_job(fresh)
    for n in (2, 3, 7, 9):
        store.redis.delete(store.keys.job(_job(n).id))
    store.redis.delete(store.keys.job(fresh.id))  # too new to have expired: a record being written
    assert store.sweep_jobs_index(now) == 2  # 1-4: 2 and 3 gone
    assert store.sweep_jobs_index(now) == 1  # 5-8: 7 gone
    assert store.sweep_jobs_index(now) == 1  # 9, 10, then the cutoff: 9 gone; starts over
    assert _kept(store) == [_job(n).id for n in (1, 4, 5, 6, 8, 10)] + [fresh.id]
    assert store.sweep_jobs_index(now) == 0  # 1, 4, 5, 6 again
    assert store.sweep_jobs_index(now + 60) == 1  # control: past MIN_KEPT the new one's entry goes too
    assert _kept(store) == [_job(n).id for n in (1, 4, 5, 6, 8, 10)]


def test_the_sweep_puts_back_a_job_that_has_not_ended_and_was_left_out(store: Store) -> None:
    """Across a rollback, or from another version's client, a job that has not ended may be
    missing from the index while its marker says whole: the heartbeats' sweep puts it back."""
    assert store.live_jobs() == []  # the index is whole
    job = _older_workers_job(store, 70, "old")
    new = _older_workers_job(store, 72, "old")
    store.redis.zadd(store.keys.jobs, {new.id: 999.0})  # created a second before the sweep: within MIN_KEPT
    ended = _job(71, JobStatus.COMPLETED)
    store.create_job(ended)
    assert _indexed(store) == []
    store.sweep_jobs_index(now=1_000.0)
    assert _indexed(store) == [job.id, new.id]  # however new (a network's delete relied on it); the ended one stays out


def test_a_redelivered_claim_of_an_ended_job_does_not_index_it(store: Store) -> None:
    claims = Claims(store)
    store.create_job(_job(80))
    assert store.stop_job(_job(80).id, cap=100, ttl=600)  # stopped while queued: out of the index
    assert _indexed(store) == [] and claims.claim(_job(80), "n1") is not None  # its message comes later
    assert _indexed(store) == []
    assert claims.claim(_job(81), "n1") is not None and _indexed(store) == [_job(81).id]  # the control


def test_a_job_created_between_two_pages_of_the_newest_is_not_listed_twice(store: Store, monkeypatch) -> None:
    from joblet.api import store_index

    monkeypatch.setattr(store_index, "RECENT_CHUNK", 4)
    store.create_jobs([_job(n, JobStatus.COMPLETED) for n in range(1, 11)])
    pages = store._records

    def with_a_submit_after_the_first(ids):  # a job submitted while rnx list reads
        if not store.redis.exists(store.keys.job(_job(99).id)):
            store.create_job(_job(99, JobStatus.COMPLETED))
        return pages(ids)

    monkeypatch.setattr(store, "_records", with_a_submit_after_the_first)
    shown, _ = store.recent_jobs(8)
    ids = [r.id for r in shown]
    assert len(ids) == len(set(ids)) == 8, ids  # the ranks moved by one: nothing listed twice
    assert ids == [_job(n).id for n in range(3, 11)]


def test_what_deletes_something_in_use_reads_every_record(redis_sock: str) -> None:
    """A running job missing from the index (an older client's, until the sweep puts it
    back) did not hold its network: `rnx network delete` deleted it under the job (stress
    run). Deletes and `node forget` read every kept record; the listing reads the index."""
    import uuid

    import pytest

    from joblet.api.client import Client
    from joblet.config import load
    from joblet.errors import Conflict

    client = Client(load(redis_url=redis_sock, key_prefix=f"del{uuid.uuid4().hex[:6]}:"))
    client.networks.create("held", "10.164.0.0/24")
    client.volumes.create("kept")
    spec = JobSpec(command="sleep", network=("held",), volumes=("kept",))
    job = JobRecord(id=uuid.uuid4().hex, status=JobStatus.RUNNING, spec=spec, node="gone", created=1.0)
    client.store.create_job(job)
    assert client.store.live_jobs() == [job]  # the index is whole, then loses the job
    client.store.redis.zrem(client.store.keys.live, job.id)
    assert next(n for n in client.networks.list() if n["name"] == "held")["jobs"] == 0  # the index's count
    with pytest.raises(Conflict, match=f"1 job\\(s\\) use it \\({job.id[:12]}\\)"):
        client.networks.delete("held")
    with pytest.raises(Conflict, match=f"1 job\\(s\\) use it \\({job.id[:12]}\\)"):
        client.volumes.delete("kept")
    client.store.redis.hset(client.store.keys.job(job.id), "status", '"LOST"')
    client.networks.delete("held")  # the control: once it has ended, both go
    client.volumes.delete("kept")


def test_a_job_failed_while_waiting_ends_whole_in_one_step(store: Store) -> None:
    """fail_waiting: FAILED, its stream's end, out of the index, its keys and its name's
    expiring; the name's key never expired before (review). Not over a job that started."""
    from joblet.api.keys import END_FIELD

    assert store.create_named_job(_job(6, name="nightly")) is None
    name_key = store.keys.name("nightly")
    assert store.redis.ttl(name_key) == -1  # the control: held, with no expiry, while it waits
    assert store.fail_waiting(_job(6).id, "no node", 600, 100)
    record = store.find_job(_job(6).id)
    assert record is not None and record.status == JobStatus.FAILED and record.error == "no node"
    assert 0 < store.redis.ttl(store.keys.job(_job(6).id)) <= 600
    assert 0 < store.redis.ttl(name_key) <= 600
    (_, last), *_ = store.redis.xrevrange(store.keys.log(_job(6).id), count=1)
    assert last == {END_FIELD: b'{"status": "FAILED"}'}, last  # followers detach
    assert _indexed(store) == []
    in_workflow = JobRecord(id=_job(8).id, status=JobStatus.PENDING, spec=JobSpec(command="true"), workflow="w" * 32)
    store.create_job(in_workflow)  # a workflow's too: nothing advances its workflow, so it expires itself
    assert store.fail_waiting(in_workflow.id, "no node", 600, 100)
    assert 0 < store.redis.ttl(store.keys.job(in_workflow.id)) <= 600
    store.create_job(_job(7, JobStatus.RUNNING))
    assert not store.fail_waiting(_job(7).id, "no node", 600, 100)  # it started: left alone
    assert store.find_job(_job(7).id).status == JobStatus.RUNNING


def test_a_record_written_by_hand_does_not_stop_the_sweep(store: Store, monkeypatch) -> None:
    """A status that is no JSON (`HSET job:X status COMPLETED` by hand) made the sweep's
    script raise at that entry, at every heartbeat, and the index was pruned no more (review)."""
    from joblet.api import store_index

    monkeypatch.setattr(store_index, "SWEEP_SLICE", 4)
    store.create_jobs([_job(n, JobStatus.COMPLETED) for n in range(80, 84)])
    store.redis.hset(store.keys.job(_job(80).id), "status", "COMPLETED")  # no JSON
    store.redis.delete(store.keys.job(_job(82).id))  # expired: its entry goes
    assert store.sweep_jobs_index(now=10_000.0) == 1
    assert _kept(store) == [_job(n).id for n in (80, 81, 83)]  # the control: the hand-written one is kept
