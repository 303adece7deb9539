"""The CLI's pure parts with click's CliRunner: option parsing, help texts, human output."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from joblet.api.client import select
from joblet.api.models import JobRecord, JobSpec, JobStatus, make_spec
from joblet.api.networks import check
from joblet.api.stats import row
from joblet.cli import main
from joblet.cli.render import human, job_details
from joblet.cli.run import LEFT_WAIT, Attached, Leave
from joblet.cli.stats import size, stats_row
from joblet.config import Settings, default
from joblet.errors import BackendUnavailable, NotFound, ValidationError
from joblet.worker.stats import link_counters


class FakeClient:
    """Records what would be queued; nothing else (the real thing is in tests/integration)."""

    def __init__(self) -> None:
        self.submitted: list[JobSpec] = []
        self.settings = Settings()

    def submit(self, spec: JobSpec) -> JobRecord:
        self.submitted.append(spec)
        return JobRecord(id="a" * 32, status=JobStatus.PENDING, spec=spec)

    def nodes(self) -> list[dict[str, str]]:
        return [{"name": "n"}]  # a worker has used this Redis (only down now, as no job is placed)


@pytest.fixture
def fake(monkeypatch) -> FakeClient:
    client = FakeClient()
    monkeypatch.setattr(main.Ctx, "client", property(lambda self: client))
    return client


def invoke(*args: str):
    return CliRunner().invoke(main.cli, list(args), prog_name="rnx")


def test_unknown_option_before_the_command_is_refused_with_a_suggestion(fake):
    out = invoke("run", "--netwrok=none", "true")
    assert out.exit_code == 2 and "No such option '--netwrok'" in out.output and "'--network'" in out.output
    assert fake.submitted == []
    ok = invoke("run", "-d", "--network=none", "true")  # positive control
    assert ok.exit_code == 0 and fake.submitted[0].network == ("none",)


@pytest.mark.parametrize(
    "argv",
    [
        ("ls", "-la"),
        ("python3", "-c", "print(1)", "--name", "x"),
        ("sh", "-c", "echo $0", "--netwrok=none"),
        ("--", "-weird"),
    ],
)
def test_everything_from_the_command_on_passes_through(fake, argv):
    out = invoke("run", "-d", *argv)
    assert out.exit_code == 0, out.output
    spec = fake.submitted[0]
    words = [w for w in argv if w != "--"] if argv[0] == "--" else list(argv)
    assert [spec.command, *spec.args] == words and spec.name is None


def test_sig_proxy_takes_true_or_false(fake):
    for word in ("false", "0", "no", "True", "f", "y"):
        assert invoke("run", "-d", f"--sig-proxy={word}", "true").exit_code == 0, word
    out = invoke("run", "-d", "--sig-proxy=maybe", "true")
    assert out.exit_code == 2
    assert "'maybe' is not true or false" in out.output and "Recognized values" not in out.output


def test_help_texts_tell_the_truth():
    net_help = " ".join(invoke("run", "--help").output.split())
    for word in ("isolated", "host", "none", "bridge", "Repeat"):
        assert word in net_help
    out = subprocess.run([sys.executable, "-m", "joblet.worker.main", "--help"], capture_output=True, text=True)
    assert f"default {default('concurrency')}" in out.stdout


def test_worker_without_its_extra_says_what_to_install():
    script = (
        "import sys; sys.modules['pyroute2'] = None; sys.argv = ['joblet-worker']; "
        "from joblet.worker.main import main; main()"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (
        "joblet-worker: pyroute2 is not installed: the worker needs pip install 'joblet[worker]'"
    )
    from joblet.worker.main import _require_worker_extra

    _require_worker_extra()  # positive control: with the extra installed it passes


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (False, "no"),
        (True, "yes"),
        ([], "-"),
        (("1.1.1.1", "9.9.9.9"), "1.1.1.1, 9.9.9.9"),
        (1400, "1400"),
    ],
)
def test_human_values(value, text):
    assert human(value) == text


def test_ipv6_and_bad_cidrs_get_joblet_errors():
    assert check("ok", "10.9.0.0/24") == "10.9.0.0/24"
    cases = [("fd00::/64", "IPv6"), ("10.9.0.1/24", "did you mean 10.9.0.0/24"), ("nope", "ADDRESS/PREFIX")]
    cases.append(("10.40.0.0", "invalid CIDR '10.40.0.0': give ADDRESS/PREFIX"))  # read as /32: "between /8 and /29"
    cases.append(("10.12.0.0/7", "CIDR 10.12.0.0/7 must be between /8 and /29"))  # not "did you mean 10.0.0.0/7?"
    for cidr, said in cases:
        with pytest.raises(ValidationError) as err:
            check("x", cidr)
        assert said in str(err.value) and "\n" not in str(err.value)


def _rec(i: int, status: JobStatus, network: str = "bridge", node: str = "a", name: str | None = None) -> JobRecord:
    return JobRecord(
        id=f"{i:032x}", status=status, node=node, name=name, spec=JobSpec(command="true", network=(network,))
    )


def test_select_matches_every_filter_given():
    recs = [_rec(1, JobStatus.RUNNING), _rec(2, JobStatus.COMPLETED, "none", "b", "web"), _rec(3, JobStatus.FAILED)]
    assert select(recs) == recs
    assert [r.id[-1] for r in select(recs, status=["RUNNING", "FAILED"])] == ["1", "3"]
    assert select(recs, node="b", network="none", name="web") == [recs[1]]
    assert select(recs, node="b", network="bridge") == []


def test_stats_rows_and_sizes():
    assert [size(v) for v in (None, 512, 1536, 3 << 20)] == ["-", "512B", "1.5KiB", "3.0MiB"]
    sample = {
        "cpu_percent": 49.5,
        "memory": 12 << 20,
        "memory_limit": None,
        "pids": 3,
        "pids_limit": 10,
        "disk_used": 0,
        "disk_size": 1 << 30,
        "net_in": None,
        "net_out": None,
        "sampled": 1e9,
    }
    live = row("f" * 32, "web", "a", "RUNNING", sample)
    assert stats_row(live) == ["f" * 12, "web", "49.5%", "12.0MiB / no limit", "3", "0B / 1.0GiB", "-", "a"]
    ended = row("f" * 32, None, "a", "COMPLETED", sample)  # an ended job's last sample is not shown
    assert ended["cpu_percent"] is None and stats_row(ended)[1] == "- (completed)"


def test_link_counters_read_proc_net_dev():
    text = (
        "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n"
        "  jv0123456789: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n"
    )
    assert link_counters(text) == {"jv0123456789": (1000, 2000), "lo": (5, 5)}


class StopClient:
    """Counts stop requests; a signal may arrive while one is on its way (`during`)."""

    def __init__(self) -> None:
        self.stops: list[str] = []
        self.during: Callable[[], None] = lambda: None

    def stop(self, job_id: str) -> None:
        self.during()
        self.stops.append(job_id)

    def stop_graces(self) -> dict[str, float]:
        return {"n1": 7.0}


def attached(sig_proxy: bool = True) -> tuple[Attached, StopClient]:
    client = StopClient()
    record = JobRecord(id="a" * 32, spec=JobSpec(command="sleep"), status=JobStatus.RUNNING)
    return Attached(client, record, as_json=False, sig_proxy=sig_proxy), client  # type: ignore[arg-type]


def test_a_second_signal_before_the_stop_began_still_leaves_once_it_is_asked_for(capsys):
    run, client = attached()
    run._on_signal(signal.SIGINT, None)
    run._on_signal(signal.SIGINT, None)  # before the loop (every 250 ms) acted on the first
    with pytest.raises(Leave):
        run._begin_stop()
    assert client.stops == ["a" * 32] and run.stopping == signal.SIGINT  # the stop was asked for
    assert "stopping job aaaaaaaaaaaa: SIGTERM, SIGKILL after its grace" in capsys.readouterr().err


def mashed(run: Attached) -> Callable[[], None]:
    """A follow loop that gets three Ctrl-C before it acts on one."""

    def stream() -> None:
        for _ in range(3):
            run._on_signal(signal.SIGINT, None)

    return stream


def test_three_signals_before_the_loop_acted_on_one_still_ask_for_the_stop(monkeypatch, capsys):
    """Ctrl-C pressed three times within the loop's 250 ms: rnx left with the job running,
    its stop never asked for (usability run). The leave asks for it, waiting briefly."""
    for proxy in (True, False):  # the control: without the proxy a signal leaves, no stop
        run, client = attached(sig_proxy=proxy)
        run.record = run.record.replace(node="n1")  # placed: nothing to say of workers first
        monkeypatch.setattr(run, "_stream", mashed(run))
        assert run.follow() == 128 + signal.SIGINT
        err = capsys.readouterr().err
        if proxy:
            assert client.stops == ["a" * 32], client.stops
            assert err == "rnx: stopped waiting; job aaaaaaaaaaaa is being stopped: SIGTERM (rnx status aaaaaaaaaaaa)\n"
        else:
            assert client.stops == [] and err == "rnx: left job aaaaaaaaaaaa running (rnx stop aaaaaaaaaaaa)\n"
    run, client = attached()  # Redis hangs: the leave waits no longer than MASHED_WAIT
    run.record = run.record.replace(node="n1")
    monkeypatch.setattr("joblet.cli.run.MASHED_WAIT", 0.05)
    client.during = lambda: time.sleep(5)
    monkeypatch.setattr(run, "_stream", mashed(run))
    begun = time.monotonic()
    assert run.follow() == 128 + signal.SIGINT and time.monotonic() - begun < 2
    assert "left job aaaaaaaaaaaa running (rnx stop aaaaaaaaaaaa)" in capsys.readouterr().err


def test_an_attached_stop_says_when_sigkill_comes(capsys):
    """`rnx run`'s Ctrl-C said "stopping job", then waited ~11 s in silence for a job that
    ignores SIGTERM, where rnx stop says when SIGKILL comes (usability run)."""
    run, client = attached()
    run.record = run.record.replace(node="n1")
    run._on_signal(signal.SIGINT, None)
    run._begin_stop()
    assert "stopping job aaaaaaaaaaaa: SIGTERM, SIGKILL after 7 s (Ctrl-C again" in capsys.readouterr().err


def test_one_signal_stops_the_job_and_rnx_waits():
    run, client = attached()
    run._on_signal(signal.SIGTERM, None)
    run._begin_stop()  # no Leave: rnx follows the job to its end
    assert client.stops == ["a" * 32] and run.stopping == signal.SIGTERM


def test_a_signal_during_the_stop_request_leaves_after_it_and_a_third_at_once():
    run, client = attached()
    run._on_signal(signal.SIGINT, None)
    client.during = lambda: run._on_signal(signal.SIGINT, None)  # not raised inside the request
    with pytest.raises(Leave):
        run._begin_stop()
    assert client.stops == ["a" * 32]
    hung, client = attached()
    hung._on_signal(signal.SIGINT, None)
    hung._on_signal(signal.SIGINT, None)
    with pytest.raises(Leave):  # a third: Redis may hang, rnx goes without the stop
        hung._on_signal(signal.SIGTERM, None)
    assert client.stops == [] and hung.caught == signal.SIGTERM


def test_after_the_stop_or_without_the_proxy_any_signal_leaves():
    run, client = attached()
    run._on_signal(signal.SIGINT, None)
    run._begin_stop()
    with pytest.raises(Leave):
        run._on_signal(signal.SIGHUP, None)
    bare, client = attached(sig_proxy=False)
    with pytest.raises(Leave):
        bare._on_signal(signal.SIGTERM, None)
    assert client.stops == [] and bare.stopping is None


def test_a_third_signal_inside_a_hanging_stop_request_does_not_claim_the_stop(capsys):
    """Redis hangs in the stop request: the second and third signals arrive inside it; rnx
    leaves, and says the stop may not have been asked for (not that it goes on)."""
    run, client = attached()
    run.record = run.record.replace(node="n1")  # placed: no worker check before following

    def hang() -> None:
        run._on_signal(signal.SIGINT, None)
        run._on_signal(signal.SIGINT, None)  # the third: raises Leave inside the request

    client.during = hang
    run._stream = lambda: (run._on_signal(signal.SIGINT, None), run._begin_stop())  # type: ignore[method-assign]
    assert run.follow() == 128 + signal.SIGINT and client.stops == []
    err = capsys.readouterr().err
    assert "its stop may not have been asked for" in err and "is still being stopped" not in err


def test_a_stop_request_redis_refuses_leaves_saying_so_not_with_a_traceback(capsys):
    """Ctrl-C with Redis gone: the stop request raised out of the loop, exit 1, and nothing
    said of the job left running (review). rnx leaves, saying the stop may not have been
    asked for."""
    from joblet.errors import BackendUnavailable

    run, client = attached()
    run.record = run.record.replace(node="n1")  # placed: no worker check before following

    def gone() -> None:
        raise BackendUnavailable("cannot reach Redis at unix:///x: Connection refused")

    client.during = gone
    run._stream = lambda: (run._on_signal(signal.SIGINT, None), run._begin_stop())  # type: ignore[method-assign]
    assert run.follow() == 128 + signal.SIGINT and client.stops == []
    err = capsys.readouterr().err
    assert "rnx: cannot reach Redis at unix:///x" in err and "its stop may not have been asked for" in err


def test_a_signal_while_rnx_is_leaving_changes_nothing(capsys, monkeypatch):
    """A third Ctrl-C while rnx wrote "stopped waiting..." raised Leave outside the handler
    that catches it: a traceback and exit 1, not 130 (review)."""
    run, client = attached()
    run.record = run.record.replace(node="n1")
    run._stream = lambda: (run._on_signal(signal.SIGINT, None), run._begin_stop(), run._on_signal(signal.SIGINT, None))  # type: ignore[method-assign]
    written: list[str] = []

    class Err:
        def write(self, text: str) -> None:
            written.append(text)
            if "stopped waiting" in text:
                run._on_signal(signal.SIGINT, None)  # the third, as rnx says it leaves

        def flush(self) -> None: ...

    monkeypatch.setattr(sys, "stderr", Err())
    assert run.follow() == 128 + signal.SIGINT and client.stops == ["a" * 32]
    assert any("is still being stopped" in w for w in written) and run.signals == 3


def test_run_workflow_refuses_options_it_would_ignore(tmp_path, monkeypatch):
    monkeypatch.setattr(main.Ctx, "client", property(lambda self: FakeClient()))
    wf = tmp_path / "wf.yaml"
    wf.write_text("jobs:\n  a: {command: echo}\n")
    bad = CliRunner().invoke(main.cli, ["run", f"--workflow={wf}", "--network=none", "--name", "x"])
    assert bad.exit_code == 2 and "not --network, --name" in bad.output
    fine = CliRunner().invoke(main.cli, ["run", f"--workflow={wf}", "-d", "--json"])  # its own options
    assert "takes each job's options" not in fine.output


def test_env_name_alone_passes_the_callers_value_or_nothing(monkeypatch):
    """As `docker run -e K`: your K when you have one, else the job has none (it had K='')."""
    from joblet.cli.run import parse_env

    monkeypatch.setenv("JL_SET", "mine")
    monkeypatch.setenv("JL_EMPTY", "")
    monkeypatch.delenv("JL_UNSET", raising=False)
    got = parse_env(("A=1", "B=x=y", "C=", "JL_SET", "JL_EMPTY", "JL_UNSET"))
    assert got == {"A": "1", "B": "x=y", "C": "", "JL_SET": "mine", "JL_EMPTY": ""}
    for bad in ("", "A B", "1X", "a\x1bb"):  # unset bad names were passed over without a word
        with pytest.raises(ValidationError, match=r"^invalid --env: invalid environment variable name '"):
            parse_env(("A=1", bad))


def test_a_command_group_alone_shows_its_help():
    """`rnx workflow` printed its help squeezed onto one error line."""
    out = CliRunner().invoke(main.cli, ["workflow"], prog_name="rnx")
    lines = out.output.splitlines()
    assert out.exit_code in (0, 2) and lines[0].startswith("Usage: rnx workflow") and "  stop " in out.output


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--max-disk=99999999", "rnx: invalid --max-disk: must be at most 1048576 MB\n"),
        ("--max-memory=1", "rnx: invalid --max-memory: must be at least 4 MB\n"),
        (
            "--timeout=1e20",
            "rnx: invalid --timeout: must be at most 315360000 s (ten years; give none for no timeout)\n",
        ),
        (
            "--timeout=4000d",
            "rnx: invalid --timeout: must be at most 315360000 s (ten years; give none for no timeout)\n",
        ),
        ("--max-pids=1", "rnx: invalid --max-pids: must be at least 8\n"),
        ("--max-output=1", "rnx: invalid --max-output: must be at least 1024 bytes\n"),
        # the other options too, not the API's `invalid job field 'user'` (usability review)
        ("--user=x", "rnx: invalid --user: invalid user 'x': use UID or UID:GID\n"),
        ("--env=1X=2", "rnx: invalid --env: invalid environment variable name '1X'\n"),
        ("--env=A\nB=2", "rnx: invalid --env: invalid environment variable name 'A\\x0aB'\n"),  # as elsewhere
        ("--volume=a/b", "rnx: invalid --volume: invalid volume name 'a/b'\n"),
        ("--node=-x", "rnx: invalid --node: invalid node name '-x'\n"),
        # with what: it said only "'isolated' cannot be combined" (usability run)
        (
            "--network=isolated --network=bridge",
            "rnx: invalid --network: 'isolated' cannot be combined with other networks\n",
        ),
    ],
)
def test_rnx_run_names_the_option_and_its_unit(fake, flag, says):
    """The Python API's field names (limits.max_disk) and a bare number read oddly after
    `rnx run --max-disk=...`; the unit is the option's."""
    out = CliRunner().invoke(main.cli, ["run", *flag.split(" "), "true"], prog_name="rnx")
    assert out.exit_code == 2 and out.output == says, out.output


