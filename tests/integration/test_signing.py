"""Signed task messages (Celery's auth serializer): unsigned, untrusted, replayed and
re-pointed messages run nothing."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from joblet.api.client import Client
from joblet.api.keys import RUN_TASK
from joblet.api.message import stamp
from joblet.api.models import JobStatus
from joblet.api.tasks import client_app, run_message
from joblet.api.workflows import load
from tests.conftest import BIN, Host, need
from tests.integration.certs import issue
from tests.integration.helpers import eventually, output


def log_text(h: Host) -> str:
    return (h.tmp / "worker.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def signed(redis_sock, tmp_path_factory):
    need(os.geteuid() == 0, "needs root")
    keys = tmp_path_factory.mktemp("keys")
    trusted = keys / "trusted"
    trusted.mkdir()
    admin_key, admin_cert = issue(trusted, "admin")
    rogue_key, rogue_cert = issue(keys, "rogue")
    h = Host(
        redis_sock,
        "signed",
        signing_key=str(admin_key),
        signing_cert=str(admin_cert),
        signing_trust=str(trusted / "*.crt"),
    )
    # signing is process-wide in Celery (one identity per process): other senders are `rnx`
    # processes with their own environment
    base = {k: v for k, v in {**os.environ, **h.env}.items() if not k.startswith("JOBLET_SIGNING")}
    senders = {
        "unsigned": base,
        "rogue": {**base, "JOBLET_SIGNING_KEY": str(rogue_key), "JOBLET_SIGNING_CERT": str(rogue_cert)},
    }
    try:
        h.start_worker()
        yield h, {"admin": Client(h.cfg)}, senders
    finally:
        h.close()


def test_signed_job_runs(signed):
    _, c, _ = signed
    rec = c["admin"].wait(c["admin"].run("echo", ("signed",), network="none").id, timeout=30)
    assert rec.status == JobStatus.COMPLETED


UNSIGNED_SEND = """
import uuid
from joblet.api.tasks import send_run
from joblet.config import settings
job = uuid.uuid4().hex
spec = {"command": "sh", "args": ["-c", "echo ran"], "network": "none", "env": {"DB_PASSWORD": "hunter2"}}
send_run(settings(), job, spec, None)
print(job)
"""


def test_an_unsigned_client_refuses_to_send_to_a_signing_fleet(signed):
    h, c, senders = signed
    count = len(c["admin"].list())
    sent = subprocess.run(
        [str(BIN / "rnx"), "run", "-d", "--network=none", "true"],
        env=senders["unsigned"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 2 and sent.stdout == "", sent
    assert sent.stderr.count("\n") == 1 and "require signed messages" in sent.stderr and "'signed'" in sent.stderr
    assert len(c["admin"].list()) == count  # nothing recorded that would stay PENDING
    assert c["admin"].live_nodes()[h.name]["signed"] is True
    ok = c["admin"].wait(c["admin"].run("true", network="none").id, timeout=30)  # signed: runs
    assert ok.status == JobStatus.COMPLETED


def test_a_client_whose_certificate_the_fleet_does_not_trust_refuses_to_send(signed, tmp_path):
    """rnx signing with a certificate the workers do not trust sent it, and the job stayed
    PENDING for good; a key that is not its certificate's, the same (operator's run)."""
    h, c, senders = signed
    count = len(c["admin"].list())
    mismatched = {**senders["rogue"], "JOBLET_SIGNING_CERT": h.env["JOBLET_SIGNING_CERT"]}  # rogue's key
    for env, says in (
        (senders["rogue"], "cannot queue the job: worker(s) 'signed' do not trust signing_cert (issuer and serial"),
        (mismatched, "cannot load the signing key or certificate: signing_key is not the key of signing_cert"),
    ):
        sent = subprocess.run(
            [str(BIN / "rnx"), "run", "-d", "--network=none", "true"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 2 and sent.stdout == "", sent
        assert sent.stderr.count("\n") == 1 and sent.stderr.startswith(f"rnx: {says}"), sent.stderr
    assert len(c["admin"].list()) == count  # nothing recorded that would stay PENDING
    ok = c["admin"].wait(c["admin"].run("true", network="none").id, timeout=30)  # the control: trusted
    assert ok.status == JobStatus.COMPLETED


@pytest.mark.parametrize("who", ["unsigned", "rogue"])
def test_unsigned_or_untrusted_messages_run_nothing(signed, who):
    """Past the client's checks (a raw send, as an attacker would): refused by the worker,
    with one log line that shows nothing of the job's spec (Celery's dumped its body, its
    environment with it, at CRITICAL: operator's run)."""
    h, c, senders = signed
    seen = len(log_text(h))
    sent = subprocess.run(
        [sys.executable, "-c", UNSIGNED_SEND], env=senders[who], capture_output=True, text=True, timeout=60
    )
    assert sent.returncode == 0, sent.stderr
    job_id = sent.stdout.strip()
    refusal = {"unsigned": "is not 'application/data'", "rogue": "Unknown certificate"}[who]
    eventually(lambda: refusal in log_text(h)[seen:], log_text(h)[seen:][-3000:])
    assert "hunter2" not in log_text(h)[seen:], log_text(h)[seen:][-3000:]
    if who == "rogue":  # the line names the message
        assert f"refused a message (undecodable) of task {RUN_TASK}, id {job_id}: " in log_text(h)[seen:]
    ok = c["admin"].wait(c["admin"].run("true", network="none").id, timeout=30)  # still serving
    assert ok.status == JobStatus.COMPLETED  # a later job ended: the refused one did not run meanwhile
    assert c["admin"].store.find_job(job_id) is None  # dropped before the task: nothing recorded


