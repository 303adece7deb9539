"""RabbitMQ as the broker (`broker_url=amqp://...`), Redis as the state store: a job runs, a
stop, a signed fleet, and redelivery after a worker crash. The broker is a private
RabbitMQ in its own namespace (tests/integration/rabbit.py), started here and stopped by PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from tests.conftest import BIN, Host, need
from tests.integration.certs import issue
from tests.integration.helpers import eventually, output, run
from tests.integration.rabbit import BIN as RABBIT_BIN
from tests.integration.rabbit import PORT as RABBIT_PORT
from tests.integration.rabbit import Rabbit, lan_is_free


@pytest.fixture(scope="module")
def rabbit() -> Iterator[Rabbit]:
    need(os.geteuid() == 0, "needs root")
    need(
        (RABBIT_BIN / "rabbitmq-server").exists() and shutil.which("erl") is not None,
        "rabbitmq-server is not installed (scripts/install.sh installs it)",
    )
    need(lan_is_free(), "the test LAN range 10.213.7.0/24 is in use on this machine")
    r = Rabbit()
    try:
        r.start()
        yield r
    finally:
        r.close()


def rabbit_host(rabbit: Rabbit, redis_sock: str, name: str, **settings: str) -> Host:
    h = Host(redis_sock, name, broker_url=rabbit.url, **settings)
    rabbit.join(h)
    return h


@pytest.fixture(scope="module")
def rhost(rabbit: Rabbit, redis_sock: str) -> Iterator[Host]:
    h = rabbit_host(rabbit, redis_sock, "rmq-a")
    try:
        h.start_worker()
        yield h
    finally:
        h.close()


def test_a_job_runs_through_rabbitmq(rhost):
    client = Client(rhost.cfg)
    assert client.settings.broker.startswith("amqp://")
    rec, out, _ = run(client, "sh", "-c", "echo via-amqp; exit 3", network="none")
    assert rec.status == JobStatus.FAILED and rec.exit_code == 3 and out == b"via-amqp\n"
    attached = rhost.rnx("run", "--network=none", "echo", "attached")
    assert attached.returncode == 0 and attached.stdout == b"attached\n"


def test_a_refused_login_or_vhost_is_one_line_without_the_password(rhost, rabbit):
    """A wrong vhost or password was a traceback of amqp's (operator's run); an unreachable
    broker's message showed the password."""
    base = rabbit.url.rsplit("/", 1)[0]
    client = Client(rhost.cfg)
    before = {r.id for r in client.list()}
    for url, says in (
        (f"{base}/nosuchvhost", "NOT_ALLOWED"),
        (base.replace("guest:guest@", "guest:s3cret-pw@") + "/", "ACCESS_REFUSED"),
    ):
        out = rhost.rnx("run", "-d", "--network=none", "true", env_extra={"JOBLET_BROKER_URL": url})
        err = out.stderr.decode()
        assert out.returncode != 0 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("rnx: cannot reach the broker at amqp://guest:***@") and says in err, err
        assert "s3cret-pw" not in err and "Traceback" not in err, err
    left = [r for r in client.list() if r.id not in before]  # each recorded as never queued
    assert [r.status for r in left] == [JobStatus.FAILED] * 2 and all(r.started is None for r in left), left
    # the control: the same rnx with the fleet's broker URL queues it
    ok = rhost.rnx("run", "-d", "--network=none", "true")
    assert ok.returncode == 0, ok.stderr


def test_a_stop_through_rabbitmq(rhost):
    client = Client(rhost.cfg)
    job = client.run("sleep", ("300",), network="none")
    eventually(lambda: client.get(job.id).status == JobStatus.RUNNING, "job not running")
    out = rhost.rnx("stop", job.id)
    assert out.returncode == 0 and out.stdout.decode().split() == [job.id, "STOPPED"]
    assert client.get(job.id).signal is not None


def test_redelivery_after_a_worker_crash_runs_nothing_twice(rabbit, redis_sock):
    h = rabbit_host(rabbit, redis_sock, "rmq-crash")
    marker = h.tmp / "fault"
    h.env.update(JOBLET_FAULT_PAUSE="claimed", JOBLET_FAULT_MARKER=str(marker))
    try:
        h.start_worker()
        client = Client(h.cfg)
        job = client.run("sh", ("-c", "echo ran"), network="none")
        eventually(lambda: marker.exists() and job.id in marker.read_text(), "fault point claimed")
        h.worker.kill()  # type: ignore[union-attr]  # unacked: RabbitMQ puts the message back
        h.worker.wait()  # type: ignore[union-attr]
        queued = client.run("echo", ("once",), network="none")  # while no worker is alive
        del h.env["JOBLET_FAULT_PAUSE"]
        h.start_worker()
        eventually(lambda: "was delivered again; it runs only once" in h.log(), "no redelivery seen")
        eventually(lambda: client.get(job.id).status.final, "the crashed job to be reconciled")
        assert client.get(job.id).status == JobStatus.LOST and output(client, job.id) == b""
        assert client.wait(queued.id, timeout=30).status == JobStatus.COMPLETED
        assert output(client, queued.id) == b"once\n"
    finally:
        h.close()


UNSIGNED_SEND = """
import uuid
from joblet.api.tasks import send_run
from joblet.config import settings
job = uuid.uuid4().hex
send_run(settings(), job, {"command": "sh", "args": ["-c", "echo ran"], "network": "none"}, None)
print(job)
"""


def test_a_signed_fleet_over_rabbitmq(rabbit, redis_sock, tmp_path):
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    key, cert = issue(trusted, "admin")
    h = rabbit_host(
        rabbit,
        redis_sock,
        "rmq-signed",
        signing_key=str(key),
        signing_cert=str(cert),
        signing_trust=str(trusted / "*.crt"),
    )
    try:
        h.start_worker()
        client = Client(h.cfg)
        rec, out, _ = run(client, "echo", "signed", network="none")
        assert rec.status == JobStatus.COMPLETED and out == b"signed\n"  # positive control
        unsigned = {k: v for k, v in {**os.environ, **h.env}.items() if not k.startswith("JOBLET_SIGNING")}
        # past the client's check: a raw unsigned send, as an attacker would
        sent = subprocess.run(
            [sys.executable, "-c", UNSIGNED_SEND],
            env=unsigned,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(BIN.parent.parent),
        )
        assert sent.returncode == 0, sent.stderr
        eventually(lambda: "Refusing to deserialize untrusted content" in h.log(), "unsigned message not refused")
        assert sum(client.store.dropped(h.name).values()) >= 1  # counted, like any refusal
        assert client.store.find_job(sent.stdout.strip()) is None
        rec, out, _ = run(client, "echo", "still", network="none")
        assert rec.status == JobStatus.COMPLETED and out == b"still\n"
    finally:
        h.close()


PROBE = """
import socket, sys
try:
    socket.create_connection(("{ip}", {port}), timeout=2).close()
except OSError as exc:
    print(exc); sys.exit(1)
"""


def test_jobs_cannot_reach_the_rabbitmq_broker(rhost, rabbit):
    client = Client(rhost.cfg)
    # positive control: the broker's host answers a job on another port (its epmd)
    rec = client.wait(client.run("python3", ("-c", PROBE.format(ip=rabbit.address, port=4369))).id, timeout=30)
    assert rec.exit_code == 0, output(client, rec.id)
    for network in ("bridge", "isolated"):
        rec = client.wait(
            client.run("python3", ("-c", PROBE.format(ip=rabbit.address, port=RABBIT_PORT)), network=network).id,
            timeout=30,
        )
        assert rec.exit_code == 1, network
