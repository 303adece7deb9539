"""Node states and placement (joblet.api.nodes), without Redis."""

from __future__ import annotations

import json
import random

import pytest

from joblet.api.models import JobRecord, JobStatus, make_spec
from joblet.api.nodes import DOWN, DRAINING, UP, place, view
from joblet.errors import ValidationError

NOW = 1_000_000.0


def rec(
    beat_age: float = 1.0,
    jobs: int = 0,
    concurrency: int = 4,
    host: bool = False,
    runtimes: tuple[str, ...] = (),
    **extra: object,
) -> dict[str, object]:
    return {
        "beat": NOW - beat_age,
        "jobs": jobs,
        "concurrency": concurrency,
        "host_network": host,
        "runtimes": list(runtimes),
        **extra,
    }


def fleet(draining: frozenset[str] = frozenset(), **records: dict[str, object]) -> list[dict[str, object]]:
    return view(records, set(draining), NOW, down_after=10)


def test_states_follow_heartbeat_age_drain_and_clean_stop():
    rows = {r["name"]: r for r in fleet(frozenset({"c"}), a=rec(1), b=rec(11), c=rec(1), d=rec(1, left=NOW - 1))}
    assert [rows[n]["state"] for n in "abcd"] == [UP, DOWN, DRAINING, DOWN]
    assert rows["b"]["heartbeat_age"] == 11 and rows["a"]["last_heartbeat"].endswith("+00:00")


def test_only_fitting_nodes_are_chosen():
    nodes = fleet(
        frozenset({"dr"}),
        dr=rec(host=True),
        down=rec(99, host=True),
        full=rec(jobs=4, host=True),
        nohost=rec(),
        ok=rec(host=True),
    )
    spec = make_spec("true", (), network="host")
    assert {place(spec, nodes, random.Random(i)) for i in range(20)} == {"ok"}


def test_runtime_must_be_present():
    nodes = fleet(a=rec(), b=rec(runtimes=("python:3.11",)))
    assert place(make_spec("x", (), runtime="python:3.11"), nodes) == "b"


def test_refusal_names_each_node_and_why():
    nodes = fleet(frozenset({"a"}), a=rec(host=True), b=rec(), c=rec(50, host=True))
    with pytest.raises(ValidationError) as caught:
        place(make_spec("true", (), network="host"), nodes)
    msg = str(caught.value)
    assert "a: draining" in msg and "b: host networking not allowed" in msg and "c: down" in msg
    assert "\n" not in msg


def test_pin_is_checked_like_placement():
    nodes = fleet(frozenset({"b"}), a=rec(), b=rec())
    assert place(make_spec("true", (), node="a"), nodes) == "a"
    with pytest.raises(ValidationError, match="node 'b': draining"):
        place(make_spec("true", (), node="b"), nodes)
    with pytest.raises(ValidationError, match="no node 'zz' in the fleet"):
        place(make_spec("true", (), node="zz"), nodes)


def test_less_loaded_nodes_get_more_jobs_and_a_burst_spreads():
    nodes = fleet(busy=rec(jobs=90, concurrency=100), idle=rec(jobs=0, concurrency=100))
    rng = random.Random(7)
    picks = [place(make_spec("true", ()), nodes, rng) for _ in range(500)]
    assert picks.count("idle") > 5 * picks.count("busy") > 0


def test_nothing_up_plain_jobs_wait_on_the_shared_queue_constrained_are_refused():
    nodes = fleet(a=rec(99))
    assert place(make_spec("true", ()), nodes) is None
    assert place(make_spec("true", ()), []) is None
    with pytest.raises(ValidationError, match="a: down"):
        place(make_spec("true", (), network="host"), nodes)


def test_when_every_live_node_drains_a_job_is_refused_not_queued_to_be_refused():
    nodes = fleet(frozenset({"a"}), a=rec(1), b=rec(99))  # a drains, b is down
    with pytest.raises(ValidationError, match=r"no live node can take it \(a: draining; b: down"):
        place(make_spec("true", ()), nodes)
    assert place(make_spec("true", ()), fleet(frozenset({"a"}), a=rec(1), c=rec(1))) == "c"  # one up: there


