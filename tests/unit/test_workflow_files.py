"""Workflow files from elsewhere: deep graphs and odd uploads get one clear answer (no root)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from joblet.api.workflows import graph_problems, load
from joblet.errors import ValidationError


def chain(path: Path, n: int, closing: bool) -> Path:
    """n jobs, listed last first, each requiring the one before; the first requires the last
    when `closing` (a cycle through all of them)."""
    lines = ["jobs:"]
    for i in reversed(range(n)):
        dep = i - 1 if i else (n - 1 if closing else None)
        requires = "" if dep is None else f", requires: [{{j{dep}: COMPLETED}}]"
        lines.append(f"  j{i}: {{command: x{requires}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_chain_of_thousands_is_checked_without_recursion(tmp_path: Path):
    assert graph_problems(load(chain(tmp_path / "ok.yaml", 3000, closing=False))) == []
    problems = graph_problems(load(chain(tmp_path / "loop.yaml", 3000, closing=True)))
    assert len(problems) == 1 and problems[0].startswith("dependency cycle: ")
    assert problems[0].count(" -> ") == 3000  # every job of the cycle, the first again at the end


def test_a_fifo_upload_is_refused_not_waited_on(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "plain.txt").write_text("x")
    wf = tmp_path / "wf.yaml"
    wf.write_text("jobs:\n  a: {command: cat, uploads: {files: [plain.txt]}}\n")
    assert load(wf).jobs["a"].spec.uploads  # the control: a regular file is taken
    wf.write_text("jobs:\n  a: {command: cat, uploads: {files: [pipe]}}\n")
    result: list[BaseException] = []

    def attempt() -> None:
        try:
            load(wf)
        except ValidationError as exc:
            result.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)  # a hang fails the join, not the suite
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "loading a FIFO upload hung"
    assert len(result) == 1 and "not a regular file" in str(result[0])
    with pytest.raises(ValidationError, match="not a regular file"):
        load(wf)


def test_a_cycle_reads_as_requires(tmp_path: Path):
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "jobs:\n"
        "  a: {command: x, requires: [{b: COMPLETED}]}\n"
        "  b: {command: x, requires: [{c: COMPLETED}]}\n"
        "  c: {command: x, requires: [{a: COMPLETED}]}\n"
    )
    (problem,) = graph_problems(load(wf))
    cycle = problem.removeprefix("dependency cycle: ").split(" -> ")
    assert len(cycle) == 4 and cycle[0] == cycle[-1]
    requires = {"a": "b", "b": "c", "c": "a"}
    assert all(requires[x] == y for x, y in zip(cycle, cycle[1:], strict=False)), problem  # each requires the next


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs:\n  a: {command: echo}\n  a: {command: 'true'}\n", "line 3, column 3: duplicate key 'a'"),
        ("jobs:\n  a: {command: echo, args: [x], args: [y]}\n", "duplicate key 'args'"),
        ("version: 1\njobs:\n  a: {command: echo}\n", "unknown top-level field(s) version"),
        ("jobs:\n  a: {command: echo hi there}\n", "command: echo, args: ['hi', 'there']"),
        ("jobs:\n  a: {command: echo, env: {DEBUG: yes}}\n", "env DEBUG: YAML reads the value as a boolean"),
        ("jobs:\n  a: {command: echo, env: {X: [1]}}\n", "invalid job field 'env.X': must be a string"),
        ("jobs:\n  a: {command: echo, resources: {max_memory: 0x40}}\n", "max_memory': '0x40' is not a number of MB"),
        ("jobs:\n  a: {command: echo, resources: {max_memory: -1}}\n", "'resources.max_memory': must be at least 4 MB"),
        ("jobs:\n  a: {command: echo, resources: {max_cpuu: 5}}\n", "invalid job field 'resources.max_cpuu'"),
        ("jobs:\n  a: {command: echo, resources: 5}\n", "invalid job field 'resources'"),
        ("jobs:\n  a: {command: echo, user: 1000}\n", "'user' is text, as --user: quote it ('1000')"),
        ("jobs:\n  a: {command: echo, requires: [{}]}\n", "'requires' entries are {JOB: STATUS}"),
        (  # the last one was kept, silently (usability run)
            "jobs:\n  a: {command: echo}\n  b: {command: echo, requires: [{a: COMPLETED}, {a: FAILED}]}\n",
            "'requires' names 'a' twice",
        ),
        ("jobs:\n  null: {command: echo}\n", "job name None is not text (quote it: 'null')"),
        ("jobs:\n  yes: {command: echo}\n", "a job name YAML reads as a boolean (yes, no, on, off, true...)"),
        ("jobs:\n  a: {command: ''}\n", "job 'a': 'command' is empty"),
    ],
)
def test_what_yaml_or_a_typo_would_let_pass_is_refused(tmp_path: Path, text: str, message: str):
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError) as caught:
        load(path)
    assert message in str(caught.value)


def test_anchors_in_x_fields_and_a_spaced_command_with_args_load(tmp_path: Path):
    """The controls: what the refusals above must not catch."""
    path = tmp_path / "wf.yaml"
    path.write_text(
        "x-base: &base {command: echo, args: [hi]}\njobs:\n  a: *base\n  b:\n    <<: *base\n    network: none\n"
        "  c: {command: /opt/my tool/run, args: [x]}\n"
    )
    wf = load(path)
    assert wf.jobs["a"].spec.args == ("hi",) and wf.jobs["b"].spec.network == ("none",)
    assert wf.jobs["c"].spec.command == "/opt/my tool/run"


def test_env_values_that_are_numbers_are_taken_as_yaml_reads_them(tmp_path: Path):
    """As Compose's `environment:` and as `args` here: `PORT: 8080` was refused ("must be a
    string, not int")."""
    path = tmp_path / "wf.yaml"
    path.write_text(
        "jobs:\n  a: {command: env, env: {PORT: 8080, RATIO: 1.10, NAME: web, QUOTED: '007', DAY: 2024-01-01}}\n"
    )
    env = {"PORT": "8080", "RATIO": "1.1", "NAME": "web", "QUOTED": "007", "DAY": "2024-01-01"}  # a date as args
    assert load(path).jobs["a"].spec.env == env


