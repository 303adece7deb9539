"""The control plane against a live (unsigned) worker: only joblet's job ids touch paths,
cgroups and keys; spec sizes are refused before anything is stored; a job taken by the wrong
node is refused, never run. Each attack has its positive control beside it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
import uuid

import pytest

from joblet.api.client import Client
from joblet.api.keys import RUN_TASK
from joblet.api.message import new_job_id
from joblet.api.models import ARGV_MAX_BYTES, JobRecord, JobStatus, make_spec
from joblet.api.tasks import client_app, send_run
from joblet.errors import ValidationError
from tests.conftest import cgroup_base
from tests.integration.helpers import eventually


def dropped(client: Client, node: str, reason: str) -> int:
    return client.store.dropped(node).get(reason, 0)


def good_job_completes(client: Client) -> None:
    rec = client.wait(client.run("echo", ("alive",), network="none").id, timeout=30)
    assert rec.status == JobStatus.COMPLETED, rec


def wait_sent(client: Client, job_id: str):
    """The final record of a job sent without a client record (the worker writes one)."""
    eventually(lambda: client.store.find_job(job_id) is not None, f"no record for {job_id}")
    return client.wait(job_id, timeout=30)


def send_raw(host, task_id: str, kwargs: dict, queue: str | None = None) -> None:
    """A message as an attacker with broker access writes it: any header id, any body."""
    client_app(host.cfg).send_task(RUN_TASK, kwargs=kwargs, task_id=task_id, queue=queue or host.cfg.queue, retry=False)


@pytest.fixture
def victim_cgroup():
    """A cgroup beside the worker's, with a live process in it."""
    group = cgroup_base() / f"joblet-victim-{uuid.uuid4().hex[:6]}"
    group.mkdir()
    proc = subprocess.Popen(["sleep", "300"])
    (group / "cgroup.procs").write_text(str(proc.pid))
    try:
        yield group, proc
    finally:
        proc.kill()
        proc.wait()
        group.rmdir()


def test_forged_ids_touch_no_path_cgroup_or_key(host, client, victim_cgroup):
    group, sleeper = victim_cgroup
    victim = host.tmp / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    cg_id = os.path.relpath(group, host.cfg.cgroup_root)  # e.g. ../joblet-victim-abc123
    forged = ["../../victim", "../../../" + str(victim).lstrip("/"), cg_id, "A" * 32, str(uuid.uuid4())]
    before = dropped(client, host.name, "bad-id")
    for task_id in forged:
        send_raw(host, task_id, {"spec": {"command": "true", "network": "none"}})
    eventually(lambda: dropped(client, host.name, "bad-id") == before + len(forged), "forged ids not dropped")
    assert (victim / "keep").read_text() == "x"  # the target directory is untouched
    assert sleeper.poll() is None and str(sleeper.pid) in (group / "cgroup.procs").read_text()
    for task_id in forged:  # no record, claim or Celery result under the forged id
        keys = (client.store.keys.job(task_id), client.store.keys.claim(task_id), f"celery-task-meta-{task_id}")
        assert not client.store.redis.exists(*keys)
    good_job_completes(client)


def test_body_id_must_match_the_header_id(host, client):
    real, other = uuid.uuid4().hex, uuid.uuid4().hex
    before = dropped(client, host.name, "id-mismatch")
    send_raw(host, other, {"spec": {"command": "true", "network": "none"}, "job_id": real})
    eventually(lambda: dropped(client, host.name, "id-mismatch") == before + 1, "mismatch not dropped")
    assert client.store.find_job(real) is None and client.store.find_job(other) is None
    send_run(host.cfg, real, {"command": "true", "network": "none"}, None)  # the honest message runs
    assert wait_sent(client, real).status == JobStatus.COMPLETED


