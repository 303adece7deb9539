"""A job's output stream on a real Redis: an entry resent with the id of its first try (the
worker's pump after a command timed out while Redis stalled) is stored once."""

from __future__ import annotations

import time

from joblet.api.store import Store


def test_an_entry_resent_with_its_id_is_stored_once(redis_sock: str) -> None:
    store, job_id = Store(redis_sock, f"out{time.time_ns()}:"), "e" * 32
    store.append_output(job_id, b"o", b"tick 3\n", 100, "1000-1")
    store.append_output(job_id, b"o", b"tick 3\n", 100, "1000-1")  # the resend: refused, not raised
    store.append_output(job_id, b"o", b"tick 4\n", 100, "1000-2")  # the control: the next one is kept
    store.end_output(job_id, {"status": "COMPLETED"}, 100, 600, "1000-3")
    store.redis.persist(store.keys.log(job_id))
    store.end_output(job_id, {"status": "COMPLETED"}, 100, 600, "1000-3")  # its resend still sets the TTL
    got = [(entry_id, data) for entry_id, _, data in store.read_output(job_id, "0-0", None)]
    assert got == [("1000-1", b"tick 3\n"), ("1000-2", b"tick 4\n"), ("1000-3", b'{"status": "COMPLETED"}')]
    assert 0 < store.redis.ttl(store.keys.log(job_id)) <= 600
    store.append_output(job_id, b"o", b"late\n", 100)  # any other writer: Redis's own ids
    assert len(store.read_output(job_id, "0-0", None)) == 4
    store.redis.delete(store.keys.log(job_id))