class FakeNodes:
    def __init__(self) -> None:
        self.drains: list[tuple[str, bool]] = []

    def nodes(self) -> list[dict[str, object]]:
        return fleet(
            frozenset({"b"}),
            a=rec(
                jobs=2,
                host=True,
                runtimes=("py",),
                version="1.0",
                cgroup="v2",
                sandbox={"bwrap": True, "seccomp": True},
                addresses=["10.0.0.5/24 dev eth0"],
            ),
            b=rec(30, jobs=3),  # down: its last heartbeat said 3 jobs
        )

    def drain(self, node: str, on: bool = True) -> dict[str, object]:
        from joblet.errors import NotFound

        if node not in ("a", "b"):
            raise NotFound(f"no node {node!r} in the fleet (rnx nodes)")
        self.drains.append((node, on))
        kept = [f"{3:032x}"] if node == "a" else []  # a workflow's job pinned to a, waiting for its undrain
        sent = {"held": kept} if on else {"sent": kept}
        if node == "b":
            return {"state": DOWN, "jobs": None, **sent}
        return {"state": DRAINING if on else UP, "jobs": 0, **sent}  # a beat old: two jobs have started since

    def unfinished_on(self, node: str) -> list[object]:  # what the records say
        from types import SimpleNamespace

        from joblet.api.models import JobStatus

        statuses = (JobStatus.RUNNING, JobStatus.RUNNING, JobStatus.PENDING, JobStatus.PENDING, JobStatus.PENDING)
        statuses = (*statuses, JobStatus.PENDING) if node == "a" else ()  # the last a workflow's pinned to a
        pins = (None, None, "a", None, None, "a")  # the third pinned there (refused when taken), the fourth kept
        flows = (None,) * 5 + ("w" * 32,)
        return [
            SimpleNamespace(status=s, id=f"{i:032x}", spec=SimpleNamespace(node=pin), workflow=flow)
            for i, (s, pin, flow) in enumerate(zip(statuses, pins, flows, strict=False))
        ]


@pytest.fixture
def fake(monkeypatch) -> FakeNodes:
    from joblet.cli import main

    client = FakeNodes()
    monkeypatch.setattr(main.Ctx, "client", property(lambda self: client))
    return client


def test_rnx_nodes_table_and_json(fake):
    from click.testing import CliRunner

    from joblet.cli.main import cli

    out = CliRunner().invoke(cli, ["nodes"])
    assert out.exit_code == 0
    line_a = next(line for line in out.output.splitlines() if line.startswith("a "))
    for cell in ("up", "1.0", "2/4", "yes", "py", "v2", "bwrap, seccomp", "10.0.0.5/24"):
        assert cell in line_a, (cell, line_a)
    line_b = next(line for line in out.output.splitlines() if line.startswith("b "))
    assert "down" in line_b and " -/4 " in line_b and "3/4" not in line_b  # not its last heartbeat's count
    listed = json.loads(CliRunner().invoke(cli, ["nodes", "--json"]).output)
    assert [r["state"] for r in listed] == ["up", "down"] and [r["jobs"] for r in listed] == [2, None]


def test_rnx_node_drain_and_undrain(fake):
    from click.testing import CliRunner

    from joblet.cli.main import cli

    out = CliRunner().invoke(cli, ["node", "drain", "a"])
    assert out.output == (  # counted from the records: the heartbeat's count said 0 while 2 ran (usability run)
        "node a draining: no new jobs go there; 2 job(s) go on, 1 queued there go to other nodes, "
        "1 pinned there will be refused, "
        "2 workflow job(s) pinned there wait for the undrain (rnx list --node=a --status=running,pending)\n"
    )
    out = CliRunner().invoke(cli, ["node", "drain", "b"])  # down: no count of jobs going on
    assert out.exit_code == 0 and out.output == "node b draining: no new jobs go there (it is down)\n"
    out = CliRunner().invoke(cli, ["node", "undrain", "a"])
    assert out.output == "node a up: takes new jobs; sent the 1 workflow job(s) pinned to it that waited\n"
    out = CliRunner().invoke(cli, ["node", "undrain", "b"])  # down: said, not `node b down: takes new jobs`
    assert out.exit_code == 0 and out.output == "node b undrained: takes new jobs once it is up again (it is down)\n"
    assert fake.drains == [("a", True), ("b", True), ("a", False), ("b", False)]
    out = CliRunner().invoke(cli, ["node", "drain", "zz"])
    assert out.exit_code == 1 and out.output == "rnx: no node 'zz' in the fleet (rnx nodes)\n"
    out = CliRunner().invoke(cli, ["node", "drain"])
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1


