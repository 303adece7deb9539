"""`rnx stop`, `status` and `log` with click's CliRunner against a fake client: what they print
and how they exit (the real worker's side: tests/integration/test_cli_ops.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.nodes import stop_graces
from joblet.cli import main, stop
from joblet.errors import NotFound

TITLE = "ab\ncd\x1b]0;pwned\x07"  # a newline, and an OSC sequence that sets the terminal's title


class StopClient:
    """Jobs by id and by name; `wait` answers with the job's record once it ended, or times out
    (its worker gone) when it is `stuck`."""

    def __init__(self, *records: JobRecord, stuck: bool = False) -> None:
        self.jobs = {r.id: r for r in records}
        self.stuck = stuck
        self.stops: list[str] = []
        self.settings = SimpleNamespace(stop_grace=0.0)
        self.nodes: dict[str, dict[str, Any]] = {}  # live nodes' heartbeats
        self.clock = 0.0  # stop.now(): a wait that times out moves it on by its timeout

    def stop_graces(self) -> dict[str, float]:
        return stop_graces(self.nodes)

    def live_nodes(self) -> dict[str, dict[str, Any]]:
        return self.nodes

    def get(self, job_id: str) -> JobRecord:
        found = [r for r in self.jobs.values() if job_id in (r.id, r.name)]
        if not found:
            raise NotFound(f"no such job: {job_id}")
        return found[0]

    def stop(self, job_id: str) -> JobRecord:
        self.stops.append(job_id)
        return self.jobs[job_id]

    def wait(self, job_id: str, timeout: float) -> JobRecord:
        if self.stuck:
            self.clock += timeout
            raise TimeoutError(job_id)
        self.jobs[job_id] = self.jobs[job_id].replace(status=JobStatus.STOPPED, exit_code=143)
        return self.jobs[job_id]

    def logs(self, job_id: str, **_: Any) -> Any:
        self.get(job_id)
        return iter(())


def job(char: str, status: JobStatus, name: str | None = None) -> JobRecord:
    started = None if status is JobStatus.PENDING else 1.0
    return JobRecord(id=char * 32, spec=JobSpec(command="sleep", name=name), status=status, name=name, started=started)


def rnx(monkeypatch, client: StopClient, *args: str) -> Any:
    monkeypatch.setattr(main.Ctx, "client", property(lambda self: client))
    monkeypatch.setattr(stop, "now", lambda: client.clock)
    return CliRunner().invoke(main.cli, list(args), prog_name="rnx")


def test_a_job_that_does_not_end_exits_1_and_no_grace_is_guessed(monkeypatch):
    """Its worker dead, the job never ends: rnx said so and exited 0 all the same, and
    promised SIGKILL "up to N s" from its own stop_grace, which need not be the worker's."""
    client = StopClient(job("a", JobStatus.RUNNING), stuck=True)
    out = rnx(monkeypatch, client, "stop", "a" * 32)
    assert out.exit_code == 1, out.output
    assert out.stdout == f"{'a' * 32} RUNNING\n"
    assert f"stopping job {'a' * 12}… sent SIGTERM, {stop.STOP_WAIT}" in out.stderr
    assert "has not ended yet: is its worker alive?" in out.stderr and " s (then SIGKILL)" not in out.stderr
    ended = StopClient(job("a", JobStatus.RUNNING))  # the control: one that ends exits 0
    out = rnx(monkeypatch, ended, "stop", "a" * 32)
    assert out.exit_code == 0 and out.stdout == f"{'a' * 32} STOPPED\n", out.output
    assert f"job {'a' * 12} stopped after" in out.stderr
    queued = StopClient(job("b", JobStatus.PENDING))  # it never ran: not `stopped after 0.2 s`
    out = rnx(monkeypatch, queued, "stop", "b" * 32)
    assert out.exit_code == 0 and f"job {'b' * 12} stopped before it started\n" in out.stderr, out.output


def test_no_wait_leaves_a_running_job_with_exit_0(monkeypatch):
    client = StopClient(job("a", JobStatus.RUNNING), stuck=True)
    out = rnx(monkeypatch, client, "stop", "--no-wait", "a" * 32)
    assert out.exit_code == 0 and out.stdout == f"{'a' * 32} RUNNING\n"
    # that the stop was asked for (`ID RUNNING` alone did not say)
    assert out.stderr == f"stopping job {'a' * 12}… sent SIGTERM, not waiting (rnx status {'a' * 12})\n"


