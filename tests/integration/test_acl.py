"""Who may do what: Redis ACL users (admin, viewer) and the broker out of jobs' reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from joblet.config import load
from joblet.errors import PermissionDenied
from tests.conftest import BIN, Host, need, private_redis
from tests.integration.helpers import connect_ok, eventually

ACL = Path(__file__).resolve().parents[2] / "deploy" / "redis-users.acl"


@pytest.fixture(scope="module")
def acl_redis():
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    need(os.geteuid() == 0, "needs root")
    tmp = Path(tempfile.mkdtemp(prefix="joblet-acl-"))
    acl = tmp / "users.acl"
    acl.write_text(ACL.read_text().replace("CHANGE-ME-ADMIN", "admin-pw").replace("CHANGE-ME-VIEWER", "viewer-pw"))
    sock = tmp / "redis.sock"
    proc = private_redis(tmp, "--aclfile", str(acl))  # a refused ACL file: it exits, the fixture fails
    yield sock
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def users(acl_redis):
    # the ACL file is for the default key prefix and queue: this host uses them
    h = Host(f"unix://joblet-admin:admin-pw@{acl_redis}", "acl", key_prefix="joblet:", queue="joblet")
    try:
        h.start_worker()
        base = {k[7:].lower(): v for k, v in h.env.items()}
        viewer_url = f"unix://joblet-viewer:viewer-pw@{acl_redis}"
        yield h, Client(h.cfg), Client(load(**{**base, "redis_url": viewer_url})), viewer_url
    finally:
        h.close()


def test_admin_submits_and_manages(users):
    _, admin, _, _ = users
    admin.networks.create("acl-net", "10.160.0.0/24")
    rec = admin.wait(admin.run("echo", ("hi",), network="acl-net").id, timeout=30)
    assert rec.status == JobStatus.COMPLETED
    sleeper = admin.run("sleep", ("300",), network="none", name="acl-sleeper")  # names: a Lua script
    admin.stop(sleeper.id)
    assert admin.wait(sleeper.id, timeout=30).status == JobStatus.STOPPED


def test_viewer_reads_but_changes_nothing(users):
    h, admin, viewer, viewer_url = users
    done = admin.wait(admin.run("echo", ("visible",), network="none").id, timeout=30)
    assert done.id in {r.id for r in viewer.list()}
    assert viewer.get(done.id[:10]).status == JobStatus.COMPLETED
    assert b"".join(d for _, d in viewer.logs(done.id, follow=True)) == b"visible\n"
    assert any(n["name"] == "acl-net" for n in viewer.networks.list())
    busy = admin.run("sleep", ("300",), network="none", name="acl-busy")
    eventually(lambda: (viewer.stats([busy.id]) or [{}])[0].get("sampled"), "viewer sees the worker's samples")
    admin.store.redis.delete(admin.store.keys.live_whole)  # as an older version's Redis
    assert busy.id in {r.id for r in viewer.list(status="RUNNING")}  # from every record: it cannot index
    assert not admin.store.redis.exists(admin.store.keys.live_whole)
    assert busy.id in {r.id for r in admin.list(status="RUNNING")}  # a writer makes the index
    assert admin.store.redis.exists(admin.store.keys.live_whole)
    from joblet.api.models import JobRecord, JobSpec

    odd = JobRecord(id="7" * 32, status=JobStatus.RUNNING, spec=JobSpec(command="true"), node="elsewhere")
    admin.store.create_job(odd)
    admin.store.redis.hset(admin.store.keys.job(odd.id), "status", '"COMPLETED"')  # ended by hand: left indexed
    seen = {r.id for r in viewer.list(status="RUNNING")}  # the index whole: read, the ended one not pruned
    assert busy.id in seen and odd.id not in seen
    assert admin.store.redis.zscore(admin.store.keys.live, odd.id) is not None  # the viewer may not write
    assert odd.id not in {r.id for r in admin.list(status="RUNNING")}
    assert admin.store.redis.zscore(admin.store.keys.live, odd.id) is None  # the control: a writer prunes it
    admin.stop(busy.id)
    before = len(admin.list())
    for attempt in (
        lambda: viewer.run("true", network="none"),
        lambda: viewer.stop(done.id),
        lambda: viewer.networks.create("nope", "10.161.0.0/24"),
        lambda: viewer.networks.delete("acl-net"),
        lambda: viewer.volumes.create("v"),
    ):
        with pytest.raises(PermissionDenied, match="not allowed for this Redis user"):
            attempt()
    assert len(admin.list()) == before  # nothing half-built
    proc = subprocess.run(
        [str(BIN / "rnx"), "run", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **h.env, "JOBLET_REDIS_URL": viewer_url},
    )
    assert proc.returncode == 1 and "not allowed for this Redis user" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "viewer-pw" not in proc.stderr


def test_wrong_password_is_a_clear_error(users, acl_redis):
    h, _, _, _ = users
    proc = subprocess.run(
        [str(BIN / "rnx"), "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **h.env, "JOBLET_REDIS_URL": f"unix://joblet-admin:bad@{acl_redis}"},
    )
    assert proc.returncode == 1 and "refused the credentials" in proc.stderr and ":bad@" not in proc.stderr


def test_jobs_cannot_reach_a_broker_on_host_addresses(host, client):
    """Redis listening on every address of the host namespace, the job's gateway included."""
    port = "16399"
    client.wait(client.run("true").id, timeout=30)  # the default bridge (and its gateway) exists
    redis_proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            host.netns,
            "redis-server",
            "--port",
            port,
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:  # positive control: reachable from the host itself
        eventually(
            lambda: host.in_ns("redis-cli", "-h", "172.20.0.1", "-p", port, "ping").stdout.strip() == "PONG",
            "the host's own redis never answered",
        )
        probe = (
            "import socket,sys\ntry:\n    socket.create_connection(('{ip}', PORT), timeout=2)\n"
            "except OSError:\n    sys.exit(1)\n"
        ).replace("PORT", port)
        for network in ("bridge", "isolated"):
            rec = client.wait(
                client.run("python3", ("-c", probe.format(ip="172.20.0.1")), network=network).id, timeout=30
            )
            assert rec.exit_code == 1, network
        assert not connect_ok(client, "172.20.0.1", "bridge")
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
