"""Inputs at the edges of what is accepted: each is refused with one line naming what is
wrong (never a traceback), and the value beside it that is fine still passes."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path

import pytest

from joblet.api.limits import parse_bytes, parse_rate
from joblet.api.message import Refused, check, is_job_id
from joblet.api.models import make_spec
from joblet.api.networks import check as check_network
from joblet.api.volumes import parse_size
from joblet.api.workflows import load
from joblet.cli.batch import LineError, decoded
from joblet.config import load as load_settings
from joblet.errors import ConfigError, ValidationError

JOB = "a" * 32


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("http://x", "must start with redis://, rediss://, unix://"),
        ("", "must have at least 1 character"),
        ("redis://127.0.0.1:abc/0", "has a port that is not a number"),
        ("redis://u:s3cret@h:99999/0", "'redis://u:***@h:99999/0' has a port"),
        ("redis://:s3c@ret@h:x/0", "'redis://:***@h:x/0' has a port"),
        ("unix://", "names no socket path"),
        ("unix:///run/r.sock?db=abc", "names database 'abc': give a number"),
        ("redis://h:6379/x1", "names database 'x1'"),
        ("rediss://h/0?db=-1", "names database '-1'"),
    ],
)
def test_a_redis_url_is_checked_when_read(monkeypatch, value, says):
    monkeypatch.setenv("JOBLET_REDIS_URL", value)
    with pytest.raises(ConfigError, match="^invalid setting redis_url") as caught:
        load_settings()
    assert says in str(caught.value) and "s3cret" not in str(caught.value)


def test_good_urls_pass(monkeypatch):
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@h:6380/1", "unix:///run/r.sock", "unix:///r.sock?db=3"):
        monkeypatch.setenv("JOBLET_REDIS_URL", url)
        assert load_settings().redis_url == url
    for broker in ("amqp://guest:guest@127.0.0.1:5672//", "pyamqp://h//", "redis+socket:///run/r.sock"):
        monkeypatch.setenv("JOBLET_BROKER_URL", broker)
        assert load_settings().broker_url == broker
    monkeypatch.setenv("JOBLET_BROKER_URL", "ftp://x")
    with pytest.raises(ConfigError, match="^invalid setting broker_url .* amqp://, amqps://, pyamqp://$"):
        load_settings()


@pytest.mark.parametrize(
    ("make", "says"),
    [(lambda p: p.write_bytes(b'queue = "\xff"\n'), "is not UTF-8 text"), (Path.mkdir, "Is a directory")],
)
def test_an_unreadable_config_file_is_one_line(monkeypatch, tmp_path, make, says):
    conf = tmp_path / "joblet.toml"
    make(conf)
    monkeypatch.setenv("JOBLET_CONFIG", str(conf))
    with pytest.raises(ConfigError, match=says):
        load_settings()


def test_names_with_a_trailing_newline_are_refused():
    assert is_job_id(JOB) and not is_job_id(JOB + "\n")
    with pytest.raises(Refused):
        check(JOB + "\n", [], {}, False, 0)
    with pytest.raises(Refused, match="bad-nonce|nonce"):
        check(JOB, [], {"nonce": "b" * 32 + "\n", "expires": 10.0}, False, 0)
    check_network("web", "10.9.0.0/24")
    with pytest.raises(ValidationError):
        check_network("web\n", "10.9.0.0/24")
    for field in ("name", "node", "runtime"):
        make_spec("true", **{field: "ok"})
        with pytest.raises(ValidationError):
            make_spec("true", **{field: "ok\n"})


def test_an_expiry_beyond_a_float_is_refused_not_raised():
    now = 1_000_000.0
    assert check(JOB, [], {"nonce": "b" * 32, "expires": now + 60}, False, now).job_id == JOB
    with pytest.raises(Refused) as caught:
        check(JOB, [], {"nonce": "b" * 32, "expires": 10**400}, False, now)
    assert caught.value.reason == "bad-expiry"


def test_only_ascii_digits_count():
    assert make_spec("true", user="123:45").user == "123:45"
    assert (parse_rate("10mbit"), parse_bytes("10M"), parse_size("10M")) == (10_000_000, 10 << 20, 10)
    with pytest.raises(ValidationError):
        make_spec("true", user="١٢٣")
    for parse, value in ((parse_rate, "١٠mbit"), (parse_bytes, "١٠M"), (parse_size, "١٠M")):
        with pytest.raises((ValueError, ValidationError)):
            parse(value)


@pytest.mark.parametrize(
    ("paths", "says"),
    [(["a", "a"], "'a' is given twice"), (["a", "a/b"], "'a' is a file and the folder"), (["a/b/c", "a"], "'a' is")],
)
def test_uploads_that_clash_are_refused(paths, says):
    assert len(make_spec("true", uploads=[{"path": "a/b"}, {"path": "a/c"}, {"path": "ab"}]).uploads) == 3
    with pytest.raises(ValidationError, match=says):
        make_spec("true", uploads=[{"path": p} for p in paths])


def test_an_endless_batch_line_or_workflow_file_is_refused_not_read_whole(tmp_path, monkeypatch):
    """`rnx batch /dev/zero` and `rnx workflow run /dev/zero` read until memory ran out (the
    kernel's OOM killer took rnx, a MemoryError under a ulimit)."""
    import io

    from joblet.api import workflows
    from joblet.cli import batch

    monkeypatch.setattr(batch, "MAX_LINE", 64)
    got = list(batch.lines(io.BytesIO(b"a" * 500 + b"\nnext line\n" + b"b" * 64 + b"\n")))
    assert got == [None, b"next line\n", b"b" * 64 + b"\n"]  # the long one skipped, the rest kept
    monkeypatch.setattr(workflows, "MAX_FILE", 1024)
    big = tmp_path / "big.yaml"
    big.write_text("jobs:\n  a: {command: 'true'}\n" + "#" * 2000 + "\n")
    with pytest.raises(ValidationError, match="larger than"):
        workflows.load(big)
    big.write_text("jobs:\n  a: {command: 'true'}\n")  # the control: a small one loads
    assert list(workflows.load(big).jobs) == ["a"]


def test_a_batch_line_must_be_utf8():
    assert decoded("echo é\n".encode()) == "echo é\n"
    with pytest.raises(LineError, match=r"^not UTF-8 text \(byte 6: 0xff\)$"):
        decoded(b"echo \xff\n")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("jobs:\n  a: {command: echo, args: 5}\n", "'args' must be a list"),
        ("jobs:\n  a: {command: echo, args: [{x: 1}]}\n", "is not text or a number"),
        ("jobs:\n  a: {command: echo, args: [true]}\n", "argument 1 in 'args': YAML reads the value as a boolean"),
        ("jobs:\n  a: {command: [echo, hi]}\n", "'command' must be text"),
        ("jobs:\n  a: {command: }\n", "'command' must be text"),
        ("jobs:\n  1: {command: echo}\n", "job name 1 is not text"),
        ("jobs:\n  web: {command: echo}\n  WEB: {command: echo}\n", "jobs 'web' and 'WEB' differ only in case"),
    ],
)
def test_workflow_fields_of_the_wrong_kind_are_refused(tmp_path, body, says):
    good = tmp_path / "good.yaml"
    good.write_text("jobs:\n  a: {command: sleep, args: [1, '-x', 2024-01-01]}\n  '1': {command: echo}\n")
    assert load(good).jobs["a"].spec.args == ("1", "-x", "2024-01-01") and "1" in load(good).jobs
    bad = tmp_path / "bad.yaml"
    bad.write_text(body)
    with pytest.raises(ValidationError, match=says):
        load(bad)


