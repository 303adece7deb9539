"""Workflows: the guide's microservices file, cascading cancels, discovery, validation."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from joblet.errors import NotFound, ValidationError
from tests.conftest import Host
from tests.integration.helpers import eventually, output, run, wait_running

MICROSERVICES = """
jobs:
  database:
    command: "sh"
    args: ["-c", "echo ready > /volumes/db-data/state"]
    network: "backend"
    volumes: ["db-data"]

  api-service:
    command: "python3"
    args: ["api.py"]
    runtime: "python:3.11-ml"
    network: "backend"
    uploads:
      files: ["api.py", "requirements.txt"]
    requires:
      - database: "COMPLETED"

  web-service:
    command: "java"
    args: ["-jar", "web-service.jar"]
    runtime: "java:17"
    network: "frontend"
    uploads:
      files: ["web-service.jar", "application.properties"]
    requires:
      - api-service: "COMPLETED"
"""


def runtime(host: Host, name: str, tool: str, script: str) -> None:
    bindir = host.tmp / "runtimes" / name / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    (bindir / tool).write_text(script)
    (bindir / tool).chmod(0o755)


def wait_done(client, wf_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = client.workflows.status(wf_id)
        if info["status"] in ("COMPLETED", "FAILED", "STOPPED"):
            return info
        assert time.monotonic() < deadline, info
        time.sleep(0.2)


@pytest.fixture(scope="module")
def project(client, host, tmp_path_factory):
    d = tmp_path_factory.mktemp("wf")
    (d / "microservices-workflow.yaml").write_text(MICROSERVICES)
    (d / "api.py").write_text("print('api ok', open('requirements.txt').read().strip())\n")
    (d / "requirements.txt").write_text("flask\n")
    (d / "web-service.jar").write_bytes(b"PK\x03\x04fake")
    (d / "application.properties").write_text("port=8080\n")
    runtime(host, "python:3.11-ml", "python3", '#!/bin/sh\nexec /usr/bin/python3 "$@"\n')
    runtime(host, "java:17", "java", '#!/bin/sh\necho "java $1 $2"; cat application.properties\n')
    deadline = time.monotonic() + 10
    while len(client.runtimes()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return d


def test_missing_prerequisites_are_listed_and_nothing_runs(client, host, project):
    before = len(client.list())
    proc = host.rnx("run", f"--workflow={project / 'microservices-workflow.yaml'}")
    out = proc.stdout.decode()
    assert proc.returncode == 2
    assert out.startswith("🔍 Validating workflow prerequisites...\n")
    assert "❌ Missing networks: backend, frontend (rnx network create)\n" in out
    assert "❌ Missing volumes: db-data (rnx volume create)\n" in out
    assert "✅ All required runtimes are available" in out
    assert len(client.list()) == before


def test_the_guides_workflow_runs_in_dependency_order(client, host, project):
    client.networks.create("backend", "10.150.0.0/24")
    client.networks.create("frontend", "10.151.0.0/24")
    client.volumes.create("db-data")
    proc = host.rnx("run", f"--workflow={project / 'microservices-workflow.yaml'}")
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "✅ All required networks exist" in out and "workflow microservices-workflow: COMPLETED" in out
    records = {r.name: r for r in client.list() if r.workflow}
    db, api, web = records["database"], records["api-service"], records["web-service"]
    assert db.finished <= api.started and api.finished <= web.started
    assert api.ip.startswith("10.150.0.") and web.ip.startswith("10.151.0.")
    assert b"".join(d for _, d in client.logs(api.id)) == b"api ok flask\n"
    assert b"".join(d for _, d in client.logs(web.id)) == b"java -jar web-service.jar\nport=8080\n"
    listed = json.loads(host.rnx("workflow", "list", "--json").stdout)
    assert [w["status"] for w in listed] == ["COMPLETED"]


def test_a_failed_requirement_cancels_transitively(client, project):
    (project / "cascade.yaml").write_text("""
jobs:
  build: {command: "false", network: none}
  test: {command: "true", network: none, requires: [{build: COMPLETED}]}
  deploy: {command: "true", network: none, requires: [{test: COMPLETED}]}
  notify: {command: "true", network: none, requires: [{build: FAILED}]}
