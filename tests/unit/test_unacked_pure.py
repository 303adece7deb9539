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
        (json.dumps([{"body": "x"}, "joblet", "joblet"]).encode(), "joblet"),  # Celery's send_task
        (b"not json", None),
        (json.dumps({"body": "x"}), None),
        (json.dumps([{"body": "x"}, ""]), None),
        (json.dumps([{"body": "x"}, "", 7]), None),
        ('["joblet.host.a"]', None),  # ends so, yet not an entry
        ("[" * 100_000 + '"joblet.host.a"]', None),  # nested too deeply: it raised, and no entry went back
    ],
)
def test_an_entry_names_its_queue_or_nothing(raw, queue):
    for asked in ("joblet.host.a", "joblet"):
        assert _routed_to(raw, asked) is (asked == queue)


def test_an_entry_that_fails_to_go_back_leaves_the_others_going():
    from joblet.worker.unacked import _restore

    class QoS:
        done: list[str] = []

        def restore_by_tag(self, tag: str) -> None:
            if tag == "bad":
                raise ValueError("not enough values to unpack")
            self.done.append(tag)

    qos = QoS()
    assert [_restore(qos, t) for t in ("a", "bad", "b")] == [True, False, True]
    assert qos.done == ["a", "b"]