def test_an_ended_job_named_twice_is_reported_once(monkeypatch):
    """`rnx stop X X` of a job that had ended printed it twice (a running one was asked and
    reported once already)."""
    client = StopClient(job("e", JobStatus.COMPLETED, name="done"), job("r", JobStatus.RUNNING, name="busy"))
    out = rnx(monkeypatch, client, "stop", "done", "e" * 32, "busy", "r" * 32)
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == [f"{'e' * 32} COMPLETED", f"{'r' * 32} STOPPED"]
    assert out.stderr.count("had already ended") == 1 and client.stops == ["r" * 32]


@pytest.mark.parametrize("args", [("status",), ("log",), ("stop",), ("stop", "r" * 32)], ids=" ".join)
def test_a_job_argument_in_an_error_is_one_line_of_text(monkeypatch, args):
    """`no such job: ...` echoed the argument raw: a newline split the line, and an escape
    sequence reached the terminal (here it would set the window's title)."""
    client = StopClient(job("r", JobStatus.RUNNING))
    out = rnx(monkeypatch, client, args[0], TITLE, *args[1:])
    assert out.exit_code == 1
    assert "rnx: no such job: ab\\x0acd\\x1b]0;pwned\\x07\n" in out.stderr and "\x1b" not in out.stderr
    assert len([line for line in out.stderr.splitlines() if "no such job" in line]) == 1


def test_the_grace_told_is_the_jobs_workers(monkeypatch):
    """Its worker's heartbeat says its stop_grace: rnx tells that (and waits by it), not its
    own setting's; a worker that does not say leaves the number out."""
    running = job("a", JobStatus.RUNNING).replace(node="n1")
    client = StopClient(running)
    client.nodes = {"n1": {"stop_grace": 2.5}}
    out = rnx(monkeypatch, client, "stop", "a" * 32)
    assert out.exit_code == 0 and "sent SIGTERM, waiting up to 2.5 s (then SIGKILL)" in out.stderr, out.output
    client = StopClient(running)
    client.nodes = {"n1": {}}  # the control: an older worker's heartbeat
    out = rnx(monkeypatch, client, "stop", "a" * 32)
    assert f"sent SIGTERM, {stop.STOP_WAIT}" in out.stderr, out.output


def test_a_workflow_stop_whose_job_does_not_end_exits_1(monkeypatch):
    """`rnx workflow stop` said a job had not ended and exited 0 all the same."""
    row = {
        "id": "c" * 32,
        "name": "wf",
        "status": "RUNNING",
        "jobs": [{"name": "a", "id": "a" * 32, "status": "RUNNING"}],
    }

    def client(stuck: bool) -> StopClient:
        made = StopClient(job("a", JobStatus.RUNNING), stuck=stuck)
        made.workflows = SimpleNamespace(status=lambda wf_id: row, stop=lambda wf_id: ["a"])  # type: ignore[attr-defined]
        return made

    out = rnx(monkeypatch, client(stuck=True), "workflow", "stop", "c" * 12)
    assert out.exit_code == 1 and "job a has not ended yet" in out.stderr, out.output
    out = rnx(monkeypatch, client(stuck=False), "workflow", "stop", "c" * 12)  # the control
    assert out.exit_code == 0 and "workflow wf cccccccccccc:" in out.stdout, out.output


def test_one_workflows_error_leaves_the_others_stopped_and_said(monkeypatch):
    """`rnx workflow stop A B C`: an error reading A's status after its stop (it had ended),
    or waiting for B's jobs, ended the command: C was never asked to stop (review)."""
    from joblet.errors import BackendUnavailable

    jobs = {w: [{"name": w, "id": w * 32, "status": "RUNNING"}] for w in "abc"}
    rows = {w: {"id": w * 32, "name": f"wf{w}", "status": "RUNNING", "jobs": jobs[w]} for w in "abc"}
    made = StopClient(*(job(w, JobStatus.RUNNING) for w in "abc"))
    stopped: list[str] = []
    reads = {"a": 0, "b": 0, "c": 0}

    def status(wf_id: str) -> dict[str, Any]:
        w = wf_id[0]
        reads[w] += 1
        if (w == "a" and reads[w] == 2) or (w == "b" and reads[w] == 2):
            raise BackendUnavailable("cannot reach Redis at unix:///r.sock: Connection refused")
        return rows[w]

    def stop_wf(wf_id: str) -> list[str]:
        stopped.append(wf_id[0])
        return [] if wf_id[0] == "a" else [wf_id[0]]  # a had ended

    made.workflows = SimpleNamespace(status=status, stop=stop_wf)  # type: ignore[attr-defined]
    out = rnx(monkeypatch, made, "workflow", "stop", "a" * 12, "b" * 12, "c" * 12)
    assert out.exit_code == 1 and stopped == ["a", "b", "c"], out.output
    assert out.stderr.count("cannot reach Redis") == 2
    assert "workflow wfc cccccccccccc: RUNNING" in out.stdout  # the control: c's status is said