""")
    from joblet.api.workflows import load

    record = client.workflows.submit(load(project / "cascade.yaml"))
    info = wait_done(client, record.id)
    states = {j["name"]: j["status"] for j in info["jobs"]}
    assert states == {"build": "FAILED", "test": "CANCELED", "deploy": "CANCELED", "notify": "COMPLETED"}
    errors = {j["name"]: j["error"] for j in info["jobs"]}
    assert "build ended FAILED" in errors["test"] and "test ended CANCELED" in errors["deploy"]
    assert info["status"] == "FAILED"


def test_a_branch_not_taken_leaves_the_workflow_completed(host, project):
    """`notify` runs only if the build fails: after a build that passed it is CANCELED, and the
    workflow COMPLETED (rnx exits 0); the same file with a failing build is FAILED (exit 1)."""
    runs = []
    for build, want, code in (("true", "COMPLETED", 0), ("false", "FAILED", 1)):
        (project / "branch.yaml").write_text(f"""
jobs:
  build: {{command: "{build}", network: none}}
  notify: {{command: "true", network: none, requires: [{{build: FAILED}}]}}
""")
        proc = host.rnx("workflow", "run", "--json", str(project / "branch.yaml"))
        info = json.loads(proc.stdout)
        assert proc.returncode == code and info["status"] == want, proc.stderr.decode()
        notify = next(j for j in info["jobs"] if j["name"] == "notify")
        assert notify["status"] == ("CANCELED" if build == "true" else "COMPLETED")
        built = next(j for j in info["jobs"] if j["name"] == "build")
        assert built["exit_code"] == code  # why it failed, beside its status (usability review)
        assert (b"  build: FAILED (exit code 1)\n" in proc.stderr) == (code == 1), proc.stderr
        hint = f"  build's output: rnx log {built['id'][:12]}\n".encode()  # where to look (usability run)
        assert (hint in proc.stderr) == (code == 1), proc.stderr
        runs.append(info["id"])
    # by name: the newest run of that name (as a job's name is the job that has it now)
    by_name = json.loads(host.rnx("workflow", "status", "--json", "branch").stdout)
    assert by_name["id"] == runs[1] and by_name["status"] == "FAILED"
    by_prefix = json.loads(host.rnx("workflow", "status", "--json", runs[0][:12]).stdout)
    assert by_prefix["id"] == runs[0] and by_prefix["status"] == "COMPLETED"
    table = host.rnx("workflow", "status", "branch").stdout.decode().splitlines()
    assert table[1].split()[:4] == ["JOB", "ID", "STATUS", "EXIT"]
    assert [row.split()[3] for row in table[2:]] == ["1", "0"]  # build, then notify
    missing = host.rnx("workflow", "status", "no-such-flow")
    assert missing.returncode != 0 and b"no such workflow: no-such-flow" in missing.stderr


def test_jobs_of_a_workflow_find_each_other_by_name_and_stop(client, host, project):
    (project / "pair.yaml").write_text("""
jobs:
  cache: {command: sleep, args: ["300"], network: backend}
  app:
    command: sh
    args: ["-c", "until getent ahostsv4 cache >/dev/null; do sleep 0.1; done; echo found"]
    network: backend
  after: {command: "true", network: backend, requires: [{cache: COMPLETED}]}
