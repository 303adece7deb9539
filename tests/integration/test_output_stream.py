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


def test_a_follower_of_a_job_whose_end_marker_never_came_ends(redis_sock: str, monkeypatch) -> None:
    """A worker killed between a job's final record and its end marker (the pump writes the
    marker after the record), or Redis gone between those two writes: `rnx run` and `rnx log
    -f` waited for good (review). A follower ends once the record has been final END_GRACE
    with no marker; one of a job that has not ended follows on (the control)."""
    import threading

    from joblet.api import store_output
    from joblet.api.models import JobRecord, JobSpec, JobStatus

    monkeypatch.setattr(store_output, "END_GRACE", 0.6)
    monkeypatch.setattr(store_output, "END_LOOK", 0.1)
    store, job_id = Store(redis_sock, f"out{time.time_ns()}:"), "f" * 32
    store.create_job(JobRecord(id=job_id, status=JobStatus.RUNNING, spec=JobSpec(command="true")))
    store.append_output(job_id, b"o", b"last words\n", 100)
    seen: list[tuple[bytes, bytes]] = []
    follower = threading.Thread(target=lambda: seen.extend(store.follow_output(job_id, True, block_ms=100)))
    follower.start()
    follower.join(timeout=2.0)
    assert follower.is_alive() and (b"o", b"last words\n") in seen  # RUNNING: followed on
    assert store.transition(job_id, [JobStatus.RUNNING], status=JobStatus.COMPLETED, finished=time.time())
    follower.join(timeout=10)
    assert not follower.is_alive()  # final, no marker: it ended
    store.redis.delete(store.keys.job(job_id), store.keys.log(job_id))


def test_a_kept_outcome_of_a_job_recorded_final_still_gets_its_end_marker(redis_sock: str) -> None:
    """settle() took a final record for proof that the stream had its marker; the pump writes
    the marker after the record, and a worker killed between the two left none (review)."""
    from joblet.api.keys import END_FIELD
    from joblet.api.models import JobRecord, JobSpec, JobStatus
    from joblet.config import load
    from joblet.worker.records import Records

    store, job_id = Store(redis_sock, f"out{time.time_ns()}:"), "d" * 32
    store.create_job(JobRecord(id=job_id, status=JobStatus.COMPLETED, spec=JobSpec(command="true"), exit_code=0))
    kept = {"status": "COMPLETED", "exit_code": 0, "signal": None, "error": None, "finished": time.time()}
    assert Records(store, load(redis_url=redis_sock)).settle(job_id, kept)
    fields = [field for _, field, _ in store.read_output(job_id, "0-0", None)]
    assert fields == [END_FIELD]
    assert store.get_job(job_id).status == JobStatus.COMPLETED  # the control: the record as it was
    store.redis.delete(store.keys.job(job_id), store.keys.log(job_id))
