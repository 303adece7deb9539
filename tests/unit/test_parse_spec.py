"""The worker's entry for untrusted specs: every spec it cannot take becomes a one-line error
(the job is then refused FAILED), never an exception out of the task."""

from __future__ import annotations

import base64

import pytest

from joblet.api.models import JobSpec
from joblet.api.uploads import Upload
from joblet.config import Settings, quarter_of_memory_mb
from joblet.worker.tasks import PLACEHOLDER, over_ceiling, parse_spec


def test_a_good_spec_is_taken():
    spec, error = parse_spec({"spec": {"command": "true", "args": ["-x"]}}, 1 << 20)
    assert error is None and spec.command == "true" and spec.args == ("-x",)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"spec": {"command": "true", "timeout": 10**400}}, "invalid job field 'timeout'"),
        ({"spec": {"command": "true"}, "extra": 1}, "invalid job field 'extra': not a message field"),
        ({"spec": ["true"]}, "invalid job field 'job': must be a mapping"),
    ],
)
def test_a_bad_spec_is_a_one_line_error(fields, says):
    spec, error = parse_spec(fields, 1 << 20)
    assert spec is PLACEHOLDER and error is not None and error.startswith(says) and "\n" not in error


def test_a_bug_in_a_check_is_a_refusal_not_an_exception(monkeypatch):
    def broken(data):
        raise TypeError("a check's bug")

    monkeypatch.setattr(JobSpec, "from_dict", staticmethod(broken))
    spec, error = parse_spec({"spec": {"command": "true"}}, 1 << 20)
    assert spec is PLACEHOLDER and error == "invalid job: its spec could not be checked (TypeError)"


@pytest.mark.parametrize(
    ("limits", "says"),
    [
        ({"max_disk": 2049}, "invalid job field 'max_disk': 2049 MB is above this worker's ceiling of 2048 MB"),
        ({"max_pids": 100_001}, "invalid job field 'max_pids': 100001 is above this worker's ceiling of 100000"),
        (
            {"max_output": "2M"},
            "invalid job field 'max_output': 2097152 bytes is above this worker's ceiling of 1048576 bytes",
        ),
        ({"max_disk": 2048, "max_pids": 100_000, "max_output": "1M"}, None),  # at the ceilings: taken
        ({}, None),
    ],
)
def test_limits_above_the_workers_ceilings_are_refused(limits, says):
    spec = JobSpec.from_dict({"command": "true", "limits": limits})
    assert over_ceiling(spec, 2048, 100_000, 1 << 20) == says


def test_the_disk_ceiling_defaults_to_a_quarter_of_memory(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:         1000 kB\n")
    assert quarter_of_memory_mb(str(meminfo)) == 4000
    assert quarter_of_memory_mb(str(tmp_path / "missing")) == 1_048_576  # no /proc: the field's own cap


def test_a_job_without_limits_gets_the_defaults_held_to_the_ceilings():
    assert Settings(job_max_disk=1024, job_disk_ceiling=4000).default_disk_mb == 1024
    assert Settings(job_max_disk=1024, job_disk_ceiling=512).default_disk_mb == 512  # a small host
    assert Settings(job_max_pids=4096, job_pids_ceiling=1000).default_pids == 1000
    assert Settings().default_pids == 4096


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 1 << 10])
def test_an_uploads_size_is_its_decoded_bytes(size):
    upload = Upload(path="f", content=base64.b64encode(b"x" * size).decode())
    assert upload.size == len(upload.data) == size


@pytest.mark.parametrize("size", [1 << 10, (1 << 10) + 1, (1 << 10) + 2])
def test_uploads_of_exactly_the_limit_are_taken_and_one_byte_more_is_refused(size):
    content = base64.b64encode(b"x" * size).decode()
    fields = {"spec": {"command": "true", "uploads": [{"path": "f", "content": content}]}}
    spec, error = parse_spec(fields, size)
    assert error is None and spec.upload_bytes == size
    spec, error = parse_spec(fields, size - 1)
    assert spec is PLACEHOLDER and error == f"invalid job field 'uploads': {size} bytes exceed the limit of {size - 1}"