def test_rnx_run_names_its_command_and_arguments_in_their_errors(fake):
    """`invalid job field 'command'` was the Python API's wording (usability run)."""
    out = CliRunner().invoke(main.cli, ["run", ""], prog_name="rnx")
    assert out.exit_code == 2 and out.output == "rnx: invalid COMMAND: must have at least 1 character\n", out.output
    out = CliRunner().invoke(main.cli, ["run", "echo", *["x"] * 5000], prog_name="rnx")
    says = "rnx: invalid ARGS: 5000 arguments, at most 4096 (pass a long list in an uploaded file)\n"
    assert out.exit_code == 2 and out.output == says, out.output
    assert fake.submitted == []  # nothing submitted


class StatusStore:
    """get_job answers with one status, or fails as a lost Redis does."""

    def __init__(self, status: JobStatus | None) -> None:
        self.status = status

    def get_job(self, job_id: str) -> JobRecord:
        if self.status is None:
            raise ConnectionError("gone")
        return JobRecord(id=job_id, spec=JobSpec(command="echo"), status=self.status)


def waited(store: StatusStore, job_id: str, timeout: float) -> JobRecord:
    """Client.wait's answer: the final record, else TimeoutError once `timeout` has passed."""
    assert timeout == LEFT_WAIT
    record = store.get_job(job_id)
    if not record.status.final:
        raise TimeoutError(f"job {record.short_id} still {record.status.value}")
    return record


