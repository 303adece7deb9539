"""A batch's records and messages, with the store and the queue faked (the real ones:
tests/integration/test_batch.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from joblet.api import tasks
from joblet.api.batch import Batch
from joblet.api.models import JobRecord, make_spec


def test_a_batch_interrupted_while_queueing_fails_its_records_instead_of_leaving_them_pending(monkeypatch):
    """Ctrl-C between the records and their messages left 256 jobs PENDING for good: no
    message followed them, and nothing ended them (usability run)."""
    failed: list[tuple[list[str], str]] = []
    store = SimpleNamespace(create_jobs=lambda records, placed=True: None, prefix_stamp=lambda: None)
    client = SimpleNamespace(store=store, settings=None, fail_unqueued=lambda ids, why: failed.append((ids, why)))
    batch = Batch(client, 256)  # type: ignore[arg-type]
    batch.waiting = [JobRecord.pending(f"{i:032x}", make_spec("true")) for i in range(3)]

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tasks, "send_runs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        batch._write()
    assert failed == [([f"{i:032x}" for i in range(3)], "interrupted before it was queued")]
    monkeypatch.setattr(tasks, "send_runs", lambda *_: None)  # the control: sent, nothing failed
    batch.waiting = [JobRecord.pending("f" * 32, make_spec("true"))]
    batch._write()
    assert len(failed) == 1 and [r.id for r in batch.ready] == ["f" * 32]


def test_client_list_takes_one_status_or_several_and_refuses_unknown_ones():
    """`Client().list(status="RUNNING")` read the string letter by letter: [] whatever ran."""
    from joblet.api.client import statuses
    from joblet.api.models import JobStatus
    from joblet.errors import ValidationError

    assert statuses("RUNNING") == statuses(JobStatus.RUNNING) == statuses(["running"]) == ("RUNNING",)
    assert statuses(()) == () and statuses(("PENDING", JobStatus.LOST)) == ("PENDING", "LOST")
    with pytest.raises(ValidationError, match="unknown status 'BOGUS': one of CANCELED, COMPLETED"):
        statuses("bogus")


def test_run_job_refuses_positional_arguments_at_the_call():
    """`run_job.delay("echo", ["hi"])`: the worker dropped the message unread, and .get()
    waited for good (usability run). Nothing is sent (Redis here is unreachable anyway)."""
    from joblet.api.tasks import run_job_signature
    from joblet.config import load

    sig = run_job_signature(load(redis_url="redis://127.0.0.1:1/0"))
    with pytest.raises(TypeError, match="keyword arguments only"):
        sig.delay("echo", ["hi"])


def test_run_job_refuses_a_task_id_no_worker_takes(monkeypatch):
    """`apply_async(task_id=str(uuid4()))`: the worker drops an id that is not 32 lowercase hex
    digits unread, and .get() waited for good (review). Refused before anything is sent; a
    job id is sent as given (the control)."""
    import uuid

    from celery.canvas import Signature

    from joblet.api.tasks import run_job_signature
    from joblet.config import load

    sent: list[str] = []
    monkeypatch.setattr(Signature, "apply_async", lambda self, args, kwargs, task_id, **_: sent.append(task_id))
    sig = run_job_signature(load(redis_url="redis://127.0.0.1:1/0"))
    with pytest.raises(ValueError, match="is not a job id: 32 lowercase hex digits"):
        sig.apply_async(kwargs={"command": "true"}, task_id=str(uuid.uuid4()))
    good = uuid.uuid4().hex
    sig.apply_async(kwargs={"command": "true"}, task_id=good)
    assert sent == [good]


def test_a_limit_given_as_a_field_says_where_it_goes():
    from joblet.errors import ValidationError

    with pytest.raises(ValidationError, match=r"'max_cpu': a limit: give it in limits=\{'max_cpu': \.\.\.\}"):
        make_spec("echo", max_cpu=50)
    assert make_spec("echo", limits={"max_cpu": 50}).limits.max_cpu == 50  # the control


def test_run_job_says_redis_is_out_of_reach_in_joblets_words(monkeypatch):
    """Celery's own `RuntimeError: Retry limit exceeded ...` escaped run_job.delay (usability
    run); the API's errors say BackendUnavailable, on one line, the URL without its password."""
    from celery.canvas import Signature

    from joblet.api.tasks import run_job_signature
    from joblet.config import load
    from joblet.errors import BackendUnavailable

    def celery_gives_up(self, *args, **kwargs):
        raise RuntimeError("Retry limit exceeded while trying to reconnect\nto the Celery result store backend.")

    monkeypatch.setattr(Signature, "apply_async", celery_gives_up)
    sig = run_job_signature(load(redis_url="redis://:secret@127.0.0.1:1/0"))
    with pytest.raises(BackendUnavailable) as caught:
        sig.delay(command="true")
    said = str(caught.value)
    assert "RuntimeError: Retry limit exceeded while trying to reconnect to the Celery" in said
    assert "\n" not in said and "secret" not in said, said