""")
    proc = host.rnx("workflow", "run", "-d", "--json", str(project / "pair.yaml"))
    assert proc.returncode == 0, proc.stderr
    wf = json.loads(proc.stdout)
    deadline = time.monotonic() + 30
    while client.get(wf["jobs"]["app"]).status.value != "COMPLETED":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert b"found" in b"".join(d for _, d in client.logs(wf["jobs"]["app"]))
    stop = host.rnx("workflow", "stop", wf["id"][:12])
    assert stop.returncode == 0  # it waited for its jobs' ends, as `rnx stop` does:
    assert stop.stdout.decode().splitlines()[-1].endswith(": STOPPED (cache stopped, after canceled)"), stop.stdout
    info = client.workflows.status(wf["id"])
    states = {j["name"]: j["status"] for j in info["jobs"]}
    assert states == {"cache": "STOPPED", "app": "COMPLETED", "after": "CANCELED"}
    assert info["status"] == "STOPPED"  # not FAILED: nothing failed


def test_several_workflows_are_stopped_in_one_command_and_one_not_found_is_said(client, host, project):
    """`rnx workflow stop A B` was refused (`Got unexpected extra argument`), where `rnx stop`
    takes several (usability run): each is stopped, one not found is said (exit 1)."""
    (project / "nap.yaml").write_text("jobs:\n  nap: {command: sleep, args: ['300'], network: none}\n")
    ids = [
        json.loads(host.rnx("workflow", "run", "-d", "--json", str(project / "nap.yaml")).stdout)["id"] for _ in "ab"
    ]
    for wf_id in ids:
        running = lambda wf_id=wf_id: client.workflows.status(wf_id)["jobs"][0]["status"] == "RUNNING"  # noqa: E731
        eventually(running, f"workflow {wf_id} never ran")
    stop = host.rnx("workflow", "stop", ids[0][:12], "no-such-flow", ids[1][:12])
    assert stop.returncode == 1 and b"rnx: no such workflow: no-such-flow" in stop.stderr, stop
    for wf_id in ids:  # both stopped, each one's line said
        assert client.workflows.status(wf_id)["status"] == "STOPPED"
        assert f"workflow nap {wf_id[:12]}: STOPPED (nap stopped)".encode() in stop.stdout, stop.stdout


def test_a_service_serves_the_jobs_that_require_it_running_then_is_stopped(client, host, project):
    """A server in a workflow: `app` requires `db: RUNNING` (it never ends COMPLETED), reaches it
    by name, and once app has ended db is stopped and the workflow ends COMPLETED, not STOPPED
    (it ended by its timeout, FAILED: usability run)."""
    client.networks.create("wfsvc", "10.153.0.0/24")
    serve = (
        "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 7100)); s.listen()\nwhile True:\n    c, _ = s.accept(); c.sendall(b'pong'); c.close()\n"
    )
    ask = (
        "import socket, time\nfor _ in range(300):\n    try:\n"
        "        print(socket.create_connection(('db', 7100), timeout=2).recv(4).decode()); break\n"
        "    except OSError:\n        time.sleep(0.1)\n"
    )
    (project / "service.yaml").write_text(f"""
jobs:
  db: {{command: python3, args: ["-c", {json.dumps(serve)}], network: wfsvc, service: true}}
  app:
    command: python3
    args: ["-c", {json.dumps(ask)}]
    network: wfsvc
    requires: [{{db: RUNNING}}]
""")
    try:
        proc = host.rnx("workflow", "run", "--json", str(project / "service.yaml"), timeout=120)
        wf = json.loads(proc.stdout)
        assert proc.returncode == 0 and wf["status"] == "COMPLETED", (proc.stdout, proc.stderr)
        states = {j["name"]: j["status"] for j in wf["jobs"]}
        assert states == {"db": "STOPPED", "app": "COMPLETED"}, states
        app = next(j for j in wf["jobs"] if j["name"] == "app")
        assert output(client, app["id"]) == b"pong\n"
    finally:
        client.networks.delete("wfsvc")


def test_a_workflows_names_stay_in_the_workflow(client, host, project):
    """A workflow job named like a running job outside it, in the same network: the workflow's
    jobs find theirs, and nothing while theirs is not running (they found the outside one),
    every other job the outside one (a workflow took the name before)."""
    client.networks.create("wfnames", "10.152.0.0/24")
    solo = client.run("sleep", ("300",), network="wfnames", name="shared")
    solo_ip = wait_running(client, solo.id)
    first = "getent ahostsv4 shared | head -1 | cut -d' ' -f1"
    (project / "named.yaml").write_text(f"""
jobs:
  before: {{command: sh, args: ["-c", {json.dumps(first)}], network: wfnames}}
  shared: {{command: sleep, args: ["300"], network: wfnames, service: true, requires: [{{before: COMPLETED}}]}}
  after: {{command: sh, args: ["-c", {json.dumps(first)}], network: wfnames, requires: [{{shared: RUNNING}}]}}
