"""Every Redis key of a job expires `log_ttl` after its end, whichever way it ended, and none
before; so do a workflow's keys after its last job, and a deleted network's address keys go.

The worker and the client run with log_ttl 60 s (the least), so an expiring key reads a TTL
in (0, 60] and one left without an expiry reads -1, at once: nothing waits for the TTL.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from joblet.api.store_ipam import IpamStore
from joblet.api.tasks import send_run
from joblet.errors import Conflict
from tests.conftest import Host, running_host
from tests.integration.helpers import eventually, run

TTL = 60


@pytest.fixture(scope="module")
def host(redis_sock: str) -> Iterator[Host]:
    yield from running_host(redis_sock, "expiry", log_ttl=str(TTL), message_ttl=str(TTL), visibility_timeout=str(TTL))


@pytest.fixture(scope="module")
def client(host: Host) -> Client:
    return Client(host.cfg)


def ttls(client: Client, job_id: str) -> dict[str, int]:
    """The TTL of each key of the job that exists, by kind (-1: it never expires)."""
    keys, redis = client.store.keys, client.store.redis
    named = {"job": keys.job(job_id), "log": keys.log(job_id), "claim": keys.claim(job_id), "stop": keys.stop(job_id)}
    return {kind: redis.ttl(key) for kind, key in named.items() if redis.exists(key)}


def expiring(client: Client, job_id: str, *kinds: str) -> None:
    """The job's keys are these kinds, each expiring within the TTL."""
    found = ttls(client, job_id)
    assert set(found) == set(kinds) and all(0 < t <= TTL for t in found.values()), found


def wait_running(client: Client, job_id: str) -> None:
    eventually(lambda: client.get(job_id).status == JobStatus.RUNNING, f"job {job_id[:12]} never ran")


def ended(client: Client, job_id: str) -> JobStatus:
    """Its status once its stream's end marker is there (written after the final record)."""
    for _ in client.logs(job_id, follow=True):
        pass
    return client.get(job_id).status


def test_a_jobs_keys_expire_after_its_end_with_output_or_none(client: Client) -> None:
    """The stream of a job that printed nothing never expired: the end marker made it after
    the final record had given the job's keys their TTL."""
    silent, _, _ = run(client, "true", network="none")
    assert ended(client, silent.id) == JobStatus.COMPLETED
    expiring(client, silent.id, "job", "log", "claim")  # its stream: -1 (the end marker made it)
    printed, out, _ = run(client, "echo", "hi", network="none")  # the control: its stream was there
    assert out == b"hi\n"
    expiring(client, printed.id, "job", "log", "claim")
    running = client.run("sleep", ("300",), network="none")
    wait_running(client, running.id)
    assert ttls(client, running.id) == {"job": -1, "claim": -1}  # nothing expires before its end
    client.stop(running.id)  # its stop flag is a key of the job too
    assert ended(client, running.id) == JobStatus.STOPPED
    expiring(client, running.id, "job", "log", "claim", "stop")
    client.stop(silent.id)  # a stop of an ended job: its flag goes with the record
    expiring(client, silent.id, "job", "log", "claim", "stop")


def test_a_refused_jobs_keys_expire(client: Client, host: Host) -> None:
    job_id = uuid.uuid4().hex
    send_run(host.cfg, job_id, {"command": ""}, None)  # recorded FAILED by the worker, never run
    eventually(lambda: client.store.find_job(job_id) is not None, "the refused job was not recorded")
    assert ended(client, job_id) == JobStatus.FAILED
    expiring(client, job_id, "job", "log", "claim")