def test_rnx_batch_prints_the_ids_queued_before_redis_went_at_a_named_line(monkeypatch):
    """A named line writes the jobs waiting before it, then queues itself: Redis gone there
    ended rnx batch with the earlier jobs queued (they run) and their ids never printed
    (review)."""
    from click.testing import CliRunner

    from joblet.cli import main
    from joblet.config import load
    from joblet.errors import BackendUnavailable

    sent: list[str] = []
    monkeypatch.setattr(tasks, "send_runs", lambda cfg, runs, stamp: sent.extend(r[0] for r in runs))
    checks = SimpleNamespace(
        check_size=lambda s: None,
        check_networks=lambda s: None,
        check_resources=lambda s: s,
        check_fleet=lambda node, live=None: None,
    )

    def gone(record: JobRecord) -> JobRecord:
        raise BackendUnavailable("cannot reach Redis at redis://x: Connection refused")

    client = SimpleNamespace(
        store=SimpleNamespace(create_jobs=lambda records, placed=True: None, prefix_stamp=lambda: None),
        settings=load(),
        preflight=checks,
        queue_new=gone,
    )

    def batch() -> Batch:
        made = Batch(client)  # type: ignore[arg-type]
        made._place = lambda spec: None  # type: ignore[method-assign]
        return made

    client.batch = batch
    monkeypatch.setattr(main.Ctx, "client", property(lambda self: client))
    lines = "--network=none true\n--network=none true\n--network=none --name=web true\n"
    out = CliRunner().invoke(main.cli, ["batch"], input=lines)
    assert len(sent) == 2 and out.exit_code != 0, out.output
    assert out.stdout == "".join(f"{job_id}\n" for job_id in sent), out.output  # the two queued: their ids
    client.queue_new = lambda record: record  # the control: Redis there, all three are printed
    sent.clear()
    out = CliRunner().invoke(main.cli, ["batch"], input=lines)
    assert out.exit_code == 0 and len(out.stdout.split()) == 3 and out.stdout.split()[:2] == sent, out.output


def test_a_long_batch_reads_the_fleet_again(monkeypatch):
    """`tail -f | rnx batch` read the fleet once: it kept placing jobs on a node that had died
    and been swept, PENDING for good (review). It reads it again every VIEW_EVERY seconds
    (not within VIEW_EVERY: the control), and what it read under a hold goes with the hold."""
    from joblet.api import batch as batch_mod
    from joblet.api import nodes, preflight

    views = [{"n1": {}}, {"n2": {}}]
    reads: list[int] = []

    def fleet_view(store: object, cfg: object) -> dict:
        reads.append(1)
        return views[len(reads) - 1]

    monkeypatch.setattr(preflight, "fleet_view", fleet_view)
    monkeypatch.setattr(nodes, "place", lambda spec, view, homes: next(iter(view)))
    clock = [100.0]
    monkeypatch.setattr(batch_mod.time, "monotonic", lambda: clock[0])
    client = SimpleNamespace(store=None, settings=None, preflight=SimpleNamespace(check_fleet=lambda node: None))
    made = Batch(client)  # type: ignore[arg-type]
    spec = make_spec("true")
    assert made._place(spec) == "n1"
    clock[0] += batch_mod.VIEW_EVERY - 1
    assert made._place(spec) == "n1" and len(reads) == 1  # the control: one read within the interval
    clock[0] += 2
    assert made._place(spec) == "n2" and len(reads) == 2  # n1 died meanwhile: no job goes there
    made._homes["net"] = {"n1"}
    made._let_go()
    assert made._homes == {}