""")
    wf = json.loads(host.rnx("workflow", "run", "-d", "--json", str(project / "named.yaml")).stdout)
    try:
        after = client.wait(wf["jobs"]["after"], timeout=60)
        inner_ip = client.get(wf["jobs"]["shared"]).ips["wfnames"]
        assert after.status.value == "COMPLETED" and output(client, after.id).decode().strip() == inner_ip
        before = client.wait(wf["jobs"]["before"], timeout=10)  # its shared had not started
        assert before.status.value == "COMPLETED" and output(client, before.id) == b"", output(client, before.id)
        rec, out, _ = run(client, "sh", "-c", first, network="wfnames")  # the control: outside, the outside one
        assert rec.exit_code == 0 and out.decode().strip() == solo_ip != inner_ip
    finally:
        host.rnx("workflow", "stop", wf["id"][:12])
        client.stop(solo.id)
        client.wait(solo.id, timeout=30)
        wait_done(client, wf["id"])
        client.networks.delete("wfnames")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs:\n  a: {command: x, requires: [{b: COMPLETED}]}\n", "requires unknown job 'b'"),
        (
            "jobs:\n  a: {command: x, requires: [{b: COMPLETED}]}\n  b: {command: x, requires: [{a: COMPLETED}]}\n",
            "dependency cycle: a -> b -> a",
        ),
        ("jobs:\n  a: {command: x, colour: red}\n", "unknown field(s) colour"),
        ("jobs:\n  a: {args: [x]}\n", "'command' is required"),
        ("jobs: [\n", "is not valid YAML"),
        ("jobs:\n  a: {command: x, requires: [{b: PENDING}]}\n  b: {command: x}\n", "must be required to end"),
        (
            "jobs:\n  a: {command: x, requires: [{b: COMPLETED}]}\n  b: {command: x, service: true}\n",
            "job 'a' requires service 'b' to end COMPLETED: a service is stopped",
        ),
        ("jobs:\n  a: {command: x, service: true}\n", "every job is a service"),
        ("jobs:\n  a: {command: x, service: 'yes'}\n", "'service' must be true or false"),
        (  # beside the other checks' lines (it was refused alone, before them: usability run)
            "jobs:\n  a: {command: x, network: nosuch, uploads: {files: [nope.txt]}}\n",
            "❌ Missing networks: nosuch (rnx network create)\n❌ Missing uploads in TMP: job 'a': 'nope.txt'",
        ),
        ("jobs:\n  a: {command: echo, node: nosuch}\n", "No such nodes: nosuch (rnx nodes)"),
        (  # refused as the jobs are queued: which one of them, it says
            "jobs:\n  a: {command: 'true'}\n  b: {command: 'true', network: none, resources: {max_bandwidth: 1mbit}}\n",
            "workflow bad: job 'b': invalid job field 'resources.max_bandwidth': bandwidth limits need a job network, "
            "not 'none'",
        ),
    ],
)
def test_validation_errors(host, tmp_path: Path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = host.rnx("workflow", "run", str(path))
    assert proc.returncode == 2
    assert message.replace("TMP", str(tmp_path.resolve())) in (proc.stdout + proc.stderr).decode(), proc
    if "No such nodes" in message:  # and no ✅ line says its jobs fit a node (usability run)
        assert "Every job fits a node" not in proc.stdout.decode(), proc.stdout


def test_a_workflow_of_more_jobs_than_the_limit_is_refused(host, tmp_path: Path):
    path = tmp_path / "three.yaml"
    path.write_text("jobs:\n" + "".join(f"  j{i}: {{command: 'true', network: none}}\n" for i in range(3)))
    proc = host.rnx("workflow", "run", str(path), env_extra={"JOBLET_WORKFLOW_MAX_JOBS": "2"})
    assert proc.returncode == 2, proc
    assert "three.yaml: 3 jobs, over the limit of 2 (workflow_max_jobs" in proc.stderr.decode()
    proc = host.rnx("workflow", "run", str(path), env_extra={"JOBLET_WORKFLOW_MAX_JOBS": "3"})  # the control
    assert proc.returncode == 0 and "workflow three: COMPLETED" in proc.stdout.decode(), proc
    from joblet.api.client import Client
    from joblet.api.workflows import load

    small = Client(dataclasses.replace(host.cfg, workflow_max_jobs=2))  # read without limits: the API's check
    assert (False, "3 jobs, over the limit of 2 (workflow_max_jobs; split it in two)") in (
        small.workflows.check(load(path))
    )
    with pytest.raises(ValidationError, match="^workflow three: 3 jobs, over the limit of 2 "):  # named once
        small.workflows.submit(load(path))


def test_a_workflow_pinned_to_a_node_of_the_fleet_runs(host, client, tmp_path: Path):
    """The control of the unknown-node refusal: the same workflow on this host's node runs."""
    path = tmp_path / "pinned.yaml"
    path.write_text(f"jobs:\n  a: {{command: echo, args: [pinned], node: {host.name}}}\n")
    proc = host.rnx("workflow", "run", str(path))
    out = proc.stdout.decode()
    assert proc.returncode == 0 and "✅ All pinned nodes are in the fleet" in out, out + proc.stderr.decode()
    # what no job of a workflow uses gets no line (a ✅ for it said nothing)
    plain = tmp_path / "plain.yaml"
    plain.write_text("jobs:\n  a: {command: echo, args: [plain]}\n")
    proc = host.rnx("workflow", "run", str(plain))
    out = proc.stdout.decode()
    assert proc.returncode == 0 and "✅ All required networks exist" in out, out + proc.stderr.decode()
    assert "nodes" not in out and "volumes" not in out and "runtimes" not in out, out