def test_max_cpu_above_a_nodes_cpus_does_not_place_there():
    """As `docker run --cpus` refuses more than the host has: --max-cpu 300 on a 2-CPU node."""
    nodes = fleet(small=rec(cpus=2), big=rec(cpus=4), old=rec())  # old: a worker that does not say
    spec = make_spec("true", (), limits={"max_cpu": 300})
    assert {place(spec, nodes, random.Random(i)) for i in range(30)} == {"big", "old"}
    with pytest.raises(ValidationError, match="node 'small': 2 CPUs, less than --max-cpu 300"):
        place(make_spec("true", (), limits={"max_cpu": 300}, node="small"), nodes)
    assert place(make_spec("true", (), limits={"max_cpu": 200}, node="small"), nodes) == "small"  # the control


def test_max_memory_above_what_a_nodes_jobs_may_use_together_does_not_place_there():
    """--max-memory=100G on a node whose jobs together are capped at 20 GB was queued there
    and ran under the smaller cap, the ask silently unmet (closing note)."""
    nodes = fleet(small=rec(memory_ceiling=2048), big=rec(memory_ceiling=65536), old=rec())  # old: does not say
    spec = make_spec("true", (), limits={"max_memory": 4096})
    assert {place(spec, nodes, random.Random(i)) for i in range(30)} == {"big", "old"}
    with pytest.raises(ValidationError, match="node 'small': 2048 MB for all its jobs, less than --max-memory 4096 MB"):
        place(make_spec("true", (), limits={"max_memory": 4096}, node="small"), nodes)
    assert place(make_spec("true", (), limits={"max_memory": 2048}, node="small"), nodes) == "small"  # the control


@pytest.mark.parametrize(
    ("limits", "says"),
    [
        ({"max_pids": 50_000}, "--max-pids 50000 is above its ceiling of 32768"),
        ({"max_disk": 9000}, "--max-disk 9000 MB is above its ceiling of 8192 MB"),
        ({"max_output": "128M"}, "--max-output 128 MiB is above its ceiling of 64 MiB"),
    ],
)
def test_limits_above_a_nodes_ceilings_are_refused_at_submit(limits, says):
    """Its worker would record the job FAILED after it was queued: refused up front instead,
    by the ceilings each worker publishes; a worker that does not say takes it (and checks)."""
    ceilings = {"pids_ceiling": 32768, "disk_ceiling": 8192, "output_ceiling": 64 << 20}
    nodes = fleet(small=rec(**ceilings), old=rec())
    assert {place(make_spec("true", (), limits=limits), nodes, random.Random(i)) for i in range(30)} == {"old"}
    with pytest.raises(ValidationError, match=f"node 'small': {says}"):
        place(make_spec("true", (), limits=limits, node="small"), nodes)
    with pytest.raises(ValidationError, match=f"small: {says}"):
        place(make_spec("true", (), limits=limits), fleet(small=rec(**ceilings)))
    at = {k: 32768 if k == "max_pids" else 8192 for k in limits}  # the control: at the ceiling
    assert place(make_spec("true", (), limits=at, node="small"), nodes) == "small"


def test_a_node_back_from_a_redis_outage_counts_silence_from_its_own_return(monkeypatch):
    """After an outage of Redis itself every node's last beat is old: the first node back
    swept every other node's running jobs LOST. Silence counts from its own return (its
    first heartbeat through) at the earliest; a node still silent a grace after that is swept
    as before (the control)."""
    from types import SimpleNamespace

    from joblet.config import load
    from joblet.worker import fleet

    swept: list[str] = []
    monkeypatch.setattr(fleet, "lose_jobs", lambda svc, node, beat: swept.append(node))
    nodes = SimpleNamespace(
        swept=lambda: {},
        records=lambda: {"a": {"beat": NOW}, "b": {"beat": NOW - 300}},
        claim_sweep=lambda name, beat, ttl: True,
        mark_swept=lambda name, beat: None,
    )
    cfg = load(node="a", heartbeat_interval=5, node_down_after=20, node_lost_grace=60)
    sup = SimpleNamespace(cfg=cfg, nodes=nodes, svc=None, present_since=None)
    assert fleet.sweep_lost(sup, NOW) == [] and swept == []  # its own beat has not gone through
    sup.present_since = NOW - 79  # back for less than node_down_after + node_lost_grace
    assert fleet.sweep_lost(sup, NOW) == [] and swept == []
    sup.present_since = NOW - 81
    assert fleet.sweep_lost(sup, NOW) == ["b"] and swept == ["b"]