def test_a_batch_writes_what_it_placed_before_its_uploads_pile_up_or_its_holds_let_go(monkeypatch):
    """256 lines of 16 MiB uploads waited in memory (5.5 GiB), and jobs placed under a network
    hold (3 s) waited past it while the next lines were read (review): a batch writes at
    FLUSH_BYTES of uploads, and HELD_FOR after its first hold."""
    from joblet.api import batch as batch_mod
    from joblet.api import nodes, preflight

    clock = [100.0]
    monkeypatch.setattr(batch_mod.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(batch_mod, "FLUSH_BYTES", 3000)
    monkeypatch.setattr(preflight, "fleet_view", lambda store, cfg: {"n1": {}, "n2": {}})
    monkeypatch.setattr(nodes, "place", lambda spec, view, homes: "n1")
    monkeypatch.setattr(tasks, "send_runs", lambda *_: None)
    writes: list[int] = []
    holds: list[list[str]] = []

    class Holding:
        def __init__(self, networks: list[str]) -> None:
            holds.append(networks)

        def __enter__(self) -> None: ...

        def __exit__(self, *_: object) -> None:
            holds.append([])  # let go

    store = SimpleNamespace(
        create_jobs=lambda records, placed=True: writes.append(len(records)),
        prefix_stamp=lambda: None,
        holding_networks=Holding,
        network_homes=lambda names: {n: set() for n in names},
    )
    pre = SimpleNamespace(
        check_fleet=lambda node: None,
        check_size=lambda spec: None,
        check_networks=lambda spec: None,
        check_resources=lambda spec: spec,
        many_nodes=True,
    )
    made = Batch(SimpleNamespace(store=store, settings=None, preflight=pre))  # type: ignore[arg-type]
    upload = {"path": "f", "content": "YWJj" * 500}  # 1500 bytes
    made.add(make_spec("true", uploads=[upload]))
    assert writes == []  # the control: 1500 bytes wait
    made.add(make_spec("true", uploads=[upload]))
    assert writes == [2]  # 3000: written
    made.add(make_spec("true", network=("app",)))
    assert holds == [["app"]] and writes == [2]  # held, placed, waiting
    clock[0] += batch_mod.HELD_FOR
    made.add(make_spec("true"))
    assert writes == [2, 2] and holds == [["app"], []]  # written, then the hold let go
    made.add(make_spec("true", network=("app",)))
    assert made.due() == [] and writes == [2, 2]  # the control: held, not for long yet
    clock[0] += batch_mod.HELD_FOR
    assert len(made.due()) == 1 and writes == [2, 2, 1] and holds[-1] == []  # before the next line's reading
    made.add(make_spec("true", network=("app",)))
    assert len(made.due(uploads=True)) == 1 and writes == [2, 2, 1, 1]  # held a moment: its uploads may outlast it


@pytest.mark.parametrize("cut", ["placement", None])
def test_a_named_job_cut_short_after_its_record_is_failed_not_left_pending(monkeypatch, cut):
    """A named job's record and name are written in one script, its placement in a second
    round trip: Redis going between them left the record PENDING for good, holding its name
    (review). It is failed as a job whose message never went is."""
    from joblet.api.client import Client
    from joblet.config import load
    from joblet.errors import BackendUnavailable

    failed: list[str] = []
    sent: list[str] = []

    def create_named_job(record: JobRecord, placed: bool) -> None:
        if cut:
            raise BackendUnavailable("cannot reach Redis at redis://x: Connection refused")

    client = Client.__new__(Client)
    client.settings = load()
    client.preflight = SimpleNamespace(many_nodes=True)  # type: ignore[assignment]
    client.store = SimpleNamespace(  # type: ignore[assignment]
        create_named_job=create_named_job,
        prefix_stamp=lambda: None,
        fail_waiting=lambda job_id, *_: failed.append(job_id),
    )
    monkeypatch.setattr(tasks, "send_run", lambda cfg, job_id, *_: sent.append(job_id))
    record = JobRecord.pending("a" * 32, make_spec("true", name="web"), node="n1")
    if cut is None:  # the control: written and sent, nothing failed
        assert client.queue_new(record) is record and (sent, failed) == (["a" * 32], [])
        return
    with pytest.raises(BackendUnavailable):
        client.queue_new(record)
    assert (sent, failed) == ([], ["a" * 32])


@pytest.mark.parametrize("started", [None, 1.0])
def test_stopping_again_a_workflow_job_that_never_ran_advances_its_workflow_again(monkeypatch, started):
    """The advance after a waiting workflow job's stop failed (Redis gone a moment): a second
    `rnx stop` found the job ended, skipped the advance, and the workflow waited for good
    (review). A job that ran was advanced by its worker: not again (the control)."""
    from joblet.api import workflow_store
    from joblet.api.client import Client
    from joblet.api.models import JobStatus
    from joblet.config import load

    advanced: list[str] = []
    record = JobRecord.pending("a" * 32, make_spec("true")).replace(
        status=JobStatus.STOPPED, workflow="w" * 32, started=started
    )
    client = Client.__new__(Client)
    client.settings = load()
    client.store = SimpleNamespace(  # type: ignore[assignment]
        resolve=lambda job_id: job_id, stop_job=lambda *_: False, get_job=lambda job_id: record
    )
    monkeypatch.setattr(workflow_store, "advance", lambda store, cfg, wf_id: advanced.append(wf_id))
    client.stop("a" * 32)  # ended already: by an earlier stop whose advance failed
    assert advanced == ([] if started else ["w" * 32])
