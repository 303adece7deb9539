"""Which of kombu's unacknowledged entries a restarted worker puts back: those of its own
node's queue only (the live path, with Redis and a killed worker, is in test_crash.py)."""

from __future__ import annotations

import json

import pytest

from joblet.worker.unacked import _routed_to


@pytest.mark.parametrize(
    ("raw", "queue"),
    [
        (json.dumps([{"body": "x"}, "", "joblet.host.a"]), "joblet.host.a"),  # joblet's own send
        (json.dumps([{"body": "x"}, "joblet", "joblet"]), "joblet"),  # Celery's send_task
        (b"not json", None),
        (json.dumps({"body": "x"}), None),
        (json.dumps([{"body": "x"}, ""]), None),
        (json.dumps([{"body": "x"}, "", 7]), None),
    ],
)
def test_an_entry_names_its_queue_or_nothing(raw, queue):
    assert _routed_to(raw) == queue
