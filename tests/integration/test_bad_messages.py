"""Bad input at the task entry point and on the queue, and fuzzed `rnx` arguments: clear
errors, nothing half-built, the worker keeps serving, nothing leaked."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from joblet.api.models import JobStatus
from joblet.api.tasks import send_run
from tests.conftest import BIN
from tests.integration.helpers import eventually

BAD_SPECS = [
    ({"command": ""}, "command"),
    ({"command": "x\x00y"}, "command"),
    ({"command": "true", "network": "../x"}, "network"),
    ({"command": "true", "env": {"1BAD": "x"}}, "env"),
    ({"command": "true", "uploads": [{"path": "../../etc/passwd", "content": ""}]}, "uploads"),
    ({"command": "true", "limits": {"max_bandwidth": "fast"}}, "limits"),
    ({"command": "true", "user": "root"}, "user"),
    ({"command": "true", "surprise": 1}, "surprise"),
    ({"args": ["no command"]}, "command"),
]


def test_bad_specs_at_the_task_entry_fail_naming_the_field(host, client):
    ids = []
    for spec, _ in BAD_SPECS:
        job_id = uuid.uuid4().hex
        send_run(host.cfg, job_id, spec, None)
        ids.append(job_id)
    for job_id, (_, field) in zip(ids, BAD_SPECS, strict=True):
        deadline = time.monotonic() + 30
        while client.store.find_job(job_id) is None:  # the worker records what it refuses
            assert time.monotonic() < deadline, f"no record for {job_id}"
            time.sleep(0.05)
        rec = client.wait(job_id, timeout=30)
        assert rec.status == JobStatus.FAILED and f"invalid job field '{field}" in (rec.error or ""), rec.error


def envelope(body: bytes, content_type: str = "application/json", task: str = "joblet.run_job") -> bytes:
    job_id = uuid.uuid4().hex
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": {
                "lang": "py",
                "task": task,
                "id": job_id,
                "root_id": job_id,
                "parent_id": None,
                "group": None,
                "argsrepr": "()",
                "kwargsrepr": "{}",
                "origin": "fuzz",
            },
            "properties": {
                "correlation_id": job_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": "q"},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


GARBAGE = [
    b"not json at all",
    b"{}",
    b"[]",
    b"\x00\xff\xfe",
    json.dumps({"body": 5}).encode(),
    envelope(b"{not json"),
    envelope(b"[1, 2]"),
    envelope(b'[[], {"spec": 5}, {}]'),
    envelope(b'[[], {"spec": {"command": "true"}}, {}]', content_type="application/x-python-serialize"),
    envelope(b"[[], {}, {}]", task="no.such.task"),
]


def drops(client, host) -> int:
    return sum(client.store.dropped(host.name).values())


def drained(host, client) -> None:
    queue = host.env["JOBLET_QUEUE"]
    deadline = time.monotonic() + 30
    while client.store.redis.llen(queue):
        assert time.monotonic() < deadline, "the worker stopped taking messages"
        time.sleep(0.05)


def still_serving(host, client) -> None:
    assert host.worker is not None and host.worker.poll() is None, host.log()
    rec = client.wait(client.run("echo", ("alive",), network="none").id, timeout=30)
    assert rec.status == JobStatus.COMPLETED


def test_garbage_on_the_queue_never_stops_the_worker(host, client):
    before = drops(client, host)
    for raw in GARBAGE + POISON:
        client.store.redis.lpush(host.env["JOBLET_QUEUE"], raw)
    drained(host, client)
    still_serving(host, client)
    eventually(lambda: drops(client, host) == before + len(GARBAGE) + len(POISON), "each one counted")
    log = (host.tmp / "worker.log").read_text(errors="replace")
    assert "no.such.task" in log  # refused and logged


def test_an_oversized_message_is_dropped_unread(host, client):
    before = drops(client, host)
    client.store.redis.lpush(host.env["JOBLET_QUEUE"], envelope(b"[[], {}, {}]" + b" " * (65 << 20)))
    drained(host, client)
    still_serving(host, client)
    assert drops(client, host) == before + 1 and "over the limit of" in host.log()


def poison_envelope(**headers: object) -> bytes:
    env = json.loads(envelope(b'[[], {"spec": {"command": "true", "network": "none"}}, {}]'))
    env["headers"].update(headers)
    return json.dumps(env).encode()


POISON = [  # each stopped a worker before (PITFALLS 24) or was accepted with a wrong shape
    b"[" * 200000,
    b'{"a":' * 100000,
    poison_envelope(id=["x"]),
    poison_envelope(task=["x"]),
    poison_envelope(eta=5),
    poison_envelope(timelimit="x"),
    envelope(b"[" * 200000),
    envelope(b'[[], {"spec": {"command": "true"}}, {"callbacks": [{"task": "celery.ping"}]}]'),
    envelope(b"\xff\xfe not utf-8", content_type="text/plain"),
]

KEYS = [
    "id",
    "task",
    "eta",
    "expires",
    "retries",
    "timelimit",
    "root_id",
    "argsrepr",
    "stamps",
    "lang",
    "correlation_id",
    "delivery_info",
    "delivery_tag",
    "body_encoding",
    "priority",
    "body",
    "content-type",
    "content-encoding",
    "headers",
    "properties",
    "extra",
]
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A joblet envelope with one field, anywhere, replaced by arbitrary JSON or removed."""
    env = json.loads(poison_envelope())
    key, value = draw(st.sampled_from(KEYS)), draw(junk)
    for part in (env, env["headers"], env["properties"]):
        if key in part or (key == "extra" and part is env["headers"]):
            if draw(st.booleans()):
                part.pop(key, None)
            else:
                part[key] = value
    return json.dumps(env).encode()


