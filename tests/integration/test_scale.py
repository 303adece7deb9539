"""Many long-running jobs at once on one worker with default settings; nothing leaks."""

from __future__ import annotations

import subprocess
import time

from joblet.api.models import JobStatus
from joblet.api.store_ipam import IpamStore

COUNT = 200


def test_two_hundred_concurrent_sleep_jobs_then_clean(client, host):
    ids = [client.run("sleep", ("600",)).id for _ in range(COUNT)]
    deadline = time.monotonic() + 240
    while True:
        running = sum(1 for r in client.list() if r.id in ids and r.status == JobStatus.RUNNING)
        if running == COUNT:
            break
        assert time.monotonic() < deadline, f"only {running} of {COUNT} running"
        time.sleep(0.5)
    for job_id in ids:
        client.stop(job_id)
    for job_id in ids:
        assert client.wait(job_id, timeout=120).status == JobStatus.STOPPED
    veths = host.in_ns("ip", "-o", "link", "show", "type", "veth").stdout
    assert veths.strip() == ""
    assert list(host.cfg.cgroup_root.iterdir()) == [] or all(
        not p.is_dir() for p in host.cfg.cgroup_root.iterdir())
    assert IpamStore(host.cfg.redis_url, host.cfg.key_prefix).allocations("bridge") == {}
    assert subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True).stdout == b""
    assert not any((host.cfg.run_dir / "jobs").iterdir())