def test_output_rnx_cannot_write_says_whether_the_job_ended_or_was_left():
    said = {}
    for status in (JobStatus.COMPLETED, JobStatus.RUNNING, None):
        run, client = attached()
        client.store = StatusStore(status)  # type: ignore[attr-defined]
        client.wait = lambda job_id, timeout, store=client.store: waited(store, job_id, timeout)  # type: ignore[attr-defined]
        said[status] = run._left()
    assert said[JobStatus.COMPLETED] == "job aaaaaaaaaaaa ended COMPLETED (rnx log aaaaaaaaaaaa)"
    assert said[JobStatus.RUNNING] == "left job aaaaaaaaaaaa running (rnx stop aaaaaaaaaaaa)"
    assert said[None] == "left job aaaaaaaaaaaa (rnx status aaaaaaaaaaaa)"


def test_a_stop_rnx_did_not_ask_for_says_who_stopped_the_job(capsys):
    final = JobRecord(
        id="a" * 32, spec=JobSpec(command="sleep"), status=JobStatus.STOPPED, exit_code=143, error="stopped by the x"
    )
    run, _ = attached()
    assert run._report(final) == 143
    assert capsys.readouterr().err == "rnx: job aaaaaaaaaaaa stopped: stopped by the x\n"
    run.stopping = signal.SIGINT  # Ctrl-C here asked for it: nothing more to say
    assert run._report(final) == 143 and capsys.readouterr().err == ""
    # stopped by `rnx stop` from another shell: exit 143 with no word said (usability run)
    by_user = JobRecord(id="a" * 32, spec=JobSpec(command="sleep"), status=JobStatus.STOPPED, exit_code=143)
    run, _ = attached()
    assert run._report(by_user) == 143
    assert capsys.readouterr().err == "rnx: job aaaaaaaaaaaa stopped by a stop request from elsewhere\n"
    run.stopping = signal.SIGINT
    assert run._report(by_user) == 143 and capsys.readouterr().err == ""


def test_an_empty_workflow_option_asks_for_a_file(fake):
    out = invoke("run", "--workflow=")
    assert out.exit_code == 2 and "--workflow needs a file" in out.output and not fake.submitted
    out = invoke("run", "--workflow=/")  # a directory: click's own words
    assert out.exit_code == 2 and "is a directory" in out.output


def test_a_command_that_could_not_run_is_said_once(capsys):
    """126 and 127: the job's stderr has the line (`joblet: CMD: ...`); rnx adds none."""
    for code, why in ((126, "Is a directory"), (127, "command not found")):
        final = JobRecord(id="a" * 32, spec=JobSpec(command="x"), status=JobStatus.FAILED, exit_code=code, error=why)
        run, _ = attached()
        assert run._report(final) == code and capsys.readouterr().err == ""


