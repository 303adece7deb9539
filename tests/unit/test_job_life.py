"""A job's life with in-memory fakes: each setup step failing in turn undoes exactly what was
applied before it, newest first, and the job still ends with a final record."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.networks import NetworkDef
from joblet.config import load
from joblet.errors import BackendUnavailable, ExecutionError, NetworkError
from joblet.network_agent.plan import NetFacts, NetPlan
from joblet.worker.discovery import Discovery
from joblet.worker.job import JobRun
from joblet.worker.journal import Entry, Journal
from joblet.worker.records import Records
from joblet.worker.sandbox import Host
from joblet.worker.services import Services

HOST = Host(
    etc="/c/etc",
    empty_file="/c/f",
    empty_dir="/c/d",
    system=(),
    ro_paths=(),
    secret_files=(),
    secret_dirs=(),
    proc_files=(),
    proc_dirs=(),
)


class Log:
    """Every call the fakes saw, in order; `fail` names the one call that raises."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def __call__(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail:
            raise (NetworkError if "net" in name else ExecutionError)(f"{name} broke")


class FakeStore:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.records: dict[str, dict[str, Any]] = {}

    def transition(self, job_id: str, allowed: Any, **fields: Any) -> bool:
        self.records.setdefault(job_id, {}).update(fields)
        return True

    def final_record(self, job_id: str) -> JobRecord | None:
        fields = self.records.get(job_id, {})
        spec = JobSpec(command="sh")
        return JobRecord(id=job_id, spec=spec, **fields) if fields.get("status") is not None else None

    def statuses(self, job_ids: list[str]) -> list[Any]:
        return [self.records.get(j, {}).get("status") for j in job_ids]

    def expire_job(self, job_id: str, ttl: int) -> None: ...
    def find_job(self, job_id: str) -> None:
        return None

    def append_output(self, *args: Any) -> None:
        self.log("output")

    def end_output(self, *args: Any) -> None:
        self.log("end output")

    def members(self, networks: list[str], scope: str = "") -> dict[str, str]:
        return {}

    def join_networks(self, *args: Any) -> None:
        self.log("join networks")

    def leave_networks(self, *args: Any) -> None:
        self.log("leave networks")

    def unplace(self, *args: Any) -> None:
        self.log("unplace")

    def publish_event(self, *args: Any, **kw: Any) -> None: ...


class FakeClaims:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def finish(self, job_id: str, spec: Any, allowed: Any, ttl: int, **fields: Any) -> tuple[bool, Any]:
        if self.store.transition(job_id, allowed, **fields):
            return True, None
        return False, self.store.final_record(job_id)  # as the script: the record already final


class FakeCgroup:
    def __init__(self, log: Log, path: Path) -> None:
        self.log, self.path = log, path

    def create(self) -> None:
        self.log("cgroup create")

    def limit_pids(self, n: int) -> None:
        self.log("cgroup pids")

    def limit(self, *args: Any) -> None:
        self.log("cgroup limits")

    def kill(self) -> None:
        self.log("cgroup kill")

    def remove(self) -> None:
        self.log("cgroup remove")

    def signal(self, *args: Any, **kw: Any) -> None:
        self.log("cgroup signal")

    def oom_killed(self) -> str | None:
        return None


class FakeThread:
    def __init__(self, log: Log) -> None:
        self.log = log
        log("thread start")

    def __call__(self, fn: Any) -> Any:
        return fn()

    def close(self) -> None:
        self.log("thread end")


class FakeNetns:
    def __init__(self, log: Log) -> None:
        self.log, self.fd = log, 99
        log("netns create")

    def close(self) -> None:
        self.log("netns close")


class FakeJobMounts:
    def __init__(self, log: Log, job_dir: Path, fill: Any) -> None:
        self.log, self.fd, self.dir, self.work = log, 98, job_dir, str(job_dir / "work")
        self.covers = str(job_dir / "cover")  # the job's files' empty file and directory (mounts.py)
        (job_dir / "work").mkdir(parents=True)
        fill(job_dir / "work")
        log("mounts create")

    def write(self, name: str, text: str) -> bool:
        (self.dir / name).write_text(text)
        return True

    def close(self) -> None:
        self.log("mounts close")


