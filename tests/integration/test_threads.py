"""Background threads survive injected faults in a live worker (issue 10, item 3).

Faults are armed at run time through the worker's JOBLET_FAULT_FILE (joblet/worker/faults.py):
the next N calls of a point raise the named exception. Each test first shows the behaviour it
checks works without faults (positive control), then that it still works after the faults.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from joblet.worker.faults import arm, fired
from tests.conftest import Host, running_host
from tests.integration.helpers import eventually, job_file, output, run, wait_running


@pytest.fixture(scope="module")
def faulty(redis_sock: str) -> Iterator[Host]:
    def faults(h: Host) -> None:
        h.env.update(JOBLET_FAULT_FILE=str(h.tmp / "faults"), JOBLET_FAULT_MARKER=str(h.tmp / "fired"))

    yield from running_host(redis_sock, "faulty", prepare=faults)


@pytest.fixture(scope="module")
def fc(faulty: Host) -> Client:
    return Client(faulty.cfg)


def arm_faults(h: Host, point: str, exception: str, count: int, job_id: str = "") -> None:
    arm(h.tmp / "faults", point, exception, count, job_id)


def wait_fired(h: Host, point: str, count: int, timeout: float = 60) -> None:
    eventually(lambda: fired(h.tmp / "fired", point) >= count, f"{count} faults at {point}\n{h.log()}", timeout)


def table_present(h: Host) -> bool:
    return h.in_ns("nft", "list", "table", "inet", "joblet").returncode == 0


def table_handle(h: Host) -> str | None:
    """The kernel's handle of joblet's table: a restored table is a new one, with a new handle."""
    out = h.in_ns("nft", "-a", "list", "table", "inet", "joblet")
    first = out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else ""
    return first.rpartition("# handle ")[2].strip() or None if "# handle" in first else None


def flush_and_wait_restore(h: Host) -> None:
    before = table_handle(h)
    assert before is not None  # positive control: the table is there to flush
    assert h.in_ns("nft", "flush", "ruleset").returncode == 0  # (the worker may restore it at once)
    eventually(lambda: table_handle(h) not in (None, before), f"joblet's table restored\n{h.log()}", timeout=20)


def stays_listed(client: Client, node: str, seconds: float) -> None:
    """Listed at every look over `seconds` (several heartbeats and TTLs of the node key)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert node in client.live_nodes(), f"node {node} dropped out of the live list"
        time.sleep(0.2)


def test_heartbeat_survives_faults_and_still_repairs_the_firewall(faulty, fc):
    rec, _, _ = run(fc, "true")  # a bridged job: the worker now owns a table to keep
    assert rec.status == JobStatus.COMPLETED
    flush_and_wait_restore(faulty)  # positive control: self-repair works
    assert "faulty" in fc.live_nodes()

    arm_faults(faulty, "beat", "BlockingIOError", 3)  # as on a host out of pids
    arm_faults(faulty, "beat", "RedisConnectionError", 3)
    arm_faults(faulty, "upkeep", "BlockingIOError", 6)
    wait_fired(faulty, "upkeep", 1)
    assert faulty.in_ns("nft", "flush", "ruleset").returncode == 0  # only a later beat can repair
    eventually(lambda: "faulty" not in fc.live_nodes(), "the faults stopped the heartbeat", timeout=10)
    wait_fired(faulty, "beat", 6)
    wait_fired(faulty, "upkeep", 6)
    # the faults lasted longer than the node key's TTL (4 s): it came back, and the table too
    eventually(lambda: "faulty" in fc.live_nodes(), f"node listed again\n{faulty.log()}", timeout=20)
    eventually(lambda: table_present(faulty), f"table restored after the faults\n{faulty.log()}", 20)
    stays_listed(fc, "faulty", 5)
    flush_and_wait_restore(faulty)  # and it goes on repairing
    assert "BlockingIOError" in faulty.log() and "retrying in" in faulty.log()


def test_a_heartbeat_whose_host_facts_fail_still_goes_out(faulty, fc):
    """Reading the heartbeat's host facts (EMFILE, a netlink error) raised before the beat, and
    skipped it: the node dropped out, and 80 s of that made its jobs LOST (review). Each part
    keeps its last value now; the beat goes on."""
    node = fc.live_nodes()["faulty"]
    assert "mtu" in node and "sandbox" in node and "runtimes" in node  # the control: facts published
    arm_faults(faulty, "beat-facts", "OSError", 4 * 8)  # every part of eight beats
    wait_fired(faulty, "beat-facts", 4)
    stays_listed(fc, "faulty", 6)  # longer than the node key's TTL (4 s)
    wait_fired(faulty, "beat-facts", 4 * 8)
    node = fc.live_nodes()["faulty"]
    assert "mtu" in node and "sandbox" in node and "runtimes" in node, node  # the last values, still
    assert "network facts not read, the last published again: OSError" in faulty.log()


