"""Signed task messages (Celery's auth serializer): unsigned, untrusted, replayed and
re-pointed messages run nothing."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
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
    h = Host(redis_sock, "signed", signing_key=str(admin_key), signing_cert=str(admin_cert),
             signing_trust=str(trusted / "*.crt"))
    # signing is process-wide in Celery (one identity per process): other senders are `rnx`
    # processes with their own environment
    base = {k: v for k, v in {**os.environ, **h.env}.items() if not k.startswith("JOBLET_SIGNING")}
    senders = {"unsigned": base,
               "rogue": {**base, "JOBLET_SIGNING_KEY": str(rogue_key), "JOBLET_SIGNING_CERT": str(rogue_cert)}}
    try:
        h.start_worker()
        yield h, {"admin": Client(h.cfg)}, senders
    finally:
        h.close()


def test_signed_job_runs(signed):
    _, c, _ = signed
    rec = c["admin"].wait(c["admin"].run("echo", ("signed",), network="none").id, timeout=30)
    assert rec.status == JobStatus.COMPLETED


@pytest.mark.parametrize("who", ["unsigned", "rogue"])
def test_unsigned_or_untrusted_messages_run_nothing(signed, who):
    h, c, senders = signed
    seen = len(log_text(h))
    sent = subprocess.run([str(BIN / "rnx"), "run", "-d", "--network=none", "sh", "-c", "echo ran"],
                          env=senders[who], capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    job = c["admin"].get(sent.stdout.strip())
    refusal = {"unsigned": "Refusing to deserialize untrusted content of type json",
               "rogue": "Unknown certificate"}[who]
    eventually(lambda: refusal in log_text(h)[seen:], log_text(h)[seen:][-3000:])
    time.sleep(1)
    rec = c["admin"].get(job.id)
    assert rec.status == JobStatus.PENDING and rec.started is None and output(c["admin"], job.id, None) == b""
    ok = c["admin"].wait(c["admin"].run("true", network="none").id, timeout=30)  # still serving
    assert ok.status == JobStatus.COMPLETED


def test_replayed_and_repointed_messages_run_nothing_more(signed):
    h, c, _ = signed
    admin = c["admin"]
    h.stop_worker()
    job = admin.run("sh", ("-c", "echo once"), network="none")
    queue = h.env["JOBLET_QUEUE"]
    raw = admin.store.redis.lrange(queue, 0, -1)
    assert len(raw) == 1
    h.start_worker()
    assert admin.wait(job.id, timeout=30).status == JobStatus.COMPLETED

    admin.store.redis.lpush(queue, raw[0])  # the same signed message again
    eventually(lambda: "was delivered again; it runs only once" in log_text(h), "replay not seen")
    envelope = json.loads(raw[0])
    envelope["headers"]["task"] = "celery.backend_cleanup"  # signature covers the body only
    envelope["headers"]["id"] = "0" * 32
    admin.store.redis.lpush(queue, json.dumps(envelope))
    eventually(lambda: "unregistered task" in log_text(h).lower(), "re-pointed message not refused")
    assert output(admin, job.id, None) == b"once\n"
    assert admin.wait(admin.run("true", network="none").id, timeout=30).status == JobStatus.COMPLETED
