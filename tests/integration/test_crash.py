"""Crash recovery: SIGKILL the worker at each stage of a job, start a new one, check that the
job is LOST (never run again), everything it had is released, and queued jobs run once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from redis import Redis

from joblet.api.client import Client
from joblet.api.models import JobStatus
from joblet.api.store_ipam import IpamStore
from joblet.worker.faults import POINTS
from joblet.worker.journal import Journal
from tests.conftest import BIN, Host, need
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
        if stage == "teardown":  # its command had ended: that end, kept in the journal, not LOST
            assert (rec.status, rec.exit_code) == (JobStatus.COMPLETED, 0), rec
            assert "its worker stopped before the job's end was recorded" in (rec.error or "")
        else:
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


def test_an_attached_run_says_when_its_nodes_heartbeat_stops(redis_sock):
    """`rnx run` attached to a job whose only worker was killed waited for good without a word
    (no other node marks the job LOST: usability review). It says so once, waits on, and
    ends 125 ("lost") when a worker comes back and reconciles the job. `rnx stop` meanwhile
    says no other worker can end it, and exits 1."""
    import select
    import subprocess
    import time

    need(os.geteuid() == 0, "needs root")
    h = Host(redis_sock, "quiet-node")
    rnx: subprocess.Popen[bytes] | None = None
    follow: subprocess.Popen[bytes] | None = None
    try:
        h.start_worker()
        argv = [str(BIN / "rnx"), "run", "--network=none", "--name=quiet", "sh", "-c", "echo started; exec sleep 300"]
        rnx = subprocess.Popen(argv, env={**os.environ, **h.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert rnx.stdout is not None and rnx.stderr is not None
        assert rnx.stdout.readline() == b"started\n"
        # `rnx log -f` of the same job waited silently (usability run): it says so too
        follow = subprocess.Popen(
            [str(BIN / "rnx"), "log", "-f", "quiet"],
            env={**os.environ, **h.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert follow.stdout is not None and follow.stdout.readline() == b"started\n"

        def read_until(proc: subprocess.Popen[bytes], end: float, done: Callable[[bytes], bool]) -> bytes:
            got = b""
            while not done(got) and time.monotonic() < end:
                if select.select([proc.stderr], [], [], 0.5)[0]:
                    got += os.read(proc.stderr.fileno(), 4096)  # type: ignore[union-attr]
            return got

        said = read_until(rnx, time.monotonic() + 8, lambda got: got != b"")  # the control: its worker beats
        assert said == b"" and read_until(follow, time.monotonic() + 0.5, lambda got: got != b"") == b""
        h.worker.kill()  # type: ignore[union-attr]
        h.worker.wait()  # type: ignore[union-attr]
        # its heartbeat key expires (4 s here), rnx looks every 5 s
        said = read_until(rnx, time.monotonic() + 30, lambda got: b"\n" in got)
        assert b"runs on node 'quiet-node', whose heartbeat has stopped (its worker down?)" in said, said
        told = read_until(follow, time.monotonic() + 30, lambda got: b"\n" in got)
        assert b"runs on node 'quiet-node', whose heartbeat has stopped (its worker down?)" in told, told
        assert rnx.poll() is None and follow.poll() is None  # they wait on
        # `rnx stop` waited its grace and 30 s more, then asked whether the worker was alive:
        # it sees the heartbeat gone at its first look, and that no other worker will end it
        stop = subprocess.run(
            [str(BIN / "rnx"), "stop", "quiet"], env={**os.environ, **h.env}, capture_output=True, timeout=30
        )
        assert stop.returncode == 1 and stop.stdout.endswith(b" RUNNING\n"), stop
        assert b"node 'quiet-node' stopped heartbeating" in stop.stderr, stop.stderr
        assert b"no other live worker can make the job LOST, so it ends when its worker returns" in stop.stderr
        h.start_worker()
        assert rnx.wait(timeout=60) == 125
        assert b"lost: the worker running it stopped unexpectedly" in said + rnx.stderr.read()
        assert follow.wait(timeout=60) == 125
    finally:
        for proc in (rnx, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        h.close()


THIEF = """
import os, sys
from kombu import Connection
message = Connection(sys.argv[1]).default_channel.basic_get(queue=sys.argv[2], no_ack=False)
print("taken" if message is not None else "none", flush=True)
os._exit(0)  # as a killed worker: never acknowledged, not given back at a channel's close
"""


def test_messages_a_killed_worker_had_taken_run_at_its_restart(redis_sock):
    """A worker killed with a job it had taken from its queue but not claimed yet left the
    job PENDING for visibility_timeout (an hour), the worker back and idle (usability run).
    Its restart puts back what was taken from its own node's queue. The taker here is a
    kombu consumer that exits without acknowledging, as a killed worker's does."""
    need(os.geteuid() == 0, "needs root")
    h = Host(redis_sock, "requeue")
    try:
        h.start_worker()
        client = Client(h.cfg)
        h.worker.kill()  # type: ignore[union-attr]
        h.worker.wait()  # type: ignore[union-attr]
        queue = h.cfg.node_queue(h.name)
        job = client.run("echo", ("once",), network="none", node=h.name)  # on its node's queue
        took = subprocess.run(
            [sys.executable, "-c", THIEF, h.cfg.broker, queue], capture_output=True, text=True, timeout=60
        )
        assert took.stdout == "taken\n", took
        redis = Redis.from_url(h.cfg.redis_url)  # the broker
        held = [json.loads(raw)[2] for raw in redis.hvals("unacked")]
        assert queue in held and redis.llen(queue) == 0  # the control: taken, not on the queue
        assert client.get(job.id).status == JobStatus.PENDING
        h.start_worker()
        done = client.wait(job.id, timeout=60)  # visibility_timeout is 3600 s here
        assert done.status == JobStatus.COMPLETED
        assert b"".join(d for _, d in client.logs(job.id)) == b"once\n"
        # acknowledged once its task returns, a moment after its final record
        eventually(lambda: queue not in [json.loads(raw)[2] for raw in redis.hvals("unacked")], "its ack")
        assert "put back on its queue" in h.log()
    finally:
        h.close()