def test_stop_graces_are_the_heartbeats_numbers_only():
    """A node whose heartbeat says no stop_grace (an older worker), or not a number of seconds,
    is left out: rnx falls back on its own setting for its jobs."""
    live = {"new": {"stop_grace": 2}, "old": {}, "odd": {"stop_grace": "10"}, "flag": {"stop_grace": True}}
    live |= {"neg": {"stop_grace": -1}, "half": {"stop_grace": 0.5}, "inf": {"stop_grace": float("inf")}}
    live |= {"nan": {"stop_grace": float("nan")}}
    assert stop_graces(live) == {"new": 2.0, "half": 0.5}


def test_a_workflow_that_has_ended_has_nothing_to_stop(monkeypatch):
    """It printed `stopping 0 job(s): -`, then the status line (usability review)."""
    row = {"id": "c" * 32, "name": "wf", "status": "COMPLETED", "jobs": [{"name": "a", "id": "a" * 32}]}
    made = StopClient(job("a", JobStatus.COMPLETED))
    made.workflows = SimpleNamespace(status=lambda wf_id: row, stop=lambda wf_id: [])  # type: ignore[attr-defined]
    out = rnx(monkeypatch, made, "workflow", "stop", "c" * 12)
    assert out.exit_code == 0 and out.stdout == "workflow wf cccccccccccc: COMPLETED (nothing to stop)\n", out.output


def test_built_in_networks_and_no_runtimes_are_said_as_such(monkeypatch):
    """Deleting `bridge` exited 1 where creating it exits 2 (a bad input both); `rnx runtime
    list` with none printed a header alone (usability review)."""
    from joblet.api.client_networks import Networks
    from joblet.config import Settings
    from joblet.errors import ValidationError

    with pytest.raises(ValidationError, match='failed to delete network "bridge": it is built in'):
        Networks(Settings(), None, None).delete("bridge")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match='failed to delete network "NONE": it is built in'):
        Networks(Settings(), None, None).delete("NONE")  # type: ignore[arg-type]  # any case (no such network, before)
    made = StopClient()
    made.runtimes = lambda: []  # type: ignore[attr-defined]
    out = rnx(monkeypatch, made, "runtime", "list")
    assert out.exit_code == 0 and out.stdout == "NAME  NODES\n" and "no live worker offers a runtime" in out.stderr
    made.runtimes = lambda: [{"name": "py", "nodes": ["n1"]}]  # type: ignore[attr-defined]
    out = rnx(monkeypatch, made, "runtime", "list")
    assert out.stderr == "" and "py" in out.stdout  # the control


def test_a_big_workflows_stop_names_some_jobs_not_all(monkeypatch):
    """2,000 jobs' names made a line of tens of kilobytes (red-team run)."""
    names = [f"j{i}" for i in range(25)]
    row = {"id": "c" * 32, "name": "wf", "status": "STOPPED", "jobs": [{"name": n, "id": "a" * 32} for n in names]}
    made = StopClient(job("a", JobStatus.STOPPED))
    made.workflows = SimpleNamespace(status=lambda wf_id: row, stop=lambda wf_id: names)  # type: ignore[attr-defined]
    out = rnx(monkeypatch, made, "workflow", "stop", "--no-wait", "c" * 12)
    assert out.exit_code == 0 and out.stdout == f"stopping 25 job(s): {', '.join(names[:20])}, … (5 more)\n"


def test_stats_of_a_job_named_twice_is_one_row(monkeypatch):
    """`rnx stats ID ID` printed the row twice (red-team run)."""
    from joblet.api import stats as api_stats
    from joblet.api.client import Client

    client = Client.__new__(Client)
    client.store = SimpleNamespace(resolve=lambda j: {"web": "a" * 32}.get(j, j))  # type: ignore[assignment]
    seen: list[list[str]] = []
    monkeypatch.setattr(api_stats, "collect", lambda _client, ids: seen.append(ids) or [])
    client.stats(["web", "a" * 32, "b" * 32, "web"])
    assert seen == [["a" * 32, "b" * 32]]


