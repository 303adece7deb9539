"""Load: 300 concurrent bridge jobs, 1,000 short jobs, 200 run/stop cycles; nothing lost,
nothing leaked, no growth in the worker (bounds stated in docs/RELIABILITY.md)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from joblet.api.models import JobStatus
from joblet.api.store_ipam import IpamStore
from tests.integration.helpers import eventually

COUNT = 300


def test_three_hundred_concurrent_bridge_jobs_then_clean(client, host):
    ids = [client.run("sleep", ("600",), network="bridge").id for _ in range(COUNT)]
    held: set[str] = set()
    try:
        deadline = time.monotonic() + 240
        while True:
            states = [r.status for r in client.list() if r.id in ids]
            running = states.count(JobStatus.RUNNING)
            if running == COUNT:
                held = mount_namespaces_held(host.worker.pid)
                assert len(held) >= COUNT, len(held)  # each running job's, by a descriptor
                assert len(sleepers_of(host)) >= COUNT  # bwrap, its init, sleep: the control of the last check
                break
            failed = [r.error for r in client.list() if r.id in ids and r.status.final]
            assert not failed, f"{len(failed)} jobs ended early: {failed[:3]}"
            assert time.monotonic() < deadline, f"only {running} of {COUNT} running"
            time.sleep(0.5)
    finally:
        for job_id in ids:
            client.stop(job_id)
    for job_id in ids:
        assert client.wait(job_id, timeout=120).status == JobStatus.STOPPED
    # veths and addresses go right after each final record (the client does not wait for them)
    ipam = IpamStore(host.cfg.redis_url, host.cfg.key_prefix)
    eventually(lambda: host.in_ns("ip", "-o", "link", "show", "type", "veth").stdout.strip() == "", "veths left", 10)
    eventually(lambda: ipam.allocations("bridge") == {}, "addresses still allocated", 10)
    assert list(host.cfg.cgroup_root.iterdir()) == [] or all(not p.is_dir() for p in host.cfg.cgroup_root.iterdir())
    assert sleepers_of(host) == []  # (other processes on this machine may run `sleep 600` too)
    # what jobs mounted (their files, /work, sysfs) went with their mount namespaces; one may
    # stay: the worker's mount template (worker/mount_template.py), which jobs copy
    eventually(lambda: len(mount_namespaces_held(host.worker.pid) & held) <= 1, "job mount namespaces still held", 10)


def sleepers_of(host) -> list[int]:
    """`sleep 600` processes in this host's jobs' cgroups (v2 or a v1 twin), by /proc."""
    found = []
    for pid in subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True, text=True).stdout.split():
        try:
            groups = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue  # gone meanwhile
        if f"/{host.cfg.cgroup_root.name}/" in groups:
            found.append(int(pid))
    return found


def mount_namespaces_held(pid: int) -> set[str]:
    """The mount namespaces a process holds descriptors of (`mnt:[inode]`)."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("mnt:["):
            found.add(link)
    return found


def test_a_thousand_short_jobs_none_lost(client):
    ids = [client.run("true", network="none").id for _ in range(1000)]
    deadline = time.monotonic() + 600
    pending = set(ids)
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} of 1000 jobs never ended"
        done = {r.id for r in client.list() if r.id in pending and r.status.final}
        pending -= done
        time.sleep(0.5)
    states = [client.get(i).status for i in ids]
    assert states.count(JobStatus.COMPLETED) == 1000


def worker_footprint(host) -> dict[str, int]:
    pid = host.worker.pid
    rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss_kb": rss,
        "links": len(host.in_ns("ip", "-o", "link", "show").stdout.splitlines()),
        "mounts": len(open("/proc/self/mountinfo").read().splitlines()),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "job_cgroups": sum(1 for d in host.cfg.cgroup_root.iterdir() if d.is_dir()),  # = namespaces held
    }


FOOTPRINT_BOUNDS = {"fds": 8, "rss_kb": 30 * 1024, "links": 0, "mounts": 0, "threads": 8, "job_cgroups": 0}


def cycle(client) -> None:
    job = client.run("sleep", ("300",), network="bridge")
    deadline = time.monotonic() + 30
    while client.get(job.id).status != JobStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.stop(job.id)
    assert client.wait(job.id, timeout=30).status == JobStatus.STOPPED


def test_two_hundred_run_stop_cycles_do_not_grow_the_worker(client, host):
    for _ in range(20):  # warm up: pools, caches, lazy imports
        cycle(client)
    before = worker_footprint(host)
    for _ in range(200):
        cycle(client)
    time.sleep(1)
    after = worker_footprint(host)
    growth = {k: after[k] - before[k] for k in before}
    print(f"footprint before {before} after {after} growth {growth}")
    for key, bound in FOOTPRINT_BOUNDS.items():
        assert growth[key] <= bound, f"{key} grew by {growth[key]} (bound {bound}): {before} -> {after}"
