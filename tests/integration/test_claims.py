"""A job's claim and its final record on a real Redis, each one script: a job is claimed at
most once, its record is written only if absent, a stop asked before the claim is seen; the
final fields are set only from an allowed status and every key of the job expires."""

from __future__ import annotations

import time

import pytest

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.store import Store
from joblet.worker.claims import Claims

WAITING_OR_RUNNING = (JobStatus.PENDING, JobStatus.RUNNING)


@pytest.fixture
def claims(redis_sock: str) -> Claims:
    return Claims(Store(redis_sock, f"claims{time.time_ns()}:"))


def _record(job_id: str, **fields: object) -> JobRecord:
    return JobRecord(id=job_id, status=JobStatus.PENDING, spec=JobSpec(command="true"), created=1.0, **fields)


def test_a_job_is_recorded_if_absent_and_claimed_once(claims: Claims) -> None:
    job_id = "a" * 32
    first = claims.claim(_record(job_id, name="web"), "n1")
    assert first is not None and first.record.name == "web" and first.record.status == JobStatus.PENDING
    assert not first.stop_requested
    assert claims.store.claim_holder(job_id) == "n1"
    assert claims.claim(_record(job_id), "n2") is None  # a redelivery: not run again
    assert claims.store.claim_holder(job_id) == "n1"
    assert claims.store.claim_holders([job_id, "c" * 32, job_id]) == ["n1", None, "n1"]  # in one round trip
    assert claims.store.claim_holders([]) == []


def test_a_record_the_client_wrote_is_kept_and_a_stop_is_seen(claims: Claims) -> None:
    job_id = "b" * 32
    claims.store.create_job(_record(job_id, name="from-client"))
    claims.store.request_stop(job_id)
    got = claims.claim(_record(job_id, name="from-message"), "n1")
    assert got is not None and got.record.name == "from-client" and got.stop_requested


def test_the_final_record_is_set_from_an_allowed_status_only_and_expires(claims: Claims) -> None:
    job_id, store = "c" * 32, claims.store
    claims.claim(_record(job_id), "n1")
    store.append_output(job_id, b"out", b"hi", 100)
    done, record = claims.finish(job_id, None, WAITING_OR_RUNNING, 600, status=JobStatus.COMPLETED, exit_code=0)
    assert done and record is not None and record.status == JobStatus.COMPLETED and record.exit_code == 0
    keys = (store.keys.job(job_id), store.keys.log(job_id), store.keys.claim(job_id))
    assert all(0 < store.redis.ttl(k) <= 600 for k in keys)
    again, record = claims.finish(job_id, None, WAITING_OR_RUNNING, 600, status=JobStatus.FAILED, exit_code=1)
    assert not again and record is not None and record.status == JobStatus.COMPLETED  # not written over
    assert claims.finish("d" * 32, None, WAITING_OR_RUNNING, 600, status=JobStatus.FAILED) == (False, None)


def test_a_workflow_jobs_keys_wait_for_the_workflows_end(claims: Claims) -> None:
    """Its later steps read the records of its ended jobs: they expire with the workflow."""
    job_id, store = "9" * 32, claims.store
    claims.claim(_record(job_id, workflow="w" * 32), "n1")
    done, _ = claims.finish(job_id, None, WAITING_OR_RUNNING, 600, status=JobStatus.COMPLETED, exit_code=0)
    store.end_output(job_id, {"status": "COMPLETED"}, 100, 600)
    assert done and [store.redis.ttl(k) for k in (store.keys.job(job_id), store.keys.log(job_id))] == [-1, -1]
    store.redis.expire(store.keys.job(job_id), 300)  # the workflow's end
    store.redis.delete(store.keys.log(job_id))
    store.end_output(job_id, {"status": "COMPLETED"}, 100, 600)  # a stream made after: its record's TTL
    assert 0 < store.redis.ttl(store.keys.log(job_id)) <= 300


def test_a_claim_of_a_job_that_ended_expires_with_its_record(claims: Claims) -> None:
    """Stopped while queued, then its message taken: the claim made then never expired."""
    job_id, live, store = "e" * 32, "f" * 32, claims.store
    store.create_job(_record(job_id))
    assert store.stop_job(job_id, 100, 600)  # STOPPED at once, every key expiring
    got = claims.claim(_record(job_id), "n1")
    assert got is not None and got.record.status == JobStatus.STOPPED
    assert 0 < store.redis.ttl(store.keys.claim(job_id)) <= 600
    claims.claim(_record(live), "n1")  # the control: a live job's claim lasts until its end
    assert store.redis.ttl(store.keys.claim(live)) == -1


