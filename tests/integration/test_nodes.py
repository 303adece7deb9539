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