class GoneStore:
    """Redis gone for `failures` reads, then the job's output."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def read_output(self, job_id: str, after: str, block_ms: int | None) -> list[tuple[str, bytes, bytes]]:
        if self.failures:
            self.failures -= 1
            raise BackendUnavailable("cannot reach Redis at unix:///r.sock: Connection refused")
        return [("1-0", b"out", b"hi\n")]


def test_an_attached_run_waits_out_redis_then_gives_up_naming_its_job(monkeypatch, capsys):
    monkeypatch.setattr("joblet.cli.patience.wakeup.sleep", lambda seconds: None)
    run, client = attached()
    client.store = GoneStore(failures=3)  # type: ignore[attr-defined]
    assert run._read() == [("1-0", b"out", b"hi\n")]  # back before the patience ran out
    assert capsys.readouterr().err.count("waiting up to 60 s (job aaaaaaaaaaaa goes on)") == 1
    assert run.patience.due is None  # the read worked: the outage is over
    monkeypatch.setattr("joblet.cli.patience.REDIS_PATIENCE", 0.0)
    client.store = GoneStore(failures=10**9)  # type: ignore[attr-defined]
    with pytest.raises(BackendUnavailable, match=r"job aaaaaaaaaaaa may still be running \(rnx log -f aaaaaaaaaaaa\)"):
        run._read()


def test_a_signal_while_redis_is_gone_leaves_the_job_running(monkeypatch):
    run, client = attached()
    client.store = GoneStore(failures=10**9)  # type: ignore[attr-defined]
    monkeypatch.setattr("joblet.cli.patience.wakeup.sleep", lambda seconds: run._on_signal(signal.SIGINT, None))
    with pytest.raises(Leave):
        run._read()
    assert client.stops == []


def test_once_its_stop_was_asked_for_an_outage_is_waited_out(monkeypatch):
    """Ctrl-C asked for the stop; Redis then blinked: rnx left at once instead of telling
    how the job ended."""
    monkeypatch.setattr("joblet.cli.patience.wakeup.sleep", lambda seconds: None)
    run, client = attached()
    run._on_signal(signal.SIGINT, None)
    run._begin_stop()
    client.store = GoneStore(failures=2)  # type: ignore[attr-defined]
    assert run._read() == [("1-0", b"out", b"hi\n")]
    assert client.stops == ["a" * 32]


def test_status_shows_what_the_job_was_given(capsys):
    spec = make_spec(
        "sleep",
        ["9"],
        timeout=30,
        volumes=["data"],
        limits={"max_cpu": 50, "max_memory": 64, "max_bandwidth": "10mbit"},
    )
    record = JobRecord(id="a" * 32, spec=spec, status=JobStatus.RUNNING)
    assert record.public()["limits"] == {"max_cpu": 50, "max_memory": 64, "max_bandwidth": 10_000_000}
    job_details(record)
    out = capsys.readouterr().out
    assert "Limits:    --max-cpu=50%, --max-memory=64 MB, --max-bandwidth=10000000 bit/s\n" in out
    assert "Timeout:   30 s\n" in out and "Volumes:   data\n" in out
    job_details(JobRecord(id="b" * 32, spec=make_spec("true"), status=JobStatus.RUNNING))  # the control
    out = capsys.readouterr().out
    assert "Limits:    - (the worker's defaults)\n" in out and "Timeout:   -\n" in out


def test_a_redis_whose_reads_hang_before_they_fail_is_given_up_on(monkeypatch, capsys):
    """Each failed read of a hung Redis takes its 30 s timeout: every failure was taken for a
    new outage, and rnx waited (and said so) forever."""
    from joblet.cli import patience

    clock = [0.0]
    monkeypatch.setattr(patience.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(patience.wakeup, "sleep", lambda seconds: None)
    wait = patience.Patience("aaaaaaaaaaaa")
    failures = 0
    with pytest.raises(BackendUnavailable, match="may still be running"):
        while True:
            wait(BackendUnavailable("cannot reach Redis: no reply within 30 s"))
            failures += 1
            clock[0] += 30.5  # the next read's timeout
    assert failures == 2 and capsys.readouterr().err.count("waiting up to 60 s") == 1


def test_rnx_log_f_gives_a_second_outage_its_own_wait(monkeypatch):
    """The follow loop told its patience when Redis was back only in rnx run: a second outage
    of a long `rnx log -f` found the first one's time up and gave up at once."""
    from joblet.api.store_output import OutputStreams
    from joblet.cli import patience

    clock = [0.0]
    monkeypatch.setattr(patience.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(patience.wakeup, "sleep", lambda seconds: None)
    reads = iter(["gone", [("1-0", b"out", b"a")], "later", "gone", [("2-0", b"end", b"{}")]])

    def read_output(job_id: str, after: str, block_ms: int | None) -> list[tuple[str, bytes, bytes]]:
        step = next(reads)
        if step == "later":  # two minutes of output later, Redis goes again
            clock[0] += 120
            step = next(reads)
        if step == "gone":
            raise BackendUnavailable("cannot reach Redis: Connection refused")
        return step  # type: ignore[return-value]

    streams = OutputStreams.__new__(OutputStreams)
    streams.read_output = read_output  # type: ignore[method-assign]
    got = list(streams.follow_output("j", True, outage=patience.Patience("j")))
    assert got == [(b"out", b"a"), (b"end", b"{}")]


class ForgetfulStore:
    """A Redis back without its data: the job's record missing for `missing` looks, then
    restored (as its worker's heartbeat does)."""

    def __init__(self, missing: int) -> None:
        self.missing = missing

    def get_job(self, job_id: str) -> JobRecord:
        if self.missing:
            self.missing -= 1
            raise NotFound(f"no such job: {job_id}")
        return JobRecord(id=job_id, spec=JobSpec(command="sleep"), status=JobStatus.RUNNING)

    def where_is(self, job_id: str) -> tuple[JobStatus | None, str | None]:
        try:
            return self.get_job(job_id).status, None
        except NotFound:
            return None, None


def test_an_attached_run_waits_for_a_record_redis_lost_then_gives_up_naming_its_job(monkeypatch, capsys):
    """Redis restarted without its data under an attached `rnx run`: "no such job", exit 1,
    while the job ran on and its worker wrote its record again a heartbeat later."""
    monkeypatch.setattr("joblet.cli.patience.wakeup.sleep", lambda seconds: None)
    run, client = attached()
    client.store = ForgetfulStore(missing=2)  # type: ignore[attr-defined]
    run._warn_if_no_worker(initial=False)
    run._warn_if_no_worker(initial=False)
    assert "Redis has no record of job aaaaaaaaaaaa (restarted without its data?); waiting up to 60 s" in (
        capsys.readouterr().err
    )
    run._warn_if_no_worker(initial=False)  # restored: RUNNING, nothing more to say
    assert run.warned and run.no_record.due is None
    monkeypatch.setattr("joblet.cli.patience.REDIS_PATIENCE", 0.0)
    run, client = attached()
    client.store = ForgetfulStore(missing=10**9)  # type: ignore[attr-defined]
    with pytest.raises(BackendUnavailable, match=r"job aaaaaaaaaaaa may still be running \(rnx log -f aaaaaaaaaaaa\)"):
        run._warn_if_no_worker(initial=False)


def test_an_attached_run_that_said_its_note_still_gives_up_on_a_record_redis_lost(monkeypatch):
    """Its note said ("queued for node 'n', whose heartbeat has stopped"), rnx looked only at
    the node: Redis back without the record, its message gone and its worker down too,
    nothing wrote it again and rnx waited for good (fleet run). It gives up after its
    patience, as before the note."""
    import joblet.cli.run as run_module

    monkeypatch.setattr("joblet.cli.patience.wakeup.sleep", lambda seconds: None)
    monkeypatch.setattr(run_module, "NO_WORKER_AFTER", 0.0)
    monkeypatch.setattr(run_module, "NODE_LOOK", 0.0)

    class Quiet(ForgetfulStore):  # no output, no node, no record (or, for the control, one)
        reads = 0

        def read_output(self, job_id: str, after: str, block_ms: int) -> list:
            self.reads += 1
            assert self.reads < 1000, "rnx waits for good"
            return []

    run, client = attached()
    client.store = Quiet(missing=10**9)  # type: ignore[attr-defined]
    run.warned = True
    monkeypatch.setattr("joblet.cli.patience.REDIS_PATIENCE", 0.0)
    with pytest.raises(BackendUnavailable, match=r"job aaaaaaaaaaaa may still be running"):
        run._stream()
    run, client = attached()  # the control: a record that is there keeps rnx waiting
    client.store = Quiet(missing=0)  # type: ignore[attr-defined]
    run.warned, looks = True, iter(range(50))
    monkeypatch.setattr(run, "_warn_if_node_down", lambda where: next(looks))  # the 51st look leaves
    with pytest.raises(StopIteration):
        run._stream()
    assert run.no_record.due is None


def test_an_attached_runs_look_reads_the_status_not_the_record():
    """Once its note was said, rnx looked at the job every 5 s while it printed nothing, and
    read its whole record each time: a spec with its uploads is megabytes (where_is exists
    for that)."""
    from types import SimpleNamespace

    def whole(job_id: str) -> JobRecord:
        raise AssertionError("the whole record was read")

    run, client = attached()
    client.store = SimpleNamespace(where_is=lambda job_id: (JobStatus.RUNNING, "n"), get_job=whole)  # type: ignore[attr-defined]
    assert run._look() == (JobStatus.RUNNING, "n") and run.no_record.due is None


def test_a_quiet_attached_run_reads_its_jobs_status_once_a_look(monkeypatch):
    """Once its note was said, each look of a quiet `rnx run` read the job's status three
    times (its node's heartbeat, the record's look, the end's watch): one read now serves
    the three, and the end is still seen (a final record, quiet past its grace)."""
    import joblet.api.store_output as store_output
    import joblet.cli.run as run_module

    monkeypatch.setattr(run_module, "NODE_LOOK", 0.0)
    monkeypatch.setattr(run_module, "NO_WORKER_AFTER", 0.0)
    monkeypatch.setattr(store_output, "END_GRACE", 0.0)
    monkeypatch.setattr(store_output, "END_LOOK", 0.0)

    class Quiet(NodeStore):
        reads = looks = 0

        def read_output(self, job_id: str, after: str, block_ms: int) -> list:
            self.reads += 1
            if self.reads == 20:
                self.status = JobStatus.COMPLETED  # ended, its end marker lost
            assert self.reads < 100, "the end was not seen"
            return []

        def where_is(self, job_id: str) -> tuple[JobStatus, str]:
            self.looks += 1
            return super().where_is(job_id)

    run, client = attached()
    client.store = store = Quiet("n1")  # type: ignore[attr-defined]
    client.live_nodes = lambda: {"n1": {}}  # type: ignore[attr-defined]
    run.warned = True
    run._stream()
    assert store.reads >= 20 and store.looks <= store.reads, (store.reads, store.looks)


def test_an_attached_workflow_run_waits_out_redis(monkeypatch, tmp_path, capsys):
    """`rnx workflow run` left at the first failed look at its workflow, exit 1 ("not
    completed"), while the workflow went on to complete."""
    from types import SimpleNamespace

    from joblet.cli.workflow import run_workflow

    monkeypatch.setattr("joblet.cli.patience.wakeup.sleep", lambda seconds: None)
    looks = iter([BackendUnavailable("cannot reach Redis at unix:///r.sock: Connection refused")] * 2)

    def status(wf_id: str) -> dict:
        failure = next(looks, None)
        if failure is not None:
            raise failure
        return {"status": "COMPLETED", "jobs": [{"name": "a", "status": "COMPLETED", "error": None}]}

    record = SimpleNamespace(id="c" * 32, name="wf", jobs={"a": "d" * 32})
    checks: list[str] = []

    def submit(wf, checked=False):
        checks.append("at submit" if not checked else "")
        return record

    def check(wf):
        checks.append("before")
        return [(True, "fine")]

    workflows = SimpleNamespace(check=check, submit=submit, status=status)
    path = tmp_path / "wf.yaml"
    path.write_text("jobs:\n  a:\n    command: 'true'\n    network: none\n")
    client = SimpleNamespace(workflows=workflows, live_nodes=lambda: {"n1": {}})  # a worker is up
    assert run_workflow(client, str(path), detach=False, as_json=False) == 0
    err = capsys.readouterr().err
    assert err.count("waiting up to 60 s (workflow cccccccccccc goes on)") == 1, err
    assert checks == ["before", ""]  # checked once, its lines printed: not again at the submit


class NodeStore:
    """A running job's record on `node`; `live` are the nodes whose heartbeat is there."""

    def __init__(self, node: str, status: JobStatus = JobStatus.RUNNING) -> None:
        self.node, self.status = node, status

    def where_is(self, job_id: str) -> tuple[JobStatus, str]:
        return self.status, self.node


def test_an_attached_run_says_once_that_its_nodes_heartbeat_stopped(capsys):
    """Its only worker killed, `rnx run` waited for good without a word (no other node marks
    the job LOST); now it says so once per node, and waits on."""
    run, client = attached()
    client.store = NodeStore("n1")  # type: ignore[attr-defined]
    client.live_nodes = lambda: {"n1": {}}  # type: ignore[attr-defined]
    run._warn_if_node_down()
    assert capsys.readouterr().err == ""  # the control: its node beats
    client.live_nodes = lambda: {"n2": {}}  # type: ignore[attr-defined]
    run._warn_if_node_down()
    run._warn_if_node_down()
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "job aaaaaaaaaaaa runs on node 'n1', whose heartbeat has stopped" in said
    client.store = NodeStore("n1", JobStatus.LOST)  # type: ignore[attr-defined]
    run.said_down = None
    run._warn_if_node_down()
    assert capsys.readouterr().err == ""  # ended: nothing to say
    client.store = StatusStore(None)  # type: ignore[attr-defined]
    client.store.where_is = lambda job_id: (_ for _ in ()).throw(BackendUnavailable("gone"))  # type: ignore[attr-defined]
    run._warn_if_node_down()  # Redis gone meanwhile: the reads wait it out, this says nothing
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--bogus"], "rnx: No such option '--bogus'. (see 'rnx --help')\n"),
        (["-x", "list"], "rnx: No such option '-x'. (see 'rnx --help')\n"),
        (
            ["network", "create", "x", "--cidr"],
            "rnx network create: Option '--cidr' requires an argument. (see 'rnx network create --help')\n",
        ),
        (["run", "--max-cpu"], "rnx run: Option '--max-cpu' requires an argument. (see 'rnx run --help')\n"),
        (["stop"], "rnx stop: Missing argument 'JOB...'. (see 'rnx stop --help')\n"),  # the control: had its context
    ],
)
def test_a_usage_error_is_one_line_pointing_at_its_commands_help(args, said):
    """rnx's own options were refused in click's three lines; an option's missing value
    pointed at `rnx --help` whichever command it was for (usability review)."""
    out = CliRunner().invoke(main.cli, args, prog_name="rnx")
    assert out.exit_code == 2 and out.output == said, out.output