def test_the_read_backs_leave_the_stored_spec_in_redis_when_the_worker_has_it(claims: Claims) -> None:
    """The spec (with its uploads) does not come back from Redis when the worker passes the
    one it checked; the record carries that one, every other field is read back."""
    job_id, store = "e" * 32, claims.store
    stored = _record(job_id, name="client").replace(spec=JobSpec(command="echo", args=("stored",)))
    store.create_job(stored)
    ran = JobSpec(command="echo", args=("checked",))
    got = claims.claim(_record(job_id).replace(spec=ran), "n1")
    assert got is not None and got.record.spec is ran and got.record.name == "client"
    done, record = claims.finish(job_id, ran, WAITING_OR_RUNNING, 600, status=JobStatus.COMPLETED, exit_code=0)
    assert done and record is not None and record.spec is ran and record.exit_code == 0 and record.name == "client"
    keys = [store.keys.job(job_id), store.keys.log(job_id), store.keys.claim(job_id), store.keys.stop(job_id)]
    args = ['["COMPLETED"]', "{}", 600, "0", store.keys.name(""), job_id]
    _, flat = claims._finish(keys=[*keys, store.keys.live], args=args)
    assert b"spec" not in flat[::2] and b"name" in flat[::2]  # the uploads stay in Redis
    _, whole = claims.finish(job_id, None, WAITING_OR_RUNNING, 600, status=JobStatus.FAILED)
    assert whole is not None and whole.spec.args == ("stored",)  # without one: the stored spec
    assert store.find_job(job_id).spec.args == ("stored",)  # never written over


def test_a_claim_sent_again_after_a_lost_reply_is_the_same_claim(claims: Claims) -> None:
    """redis-py resends a command whose reply it lost (retry_on_timeout), though Redis ran it:
    the resent claim finds its own token and gets the job; it read as a duplicate, and the
    job, claimed by nobody that ran it, stayed PENDING."""
    job_id = "e" * 32
    call = claims.claim_call(_record(job_id), "n1", "token-1")
    first, resent = claims._claim(**call), claims._claim(**call)
    assert first and resent and resent[1] == first[1]  # the same claim, twice
    assert claims.claim(_record(job_id), "n1") is None  # the control: another delivery is refused
    assert claims.store.claim_holder(job_id) == "n1"


def test_a_claim_of_this_node_that_nothing_here_runs_is_taken_over(claims: Claims) -> None:
    """A delivery whose claim ran but whose reply never came (longer than the worker waited)
    left the job claimed by its node and PENDING; the redelivery was refused as a replay and
    the job waited for good. The node that holds the claim takes it over while the job waits
    (the worker asks only for claims it runs nothing of); no other node does, nor once it ran."""
    job_id = "e" * 32
    assert claims.claim(_record(job_id), "n1", "token-1") is not None
    assert claims.claim(_record(job_id), "n1", "token-2") is None  # the control: refused without retake
    assert claims.claim(_record(job_id), "n2", "token-3", retake=True) is None  # another node's
    again = claims.claim(_record(job_id), "n1", "token-4", retake=True)
    assert again is not None and again.record.status == JobStatus.PENDING
    assert claims.claim(_record(job_id), "n1", "token-4") is not None  # the new token is the claim's now
    claims.finish(job_id, None, WAITING_OR_RUNNING, 600, status=JobStatus.RUNNING)
    assert claims.claim(_record(job_id), "n1", "token-5", retake=True) is None  # it runs: not again


def test_a_claim_in_flight_on_another_place_under_the_same_name_is_not_taken_over(claims: Claims) -> None:
    """Two workers under one node name (cloned hosts): one claimed the job and sets it up
    (PENDING still); a redelivery to the other took the claim over and the job ran twice.
    A token names its worker's place: only that place takes its claim over."""
    job_id = "f" * 32
    assert claims.claim(_record(job_id), "n1", "placeA:1") is not None
    assert claims.claim(_record(job_id), "n1", "placeB:2", retake=True) is None  # the other host
    assert claims.claim(_record(job_id), "n1", "placeA:3", retake=True) is not None  # the control: its own


def test_an_address_allocation_sent_again_after_a_lost_reply_takes_one_address(redis_sock: str) -> None:
    """The same for IPAM: a resent allocation returns the address its first run took; it
    took a second one, and the first stayed held by the job until a worker restart."""
    from joblet.api.store_ipam import IpamStore

    ipam = IpamStore(redis_sock, f"ipam{time.time_ns()}:")
    ipam.redis.hset(ipam.keys.networks, "net1", "{}")  # defined: an address is given only then
    call = ipam.allocate_call("net1", 10, 20, "job-a", "token-1")
    first, resent = ipam._allocate(**call), ipam._allocate(**call)
    assert first == resent == b"10" and ipam.allocations("net1") == {10: "job-a"}
    assert ipam.allocate("net1", 10, 20, "job-a") == 11  # the control: a call of its own takes another
    assert ipam.allocations("net1") == {10: "job-a", 11: "job-a"}


def test_an_address_held_again_after_redis_forgot_it_is_held_or_names_its_holder(redis_sock: str) -> None:
    """IpamStore.hold (restore.py): the owner holds the address, else the job that does is
    named, in one step: HSETNX then HGET read nothing when that job released it in between,
    and the address was said held by one that did not hold it (review)."""
    from joblet.api.store_ipam import IpamStore

    ipam = IpamStore(redis_sock, f"ipam{time.time_ns()}:")
    assert ipam.hold("net1", 10, "job-a") is None and ipam.allocations("net1") == {10: "job-a"}
    assert ipam.hold("net1", 10, "job-a") is None  # its own already: held
    assert ipam.hold("net1", 10, "job-b") == "job-a"  # another's: named, not taken
    assert ipam.allocations("net1") == {10: "job-a"}
    assert ipam.release("net1", 10, "job-a")
    assert ipam.hold("net1", 10, "job-b") is None and ipam.allocations("net1") == {10: "job-b"}  # free: taken