def test_a_job_stopped_while_queued_expires_and_so_does_its_later_claim(client: Client, host: Host) -> None:
    """`rnx stop` of a queued job set its status alone: none of its keys expired, nor the
    claim its worker made later."""
    host.stop_worker()
    try:
        job = client.run("true", network="none")
        stopped = host.rnx("stop", job.id)  # rnx's own Redis client (resp.py) runs the stop script
        assert stopped.returncode == 0 and client.get(job.id).status == JobStatus.STOPPED, stopped.stderr
        expiring(client, job.id, "job", "log", "stop")
        host.start_worker()  # takes the queued message: claims the job, which has ended
        eventually(lambda: client.store.claim_holder(job.id) is not None, "the worker never took the queued job")
        expiring(client, job.id, "job", "log", "stop", "claim")
        assert client.get(job.id).started is None
    finally:
        if host.worker is None:
            host.start_worker()


def test_a_lost_jobs_keys_expire(client: Client, host: Host) -> None:
    """A job became LOST by its status alone: none of its keys expired."""
    job = client.run("sleep", ("300",), network="none")
    wait_running(client, job.id)
    assert host.worker is not None
    host.worker.send_signal(signal.SIGKILL)
    host.worker.wait()
    host.worker = None
    host.start_worker()  # its journal names the job: LOST
    assert client.wait(job.id, timeout=30).status == JobStatus.LOST
    assert ended(client, job.id) == JobStatus.LOST
    expiring(client, job.id, "job", "log", "claim")


RELAY = """
jobs:
  early: {command: "true", network: none}
  first: {command: sleep, args: ["300"], network: none}
  second: {command: "true", network: none, requires: [{first: STOPPED}]}
"""


def workflow_ttls(client: Client, wf_id: str, *names: str) -> dict[str, int]:
    """The TTL of the workflow's record and of each named job's mark (-2: no mark yet)."""
    keys, redis = client.store.keys, client.store.redis
    found = {"record": redis.ttl(keys.workflow(wf_id))}
    found.update({name: redis.ttl(keys.workflow_queued(wf_id, name)) for name in names})
    return found


def test_a_workflows_keys_live_while_it_runs_and_expire_after_it(client: Client, host: Host, tmp_path: Path) -> None:
    """Its record expired log_ttl after the submit, and an ended job's after that job's end:
    a workflow running longer was lost ("no such workflow", or no such job in its next
    advance), and its later jobs stayed PENDING for good."""
    (tmp_path / "relay.yaml").write_text(RELAY)
    started = host.rnx("workflow", "run", "-d", str(tmp_path / "relay.yaml"))
    assert started.returncode == 0, started.stderr
    wf_id = started.stdout.decode().split()[-1]
    jobs = {j["name"]: j["id"] for j in client.workflows.status(wf_id)["jobs"]}
    wait_running(client, jobs["first"])
    assert ended(client, jobs["early"]) == JobStatus.COMPLETED
    assert workflow_ttls(client, wf_id, "early", "first", "second") == {
        "record": -1,
        "early": -1,
        "first": -1,
        "second": -2,  # not queued yet
    }
    assert ttls(client, jobs["early"]) == {"job": -1, "log": -1, "claim": -1}  # ended, kept for the workflow
    client.stop(jobs["first"])  # its end lets `second` go (requires first=STOPPED)
    assert client.wait(jobs["second"], timeout=30).status == JobStatus.COMPLETED
    assert ended(client, jobs["second"]) == JobStatus.COMPLETED
    marks = workflow_ttls(client, wf_id, "early", "first", "second")
    assert all(0 < t <= TTL for t in marks.values()), marks
    expiring(client, jobs["early"], "job", "log", "claim")
    expiring(client, jobs["first"], "job", "log", "claim", "stop")
    expiring(client, jobs["second"], "job", "log", "claim")