def test_a_workflow_job_no_node_could_run_is_found_as_rnx_run_would_refuse_it():
    """With a node up, a job above its CPUs is flagged with the node's reason; with none up
    (the fleet restarts), a job any node could run waits as rnx run's would (not flagged),
    while one that needs host networking is still judged (rnx run refuses it then too)."""
    from joblet.api.client_workflows import unplaceable
    from joblet.api.workflows import Workflow, WorkflowJob

    def wf(**specs: object) -> Workflow:
        return Workflow(name="w", jobs={n: WorkflowJob(name=n, spec=s) for n, s in specs.items()})

    big = make_spec("true", (), limits={"max_cpu": 800}, network=("none",))
    hosty = make_spec("true", (), network=("host",))
    small = make_spec("true", (), network=("none",))
    up = fleet(a=rec(cpus=2))
    assert unplaceable(wf(big=big, small=small), up) == ["big (a: 2 CPUs, less than resources.max_cpu 800)"]
    down = fleet(a=rec(beat_age=100, cpus=2))
    assert unplaceable(wf(big=big, small=small), down) == []
    assert unplaceable(wf(hosty=hosty), down) == ["hosty (a: host networking not allowed)"]
    assert unplaceable(wf(big=big), []) == []  # no node ever: nothing to judge by


def test_a_workflow_whose_first_jobs_no_node_can_take_now_is_refused():
    """Every node draining: `rnx run` is refused, but a workflow was accepted and its first
    job FAILED at once ("submit it again"). Judged now for the jobs queued at submit; a job
    that waits for another is judged by what the nodes could ever run (drains end)."""
    from joblet.api.client_workflows import unplaceable
    from joblet.api.workflows import Workflow, WorkflowJob

    small = make_spec("true", (), network=("none",))
    later = WorkflowJob(name="later", spec=small, requires={"first": JobStatus.COMPLETED})
    wf = Workflow(name="w", jobs={"first": WorkflowJob(name="first", spec=small), "later": later})
    drained = fleet(frozenset({"a", "b"}), a=rec(), b=rec())
    assert unplaceable(wf, drained) == ["first (a: draining, b: draining)"]
    assert unplaceable(wf, fleet(frozenset({"a"}), a=rec(), b=rec())) == []  # the control: b takes it
    assert unplaceable(wf, fleet(frozenset({"a"}), a=rec(), b=rec(99))) == ["first (a: draining, b: down)"]


def test_a_user_networks_jobs_stay_where_they_can_reach_each_other():
    """Nodes without an overlay (no underlay address, or overlay off) keep a user network's
    jobs to themselves: jobs placed on another node could not reach their peers, and only a
    worker's log line said so (red-team run). Placement keeps them together; where both
    nodes carry an overlay, either will do; a home that is down is not waited for."""
    from joblet.api.nodes import place

    on_net = make_spec("sleep", ("9",), network=("ov",))
    alone = fleet(a=rec(), b=rec())
    homes = {"ov": {"a"}}
    assert {place(on_net, alone, random.Random(seed), homes) for seed in range(40)} == {"a"}
    assert {place(on_net, alone, random.Random(seed), {}) for seed in range(40)} == {"a", "b"}  # the control
    joined = fleet(a=rec(underlay="192.0.2.1"), b=rec(underlay="192.0.2.2"))
    assert {place(on_net, joined, random.Random(seed), homes) for seed in range(40)} == {"a", "b"}
    with pytest.raises(ValidationError, match="on node 'b': network 'ov' has jobs on a and no overlay joins the two"):
        place(make_spec("true", (), network=("ov",), node="b"), alone, homes=homes)
    gone = fleet(a=rec(beat_age=99), b=rec())
    assert place(on_net, gone, random.Random(1), homes) == "b"
    split = {"ov": {"a", "b"}}  # jobs of it on both already: either of its homes, not none
    three = fleet(a=rec(), b=rec(), c=rec())
    assert {place(on_net, three, random.Random(seed), split) for seed in range(40)} == {"a", "b"}