def test_a_message_past_a_bound_on_new_specs_is_refused_while_a_stored_record_still_reads():
    """Bounds added later (a ten-year timeout, an upload 128 names deep) hold for what is
    submitted, through the worker's check of a message as through rnx; a record written
    before them must still read, or it drops out of every listing."""
    from joblet.api.models import JobRecord, JobStatus

    for spec, says in (
        ({"command": "true", "timeout": 1e20}, "invalid job field 'timeout': must be at most 315360000"),
        ({"command": "true", "uploads": [{"path": "a/" * 200 + "f", "content": ""}]}, "201 names deep"),
        # bubblewrap takes 9,000 words: 20,000 arguments failed the job as if it had exited 1
        ({"command": "true", "args": ["x"] * 4097}, "invalid job field 'args': 4097 arguments, at most 4096"),
        ({"command": "true", "env": {f"V{i}": "" for i in range(1025)}}, "1025 environment variables, at most 1024"),
    ):
        parsed, error = parse_spec({"spec": spec}, 1 << 20)
        assert parsed is PLACEHOLDER and error is not None and says in error, error
        stored = {"id": "a" * 32, "status": JobStatus.COMPLETED, "spec": spec}
        assert JobRecord.from_dict(stored).spec.to_dict()["command"] == "true"
    assert parse_spec({"spec": {"command": "true", "timeout": 315360000}}, 1 << 20)[1] is None  # the control
    most = {"command": "true", "args": ["x"] * 4096, "env": {f"V{i}": "" for i in range(1024)}}
    assert parse_spec({"spec": most}, 1 << 20)[1] is None  # and at the bounds


def test_a_workflow_job_reaching_a_draining_node_is_placed_elsewhere_or_kept(monkeypatch):
    """Refused FAILED, it failed its workflow (red-team run). Not pinned: placed on another
    node (a plain job too); a workflow's pinned here (or that no other node can take): kept
    for the undrain; a plain job pinned here is refused, as before (None)."""
    from types import SimpleNamespace

    from joblet.api import preflight
    from joblet.api import tasks as api_tasks
    from joblet.api.models import JobRecord, JobSpec, JobStatus
    from joblet.config import load
    from joblet.worker.tasks import keep_for_drain

    sent, kept, moved = [], [], []
    monkeypatch.setattr(api_tasks, "send_run", lambda cfg, job_id, spec, node, prefix: sent.append(node))
    monkeypatch.setattr(preflight, "best_effort_target", lambda store, cfg, spec: "c")

    def sup(workflow: str | None, pin: str | None = None) -> SimpleNamespace:
        spec = JobSpec(command="true", node=pin)  # as submitted (the message's names where it was placed)
        record = JobRecord(id="a" * 32, status=JobStatus.PENDING, spec=spec, workflow=workflow)
        store = SimpleNamespace(
            find_job=lambda job_id: record,
            transition=lambda job_id, allowed, node: moved.append(node) or True,
            prefix_stamp=lambda: "t:",
        )
        nodes = SimpleNamespace(hold=lambda node, job_id: kept.append(node) or True)
        return SimpleNamespace(cfg=load(node="b"), store=store, nodes=nodes)

    assert keep_for_drain(sup("w" * 32), "a" * 32) == {
        "job_id": "a" * 32, "status": "PENDING", "node": "c"}  # fmt: skip
    assert (sent, moved, kept) == (["c"], ["c"], [])
    assert keep_for_drain(sup("w" * 32, "b"), "a" * 32)["node"] == "b"  # type: ignore[index]
    assert (sent, moved, kept) == (["c"], ["c", "b"], ["b"])  # pinned here: kept, its record naming b
    assert keep_for_drain(sup(None), "a" * 32)["node"] == "c"  # type: ignore[index]
    assert (sent, kept) == (["c", "c"], ["b"])  # a plain job placed here goes elsewhere too
    assert keep_for_drain(sup(None, "b"), "a" * 32) is None  # pinned: refused
    assert (sent, kept) == (["c", "c"], ["b"])