def test_network_create_takes_every_dns_given(monkeypatch):
    """`--dns=1.1.1.1 --dns=9.9.9.9` kept the last alone (usability review)."""
    from types import SimpleNamespace

    made: dict[str, object] = {}

    def create(name: str, cidr: str, **kw: object) -> object:
        made.update(kw)
        return SimpleNamespace(name=name, cidr=cidr, mtu=kw.get("mtu"))

    client = SimpleNamespace(networks=SimpleNamespace(create=create))
    monkeypatch.setattr(main.Ctx, "client", property(lambda self: client))
    args = ["network", "create", "n", "--cidr=10.9.0.0/24", "--dns=1.1.1.1,9.9.9.9", "--dns", "8.8.8.8"]
    args.append("--dns=1.1.1.1")  # given twice: once
    out = CliRunner().invoke(main.cli, args, prog_name="rnx")
    assert out.exit_code == 0 and made["dns"] == ("1.1.1.1", "9.9.9.9", "8.8.8.8"), (out.output, made)
    out = CliRunner().invoke(main.cli, args[:4], prog_name="rnx")
    assert out.exit_code == 0 and made["dns"] == ()  # none given: the worker's


def test_a_failed_job_is_never_rnx_run_success(capsys):
    """`--timeout=0.001 true`: its timeout came as it ended, the job FAILED with exit code 0,
    and rnx exited 0 (usability review); so did a job that exits 0 on its timeout's SIGTERM."""
    timed_out = JobRecord(
        id="a" * 32, spec=JobSpec(command="true"), status=JobStatus.FAILED, exit_code=0, error="timed out after 0.001s"
    )
    run, _ = attached()
    assert run._report(timed_out) == 1
    assert capsys.readouterr().err == "rnx: job aaaaaaaaaaaa failed: timed out after 0.001s\n"
    done = JobRecord(id="a" * 32, spec=JobSpec(command="true"), status=JobStatus.COMPLETED, exit_code=0)
    assert run._report(done) == 0  # the control
    killed = timed_out.replace(exit_code=143)
    assert run._report(killed) == 143  # its own code where it has one


def test_no_worker_on_a_redis_no_worker_ever_used_says_to_check_the_settings(fake, monkeypatch):
    """A new shell without the quickstart's export: `rnx run -d` said only to start a worker,
    while one ran on the quickstart's own Redis."""
    out = invoke("run", "-d", "--network=none", "true")
    assert out.exit_code == 0 and "knows no worker" not in out.output  # the control: one has
    monkeypatch.setattr(fake, "nodes", lambda: [], raising=False)
    out = invoke("run", "-d", "--network=none", "true")
    assert out.exit_code == 0 and "waits in the queue: no worker is running" in out.output
    assert "(this Redis, redis://127.0.0.1:6379/0, knows no worker under key prefix 'joblet:': " in out.output


@pytest.mark.parametrize(
    ("args", "incomplete", "want"),
    [
        (["run", "--network", "="], "my", (["run"], "--network=my")),  # --network=my<TAB>
        (["run", "--network"], "=", (["run"], "--network=")),  # --network=<TAB>
        (["run", "--node", "=", "n1", "--network", "="], "my", (["run", "--node=n1"], "--network=my")),
        (["run", "--network"], "my", (["run", "--network"], "my")),  # the spaced form: as it was
        # a value holding '=' before it: split by bash as the option was (review)
        (["run", "--env", "A", "=", "B", "--network", "="], "my", (["run", "--env", "A=B"], "--network=my")),
    ],
)
def test_bash_completion_reads_the_option_value_form(args, incomplete, want):
    """Bash splits `--network=my` at '=': click read `=` as the option's value and offered
    nothing for the form the README and the guide use throughout (usability run)."""
    from joblet.cli.complete import rejoin

    assert rejoin(args, incomplete) == want


class ListingClient(FakeClient):
    """Kept jobs on two nodes; what each way of reading them returned."""

    def __init__(self) -> None:
        super().__init__()
        spec = JobSpec(command="true")
        self.jobs = [
            JobRecord(id=f"{n:032x}", status=JobStatus.COMPLETED, spec=spec, node=f"n{n % 2}") for n in range(5)
        ]
        self.reads: list[str] = []

    def recent(self, count: int) -> tuple[list[JobRecord], int]:
        self.reads.append("recent")
        return self.jobs[-count:], max(0, len(self.jobs) - count)

    def list(self, status=(), node=None, network=None, name=None) -> list[JobRecord]:
        self.reads.append("list")
        return [r for r in self.jobs if node is None or r.node == node]


def test_rnx_list_reads_the_newest_alone_and_refuses_an_empty_filter(monkeypatch):
    """`rnx list --node=$HOST` with HOST unset listed every node's jobs (and with --limit=0
    none): an empty filter is refused, as `--status=` is (usability run)."""
    client = ListingClient()
    monkeypatch.setattr(main.Ctx, "client", property(lambda self: client))
    out = invoke("list", "--limit=2")
    assert out.exit_code == 0 and client.reads == ["recent"] and "(3 older jobs not shown" in out.output
    assert invoke("list", "--node=n1").exit_code == 0 and client.reads[-1] == "list"  # a filter reads every job
    for option in ("--node=", "--network=", "--name= "):
        out = invoke("list", option)
        assert out.exit_code == 2 and f"Invalid value for {option.split('=')[0]}: needs a value" in out.output
    assert client.reads == ["recent", "list"]  # nothing read for the refused ones
    out = invoke("list", "--interval=1")  # ignored without --watch, silently
    assert out.exit_code == 2 and "Invalid value for --interval: redraws with --watch only" in out.output


def test_a_table_is_never_cut_to_the_terminal(monkeypatch, capsys):
    """At 80 columns every column was cut (`rnx nodes` showed its node as `…`) (usability run)."""
    from joblet.cli.render import table

    monkeypatch.setenv("COLUMNS", "80")
    cells = ["worker-node-" + "a" * 40, "up", "2026-11-30 15:03:51 (1.2 s ago)", "1.0.0", "0/512", "v2", "bwrap"]
    table(["NODE", "STATE", "LAST HEARTBEAT", "VERSION", "JOBS", "CGROUP", "SANDBOX"], [cells])
    lines = capsys.readouterr().out.splitlines()
    assert all(cell in lines[1] for cell in cells) and "…" not in lines[1] and len(lines[1]) > 80
    assert len(lines[1]) < 200  # as wide as its cells: not padded to the width allowed
    assert lines[0].index("SANDBOX") == lines[1].index("bwrap") and lines[0].endswith("SANDBOX")  # no trailing spaces


def test_a_table_is_not_cut_on_a_dumb_terminal_either(monkeypatch, capsys):
    """With TERM=dumb (Emacs' shell, some IDEs) rich took its terminal as 80x25 and cut every
    table to 80 columns, the job id with it (usability run)."""
    from joblet.cli.render import table

    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal, as rich sees it
    cells = ["b2fcf5f0c0aa", "STOPPED", "sh -c 'echo a; sleep 1000' " + "x" * 30, "bridge", "172.20.0.4", "node-a"]
    table(["ID", "STATUS", "COMMAND", "NETWORK", "IP", "NODE"], [cells])
    lines = capsys.readouterr().out.splitlines()
    assert all(cell in lines[1] for cell in cells) and "…" not in lines[1] and len(lines[1]) > 80, lines


def test_completion_offers_first_the_statuses_the_index_holds():
    from joblet.api.store import LIVE_STATUSES
    from joblet.cli.complete import LIVE

    assert set(LIVE) == LIVE_STATUSES  # spelled apart: completion imports no store


def test_a_job_queued_for_a_silent_node_says_so_not_that_no_worker_runs(capsys):
    """A job pinned to a node whose worker was paused read `none is running (start one with
    joblet-worker)` (fleet run): a node the fleet knows is silent, not absent."""
    from types import SimpleNamespace

    from joblet.cli.run import Attached

    pending = JobRecord(id="a" * 32, spec=JobSpec(command="true", node="flt2"), status=JobStatus.PENDING)
    for known, said in (([{"name": "flt2"}], "is queued for node 'flt2', whose heartbeat has stopped"),
                        ([], "is waiting for a worker on node 'flt2': none is running")):  # fmt: skip
        client = SimpleNamespace(
            store=SimpleNamespace(where_is=lambda job_id: (pending.status, None)),
            live_nodes=lambda: {"flt1": {}},
            nodes=lambda known=known: known,
        )
        run = Attached(client, pending, as_json=False, sig_proxy=True)  # type: ignore[arg-type]
        run._warn_if_no_worker(initial=True)
        assert said in capsys.readouterr().err and run.warned
    # pinned, it ends LOST with the node; placed there, the fleet's sweep sends it elsewhere
    # (it said "or ends LOST" of a job that then ran on another node: fleet-failure run)
    client.nodes = lambda: [{"name": "flt2"}]  # type: ignore[attr-defined]
    Attached(client, pending, as_json=False, sig_proxy=True)._warn_if_no_worker(initial=True)  # type: ignore[arg-type]
    assert "back, or ends LOST\n" in capsys.readouterr().err
    placed = JobRecord(id="b" * 32, spec=JobSpec(command="true"), status=JobStatus.PENDING, node="flt2")
    Attached(client, placed, as_json=False, sig_proxy=True)._warn_if_no_worker(initial=True)  # type: ignore[arg-type]
    assert "back, or goes to another node once the fleet gives that node up\n" in capsys.readouterr().err


