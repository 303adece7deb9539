"""Job ids given by a user, resolved on a real Redis: a whole id is one lookup, a prefix or a
name still finds its one job (or says it is ambiguous or unknown)."""

from __future__ import annotations

import json
import time

import pytest

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.store import Store
from joblet.errors import AmbiguousId, NotFound, ValidationError

IDS = ("abcd" + "1" * 28, "abcd" + "2" * 28, "ef" + "3" * 30)  # two share a prefix


def _zrange_calls(store: Store) -> int:
    stats = store.redis.info("commandstats")
    return int(stats.get("cmdstat_zrange", {}).get("calls", 0))


@pytest.fixture
def store(redis_sock: str) -> Store:
    made = Store(redis_sock, f"resolve{time.time_ns()}:")
    for job_id, name in zip(IDS, ("web", None, None), strict=True):
        spec = JobSpec(command="true", name=name)
        made.create_job(JobRecord(id=job_id, status=JobStatus.PENDING, spec=spec, name=name))
    return made


def test_a_whole_id_is_one_lookup_and_a_prefix_reads_the_index(store: Store) -> None:
    before = _zrange_calls(store)
    assert [store.resolve(i) for i in IDS] == list(IDS)
    assert _zrange_calls(store) == before  # no read of every job kept
    assert store.resolve(IDS[2][:12]) == IDS[2]  # positive control: a short id does read it
    assert _zrange_calls(store) == before + 1


def test_prefixes_names_and_unknown_ids(store: Store) -> None:
    assert store.resolve("abcd1") == IDS[0]
    assert store.resolve("web") == IDS[0]
    with pytest.raises(AmbiguousId, match="matches 2 jobs"):
        store.resolve("abcd")
    with pytest.raises(NotFound, match="no such job"):
        store.resolve("f" * 32)  # well formed, never made


def test_a_record_an_older_version_wrote_does_not_hide_the_others(store: Store, caplog) -> None:
    """Checks grow stricter between versions; a record kept for days that no longer reads is
    left out of a listing (with a warning), and reading it alone says so in one line."""
    old = "0" * 32
    spec = JobSpec(command="true").to_dict()
    spec["uploads"] = [{"path": "a"}, {"path": "a/b"}]  # accepted before uploads could clash
    store.redis.hset(
        store.keys.job(old), mapping={"id": json.dumps(old), "status": '"FAILED"', "spec": json.dumps(spec)}
    )
    store.redis.zadd(store.keys.jobs, {old: 0})
    assert sorted(r.id for r in store.list_jobs()) == sorted(IDS)  # the others still list
    assert f"job {old} left out" in caplog.text
    with pytest.raises(
        ValidationError, match=f"^the record of job {old} does not read with this version: .*is a file and the folder"
    ):
        store.get_job(old)
    assert store.get_job(IDS[0]).name == "web"


def test_workflow_ids_resolve_as_job_ids_do(store: Store) -> None:
    from joblet.api import workflow_store
    from joblet.api.workflow_store import WorkflowRecord

    for wf_id in ("c1" + "0" * 30, "c2" + "0" * 30):
        workflow_store.save(store, WorkflowRecord(id=wf_id, name="w", created=1.0, jobs={}, requires={}), 60)
    assert workflow_store.get(store, "c1").id == "c1" + "0" * 30  # a prefix of one: found
    with pytest.raises(AmbiguousId, match="workflow id prefix 'c' matches 2 workflows"):
        workflow_store.get(store, "c")
    with pytest.raises(ValidationError, match="no workflow id given"):  # "" is a prefix of every id
        workflow_store.get(store, "")
    with pytest.raises(ValidationError, match="no job id given"):  # a usage error (rnx: exit 2), as for a job
        store.resolve("")
    with pytest.raises(NotFound, match="no such workflow: d"):
        workflow_store.get(store, "d")