def test_numbers_in_yaml_1_1s_other_forms_stay_as_written(tmp_path: Path):
    """YAML 1.1 read 0022 as 18, 0x1F as 31, 1:30 as 90, 1_000 as 1000: a umask, a zip code or
    a time changed unseen. Decimal numbers are still numbers (the control)."""
    path = tmp_path / "wf.yaml"
    path.write_text(
        "jobs:\n  a:\n    command: env\n    args: [012, 0x1F, 1:30, 1_000, 7, -3, 1.10]\n"
        "    env: {UMASK: 0022, ZIP: 01234, PORT: 8080}\n    resources: {max_memory: 64}\n"
    )
    spec = load(path).jobs["a"].spec
    assert spec.args == ("012", "0x1F", "1:30", "1_000", "7", "-3", "1.1")
    assert spec.env == {"UMASK": "0022", "ZIP": "01234", "PORT": "8080"} and spec.limits.max_memory == 64


def laughs(where: str) -> str:
    """A workflow file of ~700 bytes whose alias *i is a list of 9**9 strings ("billion laughs"),
    used at `where`: YAML shares the lists, but anything that walks or prints it does not."""
    lines = ["x-a: &a [" + ", ".join(["lol"] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"x-{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + f"\njobs:\n  a: {{command: echo, {where}}}\n"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("args: *i", "argument [[[...], [...], [...], [...], ...], [[...],"),
        ("args: [x, *i]", "argument [[[...], [...], [...], [...], ...], [[...],"),
        ("uploads: {files: *i}", "upload [[[...], [...], [...], [...], ...], [[...],"),
        ("requires: [{b: *i}]", "unknown status [[[...], [...], [...], [...], ...], [[...],"),
        ("env: {X: *i}", "invalid job field 'env.X': must be a string, not list"),
        ("network: *i", "invalid job field 'network': invalid network name list"),
        ("volumes: *i", "invalid job field 'volumes.0': must be a string, not list"),
        ("resources: {max_memory: *i}", "invalid job field 'resources.max_memory': must be an integer, not list"),
    ],
)
def test_a_billion_laughs_is_refused_in_a_short_message(tmp_path: Path, where: str, message: str):
    path = tmp_path / "wf.yaml"
    path.write_text(laughs(where))
    assert len(path.read_bytes()) < 1000
    with pytest.raises(ValidationError) as caught:
        load(path)
    assert message in str(caught.value) and len(str(caught.value)) < 200, str(caught.value)[:300]


LONG = "n" * 100_000  # a plain key is at most 1024 characters: a longer one is written `? KEY`


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"jobs:\n  ? {LONG}\n  : {{command: echo, args: [[x]]}}\n", "job 'nnnnnnnnnn"),
        (f"jobs:\n  a:\n    command: echo\n    ? {LONG}\n    : 1\n", "unknown field(s) nnnnnnnnnn"),
        ("jobs:\n  a: {command: echo, 1: x, 2.5: y, zz: z}\n", "unknown field(s) 1, 2.5, zz"),
        ("jobs:\n  a: {command: echo, netwrok: x}\n", "unknown field(s) netwrok (did you mean 'network'?)"),
        # limits as --json and the Python API name them: they go under resources (usability run)
        ("jobs:\n  a: {command: echo, limits: {max_memory: 1}}\n", "limits (did you mean 'resources'? a job's"),
        ("jobs:\n  a: {command: echo, max_pids: 5}\n", "max_pids (did you mean 'resources: {max_pids: ...}'?)"),
        ("jobs:\n  a: {command: echo, requires: [{b: DONE}]}\n", "for 'b' (one of RUNNING, COMPLETED, FAILED, STOPPED"),
        (f"? {LONG}\n: 1\njobs:\n  a: {{command: echo}}\n", "unknown top-level field(s) nnnnnnnnnn"),
        (f"jobs:\n  a:\n    command: echo\n    resources:\n      ? {LONG}\n      : 1\n", "field 'resources.nnnnnnn"),
        (f"jobs:\n  a:\n    command: echo\n    env:\n      ? {LONG}\n      : yes\n", "env nnnnnnnnnn"),
        (f"jobs:\n  a: {{command: echo {LONG}}}\n", "command: echo, args: ['nnnnnnnnnn"),
        (f"jobs:\n  a: {{command: echo, uploads: {{files: [{LONG}]}}}}\n", "upload 'nnnnnnnnnn"),
        (f"jobs:\n  a:\n    command: echo\n    requires:\n      ? {LONG}\n      : DONE\n", "'DONE' for 'nnnnnnn"),
        (f"jobs:\n  a: {{command: echo, requires: [{{b: {LONG}}}]}}\n", "unknown status 'nnnnnnnnnn"),
        (f"jobs:\n  ? {LONG}\n  : {{command: echo}}\n  ? {LONG}\n  : {{command: echo}}\n", "duplicate key 'nnnnn"),
    ],
)
def test_an_error_cuts_a_long_name_or_value_short(tmp_path: Path, text: str, message: str):
    """A key or a value of 100,000 characters is shown by its start: an error is one short line
    (an unknown field that is a number was a TypeError out of sorted())."""
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError) as caught:
        load(path)
    assert message in str(caught.value) and len(str(caught.value)) < 300, str(caught.value)[:400]