def test_a_workflow_file_must_be_utf8(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b'jobs:\n  a: {command: "\xff"}\n')
    with pytest.raises(ValidationError, match="is not UTF-8 text"):
        load(bad)


def test_network_names_and_dns_servers_a_job_could_not_use():
    assert check_network("web", "10.9.0.0/24", dns=("192.0.2.53",)) == "10.9.0.0/24"
    for name in ("BRIDGE", "None", "Host", "ISOLATED"):
        with pytest.raises(ValidationError, match="is a built-in network"):
            check_network(name, "10.9.0.0/24")
    for server in ("127.0.0.53", "0.0.0.0", "224.0.0.1", "240.0.0.1"):
        with pytest.raises(ValidationError, match=f"DNS server {server} is not one a job can ask"):
            check_network("web", "10.9.0.0/24", dns=(server,))


@pytest.mark.parametrize(
    ("server", "internal", "said"),
    [
        ("10.9.0.0", False, "is the network's network address: a server inside 10.9.0.0/24 is one of its jobs"),
        ("10.9.0.1", False, "is the network's gateway (the host: jobs cannot reach it)"),
        ("10.9.0.255", False, "is the network's broadcast address"),
        ("192.0.2.53", True, "is outside 10.9.0.0/24, and an --internal network reaches nothing outside it"),
    ],
)
def test_a_networks_dns_server_its_jobs_cannot_reach_is_refused(server, internal, said):
    """`--dns` at the network's gateway, network or broadcast address, or outside an
    --internal network, was taken, and every lookup of its jobs hung 20 s (usability run).
    A server that is one of its jobs (the control) is taken, --internal or not."""
    with pytest.raises(ValidationError, match=re.escape(f"DNS server {server} {said}")):
        check_network("web", "10.9.0.0/24", dns=(server,), internal=internal)
    assert check_network("web", "10.9.0.0/24", dns=("10.9.0.2", "10.9.0.254"), internal=True) == "10.9.0.0/24"