def test_a_job_on_a_down_node_is_said_to_end_lost_and_waited_for_that_long(monkeypatch):
    """rnx said it sent SIGTERM, waited 40 s and asked whether the worker was alive, while the
    job's node had been down for a minute and the job would end LOST (fleet run)."""

    class Fleet(StopClient):
        def stop_graces(self) -> dict[str, float]:
            return {}

        def nodes(self) -> list[dict[str, Any]]:  # type: ignore[override]
            return [{"name": "n1", "state": "down", "heartbeat_age": 30.0}, {"name": "n2", "state": "up"}]

        def live_nodes(self) -> dict[str, dict[str, Any]]:
            return {"n2": {}}

        def wait(self, job_id: str, timeout: float) -> JobRecord:
            waited.append(timeout)
            self.jobs[job_id] = self.jobs[job_id].replace(status=JobStatus.LOST)
            return self.jobs[job_id]

    waited: list[float] = []
    client = Fleet(job("a", JobStatus.RUNNING).replace(node="n1"))
    del client.nodes  # the heartbeats' dict of the plain fake: the fleet's rows here
    client.settings = SimpleNamespace(stop_grace=0.0, node_down_after=20.0, node_lost_grace=60.0)
    out = rnx(monkeypatch, client, "stop", "a" * 32)
    assert out.exit_code == 0 and out.stdout == f"{'a' * 32} LOST\n", out.output
    said = "its node 'n1' is down (no heartbeat for 30 s): the stop is recorded; the job ends LOST in about 50 s"
    assert said in out.stderr and "sent SIGTERM" not in out.stderr, out.stderr
    assert 50 <= waited[0] <= 66 and f"job {'a' * 12} lost after" in out.stderr
    up = Fleet(job("b", JobStatus.RUNNING).replace(node="n2"))  # the control: a job on a node that is up
    del up.nodes
    up.settings = client.settings
    out = rnx(monkeypatch, up, "stop", "b" * 32)
    assert "sent SIGTERM" in out.stderr and "is down" not in out.stderr, out.stderr


