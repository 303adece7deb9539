"""Limits (memory, CPU, disk I/O, bandwidth) and privileges, on the real kernel."""

from __future__ import annotations

import json
import re

from joblet.api.models import JobStatus
from tests.integration.helpers import run, wait_running


def test_memory_limit_kills_with_the_reason(client):
    rec, _, _ = run(client, "python3", "-c", "b = bytearray(400 * 1024 * 1024); print(len(b))",
                    network="none", limits={"max_memory": 64})
    assert rec.status == JobStatus.FAILED
    assert "out of memory" in (rec.error or "") and "64 MB" in (rec.error or "")


def test_memory_under_the_limit_is_fine(client):
    rec, out, _ = run(client, "python3", "-c", "b = bytearray(16 * 1024 * 1024); print(len(b))",
                      network="none", limits={"max_memory": 64})
    assert rec.status == JobStatus.COMPLETED and out.strip() == str(16 * 1024 * 1024).encode()


BUSY = """
import os, time
start = time.time()
while time.time() - start < 4:
    pass
t = os.times()
print(t.user + t.system)
"""


def test_cpu_limit_gives_about_its_share(client):
    rec, out, _ = run(client, "python3", "-c", BUSY, network="none", limits={"max_cpu": 25})
    assert rec.status == JobStatus.COMPLETED
    used = float(out)
    assert 0.6 <= used <= 1.4, f"25% of 4 s is 1 s of CPU, got {used:.2f}"


def test_iobps_limits_direct_writes(client):
    # /work is memory (tmpfs); a volume is where a job's writes reach a disk
    client.volumes.create("iobps-vol")
    limit = 4 * 1024 * 1024
    rec, _, err = run(client, "dd", "if=/dev/zero", "of=/volumes/iobps-vol/blob", "bs=1M", "count=16",
                      "oflag=direct", network="none", volumes=["iobps-vol"], limits={"max_iobps": limit})
    assert rec.status == JobStatus.COMPLETED, err
    seconds = float(re.search(rb", ([\d.]+) s,", err).group(1))  # type: ignore[union-attr]
    rate = 16 * 1024 * 1024 / seconds
    assert 0.8 * limit <= rate <= 1.2 * limit, f"{rate / limit:.2f} of the limit"


def iperf(client, server_ip: str, *extra: str, limits: dict) -> dict:
    rec, out, err = run(client, "iperf3", "-c", server_ip, "-t", "10", "-J", *extra,
                        network="res-net", limits=limits, timeout=90)
    assert rec.status == JobStatus.COMPLETED, err
    return json.loads(out)


def test_bandwidth_both_directions(client):
    client.networks.create("res-net", "10.140.0.0/24")
    rate = 10_000_000
    for direction in ((), ("-R",)):  # job sends; job receives
        server = client.run("iperf3", ("-s", "-1"), network="res-net")
        ip = wait_running(client, server.id)
        report = iperf(client, ip, *direction, limits={"max_bandwidth": "10mbit"})
        measured = report["end"]["sum_received"]["bits_per_second"]
        first = report["intervals"][0]["sum"]["bits_per_second"]
        assert 0.9 * rate <= measured <= 1.1 * rate, (direction, measured)
        assert first < 2 * rate, (direction, first)
        client.wait(server.id, timeout=30)


def test_job_cannot_change_its_network_or_enter_namespaces(client):
    rec, _, err = run(client, "ip", "addr", "add", "10.9.9.9/24", "dev", "eth0")
    assert rec.exit_code != 0 and b"Operation not permitted" in err
    rec, _, _ = run(client, "ip", "route", "add", "10.9.0.0/16", "dev", "eth0")
    assert rec.exit_code != 0
    rec, _, _ = run(client, "nsenter", "-t", "1", "-n", "true")
    assert rec.exit_code != 0
    rec, _, _ = run(client, "sh", "-c", "echo $$ > /sys/fs/cgroup/cgroup.procs")
    assert rec.exit_code != 0


PROCS = """
import json, os
procs = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        with open(f"/proc/{p}/cmdline", "rb") as fh:
            procs[p] = [a.decode() for a in fh.read().split(b"\\0")[:2]]
print(json.dumps(procs))
"""


def test_other_jobs_processes_are_invisible(client):
    other = client.run("sleep", ("300",))
    wait_running(client, other.id)
    try:
        rec, out, _ = run(client, "python3", "-c", PROCS, network="none")
        found = json.loads(out)
        assert ["sleep", "300"] not in found.values()  # the other job's command
        # only its own: the sandbox's init (pid 1) and this command
        assert found["1"][0].endswith("bwrap")
        assert sorted(v[0] for v in found.values())[1:] == ["/usr/bin/python3"], found
    finally:
        client.stop(other.id)


def test_user_option(client):
    rec, out, _ = run(client, "sh", "-c", "id -u; id -g; touch /work/mine && echo ok",
                      network="none", user="1234:2345")
    assert rec.status == JobStatus.COMPLETED and out.split() == [b"1234", b"2345", b"ok"]