def capture(h: Host, admin: Client, spec: dict, expires_in: float | None = None) -> tuple[str, bytes]:
    """A signed message for a new job, taken off a queue no worker serves."""
    job_id = uuid.uuid4().hex
    dead = h.cfg.node_queue("nobody")
    if expires_in is None:
        return job_id, run_message(h.cfg, job_id, spec, None)[1]  # for any worker of the shared queue
    else:
        client_app(h.cfg).send_task(
            RUN_TASK,
            kwargs={"spec": spec, **stamp(job_id, expires_in, time.time())},
            task_id=job_id,
            queue=dead,
            retry=False,
        )
    raw = admin.store.redis.rpop(dead)
    assert raw is not None
    return job_id, raw


def test_replayed_and_repointed_messages_run_nothing_more(signed):
    h, c, _ = signed
    admin = c["admin"]
    queue = h.env["JOBLET_QUEUE"]
    job, raw = capture(h, admin, {"command": "sh", "args": ["-c", "echo once"], "network": "none"})
    admin.store.redis.lpush(queue, raw)
    eventually(lambda: admin.store.find_job(job) is not None, "no record")
    assert admin.wait(job, timeout=30).status == JobStatus.COMPLETED

    admin.store.redis.lpush(queue, raw)  # the same signed message again
    eventually(lambda: "was delivered again; it runs only once" in log_text(h), "replay not seen")
    envelope = json.loads(raw)
    envelope["headers"]["task"] = "celery.backend_cleanup"  # signature covers the body only
    envelope["headers"]["id"] = "0" * 32
    admin.store.redis.lpush(queue, json.dumps(envelope))
    eventually(lambda: "task 'celery.backend_cleanup' is not" in log_text(h), "re-pointed message not refused")
    assert output(admin, job, None) == b"once\n"
    assert admin.wait(admin.run("true", network="none").id, timeout=30).status == JobStatus.COMPLETED


def test_a_message_placed_on_another_node_is_refused_here(signed):
    h, c, _ = signed
    admin = c["admin"]
    ids = {}
    for node in ("othernode", h.name):  # the second, placed here, is the control
        job_id = uuid.uuid4().hex
        ids[node] = job_id
        _, raw = run_message(h.cfg, job_id, {"command": "true", "network": "none"}, node)
        admin.store.redis.lpush(h.cfg.node_queue(h.name), raw)  # moved to this node's queue
    eventually(lambda: all(admin.store.find_job(i) is not None for i in ids.values()), "no records")
    refused = admin.wait(ids["othernode"], timeout=30)
    assert refused.status == JobStatus.FAILED and "is for node 'othernode'" in (refused.error or ""), refused
    assert admin.wait(ids[h.name], timeout=30).status == JobStatus.COMPLETED


def test_a_changed_header_id_is_refused(signed):
    h, c, _ = signed
    admin = c["admin"]
    victim = h.tmp / "victim"
    victim.mkdir()
    job, raw = capture(h, admin, {"command": "true", "network": "none"})
    before = admin.store.dropped(h.name)
    forged = [uuid.uuid4().hex, "../../victim"]
    for new_id in forged:
        envelope = json.loads(raw)
        envelope["headers"]["id"] = envelope["headers"]["root_id"] = new_id
        admin.store.redis.lpush(h.env["JOBLET_QUEUE"], json.dumps(envelope))
    wanted = {"id-mismatch": before.get("id-mismatch", 0) + 1, "bad-id": before.get("bad-id", 0) + 1}
    eventually(
        lambda: all(admin.store.dropped(h.name).get(k, 0) == v for k, v in wanted.items()),
        "forged header ids not dropped",
    )
    assert victim.is_dir() and all(admin.store.find_job(i) is None for i in forged)
    admin.store.redis.lpush(h.env["JOBLET_QUEUE"], raw)  # the untouched message still runs once
    eventually(lambda: admin.store.find_job(job) is not None, "no record")
    assert admin.wait(job, timeout=30).status == JobStatus.COMPLETED