def test_rnx_stats_refuses_an_interval_it_would_ignore(monkeypatch):
    """`rnx stats --no-stream --interval=5` printed once and ignored the interval, silently,
    where `rnx list --interval` without --watch is refused."""

    class StatsClient:
        def __init__(self) -> None:
            self.reads = 0

        def stats(self, job_ids):
            self.reads += 1
            return []

        def nodes(self):
            return [{"name": "n1"}]

    client = StatsClient()
    monkeypatch.setattr(main.Ctx, "client", property(lambda self: client))
    assert invoke("stats", "--no-stream", "--json").exit_code == 0 and client.reads == 1  # the control
    out = invoke("stats", "--no-stream", "--interval=5")
    assert out.exit_code == 2 and "Invalid value for --interval: refreshes only without --no-stream" in out.output
    assert client.reads == 1


@pytest.mark.parametrize("command", [("stats",), ("list", "--watch")], ids=" ".join)
@pytest.mark.parametrize("value", ["nan", "inf", "1e10", "0.1"])
def test_an_interval_is_a_finite_number_of_seconds(monkeypatch, command, value):
    """`--interval=nan` passed click's range (every comparison false) and redrew hundreds of
    times a second; `inf` or `1e10` raised a traceback at the first wait (usability run)."""

    def unreached() -> None:
        raise AssertionError("read Redis")

    monkeypatch.setattr(main.Ctx, "client", property(lambda self: unreached()))
    out = invoke(*command, f"--interval={value}")
    assert out.exit_code == 2 and "Invalid value for '--interval'" in out.output, out.output
    assert "Traceback" not in out.output
    from joblet.cli.live import Interval

    assert Interval().convert("86400", None, None) == 86400.0  # the control: a day is taken


def test_limit_options_take_their_unit_or_a_size():
    """`--max-memory=1G`, `--max-cpu=50%`: "'1G' is not a valid integer", no unit named
    (usability run); sizes are binary, as --max-output's and Docker's."""
    import click

    from joblet.cli.run import BYTES, MEGABYTES, PERCENT

    assert [MEGABYTES.convert(v, None, None) for v in ("512", "512MB", "1G", "1.5g", "2GiB", 64)] == [
        512,
        512,
        1024,
        1536,
        2048,
        64,
    ]
    assert [PERCENT.convert(v, None, None) for v in ("50", "50%", " 200 % ")] == [50, 50, 200]
    assert BYTES.convert("10M", None, None) == 10 << 20 and BYTES.convert("4096", None, None) == 4096
    assert MEGABYTES.convert("-5", None, None) == -5  # the spec's bounds say what is wrong with it
    for kind, value, says in (
        (MEGABYTES, "1X", "'1X' is not a number of MB (e.g. 512 or 1G)"),
        (PERCENT, "5x", "'5x' is not a percent (e.g. 50 or 50%)"),
        (BYTES, "fast", "'fast' is not a number of bytes (e.g. 10485760 or 10M)"),
        (PERCENT, "1G", "'1G' is not a percent"),
        (MEGABYTES, "512K", "'512K' is not a whole number of MB"),
    ):
        with pytest.raises(click.BadParameter, match=re.escape(says)):
            kind.convert(value, None, None)


def test_a_workflows_changes_are_printed_in_the_order_they_happened():
    """a requires b COMPLETED: one look saw both ended and printed them in the file's order,
    `a: COMPLETED` before `b: COMPLETED`, and never `a: RUNNING` (usability run)."""
    from joblet.cli.workflow import changes

    seen: dict[str, str] = {}
    jobs = [
        {"name": "a", "status": "PENDING", "started": None, "finished": None},
        {"name": "b", "status": "PENDING", "started": None, "finished": None},
    ]
    assert changes(jobs, seen) == [("a", "PENDING"), ("b", "PENDING")]  # the file's order
    jobs[1] = {"name": "b", "status": "RUNNING", "started": 8.0, "finished": None}
    assert changes(jobs, seen) == [("b", "RUNNING")]
    jobs[0] = {"name": "a", "status": "COMPLETED", "started": 10.02, "finished": 10.5, "exit_code": 0}
    jobs[1] = {"name": "b", "status": "COMPLETED", "started": 8.0, "finished": 10.0, "exit_code": 0}
    assert changes(jobs, seen) == [("b", "COMPLETED"), ("a", "RUNNING"), ("a", "COMPLETED")]
    assert changes(jobs, seen) == []  # nothing new
    failed = [{"name": "c", "status": "FAILED", "started": 1.0, "finished": 2.0, "exit_code": 3}]
    assert changes(failed, {"c": "RUNNING"}) == [("c", "FAILED (exit code 3)")]  # seen running: once


def a_workflows_status() -> dict:
    """A workflow as Client.workflows.status gives it: its times in epoch seconds."""
    from datetime import UTC, datetime

    created = datetime(2026, 12, 1, 9, 27, 27, 345000, tzinfo=UTC).timestamp()
    job = {"node": "n1", "ip": None, "exit_code": None, "error": None, "requires": {}}
    ran = {"started": created + 1, "finished": created + 2}
    return {
        "id": "c" * 32,
        "name": "wf",
        "status": "RUNNING",
        "created": created,
        "jobs": [
            {**job, **ran, "name": "a", "id": "d" * 32, "status": "COMPLETED"},
            {**job, "name": "b", "id": "e" * 32, "status": "PENDING", "started": None, "finished": None},
        ],
    }


WORKFLOW_TIMES = (
    "2026-12-01T09:27:27.345+00:00",
    [("2026-12-01T09:27:28.345+00:00", "2026-12-01T09:27:29.345+00:00"), (None, None)],
)


def test_workflow_json_gives_times_as_iso_8601_in_utc_as_every_other_json(monkeypatch, tmp_path, capsys):
    """`rnx workflow list|status|run --json` printed epoch seconds (1796117247.345) where `rnx
    status --json` and the README say ISO 8601 in UTC (usability run)."""
    import json
    from types import SimpleNamespace

    from joblet.cli.workflow import run_workflow

    info = a_workflows_status()
    submitted = SimpleNamespace(id=info["id"], name="wf", jobs={"a": "d" * 32, "b": "e" * 32})
    workflows = SimpleNamespace(
        list=lambda: [info],
        status=lambda wf_id: {**info, "status": "COMPLETED"},
        check=lambda wf: [(True, "fine")],
        submit=lambda wf, checked=False: submitted,
    )
    client = SimpleNamespace(workflows=workflows, live_nodes=lambda: {"n1": {}})
    monkeypatch.setattr(main.Ctx, "client", property(lambda self: client))
    path = tmp_path / "wf.yaml"
    path.write_text("jobs:\n  a:\n    command: 'true'\n    network: none\n")
    assert run_workflow(client, str(path), detach=False, as_json=True) == 0
    ran = json.loads(capsys.readouterr().out)
    listed = json.loads(invoke("workflow", "list", "--json").output)[0]
    status = json.loads(invoke("workflow", "status", "wf", "--json").output)
    for shown in (ran, listed, status):
        assert (shown["created"], [(j["started"], j["finished"]) for j in shown["jobs"]]) == WORKFLOW_TIMES
    # the controls: a job's own --json writes its time so; the API's dict and the table keep theirs
    job = JobRecord(id="f" * 32, status=JobStatus.PENDING, spec=JobSpec(command="true"), created=info["created"])
    assert job.public()["created"] == WORKFLOW_TIMES[0] and isinstance(info["created"], float)
    table = invoke("workflow", "status", "wf")
    assert table.exit_code == 0 and "workflow wf cccccccccccc: COMPLETED" in table.output, table.output


def test_a_job_on_several_networks_says_so_in_an_unfiltered_list(monkeypatch, capsys):
    """`rnx list` showed a job on myapp and d3 under myapp alone (usability run); listed by one
    network it shows that one, with that one's address."""
    from joblet.cli.render import jobs_table

    monkeypatch.setenv("COLUMNS", "200")
    two = JobRecord(
        id="a" * 32,
        status=JobStatus.RUNNING,
        spec=JobSpec(command="sleep", network=("myapp", "d3")),
        ips={"myapp": "10.10.0.33", "d3": "10.11.0.2"},
    )
    one = JobRecord(id="b" * 32, status=JobStatus.RUNNING, spec=JobSpec(command="sleep", network=("myapp",)))
    jobs_table([two, one])
    rows = capsys.readouterr().out.splitlines()[1:]
    assert " myapp+1 " in rows[0] and "10.10.0.33" in rows[0], rows
    assert " myapp " in rows[1] and "+" not in rows[1], rows  # the control: one network, as before
    jobs_table([two], network="d3")
    row = capsys.readouterr().out.splitlines()[1]
    assert " d3 " in row and "10.11.0.2" in row and "myapp" not in row, row


@pytest.mark.parametrize(
    ("flag", "seconds"), [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25)]
)
def test_timeout_takes_units(fake, flag, seconds):
    """`--timeout=10s` was "not a valid float" while sizes took units (usability run)."""
    out = invoke("run", "-d", f"--timeout={flag}", "--network=none", "true")
    assert out.exit_code == 0 and fake.submitted[-1].timeout == seconds, out.output