queue_garbage = st.one_of(
    st.binary(max_size=300),
    mutated(),
    st.builds(lambda b: envelope(json.dumps(b).encode()), junk),  # valid JSON bodies of any shape
    st.builds(lambda n, c: c * n, st.integers(2000, 300000), st.sampled_from([b"[", b'{"x":', b'[{"a":'])),
    st.builds(lambda t: envelope(b"[[], {}, {}]", task=t), st.text(max_size=20)),
    st.builds(lambda ct: envelope(b"[[], {}, {}]", content_type=ct), st.text(max_size=30)),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(batch=st.lists(queue_garbage, min_size=1, max_size=4))
def test_generated_garbage_never_stops_the_worker(host, client, batch):
    for raw in batch:
        client.store.redis.lpush(host.env["JOBLET_QUEUE"], raw)
    drained(host, client)
    still_serving(host, client)


OPTIONS = [
    "--network",
    "--env",
    "--name",
    "--node",
    "--timeout",
    "--volume",
    "--runtime",
    "--user",
    "--max-cpu",
    "--max-memory",
    "--max-iobps",
    "--max-bandwidth",
    "--upload",
]
arg_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opts=st.lists(st.tuples(st.sampled_from(OPTIONS), arg_text), max_size=3), command=arg_text)
def test_fuzzed_rnx_run_arguments(host, client, opts, command):
    before = len(client.list())
    argv = [str(BIN / "rnx"), "run", "-d", *(f"{o}={v}" for o, v in opts), "--", command or "x"]
    proc = subprocess.run(argv, env={**host.env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 0:
        assert len(client.list()) == before + 1
    else:
        assert proc.returncode in (1, 2) and proc.stderr.strip(), proc
        assert len(client.list()) == before  # nothing queued half-built


def test_a_job_of_another_installation_on_a_shared_queue_fails_there_and_never_runs_here(host, client):
    """A client whose key prefix is not the worker's, on the queue they share (its
    JOBLET_KEY_PREFIX changed, its JOBLET_QUEUE not): the worker ran the job under its own keys
    while rnx said no worker was running and waited for good (usability run). Refused now, and
    its sender's record ends FAILED saying why."""
    other = {"JOBLET_KEY_PREFIX": f"o{host.tag}:"}
    try:
        done = host.rnx("run", "--network=none", "sh", "-c", "echo ran", env_extra=other, timeout=60)
        said = done.stderr.decode()
        assert done.returncode != 0 and b"ran" not in done.stdout, done
        assert f"its key prefix 'o{host.tag}:' is not the one of node {host.name!r} ('t{host.tag}:')" in said, said
        assert "give each its own JOBLET_QUEUE" in said, said
        assert said.count("\n") <= 2, said  # the job's line, and rnx's
        mine = [r for r in client.list() if r.spec.command == "sh"]
        assert mine == []  # nothing ran under the worker's own keys
        ok = host.rnx("run", "--network=none", "echo", "ran")  # the control: this installation's client
        assert ok.returncode == 0 and ok.stdout == b"ran\n", ok
    finally:
        keys = client.store.redis.keys(f"o{host.tag}:*")
        if keys:
            client.store.redis.delete(*keys)