def test_a_signed_body_relabelled_as_pickle_is_dropped(signed):
    """Only the signed body's bytes are signed, not the inner content type Celery decodes
    them with (it decodes with force=True)."""
    h, c, _ = signed
    admin = c["admin"]
    job, raw = capture(h, admin, {"command": "true", "network": "none"})
    envelope = json.loads(raw)
    packed = base64.b64decode(base64.b64decode(envelope["body"]))
    relabelled = packed.replace(b"application/json", b"application/x-python-serialize", 1)
    envelope["body"] = base64.b64encode(base64.b64encode(relabelled)).decode()
    before = admin.store.dropped(h.name).get("envelope", 0)
    admin.store.redis.lpush(h.env["JOBLET_QUEUE"], json.dumps(envelope))
    eventually(lambda: admin.store.dropped(h.name).get("envelope", 0) == before + 1, "relabelled body not dropped")
    assert "inner content type" in log_text(h) and admin.store.find_job(job) is None
    admin.store.redis.lpush(h.env["JOBLET_QUEUE"], raw)  # the untouched message runs
    eventually(lambda: admin.store.find_job(job) is not None, "no record")
    assert admin.wait(job, timeout=30).status == JobStatus.COMPLETED


def test_an_expired_signed_message_is_refused(signed):
    h, c, _ = signed
    admin = c["admin"]
    job, raw = capture(h, admin, {"command": "sh", "args": ["-c", "echo ran"], "network": "none"}, expires_in=-1)
    before = admin.store.dropped(h.name).get("expired", 0)
    admin.store.redis.lpush(h.env["JOBLET_QUEUE"], raw)
    eventually(lambda: admin.store.dropped(h.name).get("expired", 0) == before + 1, "expired message not dropped")
    assert admin.store.find_job(job) is None  # no record written for a message that was never queued
    assert admin.wait(admin.run("true", network="none").id, timeout=30).status == JobStatus.COMPLETED


WORKFLOW = """
jobs:
  first:
    command: "sh"
    args: ["-c", "echo one"]
    network: "none"
  second:
    command: "sh"
    args: ["-c", "echo two"]
    network: "none"
    requires:
      - first: "COMPLETED"
"""


def test_workflows_run_with_signing(signed, tmp_path):
    h, c, senders = signed
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    admin = c["admin"]
    record = admin.workflows.submit(load(tmp_path / "wf.yaml"))  # the second job is sent by the worker
    eventually(lambda: admin.workflows.status(record.id)["status"] in ("COMPLETED", "FAILED"), "workflow stuck")
    info = admin.workflows.status(record.id)
    assert info["status"] == "COMPLETED", info
    assert output(admin, record.jobs["second"]) == b"two\n"
    proc = subprocess.run(
        [str(BIN / "rnx"), "workflow", "run", str(tmp_path / "wf.yaml")],
        env={**os.environ, **h.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    unsigned = subprocess.run(
        [str(BIN / "rnx"), "workflow", "run", str(tmp_path / "wf.yaml")],
        env=senders["unsigned"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unsigned.returncode == 2 and "require signed messages" in unsigned.stderr


def test_a_trust_pattern_naming_no_certificate_is_refused_at_start(redis_sock, tmp_path):
    """A signing_trust glob that matched nothing started a worker that refused every message."""
    need(os.geteuid() == 0, "needs root")
    key, cert = issue(tmp_path, "self")
    h = Host(redis_sock, "notrust", signing_key=str(key), signing_cert=str(cert))
    try:
        for trust, says in (
            (str(tmp_path / "nomatch*.pem"), f"signing_trust {tmp_path / 'nomatch*.pem'} names no file"),
            (str(key), f"signing_trust: {key} is not a PEM certificate"),
        ):
            started = subprocess.run(
                ["nsenter", f"--net=/run/netns/{h.netns}", str(BIN / "joblet-worker"), "--node", h.name],
                env={**os.environ, **h.env, "JOBLET_SIGNING_TRUST": trust},
                capture_output=True,
                timeout=60,
            )
            last = started.stderr.decode().strip().splitlines()[-1]
            assert started.returncode == 1 and last.startswith(f"joblet-worker: signing: {says}"), started.stderr
        h.env["JOBLET_SIGNING_TRUST"] = str(cert)
        h.start_worker()  # the control: its own certificate trusted
        client = Client(h.cfg)
        assert client.wait(client.run("true", network="none").id, timeout=30).status == JobStatus.COMPLETED
    finally:
        h.close()