def test_a_workflow_whose_queued_job_was_stopped_ends_and_expires(client: Client, host: Host, tmp_path: Path) -> None:
    """`rnx stop` of a workflow's job no worker had taken: nobody advanced the workflow, and
    the job after it stayed PENDING for good."""
    (tmp_path / "pair.yaml").write_text(
        "jobs:\n  first: {command: 'true', network: none}\n"
        "  second: {command: 'true', network: none, requires: [{first: COMPLETED}]}\n"
    )
    host.stop_worker()
    try:
        started = host.rnx("workflow", "run", "-d", str(tmp_path / "pair.yaml"))
        assert started.returncode == 0, started.stderr
        wf_id = started.stdout.decode().split()[-1]
        jobs = {j["name"]: j["id"] for j in client.workflows.status(wf_id)["jobs"]}
        stopped = host.rnx("stop", jobs["first"])  # its advance cancels `second` through resp.py's client
        assert stopped.returncode == 0 and client.get(jobs["first"]).status == JobStatus.STOPPED, stopped.stderr
        assert client.get(jobs["second"]).status == JobStatus.CANCELED
        assert client.workflows.status(wf_id)["status"] == "STOPPED"
        marks = workflow_ttls(client, wf_id, "first", "second")
        assert all(0 < t <= TTL for t in marks.values()), marks
        expiring(client, jobs["first"], "job", "log", "stop")
        expiring(client, jobs["second"], "job", "log")
    finally:
        if host.worker is None:
            host.start_worker()


def test_a_deleted_networks_address_keys_go_unless_a_live_job_holds_one(client: Client, host: Host) -> None:
    keys, redis = client.store.keys, client.store.redis
    ipam = IpamStore(host.cfg.redis_url, host.cfg.key_prefix)
    client.networks.create("expiry-net", "10.123.0.0/24")
    done, _, _ = run(client, "true", network="expiry-net")
    assert done.status == JobStatus.COMPLETED
    ipam.allocate("expiry-net", 10, 20, done.id)  # an ended job's address never freed (its node lost)
    assert redis.exists(keys.ipam("expiry-net"), keys.ipam_cursor("expiry-net")) == 2  # the control
    client.networks.delete("expiry-net")
    assert redis.exists(keys.ipam("expiry-net"), keys.ipam_cursor("expiry-net")) == 0
    client.networks.create("expiry-held", "10.124.0.0/24")
    live = client.run("sleep", ("300",), network="none")
    slot = ipam.allocate("expiry-held", 10, 20, live.id)  # a job that has not ended holds one
    with pytest.raises(Conflict, match=f"1 job\\(s\\) use it \\({live.id[:12]}\\)"):
        client.networks.delete("expiry-held")  # its records named no user of it: the address does
    assert ipam.allocations("expiry-held") == {slot: live.id} and client.networks.store.get("expiry-held")
    client.stop(live.id)
    client.wait(live.id, timeout=60)
    client.networks.delete("expiry-held")
    assert redis.exists(keys.ipam("expiry-held"), keys.ipam_cursor("expiry-held")) == 0


def test_a_jobs_name_key_expires_with_it_while_it_names_the_job(client: Client, host: Host) -> None:
    """One key per job name ever given stayed for good (`--name=build-SHA`): it expires with
    the job's other keys, whether the job ran or was stopped while queued; a running job's
    name does not expire, nor one a later job of that name holds."""
    name_key = client.store.keys.name
    redis = client.store.redis
    running = client.run("sleep", ("300",), network="none", name="Named-Run")
    wait_running(client, running.id)
    assert redis.ttl(name_key("named-run")) == -1  # the control: taken while it runs
    client.stop(running.id)
    assert ended(client, running.id) == JobStatus.STOPPED
    assert 0 < redis.ttl(name_key("named-run")) <= TTL
    again = client.run("sleep", ("300",), network="none", name="named-run")  # the name's next holder
    wait_running(client, again.id)
    assert redis.ttl(name_key("named-run")) == -1
    client.stop(again.id)
    assert ended(client, again.id) == JobStatus.STOPPED
    host.stop_worker()
    try:
        queued = client.run("true", network="none", name="named-queued")
        assert host.rnx("stop", queued.id).returncode == 0
        assert 0 < redis.ttl(name_key("named-queued")) <= TTL
    finally:
        host.start_worker()