def test_a_node_or_network_no_filter_or_drain_knows_is_named_with_a_guess():
    """`rnx list --node=UX1` listed nothing without a word; `rnx node drain UX1` had no hint."""
    from types import SimpleNamespace

    from joblet.api.nodes import no_node
    from joblet.cli.main import unknown_filters

    nodes = [{"name": "ux1"}, {"name": "web"}]
    assert no_node("UX1", nodes) == "no node 'UX1' in the fleet (did you mean 'ux1'? rnx nodes)"
    assert no_node("zz", nodes) == "no node 'zz' in the fleet (rnx nodes)"
    assert no_node("a\nb", nodes) == "no node 'a\\x0ab' in the fleet (rnx nodes)"  # as other errors show it
    networks = SimpleNamespace(store=SimpleNamespace(names=lambda: ["app"]))  # and the built-in ones
    client = SimpleNamespace(nodes=lambda: nodes, networks=networks)
    assert unknown_filters(client, "UX1", "BRIDGE") == [
        "(no node 'UX1': did you mean 'ux1'? rnx nodes)",
        "(no network 'BRIDGE': did you mean 'bridge'? rnx network list)",
    ]
    assert unknown_filters(client, "ux1", "app") == []  # the control: both known, an empty list says nothing
    assert unknown_filters(client, "a\nb", None) == ["(no node 'a\\x0ab': rnx nodes)"]  # escaped as elsewhere


def test_rnx_node_forget_says_what_it_did(fake):
    from click.testing import CliRunner

    from joblet.cli.main import cli

    fake.forget_node = lambda name: fake.drains.append((name, None))
    out = CliRunner().invoke(cli, ["node", "forget", "b"])
    assert out.exit_code == 0 and out.output == "forgot node b (listed again if its worker comes back)\n"
    assert fake.drains == [("b", None)]


def test_rnx_nodes_tells_a_cleanly_stopped_node_from_a_silent_one():
    """Both read `down`; only --json's `left` told them apart (fleet run)."""
    from joblet.cli.nodes import _cells

    rows = {r["name"]: r for r in fleet(frozenset("ef"), b=rec(30), d=rec(30, left=NOW - 29), a=rec(1),
                                        e=rec(30, left=NOW - 29), f=rec(30))}  # fmt: skip
    assert [_cells(rows[n])[1] for n in "abd"] == ["up", "down", "down (stopped)"]
    assert [_cells(rows[n])[1] for n in "ef"] == ["down (stopped, drained)", "down (drained)"]  # its drain shown


def test_a_node_down_with_jobs_is_kept_saying_what_ends_them():
    """With no worker live, `rnx stop them` ends nothing: only a worker's start does (fleet run)."""
    from joblet.api.client import forget_checked

    down, beat = {"state": "down"}, {"beat": 5.0}
    alone = forget_checked("b", down, beat, None, ["j1"], any_live=False)
    assert alone == "node 'b' is down with 1 unfinished job(s) (j1), and no worker is live to make them LOST: " + (
        "start any worker (or this node's)"
    )
    fleet = forget_checked("b", down, beat, None, ["j1"], any_live=True)  # the control: another worker sweeps
    assert fleet is not None and fleet.startswith("node 'b' is down with 1 unfinished job(s) (j1): rnx stop them")
    assert forget_checked("b", down, beat, 5.0, ["j1"], any_live=False) is None  # swept: gone already


def test_a_node_whose_disk_is_full_is_passed_by():
    """Its jobs failed at their start, the node still read up and took them (operator's run)."""
    nodes = fleet(full=rec(disk_full=["state_dir /var/lib/joblet"]), fine=rec())
    spec = make_spec("true", network="none")
    assert {place(spec, nodes, random.Random(i)) for i in range(20)} == {"fine"}  # the control: one fits
    with pytest.raises(ValidationError, match=r"on node 'full': its disk is full \(state_dir /var/lib/joblet\)"):
        place(make_spec("true", network="none", node="full"), nodes)


