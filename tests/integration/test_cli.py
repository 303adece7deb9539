"""`rnx` error paths: one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import BIN


def rnx(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "rnx"), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


def test_unreachable_redis_names_the_url():
    out = rnx("list", JOBLET_REDIS_URL="redis://127.0.0.1:1/0")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("rnx: cannot reach Redis at redis://127.0.0.1:1/0")
    assert "Traceback" not in out.stderr


def test_unknown_job_id(host):
    out = host.rnx("status", "doesnotexist")
    assert out.returncode == 1 and b"no such job: doesnotexist" in out.stderr


def test_an_unknown_name_is_echoed_as_one_line_of_text(host):
    """`no such job: ...` printed the argument raw: a newline split the message over two lines,
    and an escape sequence (here OSC 0, the window title) reached the terminal."""
    given = "ab\ncd\x1b]0;pwned\x07"
    for args in (("status",), ("log",), ("stop",), ("volume", "delete"), ("network", "delete"), ("workflow", "status")):
        out = host.rnx(*args, given)
        assert out.returncode == 1 and out.stderr.endswith(b": ab\\x0acd\\x1b]0;pwned\\x07\n"), (args, out.stderr)
        assert out.stderr.count(b"\n") == 1 and b"\x1b" not in out.stderr, (args, out.stderr)


def test_bad_env_is_refused_before_queueing(host):
    before = host.rnx("list", "--json").stdout
    out = host.rnx("run", "--env", "1X=2", "true")
    assert out.returncode == 2 and out.stderr == b"rnx: invalid --env: invalid environment variable name '1X'\n"
    assert host.rnx("list", "--json").stdout == before


def test_run_json_and_detach(host):
    import json

    out = host.rnx("run", "--network=none", "--json", "sh", "-c", "echo hi; echo oops >&2")
    obj = json.loads(out.stdout)
    assert obj["status"] == "COMPLETED" and obj["output"] == "hi\n" and obj["network"] == "none"
    assert out.stderr == b"oops\n"  # the job's stderr is rnx's, not lost
    assert {"id", "exit_code", "ip", "node"} <= obj.keys()
    det = json.loads(host.rnx("run", "-d", "--json", "--network=none", "true").stdout)
    assert set(det) == {"id", "status"}
    listed = json.loads(host.rnx("list", "--json").stdout)
    assert isinstance(listed, list) and any(j["id"] == obj["id"] for j in listed)


def test_run_exits_with_job_code_and_streams(host):
    out = host.rnx("run", "--network=none", "sh", "-c", "echo o; echo e >&2; exit 4")
    assert out.returncode == 4 and out.stdout == b"o\n" and out.stderr == b"e\n"


def test_no_worker_is_reported(host, tmp_path):
    flow = tmp_path / "flow.yaml"
    flow.write_text("jobs:\n  only: {command: 'true', network: none}\n")
    host.stop_worker()
    try:
        queued = host.rnx("workflow", "run", "-d", str(flow))  # its jobs waited in silence (usability run)
        assert queued.returncode == 0, queued
        said = queued.stderr.decode().splitlines()[-1]
        assert said.startswith("rnx: workflow flow ") and said.endswith(
            " waits in the queue: no worker is running (start one with `joblet-worker`)"
        ), said
        proc = subprocess.Popen(
            [str(BIN / "rnx"), "run", "--network=none", "true"], env={**os.environ, **host.env}, stderr=subprocess.PIPE
        )
        try:
            proc.wait(timeout=6)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
        assert b"is waiting for a worker" in proc.stderr.read()
        detached = host.rnx("run", "-d", "--network=none", "true")  # it said nothing of the wait
        short = detached.stdout.strip()[:12]
        assert detached.returncode == 0 and detached.stderr == (
            b"rnx: job " + short + b" waits in the queue: no worker is running (start one with `joblet-worker`)\n"
        )
        logged = host.rnx("log", short.decode())  # it printed nothing and exited 0 (usability run)
        waiting = b"rnx: job " + short + b" is waiting for a worker: none is running (start one with `joblet-worker`)"
        assert logged.returncode == 0 and logged.stdout == b"" and logged.stderr.startswith(waiting), logged
        follow = subprocess.Popen(
            [str(BIN / "rnx"), "log", "-f", short.decode()], env={**os.environ, **host.env}, stderr=subprocess.PIPE
        )
        try:
            assert follow.stderr is not None and follow.stderr.readline().startswith(waiting)  # said at once
        finally:
            follow.terminate()
            follow.wait()
    finally:
        host.start_worker()
    pending = host.rnx("log", short.decode())  # the control: a worker takes it; it ran, and says no more
    assert pending.returncode == 0 and b"waiting for a worker" not in pending.stderr, pending
    detached = host.rnx("run", "-d", "--network=none", "true")
    assert detached.returncode == 0 and detached.stderr == b""  # the control: a worker is up
    queued = host.rnx("workflow", "run", "-d", str(flow))
    assert queued.returncode == 0 and b"no worker is running" not in queued.stderr, queued


def test_an_empty_list_from_a_redis_no_worker_used_says_so(host):
    """A new shell without the export reads another Redis (or prefix): an empty table alone
    looked like 'no jobs'. The control: an empty list where a worker is says nothing more."""
    elsewhere = host.rnx("list", env_extra={"JOBLET_KEY_PREFIX": "nobody-here:"})
    assert elsewhere.returncode == 0 and b"knows no worker under key prefix" in elsewhere.stderr
    assert b"under key prefix 'nobody-here:'" in elsewhere.stderr, elsewhere.stderr
    here = host.rnx("list", "--name=no-such-job-name")
    assert here.returncode == 0 and here.stderr == b"", here.stderr
    for command in (("nodes",), ("stats", "--no-stream")):  # the same for rnx nodes and rnx stats
        elsewhere = host.rnx(*command, env_extra={"JOBLET_KEY_PREFIX": "nobody-here:"})
        assert elsewhere.returncode == 0 and b"knows no worker under key prefix" in elsewhere.stderr, command
        here = host.rnx(*command)  # the control: the worker's own prefix says nothing more
        assert here.returncode == 0 and here.stderr == b"", (command, here.stderr)


def test_near_misses_get_a_hint(host, tmp_path):
    """A built-in network in capitals, a user network's misspelt, a directory to --upload, a
    volume name that starts with a dot: each refused in one line that says what was meant."""
    none = host.rnx("run", "--network=None", "true")
    assert none.returncode == 2 and b"no such network 'None' (the built-in one is 'none')" in none.stderr
    other = host.rnx("run", "--network=nosuchnet", "true")  # the control: no built-in is near
    assert other.stderr == b"rnx: invalid --network: no such network 'nosuchnet' (rnx network list)\n"
    assert other.returncode == 2
    inspected = host.rnx("network", "inspect", "BRIDGE")  # and where a network is read
    said = b"rnx: no such network: BRIDGE (the built-in one is 'bridge')\n"
    assert inspected.returncode == 1 and inspected.stderr == said
    deleted = host.rnx("network", "delete", "NONE")  # reserved in any case: it read no such network, exit 1
    assert deleted.returncode == 2 and b'failed to delete network "NONE": it is built in' in deleted.stderr
    assert host.rnx("network", "create", "nearapp", "--cidr=10.97.0.0/24").returncode == 0
    try:  # a user network's name in other capitals, or misspelt
        for typed in ("NearApp", "nearap"):
            near = host.rnx("run", f"--network={typed}", "true")
            hint = f"no such network '{typed}' (did you mean 'nearapp'? rnx network list)".encode()
            assert near.returncode == 2 and hint in near.stderr, near.stderr
    finally:
        host.rnx("network", "delete", "nearapp")
    upload = host.rnx("run", f"--upload={tmp_path}", "true")
    assert upload.returncode == 2 and b"is a directory (--upload-dir uploads one)" in upload.stderr
    vol = host.rnx("volume", "create", "..")
    assert vol.returncode == 2 and b"starting with a letter or digit" in vol.stderr


def test_bytes_that_are_not_utf8_pass_as_bytes(host):
    """A job id, command or --env value that is not UTF-8 (rnx reads its argv with surrogate
    escapes): `rnx status` ended in a traceback, the command and the value failed their job
    with an internal error. They are bytes as given, as a job's arguments already were; where
    rnx or joblet names them in a line of its own, escaped."""
    for args in (("status",), ("log",), ("stop",), ("workflow", "status")):
        out = host.rnx(*args, b"\xff")
        assert out.returncode == 1 and out.stderr.startswith(b"rnx: no such "), (args, out.stderr)
        assert out.stderr.endswith(b": \\xff\n"), (args, out.stderr)  # the byte, as given
        assert out.stderr.count(b"\n") == 1 and b"Traceback" not in out.stderr, (args, out.stderr)
    # joblet's own line about the command shows it escaped, as rnx's errors do (an ESC in it
    # coloured the terminal)
    out = host.rnx("run", "--network=none", b"no\xffsuch")
    assert out.returncode == 127 and out.stderr == b"joblet: no\\xffsuch: command not found\n", out.stderr
    out = host.rnx("run", "--network=none", b"\x1b[31mred")
    assert out.returncode == 127 and out.stderr == b"joblet: \\x1b[31mred: command not found\n", out.stderr
    out = host.rnx("run", "--network=none", "--env", b"X=a\xffb", "sh", "-c", 'printf %s "$X" "$1"', "sh", b"c\xffd")
    assert out.returncode == 0 and out.stdout == b"a\xffbc\xffd", out  # the value, and an argument (the control)
