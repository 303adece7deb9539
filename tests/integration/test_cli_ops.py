"""`rnx` papercuts through the real thing: a pseudo-terminal for Ctrl-C, signals to the
process, a real worker and Redis. Each refusal has its positive control beside it."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import time
import uuid
from datetime import datetime

import pytest

from tests.conftest import BIN
from tests.integration.helpers import eventually, output

JOB = "echo line1; echo line2; exec sleep 60"


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:6]}"


def running(client, name: str, text: bytes = b"line2") -> str:
    """Wait until the job called `name` runs and its output holds `text`; returns its id."""

    def ready() -> bool:
        try:
            rec = client.get(name)
        except Exception:  # noqa: BLE001 - not recorded yet
            return False
        return rec.status.value == "RUNNING" and text in output(client, rec.id)

    eventually(ready, f"job {name} running with {text!r}")
    return client.get(name).id


def read_pty(fd: int, until: bytes | None = None, timeout: float = 60) -> bytes:
    """Read the terminal until `until` shows up, or until the child closes it."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (until is None or until not in data):
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child is gone
            break
        if not chunk:
            break
        data += chunk
    return data


def test_ctrl_c_on_a_terminal_stops_the_job_and_prints_nothing_twice(host, client):
    name = unique("ctrlc")
    pid, fd = pty.fork()
    if pid == 0:  # the child: rnx on a real terminal
        os.execve(
            str(BIN / "rnx"),
            ["rnx", "run", "--network=none", f"--name={name}", "sh", "-c", JOB],
            {**os.environ, **host.env},
        )
    try:
        before = read_pty(fd, until=b"line2")
        assert before.count(b"line1") == 1  # positive control: shown once, live
        running(client, name)
        os.write(fd, b"\x03")  # the terminal turns it into SIGINT for rnx's process group
        after = read_pty(fd)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = before + after
    assert text.count(b"line1") == 1 and text.count(b"line2") == 1, text
    assert b"stopping job" in text
    assert os.waitstatus_to_exitcode(status) == 130
    assert client.get(name).status.value == "STOPPED"