def test_a_name_an_older_version_holds_in_its_own_case_is_still_in_use(store: Store) -> None:
    old = "9" * 32  # running under a worker that wrote the name key as given
    store.create_job(JobRecord(id=old, status=JobStatus.RUNNING, spec=JobSpec(command="true", name="Web"), name="Web"))
    store.redis.set(store.keys.prefix + "name:Web", old)
    new = JobRecord(id="8" * 32, status=JobStatus.PENDING, spec=JobSpec(command="true", name="Web"), name="Web")
    assert store.create_named_job(new) == old
    other = JobRecord(id="7" * 32, status=JobStatus.PENDING, spec=JobSpec(command="true", name="Api"), name="Api")
    assert store.create_named_job(other) is None  # the control: a free name is taken


def test_a_named_create_sent_again_is_not_its_own_names_holder(store: Store) -> None:
    """A connection that broke after the script ran and before its reply: the client sent it
    again, which found the job itself holding the name, and rnx said "'web' is in use by job
    <its own id>", leaving the record PENDING with no message, holding the name (review)."""
    job = JobRecord(id="6" * 32, status=JobStatus.PENDING, spec=JobSpec(command="true", name="Db"), name="Db")
    assert store.create_named_job(job) is None
    assert store.create_named_job(job) is None  # sent again: taken, once
    other = JobRecord(id="5" * 32, status=JobStatus.PENDING, spec=JobSpec(command="true", name="Db"), name="Db")
    assert store.create_named_job(other) == job.id  # the control: another job is refused


def test_an_expired_workflow_does_not_make_a_prefix_ambiguous(store: Store) -> None:
    from joblet.api import workflow_store
    from joblet.api.workflow_store import WorkflowRecord

    for wf_id in ("e1" + "0" * 30, "e2" + "0" * 30):
        workflow_store.save(store, WorkflowRecord(id=wf_id, name="w", created=1.0, jobs={}, requires={}), 60)
    store.redis.delete(store.keys.workflow("e2" + "0" * 30))  # expired; its index entry stays
    assert workflow_store.get(store, "e").id == "e1" + "0" * 30


def test_a_workflow_jobs_name_comes_before_an_id_it_begins(store: Store) -> None:
    """A workflow job's name has no key of its own; a name that also begins job ids ("abcd",
    as "6c4d" or "db" can) found those ids first: `rnx stop abcd` stopped another job, or said
    two matched (red-team run). A name first, as the README says."""
    wf_job = "9" * 32
    spec = JobSpec(command="true", name="abcd")
    store.create_job(JobRecord(id=wf_job, status=JobStatus.RUNNING, spec=spec, name="abcd", workflow="f" * 32))
    whole = int(store.redis.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))
    assert store.resolve("abcd") == wf_job
    assert int(store.redis.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0)) == whole  # names only
    assert store.resolve("ABCD") == wf_job  # names are matched in lower case
    assert store.resolve("abcd1") == IDS[0]  # the control: an id prefix no name holds
    with pytest.raises(AmbiguousId, match="matches 2 jobs"):
        store.resolve("abc")  # no job is named so: the ids it begins