def test_forgetting_a_node_that_is_up_names_the_wait_in_seconds():
    """It said "reads down node_down_after after its last heartbeat": a setting's name where a
    user wanted how long (usability run)."""
    from joblet.api.client import forget_checked

    why = forget_checked("b", {"state": "up"}, {}, None, [], down_after=20.0)
    assert why is not None and "leaves its node down at once (20 s after its last heartbeat if it was killed" in why
    assert forget_checked("b", {"state": "down"}, {}, None, []) is None  # the control: down, nothing left


def test_a_dead_nodes_unstarted_jobs_go_elsewhere_and_the_rest_are_lost(monkeypatch):
    """Of a lost node's jobs, only one still PENDING, unclaimed and not pinned there is placed
    again (it never reached a worker); a running, claimed or pinned one stays for LOST."""
    from types import SimpleNamespace

    from joblet.config import load
    from joblet.worker import fleet

    def job(job_id: str, status: JobStatus, node: str | None = None) -> JobRecord:
        return JobRecord(id=job_id, status=status, spec=make_spec("true", (), node=node), node="d")

    records = [
        job("queued", JobStatus.PENDING),
        job("claimed", JobStatus.PENDING),
        job("pinned", JobStatus.PENDING, node="d"),
        job("running", JobStatus.RUNNING),
        job("nowhere", JobStatus.PENDING),
    ]
    claims = {"claimed": "d"}
    store = SimpleNamespace(claim_holders=lambda ids: [claims.get(i) for i in ids])
    asked: list[str] = []

    def elsewhere(store_, cfg, record, node, swept=False):
        assert swept  # a sweep: its node picked again (up again) leaves the job in its queue
        asked.append(record.id)
        return None if record.id == "nowhere" else "b"

    monkeypatch.setattr(fleet, "place_elsewhere", elsewhere)
    assert fleet.place_unstarted(store, load(node="a"), "d", records) == {"queued"}
    assert asked == ["queued", "nowhere"]


def test_a_job_whose_new_message_cannot_be_sent_is_not_left_naming_its_new_node(monkeypatch):
    """place_elsewhere moved the record to its new node, then the send raised (the broker out
    of reach): the record named a node with no message for it, found by no later sweep of
    the dead node (they read its jobs by the node they name), PENDING for good. It names the
    dead node again (LOST with the others), and the sweep goes on; the control: a send that
    goes through leaves it on the new node."""
    from types import SimpleNamespace

    from joblet.api import preflight
    from joblet.api import tasks as api_tasks
    from joblet.config import load
    from joblet.errors import BackendUnavailable
    from joblet.worker import fleet

    record = JobRecord(id="a" * 32, status=JobStatus.PENDING, spec=make_spec("true", ()), node="d")
    names = {"node": "d"}
    store = SimpleNamespace(
        transition=lambda job_id, allowed, node: names.update(node=node) or True, prefix_stamp=lambda: "t:"
    )
    monkeypatch.setattr(preflight, "best_effort_target", lambda store_, cfg, spec: "b")

    def unreachable(*args: object) -> None:
        raise BackendUnavailable("cannot queue on the broker at redis://x: refused")

    monkeypatch.setattr(api_tasks, "send_run", unreachable)
    assert fleet.place_elsewhere(store, load(node="a"), record, "d") is None
    assert names["node"] == "d"
    monkeypatch.setattr(api_tasks, "send_run", lambda *args: None)  # the control
    assert fleet.place_elsewhere(store, load(node="a"), record, "d") == "b" and names["node"] == "b"


