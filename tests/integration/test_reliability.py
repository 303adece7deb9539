"""Redelivery past the visibility timeout, durable stops, a Redis restart under running jobs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from joblet.api.client import Client
from joblet.api.models import JobRecord, JobStatus
from joblet.api.tasks import run_job_signature
from joblet.errors import Conflict
from tests.conftest import BIN, Host, need, private_redis
from tests.integration.helpers import eventually, output, wait_running


def test_a_job_longer_than_the_visibility_timeout_runs_once(redis_sock):
    need(os.geteuid() == 0, "needs root")
    a = Host(redis_sock, "redeliver-a", visibility_timeout="10")
    b = Host(redis_sock, "redeliver-b", fleet=a, visibility_timeout="10")
    try:
        a.start_worker()
        b.start_worker()
        client = Client(a.cfg)
        # through Celery (run_job.delay), whose AsyncResult is stored: rnx and Client.run ask for none
        job = run_job_signature(a.cfg).delay(
            command="sh", args=["-c", "echo start; sleep 35; echo end"], network="none"
        )
        result = job.get(timeout=120)
        assert result["status"] == "COMPLETED" and result["exit_code"] == 0
        assert output(client, job.id) == b"start\nend\n"  # one run, not two
        logs = (a.tmp / "worker.log").read_text() + (b.tmp / "worker.log").read_text()
        assert "was delivered again; it runs only once" in logs  # the redelivery did happen
        assert client.get(job.id).status == JobStatus.COMPLETED
    finally:
        b.close()
        a.close()


def test_a_job_stopped_while_queued_never_runs(host, client):
    host.stop_worker()
    try:
        job = client.run("sh", ("-c", "echo ran"), network="none")
        client.stop(job.id)
        host.start_worker()
        host.stop_worker()  # every worker restarts: the stop holds
        host.start_worker()
        rec = client.wait(job.id, timeout=30)
        assert rec.status == JobStatus.STOPPED and rec.started is None
        assert output(client, job.id) == b""
    finally:
        if host.worker is None:
            host.start_worker()


class RedisWithAof:
    """A private redis-server with append-only persistence that the test can kill and restart."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="joblet-aof-"))
        self.sock = self.dir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                str(self.sock),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.sock.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.sock.unlink(missing_ok=True)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def aof_redis():
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    r = RedisWithAof()
    r.start()
    yield r
    r.close()


TICKS = "import time\nfor i in range(40):\n    print(i, flush=True)\n    time.sleep(0.2)\n"