def test_a_name_keys_job_gives_way_to_a_newer_workflows_job_of_that_name(store: Store) -> None:
    """`rnx run --name=build`, then a workflow with a `build` job: the name key still named the
    first (ended) job, so `rnx status build` showed it, not the latest job of that name."""
    from joblet.api import workflow_store
    from joblet.api.workflow_store import WorkflowRecord

    standalone, older_wf_job, newer_wf_job = "5" * 32, "6" * 32, "7" * 32
    spec = JobSpec(command="true", name="build")
    made = [(older_wf_job, 50.0), (standalone, 100.0), (newer_wf_job, 200.0)]
    for job_id, created in made:
        wf = None if job_id == standalone else "a" + job_id[1:]
        record = JobRecord(id=job_id, status=JobStatus.COMPLETED, spec=spec, name="build", created=created, workflow=wf)
        store.create_job(record)
    store.redis.set(store.keys.name("build"), standalone)

    def run(job_id: str, created: float, name: str) -> WorkflowRecord:
        return WorkflowRecord(id="a" + job_id[1:], name="w", created=created, jobs={name: job_id}, requires={})

    workflow_store.save(store, run(older_wf_job, 50.0, "Build"), 3600)
    assert store.resolve("build") == standalone  # the control: only an older workflow has one
    workflow_store.save(store, run(newer_wf_job, 200.0, "build"), 3600)
    assert store.resolve("build") == newer_wf_job
    assert store.resolve("BUILD") == newer_wf_job  # names in lower case
    store.redis.zrem(store.keys.jobs, newer_wf_job)  # its job's keys expired, the record not yet
    assert store.resolve("build") == standalone
    for i, bad in enumerate(("[1, 2]", "notjson", '{"jobs": [1]}', '{"jobs": {"build": 7}}')):
        wf_id = f"b{i}" + "0" * 30  # newer records that do not read: passed over, no traceback
        store.redis.set(store.keys.workflow(wf_id), bad)
        store.redis.zadd(store.keys.workflows, {wf_id: 300.0 + i})
    assert store.resolve("build") == standalone


def test_a_names_lookup_reads_the_newest_workflows_first_in_chunks(store: Store) -> None:
    """Workflows since the named job are read newest first, WORKFLOW_CHUNK a round trip, up to
    the newest that has a job of the name: where there is one only in the oldest chunk, and
    where the newest holds one (reading all of them once read every run after the job)."""
    from joblet.api import workflow_store
    from joblet.api.store import WORKFLOW_CHUNK
    from joblet.api.workflow_store import WorkflowRecord

    spec = JobSpec(command="true", name="deploy")
    named = "8" * 32
    store.create_job(JobRecord(id=named, status=JobStatus.COMPLETED, spec=spec, name="deploy", created=10.0))
    store.redis.set(store.keys.name("deploy"), named)
    count = 2 * WORKFLOW_CHUNK + 3

    def workflow(i: int, job_name: str) -> str:
        job_id = f"{i:02d}" + "9" * 30
        record = JobRecord(id=job_id, status=JobStatus.COMPLETED, spec=spec, name=job_name, created=20.0 + i)
        store.create_job(record)
        wf = WorkflowRecord(id=f"{i:02d}" + "e" * 30, name="w", created=20.0 + i, jobs={job_name: job_id}, requires={})
        workflow_store.save(store, wf, 3600)
        return job_id

    oldest = workflow(0, "deploy")
    for i in range(1, count):
        workflow(i, "other")
    assert store.resolve("deploy") == oldest  # past two chunks of runs without one
    newest = workflow(count, "deploy")

    def gets() -> int:
        return int(store.redis.info("commandstats").get("cmdstat_get", {}).get("calls", 0))

    before = gets()
    assert store.resolve("deploy") == newest
    assert gets() - before <= WORKFLOW_CHUNK + 1  # the newest chunk (and the name key): not all 36 runs


def test_a_name_two_jobs_have_names_the_one_still_running(redis_sock: str) -> None:
    """Two workflows' `s1` (no name key: each run has its own): `rnx stop s1` took the one a
    `workflow stop` had ended, the latest, while the other ran on (usability run)."""
    store = Store(redis_sock, f"resolve{time.time_ns()}:")
    running, ended = "a" * 32, "b" * 32  # the ended one is the latest
    for job_id, status, at in ((running, JobStatus.RUNNING, 1.0), (ended, JobStatus.STOPPED, 2.0)):
        spec = JobSpec(command="sleep", name="s1")
        store.create_job(JobRecord(id=job_id, status=status, spec=spec, name="s1", created=at, workflow="w"))
    assert store.resolve("s1") == running
    store.redis.hset(store.keys.job(running), "status", '"COMPLETED"')  # the control: both ended
    assert store.resolve("s1") == ended  # the latest, as before