def test_expired_message_fails_its_waiting_job(host, client):
    rec = JobRecord(
        id=new_job_id(), status=JobStatus.PENDING, spec=make_spec("true", (), network="none"), created=time.time()
    )
    client.store.create_job(rec)  # recorded, queued nowhere
    send_raw(
        host,
        rec.id,
        {
            "spec": {"command": "true", "network": "none"},
            "job_id": rec.id,
            "nonce": uuid.uuid4().hex,
            "expires": time.time() - 5,
        },
    )
    final = client.wait(rec.id, timeout=30)
    assert final.status == JobStatus.FAILED and "expired" in (final.error or "") and final.started is None
    good_job_completes(client)


def test_oversized_specs_are_refused_before_anything_is_stored(host, client):
    count = len(client.list())
    with pytest.raises(ValidationError, match="invalid job field 'args'.*over the limit") as caught:
        client.run("echo", ["x" * 1000] * (ARGV_MAX_BYTES // 1000 + 10), network="none")
    assert "\n" not in str(caught.value)
    small = Client(dataclasses.replace(host.cfg, spec_max_bytes=64 << 10))
    upload = {"path": "big", "content": "QUFB" * 20000}
    with pytest.raises(ValidationError, match="spec is .* bytes, over the limit"):
        small.run("true", network="none", uploads=[upload])
    assert len(client.list()) == count  # nothing recorded, nothing queued
    env = [f"--env=A{i}={'x' * (100 << 10)}" for i in range(6)]  # one argv string stays < 128 KiB
    out = host.rnx("run", "--network=none", *env, "true")
    assert out.returncode == 2 and b"invalid --env: the environment totals" in out.stderr, out.stderr
    assert out.stderr.count(b"\n") == 1
    job = uuid.uuid4().hex  # past the client: the worker refuses it and stores none of it
    send_run(host.cfg, job, {"command": "echo", "args": ["x" * 1000] * 1100, "network": "none"}, None)
    rec = wait_sent(client, job)
    assert rec.status == JobStatus.FAILED and "'args'" in (rec.error or "") and rec.spec.args == ()
    good_job_completes(client)


def test_a_job_for_another_node_is_refused_not_run(host, client):
    job = uuid.uuid4().hex
    spec = {"command": "sh", "args": ["-c", "echo ran"], "network": "none", "node": "elsewhere"}
    send_run(host.cfg, job, spec, None)  # on the shared queue, which this node serves
    rec = wait_sent(client, job)
    assert rec.status == JobStatus.FAILED and rec.started is None
    assert "'elsewhere'" in (rec.error or "") and f"'{host.name}'" in (rec.error or "")
    assert b"".join(d for _, d in client.logs(job)) == b""
    mine = client.wait(client.run("echo", ("here",), network="none", node=host.name).id, timeout=30)
    assert mine.status == JobStatus.COMPLETED and mine.node == host.name


def test_workers_publish_whether_they_require_signing(host, client):
    assert client.live_nodes()[host.name]["signed"] is False


def test_garbage_on_the_queue_is_counted(host, client):
    before = sum(client.store.dropped(host.name).values())
    for raw in (b"[" * 200000, b'{"headers": {"id": ["x"], "task": ["x"]}}', b"\xff\xfe"):
        client.store.redis.lpush(host.cfg.queue, raw)
    eventually(lambda: sum(client.store.dropped(host.name).values()) == before + 3, "not counted")
    assert host.worker is not None and host.worker.poll() is None
    good_job_completes(client)


def test_a_submit_interrupted_before_its_message_went_out_is_failed_not_pending(client, monkeypatch):
    """Ctrl-C between the record and the queue message: the job no worker will ever receive
    is FAILED saying so, not PENDING for good."""
    from joblet.api import tasks

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tasks, "send_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        client.run("true", network="none")
    newest = client.list()[-1]
    assert newest.status.value == "FAILED" and newest.error == "interrupted before it was queued", newest
    keys = client.store.keys
    for key in (keys.job(newest.id), keys.log(newest.id)):  # expiring as any ended job's (review)
        assert 0 < client.store.redis.ttl(key) <= client.settings.log_ttl, key
    monkeypatch.undo()
    assert client.wait(client.run("true", network="none").id, timeout=60).status.value == "COMPLETED"  # control