def hosts_file(h: Host, job_id: str) -> str:
    found = job_file(h, job_id, "/etc/hosts")
    return found.read_text() if found else ""


def announce(client: Client, name: str, ip: str) -> None:
    """A peer on another node joined: only the event listener rewrites local /etc/hosts."""
    client.store.join_networks(name.ljust(32, "0"), {"fnet": ip}, [name])
    client.store.publish_event("hosts", networks=["fnet"], node="elsewhere")


def test_event_listener_survives_faults_and_bad_events(faulty, fc):
    fc.networks.create("fnet", "10.181.0.0/24")
    watcher = fc.run("sleep", ("300",), network="fnet", name="watcher")
    wait_running(fc, watcher.id)
    try:
        announce(fc, "ghost1", "10.181.0.201")  # positive control
        eventually(lambda: "ghost1" in hosts_file(faulty, watcher.id), "hosts event handled")

        for raw in (b"[1, 2]", b"\xff\xfe", b'{"kind": "hosts", "networks": 7}'):
            fc.store.redis.publish(fc.store.keys.events, raw)  # poison events
        arm_faults(faulty, "listen", "RedisConnectionError", 3)
        for _ in range(3):
            fc.store.publish_event("nothing")
        wait_fired(faulty, "listen", 3)
        announce(fc, "ghost2", "10.181.0.202")
        eventually(lambda: "ghost2" in hosts_file(faulty, watcher.id), f"event after faults\n{faulty.log()}")
    finally:
        fc.stop(watcher.id)
    assert fc.wait(watcher.id, timeout=30).status == JobStatus.STOPPED


TICKER = "import time\nfor i in range(100000):\n    print(i, flush=True)\n    time.sleep(0.02)\n"


def lines(client: Client, job_id: str) -> list[int]:
    return [int(x) for x in output(client, job_id).split()]


def test_one_jobs_output_faults_do_not_stop_others(faulty, fc):
    a = fc.run("python3", ("-c", TICKER), network="none")
    b = fc.run("python3", ("-c", TICKER), network="none")
    try:
        for job in (a, b):
            eventually(lambda job=job: len(lines(fc, job.id)) > 5, "output flows")
        arm_faults(faulty, "output-read", "OSError", 3, a.id)
        arm_faults(faulty, "output-flush", "RuntimeError", 3, a.id)
        wait_fired(faulty, "output-read", 3)
        wait_fired(faulty, "output-flush", 3)
        seen_a, seen_b = len(lines(fc, a.id)), len(lines(fc, b.id))
        eventually(lambda: len(lines(fc, b.id)) > seen_b + 20, "the other job's output goes on")
        eventually(lambda: len(lines(fc, a.id)) > seen_a + 20, "the faulty job's output resumes")
    finally:
        fc.stop(a.id)
        fc.stop(b.id)
    for job in (a, b):
        assert fc.wait(job.id, timeout=30).status == JobStatus.STOPPED
        got = lines(fc, job.id)
        assert got == list(range(len(got))), "output lost or reordered"  # nothing lost, in order
    assert "read failed" in faulty.log() and "write failed" in faulty.log()  # logged, not silent


def test_a_claim_whose_reply_is_lost_is_retried_and_the_job_runs(faulty, fc):
    """The claim ran in Redis and its reply was lost (Redis went away at that moment): the
    task failed, and the job stayed claimed and PENDING for good (its redelivery was refused
    as a replay). The worker retries the same claim, which finds its own token."""
    rec, out, _ = run(fc, "echo", "ran", network="none")  # the control: jobs run here
    assert rec.status == JobStatus.COMPLETED and out == b"ran\n"
    arm_faults(faulty, "claim-reply", "RedisConnectionError", 2)
    job = fc.run("echo", ("ran",), network="none")
    rec = fc.wait(job.id, timeout=60)  # PENDING for good: TimeoutError
    assert rec.status == JobStatus.COMPLETED and output(fc, job.id) == b"ran\n", (rec, faulty.log())
    assert fired(faulty.tmp / "fired", "claim-reply") == 2