@pytest.mark.parametrize("flag", ["1_000", "10 s", "5x", "inf", "1h30"])
def test_timeout_refuses_what_is_no_duration(fake, flag):
    out = invoke("run", "-d", f"--timeout={flag}", "--network=none", "true")
    assert out.exit_code == 2 and "use seconds (90) or units (90s, 5m, 1h30m, 2d)" in out.output, out.output
    assert fake.submitted == []


def test_a_signal_while_rnx_asks_how_the_job_is_after_an_output_error_still_leaves(monkeypatch):
    """After its output could not be written rnx asks Redis how the job is; a hung Redis there
    kept rnx against every signal once it was `leaving` (review). A signal still leaves then."""
    import errno

    run, _ = attached(sig_proxy=False)
    run.record = run.record.replace(node="n1")

    def broken() -> None:
        raise OSError(errno.EPIPE, "Broken pipe")

    run._stream = broken  # type: ignore[method-assign]
    run._left = lambda: run._on_signal(signal.SIGTERM, None) or "?"  # type: ignore[method-assign]
    assert run.follow() == 128 + signal.SIGTERM
    quiet, _ = attached(sig_proxy=False)  # the control: no signal, it says why it left
    quiet.record = quiet.record.replace(node="n1")
    quiet._stream = broken  # type: ignore[method-assign]
    quiet._left = lambda: "left job aaaaaaaaaaaa running"  # type: ignore[method-assign]
    assert quiet.follow() == 1


def test_a_workflow_submitted_whose_worker_look_fails_still_prints_its_id(tmp_path, capsys):
    """The look for a live worker after the submit is a Redis call: failing there, rnx exited
    with an error and the id of the workflow it had submitted was never printed (review)."""
    from types import SimpleNamespace

    from joblet.cli.workflow import run_workflow
    from joblet.errors import BackendUnavailable

    record = SimpleNamespace(id="c" * 32, name="wf", jobs={"a": "d" * 32})

    def gone() -> dict[str, object]:
        raise BackendUnavailable("cannot reach Redis at redis://x: Connection refused")

    workflows = SimpleNamespace(check=lambda wf: [(True, "fine")], submit=lambda wf, checked: record)
    path = tmp_path / "wf.yaml"
    path.write_text("jobs:\n  a: {command: 'true', network: none}\n")
    client = SimpleNamespace(workflows=workflows, live_nodes=gone)
    assert run_workflow(client, str(path), detach=True, as_json=False) == 0
    assert capsys.readouterr().out == "c" * 32 + "\n"


def scripted(*frames: object) -> Callable[[], bool]:
    """A draw for live.refresh: each frame printed, or raised when it is an exception; the
    frame "end" ends the view."""
    items = iter(frames)

    def draw() -> bool:
        frame = next(items)
        if isinstance(frame, Exception):
            raise frame
        print(frame)
        return frame != "end"

    return draw


def test_a_live_view_waits_out_redis_and_says_so_once(monkeypatch, capsys):
    """Redis restarted under `rnx stats`/`rnx list --watch`: the view ended at once; hung, it
    froze without a word (usability run). Now the last frame stays, one line says since
    when, another that it is back; the first frame's failure (a wrong URL) still ends it."""
    from joblet.cli import live
    from joblet.errors import BackendUnavailable

    monkeypatch.setattr(live.wakeup, "sleep", lambda s: None)
    gone = BackendUnavailable("cannot reach Redis at unix:///r.sock: Connection refused")
    live.refresh(scripted("one", gone, gone, "two", "end"), 1.0, clear=False)
    out, err = capsys.readouterr()
    assert out == "one\ntwo\nend\n"
    assert err.count("\n") == 2 and "cannot reach Redis at unix:///r.sock: Connection refused (since" in err
    assert "rnx: Redis is back" in err.splitlines()[1]

    def first_fails() -> bool:
        raise BackendUnavailable("cannot reach Redis at unix:///nowhere.sock")

    with pytest.raises(BackendUnavailable):  # the control: nothing drawn yet, nothing to keep
        live.refresh(first_fails, 1.0, clear=False)


def test_other_tools_command_names_get_rnxs(monkeypatch):
    """`rnx ps`, `rnx network rm`, `rnx node list` said only "No such command" (usability run)."""
    runner = CliRunner()
    for words, hint in (
        (["ps"], "Did you mean 'list'?"),
        (["network", "rm", "x"], "Did you mean 'delete'?"),
        (["node", "list"], "Did you mean 'rnx nodes'?"),
        # click's own guess came first: 'status' for restart (usability run)
        (["restart", "web"], "No such command 'restart': an ended job does not start again: rnx run it again."),
        (["rm", "web"], "No such command 'rm': job records and their output expire by themselves"),
        (["network", "connect", "a", "b"], "No such command 'connect': a job's networks are fixed at its start"),
        (["log", "--tail", "10", "x"], "No such option '--tail': `rnx log ID | tail -n N`."),
    ):
        result = runner.invoke(main.cli, words)
        assert result.exit_code == 2 and hint in result.output, (words, result.output)
        assert "status" not in result.output
    result = runner.invoke(main.cli, ["frob"])  # the control: no such name, no guess
    assert result.exit_code == 2 and "No such command 'frob'." in result.output and "Did you mean" not in result.output
    result = runner.invoke(main.cli, ["statsu"])  # and click's guess where rnx has none
    assert result.exit_code == 2 and "Did you mean" in result.output and "'status'" in result.output


def test_podmans_options_without_a_twin_say_what_does_the_same():
    """`rnx run --workdir=/tmp` was answered "Did you mean '--network', '--workflow'?"."""
    result = CliRunner().invoke(main.cli, ["run", "--workdir=/tmp", "pwd"])
    assert result.exit_code == 2 and "No such option '--workdir': a job starts in /work" in result.output
    assert "--network" not in result.output
    close = CliRunner().invoke(main.cli, ["run", "--memory=1g", "true"])  # the control: click's own guess
    assert close.exit_code == 2 and "Did you mean '--max-memory'?" in close.output


def test_a_volume_no_live_node_has_room_for_is_warned_of():
    """`rnx volume create huge --size=15TB` said it was created, and its first job failed."""
    from joblet.cli.volume import no_room_note

    nodes = {"a": {"volume_room_mb": 80_000}, "b": {"volume_room_mb": 2048}, "old": {}}
    note = no_room_note(nodes, 15 << 20)
    assert note is not None and note.startswith("rnx: warning: no live node has room for 15 TB now")
    assert "(the most: 78.1 GB on node a, after what it keeps free)" in note
    assert no_room_note(nodes, 80_000) is None  # the control: one node has room
    assert no_room_note({"old": {}}, 15 << 20) is None  # no node says: no guess


def test_a_live_view_on_a_terminal_keeps_its_last_frame_through_an_outage(monkeypatch, capsys):
    """The screen was cleared before each draw: one that failed left it blank (review)."""
    import io

    from joblet.cli import live
    from joblet.errors import BackendUnavailable

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Tty()
    monkeypatch.setattr(sys, "stdout", screen)
    shown: list[str] = []  # what the terminal shows while rnx waits: after the last clear
    monkeypatch.setattr(live.wakeup, "sleep", lambda s: shown.append(screen.getvalue().rsplit(live.CLEAR, 1)[-1]))
    live.refresh(scripted("one", BackendUnavailable("cannot reach Redis at unix:///r.sock"), "end"), 1.0)
    assert shown == ["one\n", "one\n"]  # during the outage too: the failed draw cleared nothing
    assert screen.getvalue() == f"{live.CLEAR}one\n{live.CLEAR}end\n"
    assert sys.stdout is screen


def test_a_live_view_of_named_jobs_waits_for_their_records_after_redis_came_back_empty(monkeypatch, capsys):
    """`rnx stats long2` after Redis restarted empty said "no such job" and exited 1, a second
    before the worker's heartbeat wrote the record again (usability run)."""
    from joblet.cli import live
    from joblet.errors import BackendUnavailable, NotFound

    monkeypatch.setattr(live.wakeup, "sleep", lambda s: None)
    gone, missing = BackendUnavailable("cannot reach Redis at unix:///r.sock"), NotFound("no such job: long2")
    live.refresh(scripted("one", gone, missing, "end"), 1.0, clear=False)
    assert capsys.readouterr().out == "one\nend\n"
    with pytest.raises(NotFound):  # the control: without an outage it is the job's absence
        live.refresh(scripted("one", missing), 1.0, clear=False)


def test_a_placed_pending_job_waits_for_its_own_node():
    """A job placed on a node's queue (no --node) whose node went silent was said to wait
    for any worker, or for nothing when another node was live (usability run)."""
    from types import SimpleNamespace

    from joblet.cli.run import no_worker_note

    record = JobRecord(id="a" * 32, status=JobStatus.PENDING, spec=JobSpec(command="true"), node="n1")
    client = SimpleNamespace(live_nodes=lambda: {"n2": {}}, nodes=lambda: [{"name": "n1"}, {"name": "n2"}])
    note = no_worker_note(client, record)
    assert note is not None and "is queued for node 'n1', whose heartbeat has stopped" in note
    client.live_nodes = lambda: {"n1": {}}
    assert no_worker_note(client, record) is None  # the control: its node is live