def test_a_dns_server_in_another_joblet_network_is_refused():
    """In the default bridge (its gateway, 172.20.0.1), the isolated pool or another user
    network, a server is out of the new network's jobs' reach (usability run); the cloud's
    DNS in job_blocked_networks is not (it is reached on port 53)."""
    from types import SimpleNamespace

    from joblet.api.client_networks import Networks
    from joblet.api.networks import NetworkDef
    from joblet.config import Settings

    created: list[str] = []
    store = SimpleNamespace(
        all=lambda: [NetworkDef(name="other", cidr="10.100.0.0/24")],
        create=lambda net, reserved: created.append(net.name) or net,
    )
    jobs = SimpleNamespace(live_nodes=lambda: {})
    networks = Networks(Settings(allow_public_networks=True), jobs, store)  # type: ignore[arg-type]
    cfg = networks.settings
    for server, held in (
        ("172.20.0.1", 'built-in network "bridge"'),
        (str(ipaddress.ip_network(cfg.isolated_pool)[1]), "the isolated-mode pool"),
        ("10.100.0.2", 'network "other"'),
    ):
        with pytest.raises(ValidationError, match=re.escape(f"DNS server {server} is in {held}")):
            networks.create("gw", "10.24.0.0/24", dns=(server,))
    assert created == []
    networks.create("gw", "10.24.0.0/24", dns=("168.63.129.16",))  # the control: Azure's DNS
    assert created == ["gw"]


def test_a_rate_tc_cannot_hold_is_refused_and_iobps_as_a_rate_is_capped():
    from joblet.api.limits import MAX_RATE, Limits

    assert parse_rate("1000gbit") == MAX_RATE
    with pytest.raises(ValueError, match="above 1000gbit"):
        parse_rate("10000gbit")
    assert Limits(max_iobps=10**15).rate_out() == MAX_RATE and Limits(max_iobps=4096).rate_out() == 32768