class FakeMain:
    pid, returncode = 4242, 0

    def __init__(self) -> None:
        self.stdout, self.stderr = io.BytesIO(), io.BytesIO()
        self.stdout.fileno = lambda: 0  # type: ignore[method-assign]
        self.stderr.fileno = lambda: 0  # type: ignore[method-assign]

    def wait(self, timeout: float | None = None) -> int:
        return 0


class FakeSandbox:
    def __init__(self, log: Log, launch: Any) -> None:
        self.log, self.main, self.launch = log, None, launch

    def start(self) -> FakeMain:
        self.log("sandbox start")
        self.main = FakeMain()  # type: ignore[assignment]
        return self.main  # type: ignore[return-value]

    released = False

    def go(self) -> None:
        self.log("sandbox go")
        self.released = True

    def output_fds(self) -> tuple[int, int]:
        return os.eventfd(0, os.EFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC)  # the pump's (a fake) to close

    def exit_fd(self) -> int:
        return os.eventfd(1, os.EFD_CLOEXEC)  # readable at once: the fake command has ended

    def close(self) -> None:
        self.log("sandbox close")


class FakeKernel:
    def __init__(self, log: Log) -> None:
        self.log = log

    def cgroup(self, path: Path) -> FakeCgroup:
        return FakeCgroup(self.log, path)

    def thread(self, name: str) -> FakeThread:
        return FakeThread(self.log)

    def netns(self, call: Any) -> FakeNetns:
        return call(lambda: FakeNetns(self.log))

    def sandbox(self, launch: Any) -> FakeSandbox:
        return FakeSandbox(self.log, launch)

    def mounts(self, job_dir: Path, size: int, fill: Any, call: Any, sys_covers: Any, reach: Any) -> FakeJobMounts:
        return call(lambda: FakeJobMounts(self.log, job_dir, fill))


class FakeAgent:
    def __init__(self, log: Log) -> None:
        self.log = log

    def facts(self, spec: JobSpec) -> NetFacts:
        self.log("net facts")
        net1 = NetworkDef(name="net1", cidr="10.9.0.0/24")
        return NetFacts(
            mtu=1500,
            bridge="joblet0",
            bridge_cidr="172.20.0.0/16",
            isolated_pool="10.254.0.0/16",
            networks={"net1": net1},
            nameservers=("192.0.2.53",),
        )

    def reserve(self, job_id: str, spec: JobSpec, facts: NetFacts) -> dict[str, int]:
        self.log("net reserve")
        return {"net1": 167837957}

    def free(self, job_id: str, reserved: dict[str, int]) -> None:
        self.log("net free")

    def setup(self, plan: NetPlan, netns: Any) -> None:
        self.log("net setup")

    def teardown(self, plan: NetPlan) -> None:
        self.log("net teardown")

    def released(self, plan: NetPlan) -> None:
        self.log("net links gone, port rules removed")

    def forget_flows(self, plan: NetPlan) -> None:
        self.log("net flows forgotten")


class FakeMounts:
    def binds_for(self, volumes: Any, runtime: Any, job_id: str) -> tuple[list[Any], None]:
        return [], None


class FakePump:
    max_bytes = 1 << 20

    def __init__(self, log: Log) -> None:
        self.log = log

    def watch(self, *args: Any, **kw: Any) -> Any:
        self.log("watch")
        self.keep = args[3]  # bytes of stdout kept for the job's result
        cap = type("Cap", (), {})()
        cap.stdout, cap.truncated = bytearray(b"hi"), False
        cap.closed, cap.flushed = threading.Event(), threading.Event()
        cap.closed.set()
        cap.flushed.set()
        return cap

    def ended(self, cap: Any) -> None:
        pass

    def settle(self, cap: Any, timeout: float) -> bool:
        return True

    def finish(self, cap: Any, summary: Any) -> None:
        self.log("end output")


