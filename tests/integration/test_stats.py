"""`rnx stats`: what workers publish about running jobs, against jobs with known use of CPU,
memory, /work and the network. Each figure is checked against a job that does not use it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid

import pytest

from tests.conftest import BIN
from tests.integration.helpers import eventually, output

BUSY = "while True: pass"
MiB = 1 << 20
SENT = 8 * MiB
RECEIVER = f"""
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7100)); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); got = 0
while got < {SENT}:
    data = c.recv(65536)
    if not data: break
    got += len(data)
print("got", got, flush=True); time.sleep(120)
"""
SENDER = f"""
import socket, time
for _ in range(300):
    try:
        s = socket.create_connection(("{{peer}}", 7100), timeout=5); break
    except OSError:
        time.sleep(0.1)
s.sendall(b"x" * {SENT}); s.close(); print("sent", flush=True); time.sleep(120)
"""


def start(host, *args: str) -> str:
    out = host.rnx("run", "-d", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["id"]


def sample(host, *ids: str) -> dict[str, dict]:
    out = host.rnx("stats", "--no-stream", "--json", *ids)
    assert out.returncode == 0, out.stderr
    return {row["id"]: row for row in json.loads(out.stdout)}


def wait_for(host, job_id: str, ok, what: str) -> dict:
    found: dict = {}

    def check() -> bool:
        found.update(sample(host, job_id).get(job_id) or {})
        return found.get("sampled") is not None and ok(found)

    eventually(check, f"{what}: last sample {found}", timeout=60)
    return found


@pytest.fixture
def jobs(host):
    started: list[str] = []
    yield started
    for job_id in started:
        host.rnx("stop", "--no-wait", job_id)


def test_cpu_of_a_busy_loop_and_of_a_sleeper(host, client, jobs):
    busy = start(host, "--network=none", "--max-cpu=50", "python3", "-c", BUSY)
    idle = start(host, "--network=none", "sleep", "120")
    jobs += [busy, idle]
    row = wait_for(host, busy, lambda r: r["cpu_percent"] > 20, "busy loop near its 50% quota")
    assert row["cpu_percent"] < 70 and row["pids"] >= 1 and row["net_in"] is None  # none: no link
    # its first sample counts from its start, bwrap's work in its cgroup included (5.2 % once
    # on a slow machine); the samples after it, its sleep alone
    quiet = wait_for(host, idle, lambda r: r["cpu_percent"] is not None and r["cpu_percent"] < 5, "sleeper quiet")
    assert quiet["cpu_percent"] < 5
    every = sample(host)  # no ids: every running job, ended ones left out
    assert {busy, idle} <= every.keys() and all(r["status"] == "RUNNING" for r in every.values())


def test_memory_and_work_disk(host, client, jobs):
    hog = start(
        host,
        "--network=none",
        "--max-memory=256",
        "python3",
        "-c",
        "import time; b = bytearray(96 << 20); b[::4096] = b'x' * len(b[::4096]); "
        "open('/work/f', 'wb').write(b'y' * (6 << 20)); print('ok', flush=True); time.sleep(120)",
    )
    idle = start(host, "--network=none", "sleep", "120")
    jobs += [hog, idle]
    eventually(lambda: b"ok" in output(client, hog), "memory job ready")
    row = wait_for(host, hog, lambda r: r["memory"] >= 96 * MiB and r["disk_used"] >= 6 * MiB, "memory and disk")
    assert row["memory_limit"] == 256 * MiB and row["disk_size"] >= row["disk_used"]
    quiet = wait_for(host, idle, lambda r: True, "sleeper sampled")
    assert quiet["memory"] < 32 * MiB and quiet["disk_used"] < MiB


def test_network_bytes_between_two_jobs(host, client, jobs):
    net = f"st{uuid.uuid4().hex[:6]}"
    assert host.rnx("network", "create", net, "--cidr=10.79.0.0/24").returncode == 0
    try:
        receiver = start(host, f"--network={net}", "python3", "-c", RECEIVER)
        jobs.append(receiver)
        eventually(lambda: b"ready" in output(client, receiver), "receiver listening")
        peer = client.get(receiver).ip
        sender = start(host, f"--network={net}", "python3", "-c", SENDER.format(peer=peer))
        bystander = start(host, f"--network={net}", "sleep", "120")
        jobs += [sender, bystander]
        eventually(lambda: f"got {SENT}".encode() in output(client, receiver), "all bytes received")
        got = wait_for(host, receiver, lambda r: r["net_in"] >= SENT, "receiver's bytes in")
        put = wait_for(host, sender, lambda r: r["net_out"] >= SENT, "sender's bytes out")
        assert got["net_in"] < SENT * 1.1 + MiB and put["net_out"] < SENT * 1.1 + MiB
        assert got["net_out"] < SENT / 4 and put["net_in"] < SENT / 4  # acks only, the other way
        quiet = wait_for(host, bystander, lambda r: r["net_in"] is not None, "bystander sampled")
        assert quiet["net_in"] < 100_000 and quiet["net_out"] < 100_000
    finally:
        for job_id in list(jobs):
            host.rnx("stop", job_id)
        jobs.clear()
        host.rnx("network", "delete", net)


def test_stats_streams_until_ctrl_c_or_its_jobs_end_and_names_ended_jobs(host, client, jobs):
    idle = start(host, "--network=none", "sleep", "120")
    jobs.append(idle)
    wait_for(host, idle, lambda r: True, "sampled")
    proc = subprocess.Popen(
        [str(BIN / "rnx"), "stats", "--json", "--interval=0.2", idle],
        env={**os.environ, **host.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    frames = [json.loads(proc.stdout.readline()) for _ in range(2)]
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and all(f[0]["id"] == idle for f in frames)
    assert all(json.loads(line) for line in rest.splitlines())  # JSON lines to the end: no blank one
    done = start(host, "--network=none", "true")
    client.wait(done, timeout=60)
    ended = sample(host, done)[done]
    assert ended["status"] == "COMPLETED" and ended["cpu_percent"] is None
    # every job named has ended: one frame, and it ends (it redrew them until Ctrl-C); the
    # running job's stream above is the control
    alone = host.rnx("stats", "--json", "--interval=0.2", done, timeout=30)
    assert alone.returncode == 0 and [f[0]["id"] for f in map(json.loads, alone.stdout.splitlines())] == [done]
    table = host.rnx("stats", "--no-stream", done, idle)
    assert b"(completed)" in table.stdout and b"CPU %" in table.stdout
    assert host.rnx("stats", "--no-stream", "nosuchjob").returncode == 1


def test_every_running_job_is_listed_in_start_order_sampled_or_not(host, client, jobs):
    """Only sampled jobs were listed, in Redis's key order: a job just started (up to a
    heartbeat), or one on a node that is down, was missing while `rnx list` showed it
    RUNNING (usability run). Here one on a node with no worker: never sampled."""
    import time
    import uuid

    from joblet.api.models import JobRecord, JobSpec, JobStatus

    first = start(host, "--network=none", "sleep", "120")
    jobs.append(first)
    wait_for(host, first, lambda r: True, "sampled")
    spec, now = JobSpec(command="sleep"), time.time()
    unsampled = JobRecord(id=uuid.uuid4().hex, status=JobStatus.RUNNING, spec=spec, node="gone-node", created=now)
    client.store.create_job(unsampled)
    try:
        rows = json.loads(host.rnx("stats", "--no-stream", "--json").stdout)
        ids = [r["id"] for r in rows]
        assert ids.index(first) < ids.index(unsampled.id), ids  # oldest first, as rnx list
        row = rows[ids.index(unsampled.id)]
        assert row["status"] == "RUNNING" and row["sampled"] is None and row["pids"] is None, row
        assert rows[ids.index(first)]["sampled"] is not None  # the control: a sampled one
        table = host.rnx("stats", "--no-stream").stdout.decode()
        assert unsampled.id[:12] in table and "gone-node" in table, table
    finally:
        client.store.redis.hset(client.store.keys.job(unsampled.id), "status", '"LOST"')