def attached(host, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "rnx"), "run", "--network=none", *args],
        env={**os.environ, **host.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_ctrl_c_with_json_keeps_the_output_once(host, client):
    name = unique("ctrlcjson")
    proc = attached(host, "--json", f"--name={name}", "sh", "-c", JOB)
    running(client, name)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    obj = json.loads(out)
    assert obj["output"] == "line1\nline2\n" and obj["status"] == "STOPPED", (obj, err)
    assert proc.returncode == 130


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_are_forwarded(host, client, sig):
    name = unique("proxy")
    proc = attached(host, f"--name={name}", "sh", "-c", JOB)
    running(client, name)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert out.count(b"line1") == 1 and b"stopping job" in err
    assert proc.returncode == 128 + sig
    assert client.get(name).status.value == "STOPPED"


def test_a_second_signal_stops_waiting_and_the_stop_goes_on(host, client):
    """The first Ctrl-C asks for the stop; the second makes rnx exit, saying so truthfully:
    a job that ignores SIGTERM is still killed after the grace period."""
    name = unique("twice")
    proc = attached(host, f"--name={name}", "sh", "-c", "trap '' TERM; echo line1; echo line2; sleep 60 & wait")
    job_id = running(client, name)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert b"stopping job" in first and b"Ctrl-C again to stop waiting" in first, first
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"is still being stopped" in err and b"left job" not in err, err
    final = client.wait(job_id, timeout=60)  # SIGTERM ignored: SIGKILL after the grace period
    assert final.status.value == "STOPPED" and final.signal == signal.SIGKILL, final


def test_sig_proxy_false_leaves_the_job_running(host, client):
    name = unique("noproxy")
    proc = attached(host, "--sig-proxy=false", "--json", f"--name={name}", "sh", "-c", JOB)
    job_id = running(client, name)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and b"left job" in err
    assert json.loads(out) == {"id": job_id, "status": "RUNNING"}, out  # --json: a script reads its id
    assert client.get(job_id).status.value == "RUNNING"  # not stopped: rnx only left
    assert host.rnx("stop", job_id).returncode == 0
    assert client.get(job_id).status.value == "STOPPED"


def test_mistyped_option_is_refused_and_nothing_is_queued(host):
    before = host.rnx("list", "--json", "--limit=0").stdout
    out = host.rnx("run", "--netwrok=none", "true")
    assert out.returncode == 2 and out.stdout == b""
    assert b"No such option '--netwrok'" in out.stderr and b"'--network'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert host.rnx("list", "--json", "--limit=0").stdout == before


def test_arguments_after_the_command_pass_through(host):
    ok = host.rnx("run", "--network=none", "ls", "-la", "/work")
    assert ok.returncode == 0 and b"total" in ok.stdout
    argv = host.rnx(
        "run",
        "--network=none",
        "python3",
        "-c",
        "import sys; print(sys.argv[1:])",
        "--netwrok=none",
        "-d",
        "--name",
        "x",
    )
    assert argv.returncode == 0 and argv.stdout == b"['--netwrok=none', '-d', '--name', 'x']\n"


def test_a_name_is_unique_among_jobs_that_have_not_ended(host, client):
    name = unique("uniq")
    first = host.rnx("run", "-d", "--network=none", f"--name={name}", "sleep", "60")
    assert first.returncode == 0
    before = len(client.list(name=name))
    dup = host.rnx("run", "-d", "--network=none", f"--name={name}", "true")
    assert dup.returncode == 2 and b"in use by job" in dup.stderr and first.stdout.strip()[:12] in dup.stderr
    assert len(dup.stderr.strip().splitlines()) == 1 and len(client.list(name=name)) == before
    upper = host.rnx("run", "-d", "--network=none", f"--name={name.upper()}", "true")  # lookups ignore case
    assert upper.returncode == 2 and b"in use by job" in upper.stderr, upper.stderr
    status = host.rnx("status", name.upper())  # and so does finding it by name
    assert status.returncode == 0 and first.stdout.strip() in status.stdout, status
    assert [r.name for r in client.list(name=name.upper())] == [name]
    short = first.stdout.strip()[:12].decode()
    shaped = host.rnx("run", "-d", "--network=none", f"--name={short.upper()}", "true")
    assert shaped.returncode == 2 and b"shape of a job's short id" in shaped.stderr, shaped.stderr
    stop = host.rnx("stop", name)
    assert stop.returncode == 0
    again = host.rnx("run", "--network=none", f"--name={name.upper()}", "true")  # free once the first ended
    assert again.returncode == 0


def test_stop_shows_progress_and_the_final_status(host, client):
    name = unique("stopme")
    # it takes a second to end after SIGTERM: rnx's stop cannot find it ended already
    slow = "trap 'sleep 1; exit 143' TERM; echo line1; echo line2; sleep 60 & wait"
    job_id = json.loads(host.rnx("run", "-d", "--json", "--network=none", f"--name={name}", "sh", "-c", slow).stdout)[
        "id"
    ]
    running(client, name)
    out = host.rnx("stop", name)
    assert out.returncode == 0 and out.stdout == f"{job_id} STOPPED\n".encode()
    assert (
        b"stopping job" in out.stderr and b"sent SIGTERM, waiting up to 2 s (then SIGKILL)" in out.stderr
    )  # its worker's
    assert b"stopped after" in out.stderr
    again = host.rnx("stop", name, job_id)  # named twice, ended: reported once
    assert again.returncode == 0 and again.stdout == f"{job_id} STOPPED\n".encode(), again
    assert again.stderr.count(b"had already ended") == 1


def test_list_filters_limit_and_command_column(host, client):
    tag = unique("lst")
    ids = [
        json.loads(host.rnx("run", "-d", "--json", "--network=none", f"--name={tag}-{i}", "echo", f"{tag}-{i}").stdout)[
            "id"
        ]
        for i in range(3)
    ]
    for job_id in ids:
        client.wait(job_id, timeout=60)
    sleeper = json.loads(host.rnx("run", "-d", "--json", "--network=none", f"--name={tag}-s", "sleep", "60").stdout)[
        "id"
    ]
    running(client, f"{tag}-s", b"")
    table = host.rnx("list", "--name", f"{tag}-1")
    assert table.returncode == 0 and b"COMMAND" in table.stdout and f"echo {tag}-1".encode() in table.stdout
    assert f"{tag}-0".encode() not in table.stdout
    run_ids = [j["id"] for j in json.loads(host.rnx("list", "--json", "--status=running").stdout)]
    assert sleeper in run_ids and not set(ids) & set(run_ids)
    done = [j["id"] for j in json.loads(host.rnx("list", "--json", "--status", "completed,failed").stdout)]
    assert set(ids) <= set(done) and sleeper not in done
    by_node = json.loads(host.rnx("list", "--json", "--node", host.name).stdout)
    assert {j["node"] for j in by_node} == {host.name}
    assert json.loads(host.rnx("list", "--json", "--node", "elsewhere").stdout) == []
    assert json.loads(host.rnx("list", "--json", "--network", "bridge", "--name", f"{tag}-s").stdout) == []
    assert len(json.loads(host.rnx("list", "--json", "--network", "none", "--name", f"{tag}-s").stdout)) == 1
    total = len(json.loads(host.rnx("list", "--json").stdout))
    two = host.rnx("list", "--limit=2")
    assert len(two.stdout.splitlines()) == 3  # header and the two most recent
    assert sleeper[:12].encode() in two.stdout and f"{total - 2} older jobs not shown".encode() in two.stderr
    assert host.rnx("list", "--status=bogus").returncode == 2
    host.rnx("stop", sleeper)


def test_list_watch_redraws_until_ctrl_c(host):
    proc = subprocess.Popen(
        [str(BIN / "rnx"), "list", "--watch", "--interval=0.2"],
        env={**os.environ, **host.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    frames = 0
    while frames < 2:  # two frames drawn: it is watching
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else b""
        frames += line.startswith(b"ID ")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_status_and_network_inspect_print_no_python_literals(host, client):
    net = unique("insp")[:12]
    assert host.rnx("network", "create", net, "--cidr=10.77.0.0/24").returncode == 0
    try:
        job = json.loads(host.rnx("run", "--json", f"--network={net}", "true").stdout)
        for out in (
            host.rnx("network", "inspect", net),
            host.rnx("network", "inspect", "none"),
            host.rnx("status", job["id"]),
        ):
            assert out.returncode == 0 and out.stdout
            for literal in (b"None", b"False", b"True", b"[]", b"()", b"{}"):
                assert literal not in out.stdout, out.stdout
        shown = host.rnx("network", "inspect", net).stdout
        assert b"Internal: no" in shown
        created = re.search(rb"^Created:  (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)$", shown, re.M)
        assert created, shown  # when it was made, local time, as a volume's (and none for a built-in)
        assert b"Created" not in host.rnx("network", "inspect", "bridge").stdout
        listed = {r["name"]: r for r in json.loads(host.rnx("network", "list", "--json").stdout)}
        made = datetime.fromisoformat(listed[net]["created"])
        assert made.tzinfo is not None and abs(time.time() - made.timestamp()) < 600
        assert made.astimezone().strftime("%Y-%m-%d %H:%M:%S").encode() == created[1]
        assert listed["bridge"]["created"] is None
    finally:
        host.rnx("network", "delete", net)


def test_ipv6_cidr_gets_a_clear_error(host):
    out = host.rnx("network", "create", "six", "--cidr=fd00:1::/64")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert b"IPv6" in out.stderr and b"IPv4 only" in out.stderr
    assert host.rnx("network", "inspect", "six").returncode == 1  # nothing half-built
    ok = host.rnx("network", "create", "six4", "--cidr=10.78.0.0/24")  # positive control
    assert ok.returncode == 0
    host.rnx("network", "delete", "six4")


def test_an_empty_name_is_a_usage_error_everywhere(host):
    """`rnx status ''` was exit 2 where `network inspect ''` and `node drain ''` were 1
    (usability run)."""
    for args in (("network", "inspect", ""), ("network", "delete", ""), ("volume", "delete", ""),
                 ("node", "drain", " "), ("node", "forget", ""), ("status", "")):  # fmt: skip
        out = host.rnx(*args)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and b"given" in out.stderr, args
    assert host.rnx("network", "inspect", "bridge").returncode == 0  # the controls: names that exist
    assert host.rnx("node", "drain", host.name).returncode == 0
    assert host.rnx("node", "undrain", host.name).returncode == 0


def test_a_job_that_never_started_says_so_in_its_log_and_its_stop(host, client):
    """`rnx log` of a job stopped (or canceled) before it started printed nothing, exit 0, and
    `rnx stop` said `stopped after 0.2 s` (usability run)."""
    from joblet.api.models import JobRecord, JobSpec, JobStatus

    queued = JobRecord(id=uuid.uuid4().hex, status=JobStatus.PENDING, spec=JobSpec(command="true"))
    client.store.create_job(queued)  # recorded, never queued: it waits for good
    out = host.rnx("stop", queued.id)
    assert out.returncode == 0 and f"job {queued.id[:12]} stopped before it started".encode() in out.stderr, out
    out = host.rnx("log", queued.id)
    assert out.returncode == 0 and out.stdout == b""
    assert out.stderr == f"rnx: job {queued.id[:12]} never started (STOPPED: stopped before it started)\n".encode()
    ran = client.run("echo", ("hi",), network="none")  # the control: a job that ran says nothing more
    client.wait(ran.id, timeout=60)
    out = host.rnx("log", ran.id)
    assert out.returncode == 0 and out.stdout == b"hi\n" and out.stderr == b"", out


def test_racing_submits_of_one_name_exactly_one_wins(host):
    from concurrent.futures import ThreadPoolExecutor

    from joblet.api.client import Client
    from joblet.errors import ValidationError

    name = unique("race")

    def submit(_: int) -> str | None:
        try:
            return Client(host.cfg).run("sleep", ("60",), network="none", name=name).id
        except ValidationError as exc:
            assert "in use by job" in str(exc)
            return None

    with ThreadPoolExecutor(8) as pool:
        won = [j for j in pool.map(submit, range(8)) if j]
    assert len(won) == 1
    host.rnx("stop", won[0])


def test_commands_and_errors_reach_the_terminal_as_text(host, client):
    """A command's bytes (from whoever submitted it) are shown, not acted on: no escape sequence
    for the operator's terminal, no rich markup taken as markup."""
    args = ("\x1b]0;TITLE\x07", "[link=https://example.invalid/]click[/link]", "\x1b[31mred", "\u202eright")
    rec = client.run("echo", args, network="none", name=unique("esc"))
    assert client.wait(rec.id, timeout=30).exit_code == 0
    shown = {argv[0]: host.rnx(*argv) for argv in (("status", rec.id), ("list", f"--name={rec.name}"))}
    for out in shown.values():
        assert out.returncode == 0, out.stderr
        assert b"\x1b" not in out.stdout and "\u202e".encode() not in out.stdout, out.stdout
        # the control: the command is there, as text (`list` shortens it to 40 characters)
        assert b"echo '\\x1b]0;TITLE\\x07' '[link=" in out.stdout, out.stdout
    full = shown["status"].stdout
    assert b"[link=https://example.invalid/]click[/link]" in full and b"\\x1b[31mred" in full, full
    assert b"\\u202eright" in full, full


def test_a_name_comes_before_an_id_prefix(host, client):
    """As Docker looks containers up: a job named like the start of another job's id is the
    one `rnx stop NAME` stops (it used to stop the other)."""
    first = host.rnx("run", "-d", "--network=none", "sleep", "60").stdout.decode().strip()
    prefix = first[:6]
    named = host.rnx("run", "-d", "--network=none", f"--name={prefix}", "sleep", "60").stdout.decode().strip()
    try:
        for job in (first, named):
            eventually(lambda job=job: client.get(job).status.value == "RUNNING", f"{job} running", 30)
        assert host.rnx("stop", prefix).returncode == 0
        assert client.get(named).status.value == "STOPPED" and client.get(first).status.value == "RUNNING"
        status = host.rnx("status", first[:7])  # the control: a prefix that is no name finds its job
        assert status.returncode == 0 and first[:12].encode() in status.stdout and b"RUNNING" in status.stdout
    finally:
        host.rnx("stop", first)


def test_output_that_cannot_be_written_leaves_the_job_running_and_says_so(host, client):
    """`rnx run ... | head -1` or `> /dev/full`: rnx exits 1 with one line saying the job is
    left running, as `docker run` leaves its container (rnx used to exit silently); a job that
    ends within half a second of the failed write is said to have ended (its last write)."""
    for target in ("pipe", "full"):
        name = unique(f"out{target}")
        argv = [
            str(BIN / "rnx"),
            "run",
            "--network=none",
            f"--name={name}",
            "sh",
            "-c",
            "while :; do echo y; sleep 0.1; done",
        ]
        if target == "full":
            with open("/dev/full", "wb") as full:
                done = subprocess.run(
                    argv, env={**os.environ, **host.env}, stdout=full, stderr=subprocess.PIPE, timeout=60
                )
            err, code = done.stderr, done.returncode
        else:
            proc = subprocess.Popen(
                argv, env={**os.environ, **host.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            assert proc.stdout is not None and proc.stdout.readline() == b"y\n"  # the control: it was writing
            proc.stdout.close()  # as `head -1` does
            err, code = proc.stderr.read() if proc.stderr else b"", proc.wait(timeout=60)
        job = client.get(name)
        assert code == 1 and err.count(b"\n") == 1 and b"left job" in err and job.short_id.encode() in err, err
        assert job.status.value == "RUNNING"
        assert host.rnx("stop", name).returncode == 0
    # its last write failed, and it ended a moment later: rnx waited for that end and says so
    with open("/dev/full", "wb") as full:
        name = unique("outlast")
        argv = [str(BIN / "rnx"), "run", "--network=none", f"--name={name}", "echo", "y"]
        done = subprocess.run(argv, env={**os.environ, **host.env}, stdout=full, stderr=subprocess.PIPE, timeout=60)
    short = client.get(name).short_id
    assert done.returncode == 1 and done.stderr.decode() == (
        f"rnx: cannot write the job's output (No space left on device): job {short} ended COMPLETED (rnx log {short})\n"
    )


def test_a_change_whose_report_cannot_be_written_says_what_was_done(host, client):
    """`rnx run -d`, `rnx batch`, `network create`, `volume create` > /dev/full did their
    work and then said only "cannot write its output", exit 1: read as a failure, the job's
    id lost (usability run). Each says what it did on stderr, exit 1 (stdout took nothing)."""
    net, vol, name = unique("fulln")[:12], unique("fullv")[:12], unique("fullj")

    def full(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
        with open("/dev/full", "wb") as out:
            done = subprocess.run(
                [str(BIN / "rnx"), *args], env={**os.environ, **host.env, **(env or {})}, input=stdin, stdout=out,
                stderr=subprocess.PIPE, timeout=60,
            )  # fmt: skip
        return done.returncode, done.stderr.decode()

    try:
        code, err = full("run", "-d", "--network=none", f"--name={name}", "true")
        job = client.get(name)  # it was queued
        assert (code, err) == (1, f"rnx: queued job {job.id}, but cannot write its output: No space left on device\n")
        # where no worker runs (an installation of its own: no node there), its note follows
        code, err = full(
            "run", "-d", "--network=none", "true", env={"JOBLET_KEY_PREFIX": "fullq:", "JOBLET_QUEUE": "fullq"}
        )
        said = err.splitlines()
        assert code == 1 and len(said) == 2 and said[0].endswith("but cannot write its output: No space left on device")
        assert "waits in the queue: no worker is running" in said[1], err
        code, err = full("network", "create", net, "--cidr=10.79.0.0/24")
        assert client.networks.store.get(net).cidr == "10.79.0.0/24"
        assert code == 1 and err.startswith(f"rnx: created network {net} (10.79.0.0/24"), err
        code, err = full("volume", "create", vol)
        assert code == 1 and err == f"rnx: created volume {vol}, but cannot write its output: No space left on device\n"
        code, err = full("batch", stdin=b"--network=none true\n--network=none true\n")
        assert code == 1 and err.startswith("rnx: queued 2 job(s) ("), err
        assert "and read no line after them, but cannot write its output" in err
        ok = host.rnx("volume", "create", unique("okv")[:12])  # the control: a stdout that takes it
        assert ok.returncode == 0 and ok.stdout.startswith(b"created volume ")
        host.rnx("volume", "delete", ok.stdout.split()[2].decode())
    finally:
        host.rnx("network", "delete", net)
        host.rnx("volume", "delete", vol)


def test_stop_takes_several_jobs_and_reports_one_it_cannot_find(host, client):
    """As `docker stop a b`: both stop; a name that is no job is reported and exits 1, the
    others stop all the same."""
    names = [unique("multi"), unique("multi")]
    ids = [host.rnx("run", "-d", "--network=none", f"--name={n}", "sleep", "60").stdout.decode().strip() for n in names]
    for name in names:
        eventually(lambda name=name: client.get(name).status.value == "RUNNING", f"{name} running", 30)
    out = host.rnx("stop", names[0], "no-such-job-here", names[1], ids[1][:12])  # the last named twice
    assert out.returncode == 1 and out.stdout.decode().split() == [ids[0], "STOPPED", ids[1], "STOPPED"], out
    # asked and reported once (its "stopping job" line only if it had not ended by the time
    # rnx turned to it: it was asked at once, and waited for after the first one)
    assert out.stderr.count(f"job {ids[1][:12]} stopped after".encode()) == 1, out.stderr
    assert out.stderr.count(f"stopping job {ids[1][:12]}".encode()) <= 1, out.stderr
    assert out.stderr.count(b"no such job: no-such-job-here") == 1
    assert all(client.get(i).status.value == "STOPPED" for i in ids)


def test_a_queue_or_broker_no_worker_reads_is_refused_and_nothing_is_queued(host, client):
    """`JOBLET_QUEUE=` or another queue, or another broker, than the workers': the job stayed
    PENDING for good, and an attached rnx waited without a word (usability and operator's runs)."""
    before = {r.id for r in client.list()}
    for env, says in (
        ({"JOBLET_QUEUE": ""}, "rnx: invalid setting queue (JOBLET_QUEUE): must have at least 1 character"),
        ({"JOBLET_QUEUE": "other"}, "rnx: cannot queue the job: no live worker reads queue 'other' (they read "),
        (  # refused before any connection to it
            {"JOBLET_BROKER_URL": "amqp://guest:guest@127.0.0.1:9//"},
            "rnx: cannot queue the job: worker(s) 'hosta' take jobs from a redis broker, and this client would send "
            "it to amqp",
        ),
    ):
        out = host.rnx("run", "--network=none", "true", env_extra=env, timeout=30)
        assert out.returncode == 2 and out.stderr.decode().startswith(says), (env, out.stderr)
        assert len(out.stderr.decode().strip().splitlines()) == 1, out.stderr
    assert {r.id for r in client.list()} == before  # nothing recorded
    ok = host.rnx("run", "--network=none", "echo", "read")  # the control: the workers' queue and broker
    assert ok.returncode == 0 and ok.stdout == b"read\n", ok.stderr


def test_text_the_output_encoding_cannot_show_is_escaped_not_a_traceback(host, client):
    """PYTHONIOENCODING=ascii: `rnx list` with a job's `echo été` was a UnicodeEncodeError
    traceback (usability run)."""
    name = unique("accents")
    job = client.run("echo", ("été",), network="none", name=name)
    client.wait(job.id, timeout=30)
    shown = host.rnx("list", "--name", name, env_extra={"PYTHONIOENCODING": "ascii"})
    assert shown.returncode == 0 and b"Traceback" not in shown.stderr, shown.stderr
    assert b"\\xe9t\\xe9" in shown.stdout and job.short_id.encode() in shown.stdout, shown.stdout
    plain = host.rnx("list", "--name", name)  # the control: a UTF-8 terminal shows it as it is
    assert "été".encode() in plain.stdout, plain.stdout


def test_a_reader_that_leaves_ends_rnx_quietly_as_sigpipe_would(host, client):
    """`rnx log ID | head -1` of a long log exited 1 without a word, the same with a short log
    0 (usability run): 141 now, as a program SIGPIPE ends, and nothing on stderr."""
    job = client.run("seq", ("1", "300000"), network="none")
    client.wait(job.id, timeout=60)
    rnx = f"{BIN / 'rnx'} log {job.id}"
    env = {**os.environ, **host.env}
    cut = subprocess.run(["bash", "-c", f'{rnx} | head -1; echo "rc=${{PIPESTATUS[0]}}"'], capture_output=True, env=env)
    assert cut.stdout == b"1\nrc=141\n" and cut.stderr == b"", cut
    whole = subprocess.run(["bash", "-c", f"{rnx} | tail -1"], capture_output=True, env=env)  # the control
    assert whole.returncode == 0 and whole.stdout == b"300000\n" and whole.stderr == b"", whole


def test_several_volumes_or_networks_are_deleted_at_once(host):
    """`rnx volume delete s1 s2` was an unexpected extra argument (usability run). Each goes;
    one that cannot is said, and rnx exits 1 after the rest."""
    for name in ("many1", "many2"):
        assert host.rnx("volume", "create", name).returncode == 0
        assert host.rnx("network", "create", name, f"--cidr=10.19{name[-1]}.0.0/24").returncode == 0
    for kind in ("volume", "network"):
        out = host.rnx(kind, "delete", "many1", "nosuch", "many2")
        assert out.returncode == 1, out
        assert out.stdout.decode() == f"deleted {kind} many1\ndeleted {kind} many2\n", out
        assert out.stderr.decode().count("\n") == 1 and "nosuch" in out.stderr.decode(), out
        listed = host.rnx(kind, "list").stdout.decode()
        assert "many1" not in listed and "many2" not in listed, listed
    assert host.rnx("volume", "delete", "nosuch").returncode == 1  # the control: one name, its own error