def services(tmp_path: Path, log: Log, store_type: type[FakeStore] = FakeStore) -> Services:
    cfg = load(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"), node="n1")
    store = store_type(log)
    return Services(
        cfg=cfg,
        store=store,
        agent=FakeAgent(log),
        journal=Journal(cfg.state_dir),  # type: ignore[arg-type]
        pump=FakePump(log),
        mounts=FakeMounts(),
        discovery=Discovery(store, "n1"),  # type: ignore[arg-type]
        records=Records(store, cfg, FakeClaims(store)),  # type: ignore[arg-type]
        host=lambda: HOST,
        cgroup_root=tmp_path / "cg",  # type: ignore[arg-type]
        kernel=FakeKernel(log),
    )


def life(tmp_path: Path, fail: str | None) -> tuple[list[str], str, Any]:
    log = Log(fail)
    svc = services(tmp_path, log)
    run = JobRun(svc, "a" * 32, JobSpec(command="sh", args=("-c", "true"), network=("net1",)))
    run.execute()
    record = svc.store.records["a" * 32]  # type: ignore[attr-defined]
    return log.calls, record["status"], Journal(tmp_path / "state").entries()


# setup as it happens: a step, "undo:what" when that step's undo is pushed, "later:what" when
# its undo is pushed on the stack unwound after the final record
EVENTS = [
    "net facts",
    "net reserve",
    "later:net free",
    "undo:cgroup remove",
    "cgroup create",
    "cgroup pids",
    "thread start",  # the job's thread: it makes the namespaces and spawns the sandbox
    "undo:thread end",
    "netns create",
    "later:net links gone, port rules removed",  # after the record: the kernel drops the veths
    "undo:netns close",
    "mounts create",
    "undo:mounts close",
    "undo:sandbox close",
    "sandbox start",  # it joins the cgroups and builds the root while the network is set up, then waits for the go
    "net setup",
    "undo:leave networks",
    "join networks",
    "sandbox go",
]
STEPS = [e for e in EVENTS if not e.startswith(("undo:", "later:"))]
UNDOS = {e[5:] for e in EVENTS if e.startswith("undo:")}
LATER = {e[6:] for e in EVENTS if e.startswith("later:")}


def test_a_whole_life_undoes_everything_newest_first(tmp_path):
    calls, status, journal = life(tmp_path, None)
    assert status == JobStatus.COMPLETED and journal == []
    # appended, not a file per job: its entry, the entry with its plan, with its end (before
    # its teardown: a restart records that end, not LOST), and its forget
    lines = (tmp_path / "state" / "journal" / "log").read_text().splitlines()
    assert len(lines) == 4 and lines[-1] == '{"forget": "' + "a" * 32 + '"}'
    assert '"outcome":{"status":"COMPLETED","exit_code":0' in lines[2], lines[2]
    # an older worker reconciling the entry removes this path: its own, never "" (its cwd), never made
    named = json.loads(lines[0])["run_dir"]
    assert named == str(tmp_path / "run" / "jobs" / ("a" * 32)) and not Path(named).exists()
    after = calls[calls.index("watch") + 1 :]
    assert after == [
        "cgroup kill",
        "leave networks",
        "cgroup kill",
        "sandbox close",
        "mounts close",
        "netns close",
        "thread end",  # after the sandbox is reaped: its parent-death signal follows the thread
        "cgroup remove",
        "end output",  # the final record came before it
        "net links gone, port rules removed",
        "net free",
    ]


@pytest.mark.parametrize("step", STEPS)
def test_a_failing_step_undoes_exactly_what_was_applied(tmp_path, step):
    calls, status, journal = life(tmp_path, step)
    assert status == JobStatus.FAILED and journal == []  # the journal entry is forgotten too
    pushed = [e[5:] for e in EVENTS[: EVENTS.index(step)] if e.startswith("undo:")]
    undone = [c for c in calls[calls.index(step) + 1 :] if c in UNDOS]
    assert undone == list(reversed(pushed)), calls
    later = [e[6:] for e in EVENTS[: EVENTS.index(step)] if e.startswith("later:")]
    assert [c for c in calls[calls.index("end output") :] if c in LATER] == list(reversed(later))
    assert not any(later in calls for later in STEPS[STEPS.index(step) + 1 :])  # nothing after it ran
    # ended before its network was planned: where it was queued goes (its leave comes with a plan)
    assert ("unplace" in calls) == (STEPS.index(step) <= STEPS.index("net reserve")), calls


def test_undo_keeps_going_and_collects_errors():
    from joblet.worker.undo import UndoStack

    done: list[str] = []
    undo = UndoStack()
    undo.push("first", lambda: done.append("first"))
    undo.push("broken", lambda: (_ for _ in ()).throw(NetworkError("gone wrong")))
    undo.push("last", lambda: done.append("last"))
    assert undo.names() == ["last", "broken", "first"]
    assert undo.unwind() == ["broken: gone wrong"] and done == ["last", "first"]
    assert undo.unwind() == [] and done == ["last", "first"]  # each undo runs once


def test_a_final_record_never_written_keeps_the_journal_entry(tmp_path):
    """Redis never took the final record: the entry stays for the next start to reconcile
    (LOST), where forgetting it first left the job RUNNING for good; the addresses and port
    rules still go."""
    log = Log(None)
    svc = services(tmp_path, log)

    def never(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise BackendUnavailable("Redis is unreachable: gave up after 600 s")

    svc.records.finish = never  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailable):
        JobRun(svc, "a" * 32, JobSpec(command="sh", args=("-c", "true"), network=("net1",))).execute()
    assert [e.job_id for e in Journal(tmp_path / "state").entries()] == ["a" * 32]
    assert "net free" in log.calls and "net links gone, port rules removed" in log.calls
    calls, status, journal = life(tmp_path / "ok", None)  # the control: recorded, then forgotten
    assert status == JobStatus.COMPLETED and journal == []


def test_a_journaled_job_not_recorded_lost_is_reconciled_again(tmp_path, monkeypatch):
    """The worker starts while Redis is away: the dead worker's job is torn down but cannot be
    recorded LOST, so its entry stays (it used to be forgotten first), and the heartbeat
    records it once Redis is back (it waited for the worker's next start)."""
    from joblet.worker import reconcile as rec

    monkeypatch.setattr(rec, "scan_leftovers", lambda svc: None)  # the kernel's side: integration tests
    svc = services(tmp_path, Log(None))
    for job_id in ("a" * 32, "b" * 32):
        svc.journal.record(Entry(job_id=job_id, cgroup=str(tmp_path / "cg" / job_id), work_dir="", run_dir=""))

    def lost(job_id: str, reason: str) -> bool:
        if job_id == "a" * 32:
            raise BackendUnavailable("Redis is unreachable")
        return True

    svc.records.mark_lost = lost  # type: ignore[method-assign]
    rec.reconcile(svc, running=set())
    assert [e.job_id for e in Journal(tmp_path / "state").entries()] == ["a" * 32]  # b: recorded, forgotten
    svc.records.finals.retry()  # a heartbeat while Redis is still away: kept
    assert [e.job_id for e in Journal(tmp_path / "state").entries()] == ["a" * 32]
    recorded: list[str] = []
    svc.records.mark_lost = lambda job_id, reason: recorded.append(job_id) or True  # type: ignore[method-assign]
    svc.records.finals.retry()  # a heartbeat once Redis is back, not the worker's next start (review)
    assert recorded == ["a" * 32] and Journal(tmp_path / "state").entries() == []
    assert svc.records.finals.pending() == []


def test_stdout_is_kept_for_a_result_only_where_one_is_stored(tmp_path):
    """joblet's own sends store no Celery result: up to result_output_limit (1 MiB) of each
    job's stdout was held in the worker's memory for it all the same."""
    spec = JobSpec(command="sh", args=("-c", "true"), network=("net1",))
    for keep_stdout, kept in ((False, 0), (True, 1 << 20)):  # True: run_job.delay()'s, read by .get()
        svc = services(tmp_path / str(keep_stdout), Log(None))
        JobRun(svc, "a" * 32, spec, keep_stdout=keep_stdout).execute()
        assert svc.pump.keep == kept == (svc.cfg.result_output_limit if keep_stdout else 0)  # type: ignore[attr-defined]


def test_a_crashed_workers_job_loses_its_flows_before_its_addresses(tmp_path):
    """reconcile.teardown_entry: as a run's release does, the dead worker's job's conntrack
    entries go after its links and before its addresses are freed for others."""
    from joblet.worker.reconcile import teardown_entry

    log = Log(None)
    svc = services(tmp_path, log)
    plan = NetPlan(job_id="a" * 32, hostname="x", mode="bridge")
    entry = Entry(job_id="a" * 32, cgroup=str(tmp_path / "cg" / ("a" * 32)), work_dir="", run_dir="", plan=plan)
    assert teardown_entry(svc, entry) == []
    net = [c for c in log.calls if c.startswith("net ")]
    assert net == ["net teardown", "net flows forgotten", "net free"], log.calls


class StopAt(Log):
    """A Log that stops `run` (with `why`) once the job reaches the call `at`."""

    def __init__(self, at: str, why: str | None) -> None:
        super().__init__()
        self.at, self.why = at, why
        self.run: JobRun | None = None

    def __call__(self, name: str) -> None:
        super().__call__(name)
        if name == self.at and self.run is not None:
            self.run.stop(self.why)


def test_a_job_stopped_by_its_workers_shutdown_during_setup_says_so(tmp_path):
    """`stopped before it started` alone read as a user's stop (usability run): the shutdown
    is named, as a running job's record names it."""
    said = {}
    for why in ("stopped by the shutdown of its worker (node n1)", None):
        log = StopAt("net setup", why)  # claimed and being built when the stop comes
        svc = services(tmp_path / str(why is None), log)
        log.run = JobRun(svc, "a" * 32, JobSpec(command="sh", args=("-c", "true"), network=("net1",)))
        log.run.execute()
        record = svc.store.records["a" * 32]  # type: ignore[attr-defined]
        said[why] = (record["status"], record["error"])
    assert said == {
        "stopped by the shutdown of its worker (node n1)": (
            JobStatus.STOPPED,
            "stopped by the shutdown of its worker (node n1), before it started",
        ),
        None: (JobStatus.STOPPED, "stopped before it started"),  # a user's stop: as before
    }


def test_a_stop_that_comes_once_the_command_ended_stops_nothing(tmp_path):
    """A stop between the command's exit and its outcome (a repeated `rnx stop`, the
    shutdown's) recorded a job that exited 0 STOPPED: the workflow jobs requiring it
    COMPLETED were canceled (review). The fake command has ended by its go."""
    ended = {}
    for at in ("sandbox go", "net setup"):  # after its end; and before its start (the control)
        log = StopAt(at, None)
        svc = services(tmp_path / at.replace(" ", "-"), log)
        log.run = JobRun(svc, "a" * 32, JobSpec(command="sh", args=("-c", "true"), network=("net1",)))
        log.run.execute()
        ended[at] = svc.store.records["a" * 32]["status"]  # type: ignore[attr-defined]
    assert ended == {"sandbox go": JobStatus.COMPLETED, "net setup": JobStatus.STOPPED}


class StoppedMeanwhile(FakeStore):
    """A stop that reached Redis while the job was being built, and that its worker never
    heard: the record is STOPPED (its followers gone), and nothing moves it on."""

    def transition(self, job_id: str, allowed: Any, **fields: Any) -> bool:
        record = self.records.setdefault(job_id, {})
        if fields.get("status") == JobStatus.RUNNING:
            record.update(status=JobStatus.STOPPED, error="stopped before it started")
        if record.get("status") == JobStatus.STOPPED:
            return False
        record.update(fields)
        return True


def test_a_job_whose_record_left_pending_during_its_setup_never_starts(tmp_path):
    """The RUNNING transition's refusal was ignored: the command ran until the next
    heartbeat's stops, its output after its end marker (review)."""
    log = Log(None)
    svc = services(tmp_path, log, StoppedMeanwhile)
    store = svc.store
    JobRun(svc, "a" * 32, JobSpec(command="sh", args=("-c", "true"), network=("net1",))).execute()
    assert "sandbox go" not in log.calls and "join networks" not in log.calls, log.calls
    assert store.records["a" * 32] == {"status": JobStatus.STOPPED, "error": "stopped before it started"}
    for undone in ("sandbox close", "mounts close", "netns close", "cgroup remove", "net free"):
        assert undone in log.calls, (undone, log.calls)
    assert Journal(tmp_path / "state").entries() == []
    calls, status, _ = life(tmp_path / "ok", None)  # the control: the same job, its record PENDING, starts
    assert "sandbox go" in calls and status == JobStatus.COMPLETED


def test_a_freed_isolated_link_is_named_by_its_address_not_its_slot(tmp_path, caplog):
    """The isolated pool's allocations are slots: slot 5 was logged as "address 0.0.0.5"."""
    from joblet.network_agent.ipam import P2pPool
    from joblet.worker.reconcile import free_orphan_addresses

    svc = services(tmp_path, Log(None))
    released: list[tuple[str, int]] = []

    class Ipam:
        def allocations(self, network: str) -> dict[int, str]:
            return {5: "e" * 32} if network == "isolated" else {167837957: "f" * 32} if network == "bridge" else {}

        def release(self, network: str, address: int, owner: str) -> None:
            released.append((network, address))

    svc.agent.ipam, svc.agent.pool = Ipam(), P2pPool("10.254.0.0/16")  # type: ignore[attr-defined]
    svc.agent.networks = type("Nets", (), {"all": staticmethod(list)})()  # type: ignore[attr-defined]
    with caplog.at_level("WARNING"):
        free_orphan_addresses(svc)  # both owners are gone (no record)
    assert released == [("bridge", 167837957), ("isolated", 5)]
    assert "freed isolated address 10.254.0.22 of ended job eeeeeeeeeeee" in caplog.text, caplog.text
    assert "freed bridge address 10.1.1.5 of ended job ffffffffffff" in caplog.text  # the control
    svc.agent.pool = P2pPool("10.254.0.0/28")  # type: ignore[attr-defined]  # 4 slots: 5 is another node's
    released.clear()
    free_orphan_addresses(svc)  # a ValueError here stopped the worker's start (review)
    assert ("isolated", 5) in released and "freed isolated address slot 5 of ended job" in caplog.text


def test_a_jobs_own_id_in_its_environment_is_not_replaced_by_env(tmp_path):
    """`rnx run -e JOBLET_JOB_ID=fake` replaced the job's own id variable (usability run); the
    rest of --env still replaces the defaults (PATH, HOME)."""
    svc = services(tmp_path, Log(None))
    spec = JobSpec(command="true", env={"JOBLET_JOB_ID": "fake", "HOME": "/tmp", "X": "1"})
    env = JobRun(svc, "a" * 32, spec)._env(None)
    assert env["JOBLET_JOB_ID"] == "a" * 32
    assert env["HOME"] == "/tmp" and env["X"] == "1"  # the control: --env still sets the others


def test_an_oom_kill_names_the_limit_that_struck(tmp_path, monkeypatch):
    """A job without --max-memory killed by the OOM killer read `killed at its limit of None
    MB`, and a job killed for all jobs' memory together read its own limit (review)."""
    monkeypatch.setattr(FakeMain, "returncode", 137)
    said = {}
    for whose, limit in [("own", 64), ("own", None), ("shared", 64), ("shared", None), (None, 64)]:
        monkeypatch.setattr(FakeCgroup, "oom_killed", lambda self, whose=whose: whose)
        svc = services(tmp_path / f"{whose}{limit}", Log())
        svc.jobs_memory_mb = 900
        limits = {"max_memory": limit} if limit else {}
        JobRun(svc, "a" * 32, JobSpec(command="sh", args=("-c", "true"), network=("net1",), limits=limits)).execute()
        record = svc.store.records["a" * 32]  # type: ignore[attr-defined]
        said[whose, limit] = (record["status"], record["error"])
        assert record["signal"] == (9 if whose else None), record  # SIGKILL, the OOM killer's; none in the control
    shared = "out of memory: the jobs here together reached their 900 MB (JOBLET_JOBS_MAX_MEMORY) or the host its"
    shared += " memory"
    assert said == {
        ("own", 64): (JobStatus.FAILED, "out of memory: killed at its limit of 64 MB"),
        ("own", None): (JobStatus.FAILED, "out of memory"),
        ("shared", 64): (JobStatus.FAILED, f"{shared}, before its own limit of 64 MB"),
        ("shared", None): (JobStatus.FAILED, shared),
        (None, 64): (JobStatus.FAILED, "exit code 137 (128+9: SIGKILL)"),  # the control: no OOM kill
    }


def test_a_workflow_jobs_start_advances_its_workflow_once_its_output_is_watched(tmp_path):
    """The advance at a workflow job's start ran between its go and the watch of its pipes: a
    large fan-out or a hung Redis left its output unread past 64 KiB (review). A thread of
    its own raced the job's end's advance (a job failing at once canceled what required it
    RUNNING): it runs in the job's thread, after the watch, before the wait."""
    log = Log()
    svc = services(tmp_path, log)
    svc.records.workflow_job_started = lambda scope, name: log("workflow started")  # type: ignore[method-assign]
    run = JobRun(svc, "a" * 32, JobSpec(command="sh", args=("-c", "true"), network=("net1",), name="db"), "w" * 32)
    run.execute()
    assert svc.store.records["a" * 32]["status"] == JobStatus.COMPLETED  # type: ignore[attr-defined]
    calls = log.calls
    assert calls.index("sandbox go") < calls.index("watch") < calls.index("workflow started"), calls


def test_a_leave_that_meets_redis_gone_twice_is_left_to_the_heartbeat(tmp_path):
    """Its teardown's leave met Redis gone, and so did the retry after its final record:
    nothing else takes a job's entry out of its networks' members (its name stayed in its
    peers' /etc/hosts). The heartbeat's Finals tries it; its peers are refreshed meanwhile."""
    for failures, retried in ((1, False), (2, True)):  # the first: the control, the retry enough

        class Flaky(FakeStore):
            left, fails = 0, failures

            def leave_networks(self, *args: Any) -> None:
                self.left += 1
                if self.left <= self.fails:
                    raise BackendUnavailable("cannot reach Redis")
                self.log("leave networks")

        log = Log()
        svc = services(tmp_path / str(failures), log, Flaky)
        run = JobRun(svc, "a" * 32, JobSpec(command="sh", args=("-c", "true"), network=("net1",)))
        run.execute()
        assert svc.store.records["a" * 32]["error"] is None  # type: ignore[attr-defined]
        assert svc.records.finals.pending() == (["leave " + "a" * 32] if retried else [])
        assert log.calls.count("leave networks") == (0 if retried else 1)
        svc.records.finals.retry()
        assert log.calls.count("leave networks") == 1 and svc.records.finals.pending() == []


def test_a_journaled_job_whose_record_does_not_read_does_not_stop_the_start(tmp_path, monkeypatch):
    """A record written by other means (a field that is not JSON) raised out of reconcile, and
    the worker could not start again, at any restart (red-team run): it is said, its entry
    forgotten (reading it again reads the same), and the other entries are reconciled."""
    from joblet.errors import ValidationError
    from joblet.worker import reconcile as rec

    monkeypatch.setattr(rec, "scan_leftovers", lambda svc: None)
    svc = services(tmp_path, Log(None))
    for job_id in ("a" * 32, "b" * 32):
        svc.journal.record(Entry(job_id=job_id, cgroup=str(tmp_path / "cg" / job_id), work_dir="", run_dir=""))
    recorded: list[str] = []

    def lost(job_id: str, reason: str) -> bool:
        if job_id == "a" * 32:
            raise ValidationError(f"the record of job {job_id} does not read: its field 'spec' is not JSON")
        return recorded.append(job_id) or True

    svc.records.mark_lost = lost  # type: ignore[method-assign]
    rec.reconcile(svc, running=set())
    assert recorded == ["b" * 32] and Journal(tmp_path / "state").entries() == []
    assert svc.records.finals.pending() == []
