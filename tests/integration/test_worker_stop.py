"""What `KillMode=mixed` in deploy/joblet-worker.service relies on: SIGTERM to the worker
alone stops its jobs (also one that ignores SIGTERM), tears them down, records them STOPPED,
and the worker exits 0 well within the unit's TimeoutStopSec."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from tests.conftest import Host, need
from tests.integration.helpers import eventually, output

TIMEOUT_STOP_SEC = 90  # deploy/joblet-worker.service


def test_sigterm_to_the_worker_stops_and_tears_down_its_jobs(redis_sock):
    need(os.geteuid() == 0, "needs root (namespaces, links, nftables)")
    need(shutil.which("nft") is not None, "nft is not installed")
    h = Host(redis_sock, "stopper")
    try:
        h.start_worker()
        from joblet.api.client import Client

        client = Client(h.cfg)
        plain = client.run("sh", ("-c", "echo up; exec sleep 300"))
        stubborn = client.run("sh", ("-c", "trap '' TERM; echo up; while :; do sleep 1; done"), network="none")
        for rec in (plain, stubborn):
            eventually(lambda r=rec: b"up" in output(client, r.id), f"job {rec.short_id} running")
        assert h.in_ns("ip", "-o", "link", "show", "type", "veth").stdout  # positive control: it has a veth
        began = time.monotonic()
        assert h.worker is not None
        h.worker.send_signal(signal.SIGTERM)
        code = h.worker.wait(timeout=TIMEOUT_STOP_SEC)
        took = time.monotonic() - began
        assert code == 0, h.log()
        assert took < TIMEOUT_STOP_SEC / 2
        for rec in (plain, stubborn):
            final = client.get(rec.id)
            assert final.status.value == "STOPPED", final  # and it says why: no one ran rnx stop
            assert final.error == "stopped by the shutdown of its worker (node stopper)", final
        assert client.get(stubborn.id).exit_code == 128 + signal.SIGKILL  # after the grace period
        assert h.in_ns("ip", "-o", "link", "show", "type", "veth").stdout == ""
        groups = Path(h.env["JOBLET_CGROUP_ROOT"])
        assert not [d for d in groups.iterdir() if d.is_dir()] if groups.exists() else True
    finally:
        h.close()


def test_the_heartbeat_removes_a_cgroup_an_ended_job_left_and_not_a_running_ones(host, client):
    """A teardown that could not remove its job's cgroup (a fork bomb's last processes still
    exiting after 5 s on a loaded host) left it until the worker's restart (red-team run)."""
    import subprocess
    import uuid

    job = client.run("sleep", ("300",), network="none")  # running: its group stays
    eventually(lambda: client.get(job.id).status.value == "RUNNING", "the job running")
    left = Path(host.env["JOBLET_CGROUP_ROOT"]) / uuid.uuid4().hex  # an ended job's, still holding a process
    left.mkdir()
    straggler = subprocess.Popen(["sleep", "300"])
    try:
        (left / "cgroup.procs").write_text(str(straggler.pid))
        eventually(lambda: not left.exists(), "the left cgroup removed", timeout=30)
        assert straggler.wait(timeout=10) == -9  # what was in it ended with it
        assert client.get(job.id).status.value == "RUNNING"  # the control: the running job's is kept
        assert (Path(host.env["JOBLET_CGROUP_ROOT"]) / job.id).is_dir()
    finally:
        straggler.kill()
        straggler.wait()
        client.stop(job.id)
        client.wait(job.id, timeout=30)