def test_a_number_of_thousands_of_digits_is_its_text(tmp_path: Path):
    """int() refuses more than 4,300 digits: the load died with a ValueError traceback."""
    path = tmp_path / "wf.yaml"
    digits = "1" * 5000
    path.write_text(f"jobs:\n  a:\n    command: echo\n    args: [{digits}, 42]\n")
    assert load(path).jobs["a"].spec.args == (digits, "42")  # the control: 42 is read as ever
    path.write_text(f"jobs:\n  a:\n    command: echo\n    timeout: {digits}\n")
    with pytest.raises(ValidationError, match="timeout"):
        load(path)


@pytest.mark.parametrize(
    "value",
    ["[" * 5000 + "x" + "]" * 5000, "{a: " * 5000 + "x" + "}" * 5000],
    ids=["lists", "mappings"],
)
def test_yaml_nested_past_the_recursion_limit_is_one_line_and_exit_2(tmp_path: Path, monkeypatch, value: str):
    """PyYAML composes nested lists by recursion: `args: [[[...]]]` 500 deep raised RecursionError,
    a 3,000-line traceback and exit 1 (300 deep was the clean "not text" error)."""
    from click.testing import CliRunner

    from joblet.cli import main

    path = tmp_path / "deep.yaml"
    path.write_text(f"jobs:\n  a:\n    command: echo\n    args: {value}\n")
    with pytest.raises(ValidationError, match="is nested too deeply"):
        load(path)
    monkeypatch.setattr(main.Ctx, "client", property(lambda self: None))  # refused before Redis
    out = CliRunner().invoke(main.cli, ["workflow", "run", str(path)])
    assert out.exit_code == 2 and out.output.splitlines() == [
        f"rnx: workflow {path} is nested too deeply (lists or mappings inside each other)"
    ]
    shallow = tmp_path / "shallow.yaml"  # the control: 100 deep loads, and its field refuses it
    shallow.write_text("jobs:\n  a:\n    command: echo\n    args: " + "[" * 100 + "x" + "]" * 100 + "\n")
    with pytest.raises(ValidationError, match="is not text or a number"):
        load(shallow)