def test_a_detached_workflow_prints_only_its_id_on_stdout(host, client, project):
    """`ID=$(rnx workflow run -d f.yaml)` took the validation lines too; they go to stderr."""
    (project / "quiet.yaml").write_text("jobs:\n  only: {command: 'true', network: none}\n")
    proc = host.rnx("workflow", "run", "-d", str(project / "quiet.yaml"))
    wf_id = proc.stdout.decode().strip()
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1 and len(wf_id) == 32, proc
    assert "🔍 Validating workflow prerequisites..." in proc.stderr.decode()
    assert wait_done(client, wf_id)["status"] == "COMPLETED"
    # a workflow's name given where a job's is expected says so (it said "no such job" alone)
    wrong = host.rnx("status", "quiet")
    assert wrong.returncode == 1 and wrong.stderr.decode().strip().endswith(
        "no such job: quiet (a workflow's name: rnx workflow status|stop quiet)"
    ), wrong
    assert host.rnx("workflow", "status", "quiet").returncode == 0  # the control: as the hint says
    for given in (wf_id, wf_id[:12]):  # its id, too, and as `rnx workflow list` shows it (usability runs)
        by_id = host.rnx("log", given)
        assert by_id.returncode == 1 and by_id.stderr.decode().strip().endswith(
            f"no such job: {given} (a workflow's id: rnx workflow status|stop {given})"
        ), by_id
        assert host.rnx("workflow", "status", given).returncode == 0  # the control: as the hint says
    assert "a workflow's name" not in host.rnx("status", "nosuchthing").stderr.decode()


def test_the_workflow_index_forgets_expired_runs_and_names_find_the_newest(client):
    """The index of workflows was never trimmed (every lookup that missed read it all): a save
    drops the ids older than the records' TTL whose record expired, not one still running
    (trimmed by age alone, it left `rnx workflow list` while it ran); a name is one lookup
    of its newest run."""
    from joblet.api import workflow_store as wfs

    store, ttl, now = client.store, 600, time.time()
    old = wfs.WorkflowRecord(id="e" * 32, name="indexed", created=now - ttl - 5, jobs={}, requires={})
    long = wfs.WorkflowRecord(id="d" * 32, name="long", created=now - ttl - 5, jobs={}, requires={})
    new = wfs.WorkflowRecord(id="f" * 32, name="indexed", created=now, jobs={}, requires={})
    wfs.save(store, old, ttl)
    wfs.save(store, long, ttl)
    assert old.id in wfs.all_ids(store)  # the control: it was indexed
    store.redis.delete(wfs.wf_key(store, old.id))  # its record expired
    wfs.save(store, new, ttl)
    assert old.id not in wfs.all_ids(store) and {new.id, long.id} <= set(wfs.all_ids(store))
    assert store.redis.hget(store.keys.workflow_names, "indexed") == new.id.encode()  # one HGET, no scan
    assert wfs.get(store, "indexed").id == new.id and wfs.get(store, "f" * 16).id == new.id
    store.redis.delete(wfs.wf_key(store, new.id))  # its record expired
    with pytest.raises(NotFound):
        wfs.get(store, "indexed")
    assert store.redis.hget(store.keys.workflow_names, "indexed") is None  # the name went with it