def test_bad_yaml_and_nan_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs:\n  a: {command: [\n")
    with pytest.raises(ValidationError) as caught:
        load(bad)
    assert "\n" not in str(caught.value) and "is not valid YAML at line 3, column 1: expected" in str(caught.value)
    assert make_spec("true", timeout=1.5).timeout == 1.5
    with pytest.raises(ValidationError, match="'timeout': must be a number, not NaN"):
        make_spec("true", timeout=float("nan"))


def test_limits_beyond_what_the_kernel_holds_are_refused():
    assert make_spec("true", limits={"max_memory": 1 << 20, "max_iobps": 1 << 30}).limits.max_memory == 1 << 20
    for field, value in (("max_memory", 10**20), ("max_iobps", 10**20)):
        with pytest.raises(ValidationError, match=f"'limits.{field}': must be at most"):
            make_spec("true", limits={field: value})


def test_an_empty_status_filter_is_refused_not_read_as_none():
    import click

    from joblet.cli.main import check_statuses

    assert check_statuses(("running,failed",)) == ["RUNNING", "FAILED"] and check_statuses(()) == []
    with pytest.raises(click.BadParameter, match="needs a status"):
        check_statuses(("",))


def test_a_batch_line_with_a_byte_order_mark_or_a_continuation():
    """A BOM became part of the first word (`'\\ufeff--network=none'` ran as the command), and a
    trailing backslash made a job of `echo a '\\n'` and another of the next line (usability run)."""
    import click

    from joblet.cli.batch import parse_line
    from joblet.cli.main import cli

    parent = click.Context(cli)
    got = parse_line("\ufeff--network=none echo bom\n", parent)
    assert got is not None and got["networks"] == ("none",) and got["command"] == "echo"
    with pytest.raises(LineError, match="ends with a backslash: a job is one line"):
        parse_line("--network=none echo a \\\n", parent)
    got = parse_line("--network=none echo 'a\\' b\n", parent)  # the control: a backslash inside quotes
    assert got is not None and got["args"] == ("a\\", "b")


def test_a_batch_line_that_begins_with_rnx_run_is_refused():
    """`rnx run echo z` as a batch line queued a job whose command was `rnx` (exit 127, usability run)."""
    import click

    from joblet.cli.batch import parse_line
    from joblet.cli.main import cli

    parent = click.Context(cli)
    with pytest.raises(LineError, match="drop the leading `rnx run`"):
        parse_line("rnx run --network=none echo z\n", parent)
    got = parse_line("--network=none rnx list\n", parent)  # the control: rnx as a job's command
    assert got is not None and got["command"] == "rnx" and got["args"] == ("list",)


def test_a_batch_line_unescapes_inside_double_quotes_as_a_shell_does():
    """`sh -c "echo \\$HOME"` gave the job `echo \\$HOME` (shlex keeps a backslash before `$`
    and a backquote inside double quotes; sh drops it: usability run)."""
    import click

    from joblet.cli.batch import parse_line
    from joblet.cli.main import cli

    parent = click.Context(cli)
    for line, args in (
        (r'echo "a\$b" "t\`x"', ("a$b", "t`x")),  # what sh gives
        (r'echo "q\"x" "b\\s" "n\n"', ('q"x', "b\\s", "n\\n")),  # shlex's own, as sh's
        (r"echo 'a\$b' a\$b", ("a\\$b", "a$b")),  # single quotes keep it; unquoted, it escapes
        (r"""echo "it's \$1" 'say "\$x"'""", ("it's $1", 'say "\\$x"')),  # quotes inside quotes
    ):
        got = parse_line(f"--network=none {line}\n", parent)
        assert got is not None and got["args"] == args, (line, got and got["args"])
        words = line.removeprefix("echo ")
        sh = subprocess.run(["sh", "-c", f"printf '%s\\n' {words}"], capture_output=True, text=True)
        assert tuple(sh.stdout.splitlines()) == args, (line, sh.stdout)  # the control: sh itself


def test_a_batch_lines_comment_begins_a_word_as_in_a_shell():
    """shlex began a comment at any `#`: `echo issue#12` queued `echo issue`, and a URL lost
    its fragment (review); a `#` that begins a word still begins a comment."""
    import click

    from joblet.cli.batch import parse_line
    from joblet.cli.main import cli

    parent = click.Context(cli)
    for line, args in (
        ("echo issue#12 http://h/p#frag", ("issue#12", "http://h/p#frag")),
        ("echo 'a'#b a\\ #c x", ("a#b", "a #c", "x")),  # after a quote or an escaped blank: a word's
        ("echo a # b c", ("a",)),  # the control: a comment
        ("echo 'x # y' \\#z\t#w", ("x # y", "#z")),
    ):
        got = parse_line(f"--network=none {line}\n", parent)
        assert got is not None and got["args"] == args, (line, got and got["args"])
        words = line.removeprefix("echo ")
        sh = subprocess.run(["sh", "-c", f"printf '%s\\n' {words}"], capture_output=True, text=True)
        assert tuple(sh.stdout.splitlines()) == args, (line, sh.stdout)  # the control: sh itself
    assert parse_line("# a whole line\n", parent) is None


def test_a_batch_line_of_a_windows_or_old_mac_file():
    """A backslash before \\r\\n escaped the \\r (the job got `a\\r`); CR-only line ends made
    one job of many lines (review)."""
    import click

    from joblet.cli.batch import parse_line
    from joblet.cli.main import cli

    parent = click.Context(cli)
    got = parse_line("--network=none echo a\r\n", parent)  # the control: a Windows line
    assert got is not None and got["args"] == ("a",)
    with pytest.raises(LineError, match="ends with a backslash"):
        parse_line("--network=none echo a \\\r\n", parent)
    with pytest.raises(LineError, match="carriage return inside the line"):
        parse_line("--network=none echo a\r--network=none echo b\r", parent)


def test_docker_habits_in_network_and_volume_names_get_a_hint():
    """`--network=a,b` and `--volume=v1:/data` were refused as invalid names alone (usability run)."""
    with pytest.raises(ValidationError, match=r"'a,b' \(one network a --network: give it once for each\)"):
        make_spec("true", network="a,b")
    with pytest.raises(ValidationError, match=r"'v1:/data' \(a volume mounts at /volumes/NAME: give its name, 'v1'\)"):
        make_spec("true", volumes=["v1:/data"])
    with pytest.raises(ValidationError) as caught:  # the control: another bad name, no such hint
        make_spec("true", network="a b")
    assert "give it once" not in str(caught.value)
    assert make_spec("true", network=["a", "b"], volumes=["v1"]).volumes == ("v1",)


def test_a_misspelt_network_is_guessed_among_built_ins_too():
    """`--network=nonee` said only "no such network" where `--network=myap` guessed myapp:
    the guess left the built-in networks out (usability run)."""
    from types import SimpleNamespace

    from joblet.api.preflight import Preflight
    from joblet.config import Settings
    from joblet.errors import NotFound
    from joblet.fields import FieldError

    def get(name: str) -> None:
        raise NotFound(name)

    networks = SimpleNamespace(get=get, names=lambda: ["myapp"])
    pre = Preflight(Settings(), None, networks, None)  # type: ignore[arg-type]
    for wrong, guess in (("nonee", "none"), ("isolate", "isolated"), ("myap", "myapp")):
        with pytest.raises(FieldError, match=f"no such network '{wrong}' \\(did you mean '{guess}'"):
            pre.check_networks(make_spec("true", network=(wrong,)))