@pytest.mark.parametrize("stem", ["long wf", "-flag", "x" * 65, "esc\x1b]0;t\x07", "line\nbreak", ".hidden"])
def test_a_workflow_is_named_by_its_file_and_the_name_is_checked(tmp_path, stem):
    """`long wf.yaml` ran as workflow "long wf" (two words to the shell's completion), and
    names with control characters or a leading '-' were taken as they came (usability review)."""
    path = tmp_path / f"{stem}.yaml"
    path.write_text("jobs:\n  a: {command: echo}\n")
    with pytest.raises(ValidationError, match=r"its name is its file's, .*\(rename the file\)$"):
        load(path)
    fine = tmp_path / "build-2.v1_x.yaml"
    fine.write_text("jobs:\n  a: {command: echo}\n")
    assert load(fine).name == "build-2.v1_x"  # the control


def test_a_missing_prerequisite_line_says_what_to_do_with_a_guess():
    from joblet.api.client_workflows import missing

    assert missing("networks", ["app1", "zz"], {"app", "bridge"}, "rnx network create") == (
        "Missing networks: app1, zz (did you mean 'app'? rnx network create)"
    )
    assert missing("volumes", ["db-data"], set(), "rnx volume create") == "Missing volumes: db-data (rnx volume create)"


def test_a_directory_given_as_the_workflow_is_named_as_one(tmp_path):
    """`rnx workflow run .` was refused for its name, '' (usability run)."""
    with pytest.raises(ValidationError, match=r"is a directory: give the workflow's YAML file$"):
        load(tmp_path)
    (tmp_path / "wf.yaml").write_text("jobs:\n  a: {command: echo}\n")
    assert load(tmp_path / "wf.yaml").name == "wf"  # the control


def test_every_missing_upload_is_named_at_once(tmp_path: Path):
    """The guide's workflow without its files: each run named one missing upload, so a few
    services took as many runs to put right (usability run). All of them, by job, in one line."""
    (tmp_path / "requirements.txt").write_text("flask\n")  # the control: a file that is there
    path = tmp_path / "wf.yaml"
    path.write_text(
        "jobs:\n"
        "  api: {command: python3, uploads: {files: [api.py, requirements.txt]}}\n"
        "  web: {command: java, uploads: {files: [web.jar, app.properties]}}\n"
        "  db: {command: 'true'}\n"
    )
    wf = load(path)  # read: a ❌ line of the check beside the others (it was refused before them: usability run)
    assert wf.missing_uploads == f"{tmp_path.resolve()}: job 'api': 'api.py'; job 'web': 'web.jar', 'app.properties'"
    assert set(wf.jobs) == {"api", "web", "db"} and wf.jobs["api"].spec.command == "python3"
    from joblet.api.client_workflows import Workflows

    with pytest.raises(ValidationError, match="missing uploads in"):  # submitted, checked or not: refused
        Workflows(None, None, None, None, None).submit(wf, checked=True)  # type: ignore[arg-type]
    for name in ("api.py", "web.jar", "app.properties"):
        (tmp_path / name).write_text("x")
    assert load(path).missing_uploads == ""  # the control


def test_a_jobs_timeout_takes_units_as_rnx_run_does(tmp_path: Path):
    path = tmp_path / "wf.yaml"
    path.write_text("jobs:\n  a: {command: 'true', timeout: 5m}\n  b: {command: 'true', timeout: 90}\n")
    jobs = load(path).jobs
    assert (jobs["a"].spec.timeout, jobs["b"].spec.timeout) == (300.0, 90.0)
    path.write_text("jobs:\n  a: {command: 'true', timeout: soon}\n")
    with pytest.raises(ValidationError, match="invalid duration 'soon'"):
        load(path)


def resources(path: Path, written: str) -> dict[str, int]:
    """The limits of a job whose `resources:` is `written`, those set."""
    path.write_text(f"jobs:\n  a:\n    command: 'true'\n    resources: {written}\n")
    return {k: v for k, v in load(path).jobs["a"].spec.limits.to_dict().items() if v is not None}


