"""A job's resource sample that does not read, written to a real Redis by other means than
its worker: `rnx stats` shows the job without figures (red-team run: a field that was not
JSON, or a figure that was text, failed every rnx stats with a traceback)."""

from __future__ import annotations

import time

import pytest

from joblet.api.stats import FIELDS, row
from joblet.api.store import Store


@pytest.fixture
def store(redis_sock: str) -> Store:
    return Store(redis_sock, f"stats{time.time_ns()}:")


@pytest.mark.parametrize("raw", ["notjson", '"abc"', "[1]", "true", "Infinity", "1e400", "[" * 100_000])
def test_a_sample_that_does_not_read_shows_no_figures(store: Store, raw: str) -> None:
    good, bad = "a" * 32, "b" * 32
    store.put_stats({good: {"memory": 5, "sampled": time.time()}, bad: {"memory": 6}}, ttl=30)
    store.redis.hset(store.keys.stats(bad), "cpu_percent", raw)
    samples = store.stats([good, bad])
    assert samples[good]["memory"] == 5  # the control
    shown = row(bad, None, "n", "RUNNING", samples.get(bad))
    assert shown["cpu_percent"] is None and all(shown[f] is None or isinstance(shown[f], int | float) for f in FIELDS)