def test_redis_restart_under_running_jobs(aof_redis):
    need(os.geteuid() == 0, "needs root")
    h = Host(f"unix://{aof_redis.sock}", "outage")
    try:
        h.start_worker()
        client = Client(h.cfg)
        jobs = [client.run("python3", ("-c", TICKS)) for _ in range(3)]
        attached = subprocess.Popen(  # follows its job through the outage (it gave up at once)
            [str(BIN / "rnx"), "run", "python3", "-c", TICKS],
            env={**os.environ, **h.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,  # its first line read alone: nothing of the rest in a buffer communicate skips
        )
        deadline = time.monotonic() + 30
        while not all(client.get(j.id).status == JobStatus.RUNNING for j in jobs):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert attached.stdout is not None and attached.stdout.readline() == b"0\n"
        following = subprocess.Popen(  # rnx log -f likewise
            [str(BIN / "rnx"), "log", "-f", jobs[0].id],
            env={**os.environ, **h.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        assert following.stdout is not None and following.stdout.readline() == b"0\n"
        time.sleep(1)
        aof_redis.kill()
        time.sleep(3)  # the jobs keep printing into the worker's buffer
        aof_redis.start()
        expected = "".join(f"{i}\n" for i in range(40)).encode()
        out, err = attached.communicate(timeout=120)
        assert (attached.returncode, b"0\n" + out) == (0, expected), err
        assert b"waiting up to 60 s" in err
        out, err = following.communicate(timeout=120)
        assert (following.returncode, b"0\n" + out) == (0, expected), err
        for job in jobs:
            rec = Client(h.cfg).wait(job.id, timeout=120)
            assert rec.status == JobStatus.COMPLETED and rec.exit_code == 0
            assert output(client, job.id) == expected  # nothing lost, in order
        after = Client(h.cfg).run("echo", ("still serving",), network="none")
        assert Client(h.cfg).wait(after.id, timeout=60).status == JobStatus.COMPLETED
        assert h.worker is not None and h.worker.poll() is None
    finally:
        h.close()


def test_a_final_record_written_after_a_redis_outage_longer_than_its_patience(aof_redis):
    """The job ends while Redis is down for longer than record_patience (1 s here): the task
    gives up, and the worker's heartbeat writes the job's own outcome and its stream's end
    once Redis is back (it stayed RUNNING until the worker's restart, then LOST)."""
    need(os.geteuid() == 0, "needs root")
    h = Host(f"unix://{aof_redis.sock}", "patience", record_patience="1")
    try:
        client, job = _end_in_an_outage(h, aof_redis, "sh", "-c", "echo before; sleep 600; echo after; exit 0")
        aof_redis.start()
        rec = Client(h.cfg).wait(job.id, timeout=60)
        assert rec.status == JobStatus.COMPLETED and rec.exit_code == 0, rec
        # the end marker follows the last byte; the record may come before the pump's flush
        eventually(lambda: output(client, job.id) == b"before\nafter\n", "the line printed during the outage")
        assert f"job {job.id[:12]}'s final record written now that Redis is back" in worker_log(h)
        after = Client(h.cfg).run("echo", ("still serving",), network="none")  # the control: a job ends at once
        assert Client(h.cfg).wait(after.id, timeout=60).status == JobStatus.COMPLETED
    finally:
        h.close()


def test_an_outcome_redis_missed_is_recorded_by_the_restarted_worker(aof_redis):
    """As above, but the worker stops before Redis is back: the outcome it kept in its journal
    is recorded when it starts again (exit 3, FAILED), not LOST."""
    need(os.geteuid() == 0, "needs root")
    h = Host(f"unix://{aof_redis.sock}", "keptend", record_patience="1")
    try:
        client, job = _end_in_an_outage(h, aof_redis, "sh", "-c", "echo before; sleep 600; exit 3")
        h.stop_worker()
        aof_redis.start()
        assert client.get(job.id).status == JobStatus.RUNNING  # the control: Redis did not have it
        restarted = time.time()
        h.start_worker()
        rec = Client(h.cfg).wait(job.id, timeout=60)
        assert rec.status == JobStatus.FAILED and rec.exit_code == 3 and "worker" not in (rec.error or ""), rec
        assert rec.finished is not None and rec.finished < restarted  # when it ended, not when recorded
    finally:
        h.close()


def test_a_job_ending_in_a_short_outage_leaves_its_networks_once_redis_is_back(aof_redis):
    """Its leave met Redis away, and its final record waited the outage out: the record
    read `teardown: leave networks: cannot reach Redis` on a job that COMPLETED, and its
    entry in its network's members stayed for good (its name in its peers' /etc/hosts at an
    address the next job got; in a network made again under the name: fleet run)."""
    need(os.geteuid() == 0, "needs root")
    h = Host(f"unix://{aof_redis.sock}", "leaveback")
    try:
        h.start_worker()
        client = Client(h.cfg)
        client.networks.create("lvb", "10.154.0.0/24")
        members = client.store.keys.members("lvb")
        job = client.run("sh", ("-c", "echo before; sleep 600; exit 0"), network="lvb", name="leaver")
        eventually(lambda: output(client, job.id) == b"before\n", "the job's first line")
        assert job.id.encode() in client.store.redis.hkeys(members)  # the control: listed while it runs
        aof_redis.kill()
        procs = Path(h.env["JOBLET_CGROUP_ROOT"]) / job.id / "cgroup.procs"
        sleeps = [p for p in procs.read_text().split() if Path(f"/proc/{p}/comm").read_text().strip() == "sleep"]
        os.kill(int(sleeps[0]), signal.SIGKILL)  # the shell goes on to its end, exit 0
        # its cgroup goes after its leave (the undo's order): the leave has met the outage
        eventually(lambda: not procs.parent.exists(), "the job's teardown", timeout=60)
        aof_redis.start()
        rec = Client(h.cfg).wait(job.id, timeout=60)
        assert rec.status == JobStatus.COMPLETED and rec.error is None, rec
        eventually(lambda: client.store.redis.hkeys(members) == [], "its entry gone")
        client.networks.delete("lvb")
        assert not client.store.redis.exists(members)
    finally:
        h.close()


def _end_in_an_outage(h: Host, aof_redis: RedisWithAof, *argv: str) -> tuple[Client, JobRecord]:
    """A job prints "before", sleeps; Redis goes; its sleep is killed (the job ends); the
    worker gives up its final record."""
    h.start_worker()
    client = Client(h.cfg)
    job = client.run(argv[0], argv[1:], network="none")
    eventually(lambda: output(client, job.id) == b"before\n", "the job's first line")
    aof_redis.kill()
    procs = Path(h.env["JOBLET_CGROUP_ROOT"]) / job.id / "cgroup.procs"
    sleeps = [p for p in procs.read_text().split() if Path(f"/proc/{p}/comm").read_text().strip() == "sleep"]
    assert len(sleeps) == 1, sleeps
    os.kill(int(sleeps[0]), signal.SIGKILL)  # the shell goes on to its end
    eventually(lambda: "final record not written" in worker_log(h), "the worker giving up", timeout=60)
    return client, job


def worker_log(h: Host) -> str:
    return (h.tmp / "worker.log").read_text(errors="replace")


class Forgetful:
    """A worker on a private Redis that can restart empty (the quickstart's keeps nothing)."""

    def __init__(self, tmp_path: Path, name: str, **settings: str) -> None:
        self.tmp_path = tmp_path
        self.redis = private_redis(tmp_path)
        try:
            self.host = Host(f"unix://{tmp_path}/redis.sock", name, **settings)
        except BaseException:
            self.redis.terminate()
            self.redis.wait()
            raise

    def restart_empty(self) -> None:
        self.redis.terminate()
        self.redis.wait()
        self.redis = private_redis(self.tmp_path)

    def close(self) -> None:
        self.host.close()
        self.redis.terminate()
        self.redis.wait()


@contextlib.contextmanager
def forgetful(tmp_path: Path, name: str, **settings: str) -> Iterator[tuple[Forgetful, Client]]:
    need(os.geteuid() == 0, "needs root")
    box = Forgetful(tmp_path, name, **settings)
    try:
        box.host.start_worker()
        yield box, Client(box.host.cfg)
    finally:
        box.close()


def test_jobs_a_restarted_redis_forgot_are_restored_by_their_worker(tmp_path):
    """Redis restarted without its data (the quickstart's keeps none): a running job was
    invisible and unstoppable, and its address went to the next job. Its worker writes back
    its record, name, address and place in its network on a heartbeat."""
    with forgetful(tmp_path, "forgot") as (box, client):
        h = box.host
        keeper = client.run("sleep", ("300",), name="keeper")
        ip = wait_running(client, keeper.id)
        began = client.get(keeper.id).started
        kept = client.networks.create("kept", "10.150.0.0/24")
        on_kept = client.run("sleep", ("300",), network="kept")
        wait_running(client, on_kept.id)
        box.restart_empty()
        eventually(lambda: client.store.find_job(keeper.id) is not None, "the job restored", timeout=60)
        rec = client.get("keeper")
        assert rec.id == keeper.id and rec.status == JobStatus.RUNNING and rec.ips == {"bridge": ip}, rec
        # when it started, not when it was restored (rnx list showed it created at the restore)
        assert began is not None and rec.started is not None and abs(rec.started - began) < 0.01, (began, rec)
        assert rec.created == rec.started and "created: when it started" in (rec.error or ""), rec
        # its network's definition too: not made again under the job with another CIDR
        eventually(lambda: client.store.find_job(on_kept.id) is not None, "the job restored", timeout=60)
        assert client.networks.store.get("kept") == kept
        with pytest.raises(Conflict, match="already exists"):
            client.networks.create("kept", "10.151.0.0/24")
        with pytest.raises(Conflict, match="overlaps"):
            client.networks.create("other", "10.150.0.0/25")
        client.networks.create("fresh", "10.152.0.0/24")  # the control: creates still work
        client.stop(on_kept.id)
        after = client.run("sleep", ("300",))  # the address stays the restored job's
        assert wait_running(client, after.id) != ip
        assert h.rnx("stop", "keeper").returncode == 0 and client.get(keeper.id).status == JobStatus.STOPPED
        client.stop(after.id)
        client.wait(after.id, timeout=30)


def test_a_job_ending_after_redis_forgot_it_gets_its_final_record(tmp_path):
    """As above, but the job ends before a heartbeat restores it (here the heartbeat is a
    minute apart): its final record found nothing to update and the job was never seen
    again. Its worker writes the record whole, with its end."""
    with forgetful(tmp_path, "lateend", heartbeat_interval="60", node_down_after="130") as (box, client):
        h = box.host
        client.volumes.create("gate")
        gate = "until [ -e /volumes/gate/go ]; do sleep 0.1; done; exit 4"
        job = client.run("sh", ("-c", gate), volumes=["gate"], name="gated")
        wait_running(client, job.id)
        box.restart_empty()
        assert client.store.find_job(job.id) is None  # the control: Redis forgot it
        (h.tmp / "state" / "volumes" / "gate" / "data" / "go").touch()
        eventually(lambda: client.store.find_job(job.id) is not None, "the job's final record", timeout=60)
        rec = client.get("gated")  # by its name too (it said no such job, its record nameless)
        assert rec.id == job.id and rec.name == "gated", rec
        assert rec.status == JobStatus.FAILED and rec.exit_code == 4 and "lost by Redis" in (rec.error or ""), rec
        assert rec.started is not None and rec.created == rec.started < rec.finished, rec  # when it started


def test_a_network_defined_meanwhile_beside_a_restored_one_is_logged(tmp_path):
    """While Redis had lost its networks, one of them was defined again with another CIDR and
    another network over a lost one's CIDR: the worker keeps the definition made meanwhile and
    logs it, restores the other and logs the overlap (its worker held still meanwhile)."""
    with forgetful(tmp_path, "meanwhile") as (box, client):
        h = box.host
        client.networks.create("taken", "10.153.0.0/24")
        client.networks.create("overlapped", "10.154.0.0/24")
        jobs = [client.run("sleep", ("300",), network=net) for net in ("taken", "overlapped")]
        for job in jobs:
            wait_running(client, job.id)
        assert h.worker is not None
        os.kill(h.worker.pid, signal.SIGSTOP)  # nsenter execs the worker: its pid
        try:
            box.restart_empty()
            again = client.networks.create("taken", "10.155.0.0/24")
            client.networks.create("over", "10.154.0.0/25")
        finally:
            os.kill(h.worker.pid, signal.SIGCONT)
        eventually(lambda: all(client.store.find_job(j.id) for j in jobs), "the jobs restored", timeout=60)
        assert client.networks.store.get("taken") == again  # the one defined meanwhile stays
        assert client.networks.store.get("overlapped").cidr == "10.154.0.0/24"  # the control: restored
        eventually(lambda: "network taken: defined again otherwise" in h.log(), "the retaken name logged")
        eventually(
            lambda: "network overlapped (10.154.0.0/24) overlaps network 'over'" in h.log(), "the overlap logged"
        )
        for job in jobs:
            client.stop(job.id)
            client.wait(job.id, timeout=30)
