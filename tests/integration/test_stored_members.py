"""Members entries that do not read, written to a real Redis by other means than a worker:
the network's other jobs still resolve, and its placement and overlay still read (red-team
run: one such entry failed every job's start in its network with an internal error, and
its running jobs' /etc/hosts were no longer refreshed)."""

from __future__ import annotations

import time

import pytest

from joblet.api.store import Store

BAD = [
    "notjson",
    "[1]",
    '{"ip": 5, "names": ["x"]}',
    '{"ip": "10.9.0.9", "names": "abc"}',
    '{"ip": "10.9.0.9", "names": []}',
    '{"ip": "10.9.0.9", "names": ["x"], "node": {}}',
    "[" * 100_000,
]


@pytest.fixture
def store(redis_sock: str) -> Store:
    return Store(redis_sock, f"members{time.time_ns()}:")


@pytest.mark.parametrize("raw", BAD)
def test_a_members_entry_that_does_not_read_is_left_out(store: Store, raw: str) -> None:
    good = "a" * 32
    store.join_networks(good, {"app": "10.9.0.2"}, [good[:12], "web"], "nodea")
    store.redis.hset(store.keys.members("app"), "b" * 32, raw)
    assert store.members(["app"]) == {"web": "10.9.0.2", good[:12]: "10.9.0.2"}  # each job's /etc/hosts
    assert store.member_nodes(["app"]) == {"app": {good: "nodea"}}  # the overlay's entries
    assert store.network_homes(["app"]) == {"app": {"nodea"}}  # placement in a fleet