def test_an_expired_message_left_in_a_lost_nodes_queue_fails_no_job_placed_elsewhere(monkeypatch):
    """The sweep of a lost node sends a job that waited in its queue to another node
    (fleet.place_unstarted); the message left there, read expired by the node's worker come
    back, recorded FAILED the job still waiting on the other node (busy slots there), which
    never ran. Only a job whose record names this node, or none (the shared queue), is failed;
    the control: one that names this node is."""
    from types import SimpleNamespace

    from joblet.api.message import Refused
    from joblet.api.models import JobRecord, JobSpec, JobStatus
    from joblet.config import load
    from joblet.worker import broker_guard, tasks

    failed: list[str] = []
    monkeypatch.setattr(broker_guard, "drops", lambda: SimpleNamespace(drop=lambda reason, text: None))
    monkeypatch.setattr(tasks, "refuse", lambda sup, job_id, spec, error: failed.append(job_id))

    def sup(node: str | None) -> SimpleNamespace:
        record = JobRecord(id="a" * 32, status=JobStatus.PENDING, spec=JobSpec(command="true"), node=node)
        return SimpleNamespace(cfg=load(node="d"), store=SimpleNamespace(find_job=lambda job_id: record))

    expired = Refused("expired", "its message expired", job_id="a" * 32)
    tasks.dropped(sup("b"), expired)  # placed on b since: it waits there
    assert failed == []
    tasks.dropped(sup("d"), expired)  # the control: still this node's
    tasks.dropped(sup(None), expired)  # and one of the shared queue
    assert failed == ["a" * 32, "a" * 32]


def test_a_job_reaching_a_worker_that_shuts_down_goes_to_another_node(monkeypatch):
    """Taken in the moment before its consumer stopped, a job ended STOPPED "before it
    started" where a crash would have had it placed elsewhere (fleet-failure run: 6 of 60 at
    a SIGTERM). Not pinned: placed on another node; pinned here, or with nowhere else to go,
    or reaching a worker that is not shutting down: run here, as before (the controls)."""
    from types import SimpleNamespace

    from joblet.api import preflight
    from joblet.api import tasks as api_tasks
    from joblet.api.models import JobRecord, JobSpec, JobStatus
    from joblet.config import load
    from joblet.worker import tasks

    sent: list[str | None] = []
    monkeypatch.setattr(api_tasks, "send_run", lambda cfg, job_id, spec, node, prefix: sent.append(node))
    target = {"node": "c"}
    monkeypatch.setattr(preflight, "best_effort_target", lambda store, cfg, spec: target["node"])

    def outcome(closing: bool, pin: str | None = None) -> object:
        record = JobRecord(id="a" * 32, status=JobStatus.PENDING, spec=JobSpec(command="true", node=pin))
        store = SimpleNamespace(
            find_job=lambda job_id: record, transition=lambda job_id, allowed, node: True, prefix_stamp=lambda: None
        )
        sup = SimpleNamespace(
            cfg=load(node="b"),
            store=store,
            closing=closing,
            nodes=SimpleNamespace(is_drained=lambda node: False),
            run=lambda job_id, spec, keep: "ran here",
        )
        msg = SimpleNamespace(job_id="a" * 32, fields={"spec": {"command": "true", "node": "b"}})  # placed on b
        return tasks.run(sup, msg)  # type: ignore[arg-type]

    assert outcome(closing=True) == {"job_id": "a" * 32, "status": "PENDING", "node": "c"} and sent == ["c"]
    assert outcome(closing=True, pin="b") == "ran here"  # pinned here: it ends with the worker
    assert outcome(closing=False) == "ran here" and sent == ["c"]
    target["node"] = "b"  # placement finds only this node (the others full or down)
    assert outcome(closing=True) == "ran here" and sent == ["c"]
