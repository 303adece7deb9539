"""Live nodes are read through the node index, not by scanning the keyspace."""

from __future__ import annotations

import uuid

from joblet.api.store import Store


def test_live_nodes_come_from_the_index(redis_sock):
    store = Store(redis_sock, f"n{uuid.uuid4().hex[:6]}:")
    store.heartbeat("alive", {"jobs": 1}, ttl=30)
    store.redis.zadd(store.keys.node_index, {"ghost": 0})  # indexed, but its key is gone: not live
    store.redis.set(store.keys.node("unindexed"), b'{"jobs": 0}')  # a key the index does not name
    live = store.live_nodes()
    assert list(live) == ["alive"] and live["alive"]["jobs"] == 1 and "beat" in live["alive"]
    store.drop_node("alive")
    assert store.redis.zscore(store.keys.node_index, "alive") is None and store.live_nodes() == {}


def test_without_an_index_the_keyspace_is_scanned(redis_sock):
    """Workers of an older joblet write only their own key."""
    store = Store(redis_sock, f"n{uuid.uuid4().hex[:6]}:")
    store.redis.set(store.keys.node("old"), b'{"jobs": 2}', ex=30)
    assert store.live_nodes() == {"old": {"jobs": 2}}


def test_long_silent_nodes_leave_the_index(redis_sock):
    store = Store(redis_sock, f"n{uuid.uuid4().hex[:6]}:")
    store.redis.zadd(store.keys.node_index, {"gone": 1.0})  # expired in 1970
    store.heartbeat("alive", {}, ttl=30)
    assert [n.decode() for n in store.redis.zrange(store.keys.node_index, 0, -1)] == ["alive"]


def test_a_node_down_for_good_is_forgotten_once_its_jobs_are_lost(redis_sock):
    """Nodes stopped for good stayed in `rnx nodes` and in every placement refusal, with no
    way to drop them (fleet run). A node that is up, or down with jobs not yet swept LOST,
    is not forgotten; a beat between the read and the removal keeps it. A node down with no
    unfinished job goes at once (a clean stop with no other worker alive: no sweep came)."""
    import json
    import time

    import pytest

    from joblet.api.client import Client
    from joblet.api.models import JobRecord, JobSpec, JobStatus
    from joblet.api.store_nodes import NodeStore
    from joblet.config import load
    from joblet.errors import Conflict, NotFound

    client = Client(load(redis_url=redis_sock, key_prefix=f"n{uuid.uuid4().hex[:6]}:"))
    store, nodes = client.store, NodeStore(redis_sock, client.settings.key_prefix, client.store.redis)
    gone_beat = time.time() - 3600
    store.redis.hset(store.keys.nodes, "gone", json.dumps({"node": "gone", "beat": gone_beat}))
    store.heartbeat("alive", {"jobs": 0}, ttl=30)  # its presence and its record
    store.create_job(JobRecord(id="9" * 32, status=JobStatus.RUNNING, spec=JobSpec(command="true"), node="gone"))
    store.live_jobs()  # the index of jobs that have not ended is whole, but an older worker's
    store.redis.zrem(store.keys.live, "9" * 32)  # claim is not in it: "gone" never said indexes_live
    store.redis.hset(store.keys.nodes, "idle", json.dumps({"node": "idle", "beat": gone_beat, "left": True}))
    nodes.set_drain("gone", True)
    with pytest.raises(Conflict, match="'alive' is up: stop its worker first"):
        client.forget_node("alive")
    with pytest.raises(Conflict, match=r"'gone' is down with 1 unfinished job\(s\) \(999999999999\): rnx stop"):
        client.forget_node("gone")
    client.forget_node("idle")  # down, nothing of it unfinished: no sweep to wait for
    with pytest.raises(NotFound, match="no node 'gonne' in the fleet"):
        client.forget_node("gonne")
    store.count_drop("gone", "unsigned")  # messages its worker refused, counted by reason
    store.count_drop("alive", "unsigned")
    nodes.mark_swept("gone", gone_beat)  # a live worker swept its last silence (the job: as if LOST)
    assert not nodes.forget("gone", {"node": "gone", "beat": gone_beat + 1})  # another beat since: kept
    client.forget_node("gone")
    assert [n["name"] for n in client.nodes()] == ["alive"]  # the control: the live one stays
    assert "gone" not in nodes.drained() and "gone" not in nodes.swept()
    assert store.dropped("gone") == {} and store.dropped("alive") == {"unsigned": 1}  # with its counts
