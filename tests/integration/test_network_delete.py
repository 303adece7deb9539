"""Deleting a network against jobs taking addresses in it, on a real Redis (store_ipam.py):
a job started while `rnx network delete` read every record ran on a network no longer
defined (fleet run). The delete and an allocation are each one script: the delete refuses
while a job that has not ended holds an address, and an allocation refuses a network no
longer defined, so one or the other comes first."""

from __future__ import annotations

import time

import pytest

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.store import Store
from joblet.api.store_ipam import IpamStore
from joblet.errors import NotFound


@pytest.fixture
def stores(redis_sock: str) -> tuple[Store, IpamStore]:
    prefix = f"netdel{time.time_ns()}:"
    store = Store(redis_sock, prefix)
    return store, IpamStore(redis_sock, prefix, store.redis)


def test_a_network_goes_only_once_no_job_holds_an_address_in_it(stores: tuple[Store, IpamStore]) -> None:
    store, ipam = stores
    job = JobRecord(id="a" * 32, status=JobStatus.RUNNING, spec=JobSpec(command="true", network=("app",)), created=1)
    store.create_job(job)
    store.redis.hset(store.keys.networks, "app", "{}")
    assert ipam.allocate("app", 10, 20, job.id) == 10
    assert ipam.allocate("app", 10, 20, "e" * 32) == 11  # a job whose record is gone: its address goes

    assert ipam.delete_network("app") == [job.id]  # refused: nothing deleted
    assert store.redis.hexists(store.keys.networks, "app") and ipam.allocations("app") == {10: job.id}

    store.transition(job.id, [JobStatus.RUNNING], status=JobStatus.COMPLETED)
    assert ipam.delete_network("app") == []
    assert not store.redis.hexists(store.keys.networks, "app")
    assert not store.redis.exists(store.keys.ipam("app"), store.keys.ipam_cursor("app"))


def test_no_address_is_given_in_a_network_no_longer_defined(stores: tuple[Store, IpamStore]) -> None:
    _, ipam = stores
    with pytest.raises(NotFound, match='network "gone" was deleted'):
        ipam.allocate("gone", 10, 20, "b" * 32)
    assert ipam.allocations("gone") == {}
    assert ipam.allocate("bridge", 10, 20, "b" * 32) == 10  # the control: a built-in one has no definition