def test_a_job_no_node_can_run_is_refused_before_anything_runs(host, client, project):
    """As rnx run refuses them: a limit above every node's ceiling, host networking where no
    node allows it. They passed every check and were FAILED by their worker, one by one."""
    (project / "misfit.yaml").write_text(
        "jobs:\n"
        "  fine: {command: 'true', network: none}\n"
        "  big: {command: 'true', network: none, resources: {max_pids: 1000000}}\n"
        "  hosty: {command: 'true', network: host}\n"
    )
    before = len(client.list())
    proc = host.rnx("workflow", "run", str(project / "misfit.yaml"))
    out = proc.stdout.decode()
    assert proc.returncode == 2, out + proc.stderr.decode()
    line = next(x for x in out.splitlines() if x.startswith("❌ Jobs no node can run: "))
    assert "big (" in line and "resources.max_pids 1000000 is above its ceiling of" in line, line
    assert "hosty (" in line and "host networking not allowed" in line and "fine" not in line, line
    assert len(client.list()) == before
    (project / "fits.yaml").write_text("jobs:\n  fine: {command: 'true', network: none}\n")  # the control
    ok = host.rnx("workflow", "run", str(project / "fits.yaml"))
    assert ok.returncode == 0 and "✅ Every job fits a node" in ok.stdout.decode(), ok


def _chain(store, n: int):
    """A recorded workflow of n jobs, each requiring the one before it COMPLETED."""
    from joblet.api import workflow_store as wfs
    from joblet.api.message import new_job_id
    from joblet.api.models import JobRecord, JobSpec, JobStatus

    spec = JobSpec(command="true", network=("none",))
    jobs = {f"j{i}": (new_job_id(), spec, {f"j{i - 1}": JobStatus.COMPLETED} if i else {}) for i in range(n)}
    wf = wfs.new_record(new_job_id(), f"chain{n}", jobs)
    wfs.save(store, wf, 600)
    store.create_jobs(
        [JobRecord(id=j[0], status=JobStatus.PENDING, spec=spec, name=name, workflow=wf.id) for name, j in jobs.items()]
    )
    return wf


def test_an_advance_reads_its_jobs_in_one_round_trip(redis_sock: str, monkeypatch):
    """Every job's end advances its workflow, and each advance read every job's record one
    round trip at a time: a 200-job chain took 52,000 HGETALLs one by one (12.5 s). An
    advance's round trips no longer grow with the workflow's size."""
    import redis.connection

    from joblet.api import workflow_store as wfs
    from joblet.api.models import JobStatus
    from joblet.api.store import Store
    from joblet.config import load

    store = Store(redis_sock, f"wfreads{time.time_ns()}:")
    cfg = load(redis_url=redis_sock, key_prefix=store.keys.prefix)
    sent: list[str] = []
    trips = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(conn, *args, **kwargs):  # one write of commands, one reply awaited: a round trip
        trips[0] += 1
        return send(conn, *args, **kwargs)

    def advance_trips(wf) -> int:
        before = trips[0]
        wfs.advance(store, cfg, wf.id, send=lambda _cfg, job_id, *_: sent.append(job_id), place=lambda _: None)
        return trips[0] - before

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    small, large = _chain(store, 3), _chain(store, 60)
    first = [advance_trips(small), advance_trips(large)]
    assert sent == [small.jobs["j0"], large.jobs["j0"]]  # the control: each queued its first job
    for wf in (small, large):
        store.transition(wf.jobs["j0"], [JobStatus.PENDING], status=JobStatus.COMPLETED)
    second = [advance_trips(small), advance_trips(large)]
    assert sent[2:] == [small.jobs["j1"], large.jobs["j1"]]
    assert first[0] == first[1] and second[0] == second[1] and first[0] > 0, (first, second)


