"""A workflow record that does not read, written to a real Redis by other means: the other
workflows still list, and the bad one says so in one line where it is asked for (red-team
run: one such record failed every `rnx workflow list`)."""

from __future__ import annotations

import json
import logging
import time

import pytest

from joblet.api.client import Client
from joblet.config import load
from joblet.errors import ValidationError


@pytest.fixture
def client(redis_sock: str) -> Client:
    return Client(load(redis_url=redis_sock, key_prefix=f"wfs{time.time_ns()}:"))


@pytest.mark.parametrize("raw", ["notjson", '{"id": 5}', "[" * 100_000])
def test_a_workflow_record_that_does_not_read_is_left_out_of_the_list(client: Client, caplog, raw: str) -> None:
    r, keys, now = client.store.redis, client.store.keys, time.time()
    good, bad = "a" * 32, "b" * 32
    record = {"id": good, "name": "good", "created": now, "jobs": {}, "requires": {}, "services": []}
    r.set(keys.workflow(good), json.dumps(record))
    r.set(keys.workflow(bad), raw)
    r.zadd(keys.workflows, {good: now, bad: now + 1})
    with caplog.at_level(logging.WARNING):
        assert [w["id"] for w in client.workflows.list()] == [good]
    assert f"workflow {bad}: its record does not read" in caplog.text
    with pytest.raises(ValidationError, match=f"^workflow {bad}: its record does not read"):
        client.workflows.status(bad)