@pytest.mark.parametrize(
    ("written", "limits"),
    [
        ("{max_memory: 1G, max_cpu: '50%', max_disk: 2G, max_iobps: 10M}", (1024, 50, 2048, 10 << 20)),
        ("{max_memory: 1.5g, max_cpu: 200 %, max_disk: 512MB, max_iobps: 1MiB}", (1536, 200, 512, 1 << 20)),
        ("{max_memory: 512, max_cpu: 50, max_disk: 64, max_iobps: 10485760}", (512, 50, 64, 10485760)),  # as before
        ("{max_memory: '512', max_cpu: 50.0, max_disk: '64', max_iobps: 4096}", (512, 50, 64, 4096)),  # as before
    ],
)
def test_resources_take_the_units_rnx_run_takes(tmp_path: Path, written: str, limits: tuple[int, ...]):
    """`max_memory: 1G`, `max_cpu: "50%"`, `max_disk: 2G` and `max_iobps: 10M` were "must be
    an integer" where `rnx run --max-memory=1G ...` took them (usability run)."""
    fields = ("max_memory", "max_cpu", "max_disk", "max_iobps")
    assert resources(tmp_path / "wf.yaml", written) == dict(zip(fields, limits, strict=True))


@pytest.mark.parametrize(
    ("field", "bad"),
    [("max_memory", "1X"), ("max_memory", "512K"), ("max_cpu", "1G"), ("max_iobps", "fast"), ("max_disk", "2.5k")],
)
def test_a_bad_resource_is_refused_in_rnx_runs_words(tmp_path: Path, field: str, bad: str):
    """One parser (limits.Amount) for both: a bad value gets the words `rnx run` gives it,
    naming the file's field; the same field with a unit is taken (the control)."""
    import click

    from joblet.cli.run import BYTES, MEGABYTES, PERCENT

    option = {"max_cpu": PERCENT, "max_memory": MEGABYTES, "max_iobps": BYTES, "max_disk": MEGABYTES}[field]
    with pytest.raises(click.BadParameter) as said:
        option.convert(bad, None, None)
    with pytest.raises(ValidationError) as refused:
        resources(tmp_path / "wf.yaml", f"{{{field}: '{bad}'}}")
    where = f"workflow wf.yaml: job 'a': invalid job field 'resources.{field}'"
    assert str(refused.value) == f"{where}: {said.value.message}"
    good = {"max_cpu": "50%", "max_memory": "1G", "max_iobps": "10M", "max_disk": "2G"}[field]
    assert resources(tmp_path / "wf.yaml", f"{{{field}: '{good}'}}") == {field: option.convert(good, None, None)}


def test_a_resource_with_a_unit_keeps_its_bounds(tmp_path: Path):
    """Read in the limit's unit, then bounded as a number is: `1M` of memory is below 4 MB."""
    with pytest.raises(ValidationError, match="'resources.max_memory': must be at least 4 MB$"):
        resources(tmp_path / "wf.yaml", "{max_memory: 1M}")
    assert resources(tmp_path / "wf.yaml", "{max_memory: 4M}") == {"max_memory": 4}  # the control


@pytest.mark.parametrize(
    ("job", "refused", "control", "taken"),
    [
        (
            "{command: echo, args: [yes, no, on]}",
            "argument 1 in 'args'",
            "{command: echo, args: ['yes', 'no', 'on']}",
            ("echo", ("yes", "no", "on")),
        ),
        (
            "{command: echo, args: [x, off]}",
            "argument 2 in 'args'",
            "{command: echo, args: [x, 'off']}",
            ("echo", ("x", "off")),
        ),
        ("{command: true}", "'command'", "{command: 'true'}", ("true", ())),
        ("{command: yes, args: [y]}", "'command'", "{command: 'yes', args: [y]}", ("yes", ("y",))),
    ],
)
def test_a_boolean_in_command_or_args_says_yaml_read_it_so(tmp_path: Path, job, refused, control, taken):
    """`args: [yes, no, on]` said "argument True in 'args' is not text" (the user wrote yes)
    and `command: true` "'command' must be text", with no hint: both say what `env` says.
    The control: quoted, the word is taken as written."""
    path = tmp_path / "wf.yaml"
    path.write_text(f"jobs:\n  a: {job}\n")
    with pytest.raises(ValidationError) as caught:
        load(path)
    hint = "YAML reads the value as a boolean (yes, no, on, off, true...): quote it"
    assert str(caught.value) == f"workflow wf.yaml: job 'a': {refused}: {hint}"
    path.write_text(f"jobs:\n  a: {control}\n")
    spec = load(path).jobs["a"].spec
    assert (spec.command, spec.args) == taken