def test_a_fan_out_costs_each_advance_a_few_round_trips(client, host, project):
    """Every job's end advances its workflow; each job queued but not yet claimed cost it a SET
    NX and a GET: 3,000 jobs behind one made millions of round trips, starved the worker's
    pool and its heartbeat, and live jobs were taken for LOST (red-team run). Marks are read
    at once now: SETs grow with the jobs, not with their square."""
    n = 120
    body = "".join(f"  j{i}: {{command: 'true', network: none, requires: [{{root: COMPLETED}}]}}\n" for i in range(n))
    (project / "fan.yaml").write_text("jobs:\n  root: {command: 'true', network: none}\n" + body)
    from joblet.api.workflows import load

    def sets() -> int:
        return int(client.store.redis.info("commandstats").get("cmdstat_set", {}).get("calls", 0))

    before = sets()
    record = client.workflows.submit(load(project / "fan.yaml"))
    info = wait_done(client, record.id, timeout=300)
    assert info["status"] == "COMPLETED" and all(j["status"] == "COMPLETED" for j in info["jobs"]), info
    assert sets() - before < 12 * n, sets() - before  # ~5 a job here (its claim, nonce, mark, the beats); n² before
    assert host.name in client.live_nodes()  # the node beat on throughout


def test_a_workflow_whose_submit_was_cut_short_can_be_stopped(host, client):
    """Ctrl-C or Redis gone between the workflow's record and its last job's: `rnx workflow
    stop` said "no such job", `list` hid the run, and the jobs recorded stayed PENDING for
    good, holding their networks (review). They are canceled, and the workflow expires."""
    from joblet.api import workflow_store as wfs
    from joblet.api.models import JobRecord, JobSpec, JobStatus

    store, ids = client.store, {"first": "1" * 32, "second": "2" * 32}
    jobs = {name: (job_id, JobSpec(command="true"), {}) for name, job_id in ids.items()}
    record = wfs.new_record("c" * 32, "cut", jobs)
    wfs.save(store, record, client.settings.log_ttl)
    spec = JobSpec(command="true")
    store.create_job(JobRecord(id=ids["first"], status=JobStatus.PENDING, spec=spec, name="first", workflow=record.id))
    assert store.find_job(ids["first"]).status == JobStatus.PENDING  # the control: recorded, not queued
    assert store.redis.ttl(wfs.wf_key(store, record.id)) == -1  # and kept while it runs
    shown = json.loads(host.rnx("workflow", "status", "--json", record.id).stdout)
    assert [(j["name"], j["status"]) for j in shown["jobs"]] == [("first", "PENDING"), ("second", "MISSING")]
    assert record.id in [w["id"] for w in json.loads(host.rnx("workflow", "list", "--json").stdout)]
    proc = host.rnx("workflow", "stop", record.id[:12])
    assert proc.returncode == 0, proc.stderr
    assert b"stopping 1 job(s): first" in proc.stdout and b"FAILED" in proc.stdout, proc.stdout
    assert store.find_job(ids["first"]).status == JobStatus.CANCELED
    assert 0 < store.redis.ttl(wfs.wf_key(store, record.id)) <= client.settings.log_ttl
    assert 0 < store.redis.ttl(store.keys.job(ids["first"])) <= client.settings.log_ttl


def test_a_submit_cut_short_while_writing_its_jobs_stops_what_it_wrote(client, monkeypatch, tmp_path):
    """Ctrl-C (or Redis gone) between two chunks of job records: the submit stops the
    workflow itself, its first chunk's jobs canceled, not left PENDING for good (review)."""
    from joblet.api import client_workflows
    from joblet.api.models import JobStatus
    from joblet.api.workflows import load

    monkeypatch.setattr(client_workflows, "CREATE_CHUNK", 2)
    real, chunks = client.store.create_jobs, []

    def cut_after_the_first(records):
        if chunks:
            raise KeyboardInterrupt
        chunks.append([r.id for r in records])
        return real(records)

    monkeypatch.setattr(client.store, "create_jobs", cut_after_the_first)
    path = tmp_path / "cut.yaml"
    path.write_text("jobs:\n" + "".join(f"  j{i}:\n    command: 'true'\n    network: none\n" for i in range(4)))
    with pytest.raises(KeyboardInterrupt):
        client.workflows.submit(load(path))
    assert len(chunks) == 1 and len(chunks[0]) == 2  # the control: two jobs were written
    assert [client.get(job_id).status for job_id in chunks[0]] == [JobStatus.CANCELED] * 2
