"""Crash recovery: SIGKILL the worker at each stage of a job, start a new one, check that the
job is LOST (never run again), everything it had is released, and queued jobs run once."""

from __future__ import annotations

import os

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from joblet.api.store_ipam import IpamStore
from joblet.worker.faults import POINTS
from joblet.worker.journal import Journal
from tests.conftest import Host, need
from tests.integration.helpers import eventually, run


@pytest.mark.parametrize("stage", POINTS)
def test_worker_killed_at_each_stage(redis_sock, stage):
    need(os.geteuid() == 0, "needs root")
    h = Host(redis_sock, f"crash-{stage}")
    marker = h.tmp / "fault"
    h.env.update(JOBLET_FAULT_PAUSE=stage, JOBLET_FAULT_MARKER=str(marker))
    try:
        h.start_worker()
        client = Client(h.cfg)
        client.networks.create("crash-net", "10.170.0.0/24")
        command = ("true",) if stage == "teardown" else ("sleep", "300")
        job = client.run(command[0], command[1:], network=["crash-net", "bridge"])
        eventually(lambda: marker.exists() and job.id in marker.read_text(), f"fault point {stage}")
        if stage in ("attached", "running"):
            assert "jv" in h.in_ns("ip", "-o", "link", "show").stdout
        h.worker.kill()  # type: ignore[union-attr]
        h.worker.wait()  # type: ignore[union-attr]
        assert not client.get(job.id).status.final
        assert job.id in [e.job_id for e in Journal(h.cfg.state_dir).entries()]  # what the restart reads
        queued = client.run("echo", ("once",), network="none")  # while no worker is alive

        del h.env["JOBLET_FAULT_PAUSE"]
        h.start_worker()
        eventually(lambda: client.get(job.id).status.final, "the crashed job to be reconciled")
        rec = client.get(job.id)
        assert rec.status == JobStatus.LOST and "stopped unexpectedly" in (rec.error or "")
        done = client.wait(queued.id, timeout=30)
        assert done.status == JobStatus.COMPLETED
        assert b"".join(d for _, d in client.logs(queued.id)) == b"once\n"  # exactly once

        links = h.in_ns("ip", "-o", "link", "show").stdout
        assert "jv" not in links and "ji" not in links
        assert not (h.cfg.cgroup_root / job.id).exists()  # type: ignore[operator]
        assert not (h.tmp / "run" / "jobs" / job.id).exists()
        assert not (h.tmp / "state" / "jobs" / job.id).exists()
        ipam = IpamStore(h.cfg.redis_url, h.cfg.key_prefix)
        for network in ("crash-net", "bridge"):
            assert job.id not in ipam.allocations(network).values()
        assert Journal(h.cfg.state_dir).entries() == []
        # the host still works
        rec2, out, _ = run(client, "echo", "after", network="crash-net")
        assert rec2.status == JobStatus.COMPLETED and out == b"after\n"
    finally:
        h.close()