def test_a_lost_nodes_job_no_node_can_take_now_waits_in_the_shared_queue(monkeypatch):
    """Every live node full at the sweep: placement found none and the job ended LOST, never
    having run (review). It goes to the shared queue (its record names no node), as a
    workflow's next job does; one that needs a particular node (a runtime) does not, and a
    drain's placement (not `shared`) moves nothing there (controls)."""
    from types import SimpleNamespace

    from joblet.api import preflight
    from joblet.api import tasks as api_tasks
    from joblet.config import load
    from joblet.worker import fleet

    names: dict[str, object] = {}
    sent: list[object] = []
    store = SimpleNamespace(
        transition=lambda job_id, allowed, node: names.update({job_id: node}) or True, prefix_stamp=lambda: None
    )
    monkeypatch.setattr(preflight, "best_effort_target", lambda store_, cfg, spec: None)  # no node fits now
    monkeypatch.setattr(api_tasks, "send_run", lambda cfg, job_id, spec, node, prefix: sent.append(node))
    cfg = load(node="a", queue="q")

    def job(job_id: str, **fields: object) -> JobRecord:
        return JobRecord(id=job_id, status=JobStatus.PENDING, spec=make_spec("true", (), **fields), node="d")

    assert fleet.place_elsewhere(store, cfg, job("plain"), "d", swept=True) == "q"
    assert names == {"plain": None} and sent == [None]  # the shared queue's message
    assert fleet.place_elsewhere(store, cfg, job("tooled", runtime="tool:1"), "d", swept=True) is None
    assert fleet.place_elsewhere(store, cfg, job("drained"), "d") is None
    assert names == {"plain": None} and sent == [None]


def test_a_swept_nodes_queued_job_stays_in_its_queue_when_the_node_is_up_again(monkeypatch):
    """A node cut off that beat again while its silence was swept: placement picks it again
    for its queued jobs, and they were LOST, never having run, while its worker would read
    them (fleet-failure run). The sweep leaves them PENDING there (nothing sent, the record
    unchanged); the drain's path (not `swept`) still finds nowhere else to send it."""
    from types import SimpleNamespace

    from joblet.api import preflight
    from joblet.api import tasks as api_tasks
    from joblet.config import load
    from joblet.worker import fleet

    sent: list[str | None] = []
    moved: list[str] = []
    monkeypatch.setattr(api_tasks, "send_run", lambda cfg, job_id, spec, node, prefix: sent.append(node))
    monkeypatch.setattr(preflight, "best_effort_target", lambda store, cfg, spec: "d")
    store = SimpleNamespace(
        claim_holders=lambda ids: [None for _ in ids],
        transition=lambda job_id, allowed, node: moved.append(node) or True,
        prefix_stamp=lambda: "t:",
    )
    queued = JobRecord(id="q" * 32, status=JobStatus.PENDING, spec=make_spec("true", ()), node="d")
    assert fleet.place_unstarted(store, load(node="a"), "d", [queued]) == {queued.id}  # not for LOST
    assert (sent, moved) == ([], [])
    assert fleet.place_elsewhere(store, load(node="a"), queued, "d") is None  # the drain's: nowhere else
    assert (sent, moved) == ([], [])


def test_a_lost_nodes_job_is_sent_before_its_record_names_the_new_node(monkeypatch):
    """Named first, a sweeper killed (or a Redis failing) between the two left the job
    PENDING for good, naming a live node no message had gone to: no sweep looked there.
    Sent first, a send that fails leaves it naming the lost node, for the sweep done again
    (fleet-failure run)."""
    from types import SimpleNamespace

    from joblet.api import preflight
    from joblet.api import tasks as api_tasks
    from joblet.config import load
    from joblet.errors import BackendUnavailable
    from joblet.worker import fleet

    steps: list[str] = []

    def fail(cfg, job_id, spec, node, prefix):
        steps.append(f"send {node}")
        raise BackendUnavailable("cannot queue on the broker")

    monkeypatch.setattr(api_tasks, "send_run", fail)
    monkeypatch.setattr(preflight, "best_effort_target", lambda store, cfg, spec: "b")
    store = SimpleNamespace(
        transition=lambda job_id, allowed, node: steps.append(f"name {node}") or True,
        prefix_stamp=lambda: "t:",
    )
    queued = JobRecord(id="q" * 32, status=JobStatus.PENDING, spec=make_spec("true", ()), node="d")
    assert fleet.place_elsewhere(store, load(node="a"), queued, "d") is None
    assert steps == ["send b"]  # its record still names d
    monkeypatch.setattr(api_tasks, "send_run", lambda cfg, job_id, spec, node, prefix: steps.append(f"send {node}"))
    assert fleet.place_elsewhere(store, load(node="a"), queued, "d") == "b"
    assert steps == ["send b", "send b", "name b"]