class Crashed(StopClient):
    """The job's worker was killed a moment before the stop: its heartbeat is still live at
    first, gone from the presence keys once `silent_at` has passed on the clock; n2 is live
    unless `alone`; a job's wait ends it LOST at `lost_at`."""

    def __init__(self, record: JobRecord, alone: bool = False, silent_at: float = 12.0) -> None:
        super().__init__(record, stuck=True)
        del self.nodes  # the heartbeats' dict of the plain fake: the fleet's rows here
        self.alone, self.silent_at, self.lost_at = alone, silent_at, float("inf")
        self.settings = SimpleNamespace(stop_grace=10.0, node_down_after=20.0, node_lost_grace=60.0)

    def stop_graces(self) -> dict[str, float]:
        return {}

    def live_nodes(self) -> dict[str, dict[str, Any]]:
        gone = self.clock >= self.silent_at
        return {n: {} for n in ("n1", "n2") if not (n == "n1" and gone) and not (n == "n2" and self.alone)}

    def nodes(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return [{"name": "n1", "state": "up", "heartbeat_age": self.clock + 1}]

    def wait(self, job_id: str, timeout: float) -> JobRecord:
        if self.clock + timeout >= self.lost_at:
            self.clock = self.lost_at
            self.jobs[job_id] = self.jobs[job_id].replace(status=JobStatus.LOST)
            return self.jobs[job_id]
        return super().wait(job_id, timeout)


def test_a_stop_right_after_its_workers_crash_waits_for_the_fleet_or_says_none_will_end_it(monkeypatch):
    """Its worker killed a moment before: rnx said it sent SIGTERM, waited 40 s, and asked
    whether the worker was alive (older left item). It sees the heartbeat stop within 5 s of
    it, then waits for another node to make the job LOST, or says at once that none can."""
    running = job("a", JobStatus.RUNNING).replace(node="n1")
    fleet = Crashed(running)
    fleet.lost_at = 85.0  # its last beat at -1 s: down at 19 s, LOST 60 s later, seen by a sweep
    out = rnx(monkeypatch, fleet, "stop", "a" * 32)
    assert out.exit_code == 0 and out.stdout == f"{'a' * 32} LOST\n", out.output
    said = "node 'n1' stopped heartbeating (no heartbeat for 16 s): the stop is recorded; the job ends LOST in about 64"
    assert "sent SIGTERM" in out.stderr and said in out.stderr, out.stderr

    alone = Crashed(running, alone=True)
    out = rnx(monkeypatch, alone, "stop", "a" * 32)
    assert out.exit_code == 1 and out.stdout == f"{'a' * 32} RUNNING\n", out.output
    assert "no other live worker can make the job LOST, so it ends when its worker returns" in out.stderr
    assert alone.clock == 15.0  # seen at the third look, not 40 s on

    live = Crashed(running, silent_at=float("inf"))  # the control: a worker alive and slow
    out = rnx(monkeypatch, live, "stop", "a" * 32)
    assert out.exit_code == 1 and "has not ended yet: is its worker alive?" in out.stderr, out.output
    assert "heartbeat" not in out.stderr and live.clock == 40.0


def test_rnx_log_of_a_lost_job_says_its_output_ends_there(monkeypatch):
    """It printed what the job wrote and exited 0, no word of the loss (fleet run); with -f
    it exits 125, as before."""
    lost = job("a", JobStatus.LOST).replace(error="node n1 stopped heartbeating at 12:00:00")
    for args, code in ((("log", "a" * 32), 0), (("log", "-f", "a" * 32), 125)):
        out = rnx(monkeypatch, StopClient(lost), *args)
        assert out.exit_code == code, out.output
        assert out.stderr == f"rnx: job {'a' * 12} lost: node n1 stopped heartbeating at 12:00:00\n", out.stderr
    out = rnx(monkeypatch, StopClient(job("b", JobStatus.COMPLETED)), "log", "b" * 32)  # the control
    assert out.exit_code == 0 and out.stderr == "", out.output


@pytest.mark.parametrize(
    ("status", "exit_code", "error", "said", "code"),
    [
        (JobStatus.COMPLETED, 0, None, "", 0),  # the control: a success exits 0, no word
        (JobStatus.FAILED, 7, None, "", 7),
        (JobStatus.FAILED, 143, "timed out after 1s", "failed: timed out after 1s", 143),
        (JobStatus.FAILED, 137, "out of memory: killed at its limit of 16 MB", "failed: out of memory", 137),
        (JobStatus.FAILED, 0, "timed out after 1s", "failed: timed out after 1s", 1),
        (JobStatus.STOPPED, 143, None, "stopped by a stop request from elsewhere", 143),
    ],
)
def test_rnx_log_f_ends_as_an_attached_run_would(monkeypatch, status, exit_code, error, said, code):
    """`rnx run -d` then `rnx log -f` in a script could not tell a failure from a success: it
    exited 0 without a word for a job that failed, timed out or was stopped (usability run).
    Without -f, rnx log prints the output and exits 0, as before."""
    ended = job("a", status).replace(exit_code=exit_code, error=error)
    out = rnx(monkeypatch, StopClient(ended), "log", "-f", "a" * 32)
    assert out.exit_code == code, out.output
    assert (said in out.stderr) if said else out.stderr == "", out.stderr
    plain = rnx(monkeypatch, StopClient(ended), "log", "a" * 32)
    assert plain.exit_code == 0 and plain.stderr == "", plain.output


def test_a_jobs_stop_time_is_to_its_own_end(monkeypatch):
    """Jobs are waited for one after another: one that ended at once, waited for after a slow
    one, read `stopped after 5.0 s` (red-team run). Its record's end says when it ended."""
    import time

    monkeypatch.setattr(stop, "now", lambda: 105.0)  # rnx began at 100: 5 s ago
    quick = job("a", JobStatus.STOPPED).replace(finished=time.time() - 4.8)
    assert 0.1 <= stop.ended_after(quick, 100.0) <= 0.3
    assert stop.ended_after(job("b", JobStatus.STOPPED), 100.0) == 5.0  # the control: no end recorded
    late = job("c", JobStatus.STOPPED).replace(finished=time.time() + 60)  # a clock ahead: at most what rnx saw
    assert stop.ended_after(late, 100.0) == 5.0


def test_ctrl_c_while_rnx_stop_waits_says_the_stop_goes_on(monkeypatch):
    """Ctrl-C while rnx stop waited left quietly (130): nothing said that the stop goes on,
    as rnx run says when it stops waiting (usability run)."""
    client = StopClient(job("a", JobStatus.RUNNING), job("b", JobStatus.RUNNING))

    def interrupted(job_id: str, timeout: float) -> JobRecord:
        raise KeyboardInterrupt

    client.wait = interrupted  # type: ignore[method-assign]
    out = rnx(monkeypatch, client, "stop", "a" * 32, "b" * 32)
    assert out.exit_code == 130 and client.stops == ["a" * 32, "b" * 32], out.output
    assert out.stderr.endswith("rnx: stopped waiting; the stop goes on (rnx list --status=running)\n"), out.stderr
    one = StopClient(job("c", JobStatus.RUNNING))
    one.wait = interrupted  # type: ignore[method-assign]
    out = rnx(monkeypatch, one, "stop", "c" * 32)
    assert out.exit_code == 130 and out.stderr.endswith(f"the stop goes on (rnx status {'c' * 12})\n"), out.stderr