@pytest.mark.parametrize(
    "args",
    [
        ("network", "create", "web", "--cidr", "10.66.0.0/24", "--cidr=10.67.0.0/24"),
        ("volume", "create", "v", "--size=8MB", "--size", "16MB"),
        ("run", "--timeout", "5", "--network=none", "--timeout=10", "true"),
    ],
)
def test_an_option_given_twice_is_refused_not_the_last_taken(args):
    """`network create web --cidr A --cidr B` made B without a word (usability run): click
    keeps the last value of an option that is not repeatable."""
    out = invoke(*args)
    name = "--cidr" if "network" in args else "--size" if "volume" in args else "--timeout"
    assert out.exit_code == 2 and f"{name} is given twice" in out.stderr and out.stderr.count("\n") == 1, out.output


def test_what_may_come_twice_still_does():
    """Repeatable options, flags, and the job's own words after its command (the control)."""
    from joblet.cli.once import refuse_repeats
    from joblet.cli.run import run

    refuse_repeats(run, ["-e", "A=1", "-e", "B=2", "--network=a", "--network", "b", "-d", "-d", "true"], False)
    refuse_repeats(run, ["--network=none", "sh", "-c", "x", "--timeout", "1", "--timeout", "2"], False)
    refuse_repeats(run, ["--timeout", "1", "--", "--timeout", "2"], False)


def test_completing_a_line_with_an_option_given_twice_offers_what_fits(monkeypatch, capsys):
    """Completion parses the line typed so far: the refusal of a repeated option escaped as a
    traceback into the shell (review)."""
    words = "rnx network create web --cidr 10.1.0.0/24 --cidr 10.2.0.0/24 --"
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", "8")
    monkeypatch.setenv("_RNX_COMPLETE", "bash_complete")
    with pytest.raises(SystemExit) as done:
        main.cli(prog_name="rnx")
    out = capsys.readouterr()
    assert done.value.code == 0 and "Traceback" not in out.err and "plain,--internal" in out.out, out


def test_sigterm_during_a_submit_interrupts_it_as_ctrl_c_and_exits_as_the_signal():
    """`timeout 5 rnx run --upload big ...` or a closed terminal killed rnx between the job's
    record and its queue message: PENDING for good, holding its name (review). The submit
    is interrupted (its `except BaseException` fails the record) and rnx exits 143."""
    import os
    import time

    from joblet.cli.run import submitting

    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    seen: list[str] = []

    def submit() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        except BaseException as exc:
            seen.append(type(exc).__name__)  # what queue_new's guard sees: it fails the record
            raise

    try:
        with pytest.raises(SystemExit) as exited, submitting():
            submit()
        assert exited.value.code == 128 + signal.SIGTERM and seen == ["Signalled"]
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the control: restored after
    finally:
        signal.signal(signal.SIGTERM, before)


def test_no_color_drops_the_headers_bold_on_a_terminal(monkeypatch):
    """NO_COLOR (no-color.org) printed SGR bold around every header cell on a terminal."""
    import io

    from joblet.cli.render import table

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm-256color")
    for no_color, bold in (("", True), ("1", False)):  # the first: the control, bold without it
        monkeypatch.setenv("NO_COLOR", no_color)
        out = Terminal()
        monkeypatch.setattr("sys.stdout", out)
        table(["ID", "NAME"], [["a", "b"]])
        assert ("\x1b[1m" in out.getvalue()) is bold, repr(out.getvalue())
        assert "a" in out.getvalue() and "NAME" in out.getvalue()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["run", "-network=none", "true"],
            "rnx run: '-network=none' reads as short options (-n ...). Did you mean '--network=none'?",
        ),
        (["run", "-detach", "true"], "rnx run: '-detach' reads as short options (-d ...). Did you mean '--detach'?"),
        (["run", "--network", "none", "-detach", "true"], "rnx run: '-detach' reads as short options"),
        (["log", "-follow", "x"], "rnx log: '-follow' reads as short options (-f ...). Did you mean '--follow'?"),
        (["list", "-json"], "rnx list: '-json' reads as short options (-j ...). Did you mean '--json'?"),
        (["run", "-x", "true"], "rnx run: No such option '-x'. (see"),  # the control: no long option meant
    ],
)
def test_a_long_option_given_one_dash_is_named(fake, argv, said):
    """`-network=none` was read as `-n etwork=none` (rnx named only '-n'), `-detach` ran as
    `-d -e ach` (a variable `ach` passed on), `log -follow` failed at its 'o'."""
    out = invoke(*argv)
    assert out.exit_code == 2 and out.output.startswith(said), out.output
    assert fake.submitted == []


def test_a_jobs_own_one_dash_words_are_its_own(fake):
    """The job's arguments are not rnx's options (the control of the test above)."""
    out = invoke("run", "-d", "--network=none", "ls", "-network", "-detach")
    assert out.exit_code == 0 and fake.submitted[0].args == ("-network", "-detach"), out.output
    out = invoke("run", "-d", "-eNV=1", "true")  # a short option's value attached: as given
    assert out.exit_code == 0 and fake.submitted[1].env == {"NV": "1"}, out.output


@pytest.mark.parametrize("group", [[], ["node"], ["network"], ["volume"], ["workflow"], ["runtime"]])
def test_no_commands_summary_is_cut_in_the_help(group):
    """`rnx --help` at 80 columns ended five summaries with "..." mid-sentence."""
    from click.testing import CliRunner

    from joblet.cli.main import cli

    out = CliRunner().invoke(cli, [*group, "--help"], terminal_width=80)
    listed = out.output.partition("Commands:")[2]
    assert out.exit_code == 0 and listed.strip() and "..." not in listed, out.output


def _started_workflow(tmp_path, on_submit=None):
    """A fake client whose workflow `wf` (id c...) is submitted and completes at once."""
    from types import SimpleNamespace

    record = SimpleNamespace(id="c" * 32, name="wf", jobs={"a": "d" * 32})

    def submit(wf, checked=False):
        if on_submit is not None:
            on_submit()
        return record

    def status(wf_id: str) -> dict:
        return {"status": "RUNNING", "jobs": [{"name": "a", "status": "RUNNING", "error": None}]}

    workflows = SimpleNamespace(check=lambda wf: [(True, "fine")], submit=submit, status=status)
    path = tmp_path / "wf.yaml"
    path.write_text("jobs:\n  a: {command: 'true', network: none}\n")
    return SimpleNamespace(workflows=workflows, live_nodes=lambda: {"n1": {}}), str(path)


def test_a_detached_workflow_whose_id_cannot_be_written_says_it_started(tmp_path, monkeypatch, capsys):
    """`rnx workflow run -d FILE > /dev/full` started the workflow and said only "cannot write
    its output", exit 1: read as nothing done, its id lost (usability run), where `rnx run -d`
    says `queued job ID, but ...`."""
    from joblet.cli.workflow import run_workflow

    client, path = _started_workflow(tmp_path)
    full = open("/dev/full", "w")  # noqa: SIM115 - say_done points its fd at /dev/null
    monkeypatch.setattr(sys, "stdout", full)
    try:
        assert run_workflow(client, path, detach=True, as_json=False) == 1
    finally:
        full.close()
    err = capsys.readouterr().err
    assert err.endswith(f"rnx: started workflow wf {'c' * 32}, but cannot write its output: No space left on device\n")


def test_an_attached_workflow_whose_output_is_closed_says_it_goes_on(tmp_path, monkeypatch, capsys):
    """`rnx workflow run FILE | head -6`: the reader left once the workflow was started and
    rnx ended 141 without a word, the workflow going on (usability run); `rnx run | head -1`
    says it left the job running. It says so too, with how to follow it, exit 1."""
    import io

    from joblet.cli.workflow import run_workflow

    class Reader(io.StringIO):
        left = False

        def write(self, text: str) -> int:
            if self.left:
                raise BrokenPipeError(32, "Broken pipe")
            return super().write(text)

    out = Reader()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr("joblet.cli.workflow.wakeup.sleep", lambda seconds: None)
    client, path = _started_workflow(tmp_path, on_submit=lambda: setattr(out, "left", True))
    assert run_workflow(client, path, detach=False, as_json=False) == 1
    assert out.getvalue().startswith("🔍 Validating")  # the control: it wrote until the reader left
    err = capsys.readouterr().err
    short = "c" * 12
    assert err.endswith(
        f"rnx: cannot write its output (Broken pipe): workflow wf {short} goes on (rnx workflow status {short})\n"
    ), err


@pytest.mark.parametrize("command", ["list", "stats"])
def test_interval_says_its_unit_in_help(command):
    """`rnx list --help` showed `--interval FLOAT RANGE`, click's type name (usability run)."""
    out = CliRunner().invoke(main.cli, [command, "--help"], prog_name="rnx")
    assert out.exit_code == 0 and "--interval SECONDS" in out.output and "FLOAT RANGE" not in out.output, out.output


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--json", "list"],
            "rnx: No such option '--json' for rnx itself: give it after the command (rnx list --json ...)",
        ),
        (
            ["--node=x", "run", "true"],
            "rnx: No such option '--node' for rnx itself: give it after the command (rnx run --node",
        ),
        (["--bogus", "list"], "rnx: No such option '--bogus'. (see"),  # the control: no command's option either
    ],
)
def test_a_commands_option_given_before_it_says_where_it_goes(fake, argv, said):
    """`rnx --json list` said "No such option '--json'. Did you mean '--version'?" (usability run)."""
    out = invoke(*argv)
    assert out.exit_code == 2 and out.output.startswith(said) and out.output.count("\n") == 1, out.output
