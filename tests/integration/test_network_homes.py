"""Where a user network's jobs are, on a real Redis (store_homes.py): a job queued for a node
counts there before it runs, its entry goes when it joins the network's members, and a read
drops the entries of jobs that ended without running or whose records expired."""

from __future__ import annotations

import time

import pytest

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.store import Store
from joblet.api.store_ipam import IpamStore


@pytest.fixture
def store(redis_sock: str) -> Store:
    return Store(redis_sock, f"homes{time.time_ns()}:")


def _job(n: int, node: str | None, *networks: str, name: str | None = None) -> JobRecord:
    spec = JobSpec(command="true", network=networks or ("bridge",), name=name)
    return JobRecord(id=f"{n:032x}", status=JobStatus.PENDING, spec=spec, name=name, node=node, created=n)


def _placed(store: Store, network: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in store.redis.hgetall(store.keys.placed(network)).items()}


def test_jobs_queued_for_a_node_count_there_until_they_run(store: Store) -> None:
    store.create_job(_job(1, "a", "app"))
    store.create_jobs([_job(2, "b", "app", "db"), _job(3, None, "app"), _job(4, "c", "bridge")])
    store.create_job(_job(6, "e", "app"), placed=False)  # a fleet of one node: nothing reads it
    store.create_jobs([_job(7, "e", "app")], placed=False)
    assert store.create_named_job(_job(8, "e", "app", name="one"), placed=False) is None
    assert store.create_named_job(_job(5, "d", "db", name="web")) is None
    assert store.network_homes(["app", "db", "other"]) == {"app": {"a", "b"}, "db": {"b", "d"}, "other": set()}
    assert store.redis.keys(f"{store.keys.prefix}placed:bridge") == []  # built-in networks: nothing kept

    store.join_networks(f"{1:032x}", {"app": "10.1.0.2"}, ["one"], node="a")
    assert f"{1:032x}" not in _placed(store, "app")  # running: its members entry says where
    assert store.network_homes(["app"]) == {"app": {"a", "b"}}
    store.leave_networks(f"{1:032x}", ["app"])
    assert store.network_homes(["app"]) == {"app": {"b"}}  # ended: nowhere


def test_a_read_drops_jobs_that_ended_without_running(store: Store) -> None:
    store.create_jobs([_job(1, "a", "app"), _job(2, "b", "app"), _job(3, "c", "app")])
    assert store.stop_job(f"{1:032x}", cap=100, ttl=600)  # stopped while queued
    store.redis.delete(store.keys.job(f"{2:032x}"))  # its record expired
    assert store.network_homes(["app"]) == {"app": {"c"}}
    assert _placed(store, "app") == {f"{3:032x}": "c"}  # the control: the queued one stays

    store.mark_placed(f"{9:032x}", ["app", "none"], "e")  # a workflow's job, queued later
    assert _placed(store, "app")[f"{9:032x}"] == "e"
    ipam = IpamStore(store.url, store.keys.prefix, store.redis)
    store.redis.hset(store.keys.networks, "app", "{}")  # defined (its fields are not read here)
    assert ipam.allocate("app", 2, 9, f"{3:032x}") == 2  # job 3 took an address: it holds the network
    assert ipam.delete_network("app") == [f"{3:032x}"]
    assert f"{9:032x}" in _placed(store, "app")  # the control: a refused delete keeps them
    assert ipam.release("app", 2, f"{3:032x}")
    assert ipam.delete_network("app") == []  # deleted: where its jobs were placed goes with it
    assert _placed(store, "app") == {} and not store.redis.hexists(store.keys.networks, "app")


def test_a_network_is_held_by_one_submitter_at_a_time(store: Store) -> None:
    """Two submitters at once each read no home and placed on two nodes: each holds the
    network while it places and writes. The second waits for the first to let go; a built-in
    network is not held; a holder that died lets go by itself (HOLD_MS)."""
    import threading

    from joblet.api import store_homes

    order: list[str] = []
    first_in, first_out = threading.Event(), threading.Event()

    def first() -> None:
        with store.holding_networks(["app", "bridge"]):
            order.append("first in")
            first_in.set()
            first_out.wait(10)
            order.append("first out")

    def second() -> None:
        first_in.wait(10)
        with store.holding_networks(["app"]):
            order.append("second in")

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    first_in.wait(10)
    assert store.redis.exists(store.keys.placing("app")) and not store.redis.exists(store.keys.placing("bridge"))
    first_out.set()
    for t in threads:
        t.join(10)
    assert order == ["first in", "first out", "second in"]
    assert not store.redis.exists(store.keys.placing("app"))  # let go
    store.redis.set(store.keys.placing("gone"), "a dead holder's", px=200)  # the control: held by another
    with store.holding_networks(["gone"]):  # waits out its expiry, then holds it
        assert store.redis.get(store.keys.placing("gone")) != b"a dead holder's"
    assert store_homes.HOLD_MS < store_homes.HOLD_WAIT * 1000  # a dead holder is waited out, not gone around
