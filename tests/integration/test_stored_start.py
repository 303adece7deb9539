"""What a worker's start reads of Redis, written by other means (red-team run: each stopped
every start of the worker, for good): a job record with a field that is not JSON (its claim's
and final record's replies), an IPAM field that is no address, a cursor that is no number."""

from __future__ import annotations

import time

import pytest

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.store import Store
from joblet.api.store_ipam import IpamStore
from joblet.errors import ValidationError
from joblet.worker.claims import Claims


@pytest.fixture
def store(redis_sock: str) -> Store:
    return Store(redis_sock, f"start{time.time_ns()}:")


def test_a_record_that_does_not_read_is_a_validation_error_after_its_write(store: Store) -> None:
    job = "a" * 32
    claims = Claims(store)
    assert claims.claim(JobRecord.pending(job, JobSpec(command="true")), "n1") is not None
    store.redis.hset(store.keys.job(job), "ips", "notjson")
    with pytest.raises(ValidationError, match="^the record of job a{32} does not read: its field 'ips' is not JSON$"):
        claims.finish(job, None, (JobStatus.PENDING, JobStatus.RUNNING), 60, status=JobStatus.LOST, error="lost")
    assert store.redis.hget(store.keys.job(job), "status") == b'"LOST"'  # written all the same


def test_ipam_fields_that_are_no_address_are_left_out(store: Store, redis_sock: str) -> None:
    ipam = IpamStore(redis_sock, store.keys.prefix, store.redis)
    store.redis.hset(store.keys.ipam("bridge"), mapping={"foo": "bar", "-1": "x", "\uff11": "y"})
    store.redis.set(store.keys.ipam_cursor("bridge"), "abc")
    got = ipam.allocate("bridge", 10, 20, "b" * 32)
    assert got == 10  # a cursor that is no number starts from the first
    assert ipam.allocations("bridge") == {10: "b" * 32}


@pytest.mark.parametrize("raw", ['"BOGUS"', "notjson", "[1]", "[" * 100_000])
def test_a_status_that_does_not_read_is_none_beside_the_others(store: Store, raw: str) -> None:
    """Each heartbeat reads its running jobs' statuses to stop those the fleet made LOST: one
    status that did not read failed that look on every beat (red-team run)."""
    good, bad = "c" * 32, "d" * 32
    for job in (good, bad):
        store.create_job(JobRecord.pending(job, JobSpec(command="true")))
    store.redis.hset(store.keys.job(bad), "status", raw)
    assert store.statuses([good, bad, "e" * 32]) == [JobStatus.PENDING, None, None]
