"""Node records that do not read, written to a real Redis by other means than a worker: the
others still list and place, the bad one is left out with a warning (red-team run: one such
entry in the nodes hash or one presence key failed every rnx run, rnx nodes and rnx node
forget with a traceback, and every worker's sweep of lost nodes)."""

from __future__ import annotations

import json
import logging
import time

import pytest

from joblet.api.client import Client
from joblet.api.models import make_spec
from joblet.api.store_nodes import NodeStore
from joblet.config import load
from joblet.errors import NotFound

BAD = ["notjson", "[1, 2]", '{"beat": "abc"}', '{"beat": 1, "left": "x"}', '{"beat": 1e300}', "[" * 100_000]


@pytest.fixture
def client(redis_sock: str) -> Client:
    return Client(load(redis_url=redis_sock, key_prefix=f"nodes{time.time_ns()}:", node="good"))


@pytest.mark.parametrize("raw", BAD)
def test_a_node_record_that_does_not_read_is_left_out(client: Client, caplog, raw: str) -> None:
    store, keys = client.store, client.store.keys
    store.heartbeat("good", {"node": "good", "jobs": 0, "concurrency": 4, "runtimes": []}, ttl=30)
    store.redis.hset(keys.nodes, "evil", raw)
    store.redis.set(keys.node("evil"), raw, ex=30)
    store.redis.zadd(keys.node_index, {"evil": time.time() + 30})
    store.redis.hset(keys.lost_swept, "evil", raw)
    nodes = NodeStore(client.settings.redis_url, client.settings.key_prefix, store.redis)
    with caplog.at_level(logging.WARNING):
        assert [row["name"] for row in client.nodes()] == ["good"]
    assert "node record 'evil' does not read" in caplog.text
    assert list(nodes.records()) == ["good"]  # what every worker's lost-node sweep reads
    assert list(nodes.swept()) == []
    assert list(store.live_nodes()) == ["good"]
    spec, node = client.preflight.check_and_place(make_spec("true"))  # rnx run's placement
    assert node == "good"
    good = json.loads(store.redis.hget(keys.nodes, "good"))
    assert not nodes.forget("evil", good)  # the bad one is not taken for another's record
    client.forget_node("evil")  # listed nowhere, it is forgotten by name (only redis-cli HDEL did)
    assert store.redis.hget(keys.nodes, "evil") is None and list(nodes.records()) == ["good"]
    with pytest.raises(NotFound, match="no node 'evil' in the fleet"):  # gone: named no more
        client.forget_node("evil")
