"""Three hosts of one installation: rnx nodes, placement, pinning, drain and node loss.

Each host is a network namespace with its own worker, state and run directories, all on one
Redis and one key prefix (tests/conftest.py Host). Heartbeats are short (1 s) and a node is
down after 3 s of silence and its jobs LOST 2 s later, so node loss is seen in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from joblet.api.client import Client
from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.store_ipam import IpamStore
from joblet.api.store_nodes import NodeStore
from joblet.api.tasks import send_run
from joblet.errors import ValidationError
from tests.conftest import BIN, Host, need
from tests.integration.helpers import complete, eventually, stop_all, wait_running

FAST = {"node_down_after": "3", "node_lost_grace": "2"}


@pytest.fixture(scope="module")
def three(redis_sock):
    need(os.geteuid() == 0, "needs root")
    a = Host(redis_sock, "nodea", **FAST)
    b = Host(redis_sock, "nodeb", fleet=a, **FAST)
    c = Host(redis_sock, "nodec", fleet=a, allow_host_network="true", **FAST)
    (c.tmp / "runtimes" / "tool:1" / "bin").mkdir(parents=True)
    try:
        for h in (a, b, c):
            h.start_worker()
        yield a, b, c
    finally:
        for h in (c, b, a):
            h.close()


def rows(host: Host) -> dict[str, dict]:
    out = host.rnx("nodes", "--json")
    assert out.returncode == 0, out.stderr
    return {r["name"]: r for r in json.loads(out.stdout)}


def test_nodes_lists_every_node_with_state_and_capabilities(three):
    a, _, c = three
    listed = rows(a)
    assert {"nodea", "nodeb", "nodec"} <= set(listed)
    for name in ("nodea", "nodeb", "nodec"):
        row = listed[name]
        assert row["state"] == "up" and row["heartbeat_age"] < 3 and row["version"]
        assert row["concurrency"] == 512 and row["capabilities"]["sandbox"]["bwrap"] is True
        assert row["capabilities"]["cgroup"]
    assert listed["nodec"]["capabilities"]["host_network"] is True
    assert listed["nodea"]["capabilities"]["host_network"] is False
    eventually(lambda: "tool:1" in rows(a)["nodec"]["capabilities"]["runtimes"], "runtime not published")
    table = a.rnx("nodes")
    assert table.returncode == 0 and b"nodeb" in table.stdout and b"up" in table.stdout


def test_jobs_go_only_where_they_can_run(three):
    a, _, _ = three
    client = Client(a.cfg)
    host_job = client.wait(client.run("true", network="host").id, timeout=60)
    assert host_job.status == JobStatus.COMPLETED and host_job.node == "nodec"
    tool = client.wait(client.run("true", network="none", runtime="tool:1").id, timeout=60)
    assert tool.status == JobStatus.COMPLETED and tool.node == "nodec"
    spread = [client.run("true", network="none") for _ in range(12)]
    nodes = {client.wait(r.id, timeout=60).node for r in spread}
    assert len(nodes) >= 2, nodes  # positive control: unpinned jobs do spread


def test_pins_and_refusals(three):
    a, b, _ = three
    client = Client(a.cfg)
    assert client.wait(client.run("true", network="none", node="nodeb").id, timeout=60).node == "nodeb"
    count = len(client.list())
    with pytest.raises(ValidationError, match="node 'nodea': host networking not allowed"):
        client.run("true", network="host", node="nodea")
    out = a.rnx("run", "--node=nowhere", "true")
    assert out.returncode == 2
    assert out.stderr == b"rnx: invalid --node: no node 'nowhere' in the fleet (rnx nodes)\n"
    out = a.rnx("run", "--node=NodeB", "true")  # names keep their case: the one meant is named
    assert out.returncode == 2
    assert out.stderr == b"rnx: invalid --node: no node 'NodeB' in the fleet (did you mean 'nodeb'? rnx nodes)\n"
    with pytest.raises(ValidationError, match=r"^invalid job field 'node': no node 'NodeB'"):  # the API's field
        client.run("true", network="none", node="NodeB")
    out = a.rnx("run", "--runtime=tool:1", "--node=nodeb", "true")
    assert out.returncode == 2 and b"does not offer runtime 'tool:1'" in out.stderr
    ceiling = rows(a)["nodea"]["capabilities"]["memory_ceiling"]  # all its jobs' memory together, MB
    out = a.rnx("run", f"--max-memory={ceiling + 1}", "--node=nodea", "true")
    assert out.returncode == 2 and f"{ceiling} MB for all its jobs, less than --max-memory".encode() in out.stderr
    assert len(client.list()) == count  # nothing recorded or queued
    fits = client.run("true", network="none", node="nodea", limits={"max_memory": ceiling})  # the control
    assert client.wait(fits.id, timeout=60).status == JobStatus.COMPLETED


def test_drain_sends_nothing_new_and_running_jobs_go_on(three):
    a, b, _ = three
    client = Client(a.cfg)
    running = client.run("sh", ("-c", "sleep 5; echo done"), network="none", node="nodeb")
    eventually(lambda: client.get(running.id).status == JobStatus.RUNNING, "job on nodeb not running")
    out = a.rnx("node", "drain", "nodeb")
    assert out.returncode == 0 and b"no new jobs" in out.stdout
    try:
        assert rows(a)["nodeb"]["state"] == "draining"
        placed = [client.run("true", network="none") for _ in range(8)]
        assert "nodeb" not in {client.wait(r.id, timeout=60).node for r in placed}
        out = a.rnx("run", "--node=nodeb", "true")
        assert out.returncode == 2 and out.stderr.count(b"\n") == 1 and b"'nodeb': draining" in out.stderr
        # a message already on nodeb's queue (placed there before the drain) goes to another
        # node (it was refused FAILED); one pinned to nodeb is refused there, not run
        moved = client.wait(sneak(client, a, "nodeb"), timeout=30)
        assert moved.status == JobStatus.COMPLETED and moved.node in ("nodea", "nodec"), moved
        final = client.wait(sneak(client, a, "nodeb", pinned=True), timeout=30)
        assert final.status == JobStatus.FAILED and "'nodeb' is draining" in (final.error or "")
        assert final.started is None
        done = client.wait(running.id, timeout=30)
        assert done.status == JobStatus.COMPLETED and done.node == "nodeb"
    finally:
        assert a.rnx("node", "undrain", "nodeb").returncode == 0
    assert client.wait(client.run("true", network="none", node="nodeb").id, timeout=60).status == JobStatus.COMPLETED
    out = a.rnx("node", "drain", "nosuch")
    assert out.returncode == 1 and out.stderr == b"rnx: no node 'nosuch' in the fleet (rnx nodes)\n"


def sneak(client: Client, host: Host, node: str, pinned: bool = False, named: bool = False) -> str:
    """A job put straight on a node's queue, as a client that placed it before a drain
    (`named`: its record names the node, as a placement's does)."""
    from joblet.api.message import new_job_id
    from joblet.api.models import make_spec

    spec = make_spec("echo", ("ran",), network="none", node=node if pinned else None)
    job_id = new_job_id()
    where = node if named else None
    client.store.create_job(JobRecord(id=job_id, status=JobStatus.PENDING, spec=spec, created=time.time(), node=where))
    send_run(host.cfg, job_id, spec.to_dict(), node)
    return job_id


def test_a_lost_node_loses_its_jobs_and_attached_clients_return(three, redis_sock):
    a, _, _ = three
    client = Client(a.cfg)
    client.networks.create("lost-net", "10.122.0.0/24")
    d = Host(redis_sock, "noded", fleet=a, **FAST)
    try:
        d.start_worker()
        job = client.run("sleep", ("300",), network="lost-net", name="doomed", node="noded")
        ip = wait_running(client, job.id)
        eventually(lambda: client.store.members(["lost-net"]).get("doomed") == ip, "doomed not a member")
        attached = subprocess.Popen(
            [str(BIN / "rnx"), "log", "-f", job.id],
            env={**os.environ, **a.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        waited: dict[str, object] = {}
        waiter = threading.Thread(target=lambda: waited.update(rec=Client(a.cfg).wait(job.id, timeout=120)))
        waiter.start()
        run = subprocess.Popen(
            [str(BIN / "rnx"), "run", "--node=noded", "--network=none", "--name=doomed2", "sleep", "300"],
            env={**os.environ, **a.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        eventually(
            lambda: [r.status for r in client.list(name="doomed2")] == [JobStatus.RUNNING], "attached job not running"
        )
        d.worker.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        d.worker.wait()  # type: ignore[union-attr]
        eventually(lambda: rows(a)["noded"]["state"] == "down", "noded never shown down", timeout=30)
        waiter.join(timeout=60)
        lost = waited["rec"]
        assert lost.status == JobStatus.LOST  # type: ignore[attr-defined]
        assert "node noded stopped heartbeating at" in (lost.error or "")  # type: ignore[attr-defined]
        assert attached.wait(timeout=30) == 125
        assert b"lost: node noded stopped heartbeating at" in attached.stderr.read()  # type: ignore[union-attr]
        _, err = run.communicate(timeout=30)
        assert run.returncode == 125 and b"lost: node noded stopped heartbeating at" in err, err
        ipam = IpamStore(a.cfg.redis_url, a.cfg.key_prefix)  # freed by the sweeper after LOST
        eventually(lambda: job.id not in ipam.allocations("lost-net").values(), "lost job's address not freed")
        assert client.store.members(["lost-net"]) == {}
        logs = "".join(h.log() for h in three)
        assert logs.count(f"job {job.id[:12]} LOST") == 1  # three workers looked, one acted
        d.start_worker()  # it comes back: reconciles, and the job stays LOST
        eventually(lambda: rows(a)["noded"]["state"] == "up", "noded not up again")
        assert client.get(job.id).status == JobStatus.LOST
        assert (
            client.wait(client.run("true", network="none", node="noded").id, timeout=60).status == JobStatus.COMPLETED
        )
    finally:
        d.close()


def test_a_lost_nodes_queued_jobs_run_on_another_node(three, redis_sock):
    """A job placed on a node the moment before its worker died waited in its queue and
    ended LOST, never having run: the sweep of the node places it again (the pinned one
    beside it stays LOST), and the message left in the queue, read when the worker comes
    back, does not run it twice."""
    a, _, _ = three
    client = Client(a.cfg)
    f = Host(redis_sock, "nodef", fleet=a, **FAST)
    try:
        f.start_worker()
        f.worker.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        f.worker.wait()  # type: ignore[union-attr]
        moved = sneak(client, a, "nodef", named=True)
        pinned = sneak(client, a, "nodef", pinned=True, named=True)
        ran = client.wait(moved, timeout=60)
        assert ran.status == JobStatus.COMPLETED and ran.node in ("nodea", "nodeb", "nodec"), ran
        assert b"".join(data for _, data in client.logs(moved)) == b"ran\n"
        lost = client.wait(pinned, timeout=60)
        assert lost.status == JobStatus.LOST and "node nodef stopped heartbeating" in (lost.error or ""), lost
        f.start_worker()
        eventually(lambda: f"job {moved} was delivered again; it runs only once" in f.log(), "old message not read")
        again = client.get(moved)
        assert (again.status, again.node, again.started) == (JobStatus.COMPLETED, ran.node, ran.started)
    finally:
        f.close()


def test_a_lost_nodes_queued_jobs_of_a_user_network_go_on_together(three, redis_sock):
    """A lost node's queued jobs of one user network, placed again one by one, each read the
    network's home as the dead node (down: not waited for) and went to nodes at random, where,
    with no overlay between them, they did not reach each other (fleet-failure run: 4 on one
    node, 2 on the other). Each placement is written where the next one reads it."""
    a, _, _ = three
    client = Client(a.cfg)
    client.networks.create("moved", "10.129.0.0/24")
    g = Host(redis_sock, "nodeg", fleet=a, **FAST)
    jobs: list[str] = []
    try:
        g.start_worker()
        jobs.append(client.run("sleep", ("300",), network="moved", node="nodeg").id)
        wait_running(client, jobs[0])
        g.worker.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]  # its queue fills, unread
        jobs += [client.run("sleep", ("300",), network="moved").id for _ in range(6)]
        assert {client.get(j).node for j in jobs[1:]} == {"nodeg"}  # the network's home
        g.worker.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        g.worker.wait()  # type: ignore[union-attr]
        eventually(lambda: {client.get(j).status for j in jobs[1:]} == {JobStatus.RUNNING}, "moved jobs running", 60)
        where = {client.get(j).node for j in jobs[1:]}
        assert len(where) == 1 and "nodeg" not in where, where  # 1 in 243 by chance, before
        assert client.get(jobs[0]).status == JobStatus.LOST
    finally:
        stop_all(client, jobs)
        g.close()
        client.networks.delete("moved")


def test_a_cut_off_node_stops_what_the_fleet_marked_lost(three, redis_sock):
    a, _, _ = three
    client = Client(a.cfg)
    e = Host(redis_sock, "nodee", fleet=a, **FAST)
    try:
        e.start_worker()
        job = client.run("sh", ("-c", "sleep 300"), network="none", node="nodee")
        eventually(lambda: client.get(job.id).status == JobStatus.RUNNING, "job on nodee not running")
        group = e.cfg.cgroup_root / job.id  # type: ignore[operator]
        assert group.exists()  # positive control for the check below
        e.worker.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]  # silent, not dead
        try:
            assert client.wait(job.id, timeout=60).status == JobStatus.LOST
        finally:
            e.worker.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        eventually(lambda: "was marked LOST while this node was silent" in e.log(), "nodee kept the job")
        eventually(lambda: not group.exists(), "the job's processes still run (its cgroup is there)")
        assert client.get(job.id).status == JobStatus.LOST  # its end did not write over LOST
        eventually(lambda: rows(a)["nodee"]["state"] == "up", "nodee not up again")
        e.stop_worker()  # a clean stop: down at once, with when it left
        gone = rows(a)["nodee"]
        assert gone["state"] == "down" and gone["left"] is not None
        # a node that is down is still completed by name (to undrain it, pin to it), with its state
        assert "nodee" in complete(a, "node", "undrain", "node") and "nodea" in complete(a, "node", "undrain", "")
    finally:
        e.close()


def test_a_workflow_job_pinned_to_a_node_gone_fails_when_its_turn_comes(three, redis_sock, tmp_path):
    """It was queued for that node all the same: where the fleet had made the node's jobs LOST
    already, it stayed PENDING for good, and an attached `rnx workflow run` never ended (fleet
    run). It fails naming why, as `rnx run --node` is refused, and the workflow ends; a job of
    it pinned to a node that is up runs (the control). (Down and not swept yet, a restart say,
    it is queued there: the sweep of that silence still empties the node's queue.)"""
    a, _, _ = three
    f = Host(redis_sock, "nodef", fleet=a, **FAST)
    try:
        f.start_worker()
        f.stop_worker()  # in the fleet's records, down
        nodes = NodeStore(a.cfg.redis_url, a.cfg.key_prefix)
        beat = float(nodes.records()["nodef"]["beat"])
        eventually(lambda: nodes.swept().get("nodef") == beat, "nodef's silence swept")
        path = tmp_path / "pinned.yaml"
        path.write_text(
            "jobs:\n  first: {command: 'true', network: none}\n"
            "  up: {command: 'true', network: none, node: nodeb, requires: [{first: COMPLETED}]}\n"
            "  down: {command: echo, node: nodef, requires: [{first: COMPLETED}]}\n"
            "  after: {command: 'true', network: none, requires: [{down: COMPLETED}]}\n"
        )
        ran = a.rnx("workflow", "run", str(path))
        assert ran.returncode == 1, ran
        client = Client(a.cfg)
        wf_id = next(r.workflow for r in client.list(name="down") if r.workflow)
        states = {j["name"]: (j["status"], j.get("error")) for j in client.workflows.status(wf_id)["jobs"]}
        assert states["up"][0] == "COMPLETED" and states["after"][0] == "CANCELED", states
        assert states["down"] == ("FAILED", "cannot place the job on node 'nodef': down (rnx nodes)"), states
        assert client.workflows.status(wf_id)["status"] == "FAILED"
    finally:
        f.close()


def pinned_workflow(host: Host, path: Path, first: str, pinned: str) -> tuple[str, str]:
    """Run a workflow whose job `pinned` (on nodeb) requires `first` (on nodea), detached;
    its id and the pinned job's. Names of their own per test: `list(name=...)` finds the
    newest job so named, of any workflow."""
    path.write_text(
        f"jobs:\n  {first}: {{command: 'true', network: none, node: nodea}}\n"
        f"  {pinned}: {{command: 'true', network: none, node: nodeb, requires: [{{{first}: COMPLETED}}]}}\n"
    )
    ran = host.rnx("workflow", "run", "-d", str(path))
    assert ran.returncode == 0, ran.stderr
    client = Client(host.cfg)
    wf_id = next(r.workflow for r in client.list(name=pinned) if r.workflow)
    return wf_id, next(j["id"] for j in client.workflows.status(wf_id)["jobs"] if j["name"] == pinned)


def undrain_sends(client: Client, job_id: str, wf_id: str) -> None:
    """The kept job waits PENDING on nodeb; the undrain sends it, it runs there, its
    workflow completes, and nothing stays kept."""
    nodes = NodeStore(client.settings.redis_url, client.settings.key_prefix)
    eventually(lambda: nodes.held("nodeb") == [job_id], "the pinned job kept for nodeb's undrain")
    kept = client.get(job_id)
    assert (kept.status, kept.node) == (JobStatus.PENDING, "nodeb"), kept  # not refused
    row = client.drain("nodeb", False)
    assert row["sent"] == [job_id] and row["state"] == "up"
    done = client.wait(job_id, timeout=30)
    assert (done.status, done.node) == (JobStatus.COMPLETED, "nodeb"), done
    eventually(lambda: client.workflows.status(wf_id)["status"] == "COMPLETED", "the workflow's end")
    assert nodes.held("nodeb") == []


def test_a_workflow_job_pinned_to_a_draining_node_waits_for_its_undrain(three, tmp_path):
    """Sent when its turn came, the node refused it FAILED and the workflow failed: a drain
    for an upgrade failed the workflows pinned there (fleet run). It waits, PENDING and
    naming the node, and the undrain sends it."""
    a, _, _ = three
    client = Client(a.cfg)
    client.drain("nodeb")
    try:
        wf_id, pinned = pinned_workflow(a, tmp_path / "drained.yaml", "first", "pinned")
        nodes = NodeStore(a.cfg.redis_url, a.cfg.key_prefix)
        eventually(lambda: nodes.held("nodeb") == [pinned], "the pinned job's turn: kept for the undrain")
        again = a.rnx("node", "drain", "nodeb")  # said again: the kept job is not one "to be refused"
        assert b"1 workflow job(s) pinned there wait for the undrain" in again.stdout, again.stdout
        assert b"refused" not in again.stdout
        undrain_sends(client, pinned, wf_id)
    finally:
        client.drain("nodeb", False)


def test_a_workflow_job_queued_on_a_node_before_its_drain_waits_for_the_undrain(three, tmp_path):
    """A pinned job sent before the drain (its node busy, or an undrain just before the
    drain) reached the node as it drained: refused FAILED, its workflow with it (red-team
    run). The node keeps it for its undrain. nodeb's worker is paused while the job is sent."""
    _, b, _ = three
    client = Client(b.cfg)
    assert b.worker is not None
    b.worker.send_signal(signal.SIGSTOP)
    try:  # rnx is not paused: only nodeb's worker
        wf_id, pinned = pinned_workflow(b, tmp_path / "queued.yaml", "qfirst", "qpinned")
        eventually(lambda: client.get(pinned).node == "nodeb", "the pinned job sent to nodeb's queue", 5)
        client.drain("nodeb")
    finally:
        b.worker.send_signal(signal.SIGCONT)
    try:
        undrain_sends(client, pinned, wf_id)
    finally:
        client.drain("nodeb", False)


def test_a_second_worker_under_a_live_nodes_name_is_refused(three, redis_sock):
    """Two workers under one name took each other's jobs from the node's queue, and the jobs
    of the one that died stayed RUNNING, the name kept alive by the other (red-team run).
    Another worker (another state_dir or host) is refused while the name's heartbeat lives;
    the same worker restarted (its heartbeat still alive after a SIGKILL) is not."""
    a, _, _ = three
    twin = Host(redis_sock, "nodea", fleet=a, **FAST)
    try:
        started = subprocess.run(
            ["nsenter", f"--net=/run/netns/{twin.netns}", str(BIN / "joblet-worker"), "--node", "nodea"],
            env={**os.environ, **twin.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 1, started
        assert "node 'nodea' is up on another worker" in started.stderr.splitlines()[-1], started.stderr
        assert not Path(twin.env["JOBLET_CGROUP_ROOT"]).exists()  # nothing made for jobs
        assert a.worker is not None
        a.worker.kill()  # its heartbeat lives on for a while
        a.worker.wait()
        assert "nodea" in Client(a.cfg).live_nodes()
        a.start_worker()  # the control: the same worker, restarted, is not refused
        rec = Client(a.cfg).run("true", network="none", node="nodea")
        assert Client(a.cfg).wait(rec.id, timeout=60).status == JobStatus.COMPLETED
    finally:
        twin.close()


def test_a_user_networks_jobs_go_where_they_reach_each_other(three):
    """These nodes have no underlay address (no default route in their namespaces): a user
    network stays on each node, and its jobs placed on two nodes could not reach each other.
    Placed now where the network's jobs already run; pinned elsewhere, refused naming why."""
    a, _, _ = three
    client = Client(a.cfg)
    client.networks.create("homed", "10.123.0.0/24")
    first = client.run("sleep", ("300",), network="homed", node="nodea")
    jobs = [first]
    try:
        wait_running(client, first.id)
        jobs += [client.run("sleep", ("300",), network="homed") for _ in range(8)]
        assert {client.get(j.id).node for j in jobs} == {"nodea"}  # 1 in 256 by chance, before
        assert client.get(client.run("true", network="none").id).node is not None  # the control: placed
        refused = a.rnx("run", "--network=homed", "--node=nodeb", "true")
        assert refused.returncode == 2, refused
        assert b"network 'homed' has jobs on nodea and no overlay joins the two" in refused.stderr
    finally:
        stop_all(client, [j.id for j in jobs])
        client.networks.delete("homed")


def test_a_user_networks_jobs_queued_a_moment_apart_go_together(three):
    """Placement read only the network's running jobs: a second `rnx run -d` while the first
    still waited in its node's queue went anywhere (session 24's note). A job queued for a
    node counts there from its submit. nodea's worker is paused, so its jobs stay queued."""
    a, _, _ = three
    client = Client(a.cfg)
    client.networks.create("queued", "10.125.0.0/24")
    assert a.worker is not None
    a.worker.send_signal(signal.SIGSTOP)
    jobs = []
    try:
        jobs.append(client.run("sleep", ("300",), network="queued", node="nodea"))
        jobs += [client.run("sleep", ("300",), network="queued") for _ in range(8)]
        placed = [client.get(j.id) for j in jobs]
        assert {r.status for r in placed} == {JobStatus.PENDING}  # none had run
        assert {r.node for r in placed} == {"nodea"}  # 1 in 256 by chance, before
        spread = [client.run("true", network="none").node for _ in range(12)]
        assert len(set(spread)) >= 2, spread  # the control: other jobs still go anywhere
    finally:
        a.worker.send_signal(signal.SIGCONT)
        stop_all(client, [j.id for j in jobs])
        client.networks.delete("queued")
    assert client.store.redis.hgetall(client.store.keys.placed("queued")) == {}


def at_the_same_instant(clients: list[Client], submit: Callable[[Client], list[JobRecord]]) -> list[JobRecord]:
    """Each client's `submit`, all let go at once; the records they queued."""
    start, jobs = threading.Barrier(len(clients)), []

    def go(client: Client) -> None:
        start.wait(10)
        jobs.extend(submit(client))

    threads = [threading.Thread(target=go, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return jobs


def test_a_user_networks_jobs_submitted_at_the_same_instant_go_together(three):
    """Eight submitters at once each read no home and spread the network's jobs over the nodes
    (fleet run: 1 on one node, 5 on the other). Each holds the network while it places and
    writes where (store_homes.holding_networks)."""
    a, _, _ = three
    Client(a.cfg).networks.create("instant", "10.127.0.0/24")
    clients = [Client(a.cfg) for _ in range(8)]
    jobs = at_the_same_instant(clients, lambda client: [client.run("sleep", ("300",), network="instant")])
    try:
        assert len(jobs) == 8 and len({Client(a.cfg).get(j.id).node for j in jobs}) == 1, jobs
    finally:
        stop_all(Client(a.cfg), [j.id for j in jobs])
        Client(a.cfg).networks.delete("instant")


def test_a_batchs_jobs_of_a_user_network_stay_together(three, tmp_path):
    """rnx batch placed each line on its own: a network's jobs spread over nodes without an
    overlay between them. It keeps them where the batch put the first one."""
    a, _, _ = three
    client = Client(a.cfg)
    client.networks.create("batched", "10.124.0.0/24")
    lines = tmp_path / "jobs.txt"
    lines.write_text("--network=batched sleep 300\n" * 8)
    out = a.rnx("batch", str(lines))
    ids = out.stdout.decode().split()
    try:
        assert out.returncode == 0 and len(ids) == 8, out.stderr
        assert len({client.get(i).node for i in ids}) == 1  # 1 in 2,187 by chance, before
    finally:
        stop_all(client, ids)
        client.networks.delete("batched")


def test_batches_of_a_user_network_at_the_same_instant_go_together(three):
    """Two batches at once each read no home for the network and kept their own lines on two
    nodes (session 25's note). A batch holds each user network from its first read of where
    the network's jobs are until it has written where its own go."""
    a, _, _ = three
    Client(a.cfg).networks.create("batches", "10.128.0.0/24")
    clients = [Client(a.cfg) for _ in range(6)]

    def submit(client: Client) -> list[JobRecord]:
        batch, spec = client.batch(), JobSpec(command="sleep", args=("300",), network=("batches",))
        return [*batch.add(spec), *batch.add(spec), *batch.flush()]

    jobs = at_the_same_instant(clients, submit)
    try:
        assert len(jobs) == 12 and len({Client(a.cfg).get(j.id).node for j in jobs}) == 1, jobs
        spread = [clients[0].run("true", network="none").node for _ in range(12)]
        assert len(set(spread)) >= 2, spread  # the control: jobs of no user network still go anywhere
    finally:
        stop_all(Client(a.cfg), [j.id for j in jobs])
        Client(a.cfg).networks.delete("batches")
