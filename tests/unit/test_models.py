"""Specs are validated before anything is queued; errors name the field."""

from __future__ import annotations

import dataclasses

import pytest

from joblet.api.client import make_spec
from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.uploads import Upload
from joblet.errors import ValidationError


def test_network_accepts_a_string_or_list():
    assert JobSpec(command="x", network="none").network == ("none",)
    assert JobSpec(command="x", network=["a", "b"]).network == ("a", "b")
    assert JobSpec(command="x").network == ("bridge",)


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"env": {"1X": "y"}}, "env"),
        ({"env": {"A": "x\x00y"}}, "env"),
        ({"name": "bad name"}, "name"),
        ({"network": "no/slash"}, "network"),
        ({"network": []}, "network"),
        ({"uploads": [{"path": "../etc/passwd"}]}, "uploads"),
        ({"uploads": [{"path": "/abs"}]}, "uploads"),
        ({"uploads": [{"path": "f", "content": "!!"}]}, "uploads"),
        ({"timeout": -1}, "timeout"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_fields_are_named(fields, field):
    with pytest.raises(ValidationError) as err:
        make_spec("echo", (), **fields)
    assert f"'{field}" in str(err.value)


def test_empty_or_nul_command():
    for cmd in ("", "  ", "a\x00b"):
        with pytest.raises(ValidationError, match="command"):
            make_spec(cmd)


def test_upload_path_is_normalised():
    assert Upload(path="a/./b/../c").path == "a/c"


def test_upload_content_with_padding_it_does_not_need_is_refused():
    """b64decode takes "YWJj=" (3 bytes): `size` counted 2, one byte past the limit unseen (review)."""
    assert Upload(path="a", content="YWJj").size == len(Upload(path="a", content="YWJj").data) == 3  # the control
    for content in ("YWJj=", "YWJj==", "YQ="):
        with pytest.raises(ValidationError, match="not valid base64"):
            Upload(path="a", content=content)


# A spec and a record as the pydantic models of earlier releases wrote them: the queue
# message and the stored record keep this shape, so old and new clients and workers mix.
SPEC_JSON = {
    "command": "echo",
    "args": ["a"],
    "env": {"A": "b"},
    "name": "web",
    "network": ["bridge"],
    "uploads": [{"path": "d/x.sh", "mode": 493, "content": "aGk="}],
    "node": None,
    "timeout": 2.0,
    "volumes": [],
    "runtime": None,
    "user": None,
    "limits": {
        "max_cpu": 50,
        "max_memory": None,
        "max_iobps": None,
        "max_bandwidth": 10000000,
        "max_bandwidth_in": None,
        "max_bandwidth_out": None,
        "max_pids": None,
        "max_disk": None,
        "max_output": None,
    },
}
RECORD_JSON = {
    "id": "a" * 32,
    "status": "RUNNING",
    # stored without its None fields, the limits' included
    "spec": {k: v for k, v in SPEC_JSON.items() if v is not None}
    | {"limits": {"max_cpu": 50, "max_bandwidth": 10000000}},
    "name": "web",
    "node": "n1",
    "ips": {"bridge": "172.20.0.2"},
    "created": 1.5,
    "output_truncated": False,
}


def test_the_spec_keeps_its_json_shape():
    spec = make_spec(
        "echo",
        ["a"],
        env={"A": "b"},
        name="web",
        timeout=2,
        limits={"max_bandwidth": "10mbit", "max_cpu": 50},
        uploads=[{"path": "d/x.sh", "content": "aGk=", "mode": 0o755}],
    )
    assert spec.to_dict() == SPEC_JSON
    assert JobSpec.from_dict(SPEC_JSON) == spec


def test_the_record_keeps_its_stored_shape_and_ignores_newer_fields():
    record = JobRecord.from_dict({**RECORD_JSON, "from_a_newer_worker": 1})
    assert record.status is JobStatus.RUNNING and record.spec.limits.max_cpu == 50
    assert record.to_dict() == RECORD_JSON


def test_types_are_strict_and_numbers_may_be_text():
    assert make_spec("x", limits={"max_cpu": "50"}, timeout="1.5").limits.max_cpu == 50
    for fields, field in [
        ({"timeout": True}, "'timeout'"),  # a bool is not a number
        ({"limits": {"max_cpu": True}}, "'limits.max_cpu'"),
        ({"limits": {"max_cpu": "lots"}}, "'limits.max_cpu'"),
        ({"name": 5}, "'name'"),  # a number is not a string
        ({"uploads": [{"path": "a", "mode": "rw"}]}, "'uploads.0.mode'"),
        ({"uploads": [{"content": ""}]}, "'uploads.0.path'"),
    ]:
        with pytest.raises(ValidationError, match=field):
            make_spec("x", **fields)
    with pytest.raises(ValidationError, match="invalid job field 'args.1': must be a string, not int"):
        make_spec("x", ["a", 1])
    with pytest.raises(ValidationError, match="invalid job field 'job': must be a mapping, not list"):
        JobSpec.from_dict(["x"])


def test_a_changed_spec_is_checked_again_and_specs_are_frozen():
    spec = make_spec("x")
    assert spec.replace(name="web").name == "web" and spec.name is None
    with pytest.raises(ValidationError, match="'name'"):
        spec.replace(name="bad name")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.command = "y"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timeout": 10**400}, "'timeout': is too large a number"),
        ({"limits": {"max_bandwidth": "1" + "0" * 400 + "kbit"}}, "'limits.max_bandwidth': invalid rate"),
        ({"limits": {"max_output": "1" + "0" * 400 + "M"}}, "'limits.max_output': invalid size"),
        # too long to read (the cap itself: tests/unit/test_limits_pure.py)
        ({"limits": {"max_bandwidth": "1" + " " * 100_000 + "x"}}, "'limits.max_bandwidth': invalid rate '1 "),
        ({"limits": {"max_cpu": "٥٠"}}, "'limits.max_cpu': must be an integer"),  # not ASCII digits
        ({"limits": {"max_memory": 1e300}}, "'limits.max_memory': must be an integer, not 1e+300"),
        ({"limits": {"max_cpu": "50.5"}}, "'limits.max_cpu': must be an integer"),
        ({"name": "x" * 100_000}, "'name': invalid job name 'xxx"),
        # found by a later review: infinity (JSON's Infinity too) and a name with a newline
        ({"timeout": float("inf")}, "'timeout': must be a finite number"),
        ({"timeout": "inf"}, "'timeout': invalid duration 'inf'"),
        ({"name": "web\n"}, "'name': invalid job name"),
        ({"env": {"A\n": "1"}}, "'env'"),
        ({"network": "n\n"}, "'network'"),
        ({"volumes": ["v\n"]}, "'volumes'"),
        ({"user": "1\n"}, "'user'"),
    ],
)
def test_hostile_values_are_refused_in_one_short_line(fields, field):
    """Found by review: a queue message's values must never raise anything but ValidationError."""
    with pytest.raises(ValidationError) as caught:
        JobSpec.from_dict({"command": "x", **fields})
    message = str(caught.value)
    assert f"invalid job field {field}" in message and "\n" not in message and len(message) < 300


def test_a_deeply_nested_value_is_refused():
    deep: list = []
    for _ in range(100_000):  # its repr in the message recursed too deep
        deep = [deep]
    with pytest.raises(ValidationError, match=r"^invalid job field 'network': invalid network name list$"):
        JobSpec.from_dict({"command": "x", "network": [deep]})


def test_whole_numbers_may_be_written_as_decimals():
    assert make_spec("x", limits={"max_cpu": "50.0", "max_pids": 64.0}).limits.max_pids == 64


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"created": "x"}, "'created': must be a number"),
        ({"ips": None}, "'ips': must be a mapping of strings, not null"),
        ({"exit_code": 1.5}, "'exit_code': must be an integer, not 1.5"),
        ({"output_truncated": "yes"}, "'output_truncated': must be true or false"),
        ({"id": None}, "'id': is required"),
    ],
)
def test_a_corrupt_stored_record_is_refused_on_read(fields, field):
    data = {**RECORD_JSON, **fields}
    data = {k: v for k, v in data.items() if v is not None or k != "id"}
    with pytest.raises(ValidationError, match=f"^invalid job field {field}"):
        JobRecord.from_dict(data)


def test_a_name_cannot_be_shaped_like_a_jobs_short_id():
    from joblet.api.models import make_spec
    from joblet.fields import FieldError

    with pytest.raises(FieldError, match="shape of a job's short id"):
        make_spec("true", (), name="3f50626394c6")
    assert make_spec("true", (), name="3f50626394c6x").name == "3f50626394c6x"  # 13 characters: a name
    assert make_spec("true", (), name="db-1").name == "db-1"


def test_a_new_jobs_name_cannot_be_a_longer_start_of_an_id_nor_its_networks_many():
    """`rnx stop <16 digits of an id>` found a job named so first and stopped that one; a job
    on 300 networks kept its worker making bridges for a minute (red-team run). Bounds on new
    specs (check_fresh): a record stored before them still reads."""
    from joblet.api.models import MAX_NETWORKS, check_fresh
    from joblet.fields import FieldError

    for name in ("3f50626394c6ab", "3F50626394C6AB12" * 2):
        with pytest.raises(FieldError, match="shape of a job id's start"):
            check_fresh(make_spec("true", (), name=name))
    check_fresh(make_spec("true", (), name="3f50626394c6x"))  # the control: not all hex digits
    assert JobRecord.from_dict({**RECORD_JSON, "spec": {"command": "true", "name": "3f50626394c6ab"}}).spec.name
    many = tuple(f"n{i}" for i in range(MAX_NETWORKS + 1))
    with pytest.raises(FieldError, match=f"17 networks, at most {MAX_NETWORKS}"):
        check_fresh(JobSpec(command="true", network=many))
    check_fresh(JobSpec(command="true", network=many[:MAX_NETWORKS]))


def test_a_name_cannot_be_the_loopbacks():
    """A job named localhost was listed beside its peers' own localhost line: with glibc's
    `multi on`, their `localhost` resolved to the job's address too (red-team run)."""
    from joblet.api.models import make_spec
    from joblet.fields import FieldError

    for name in ("localhost", "LocalHost", "ip6-localhost", "ip6-loopback", "localhost.localdomain"):
        with pytest.raises(FieldError, match="names the loopback in every job's /etc/hosts"):
            make_spec("true", (), name=name)
    assert make_spec("true", (), name="localhost-api").name == "localhost-api"  # the control


def test_bytes_that_are_not_utf8_pass_and_lone_surrogates_do_not():
    """rnx reads its argv with surrogate escapes (\\udc80-\\udcff stand for bytes): those pass to
    the job as bytes. Another lone surrogate (an escaped "\\ud800" in JSON or YAML) is no text
    and no bytes: it failed its job on the worker with an internal error."""
    spec = make_spec("cmd\udcff", ("a\udcfe",), env={"X": "v\udc80"})
    assert spec.command == "cmd\udcff" and spec.args == ("a\udcfe",) and spec.env["X"] == "v\udc80"
    for fields in ({"command": "cmd\ud800"}, {"args": ("\udfff",)}, {"env": {"X": "\ud83d"}}):
        kwargs = {"command": "true", **fields}
        with pytest.raises(ValidationError, match="a lone surrogate: not text, not bytes"):
            make_spec(kwargs.pop("command"), kwargs.pop("args", ()), **kwargs)


def test_a_value_cut_short_in_an_error_says_so():
    """A long name was cut to 40 characters with nothing to tell it was (usability review)."""
    from joblet.fields import brief

    assert brief("n" * 41) == repr("n" * 40) + "…"
    assert brief("n" * 40) == repr("n" * 40)  # the control: whole
    with pytest.raises(ValidationError, match="invalid job name 'n{40}'…"):
        make_spec("true", name="n" * 70 + "/")


def test_an_error_shows_bad_text_as_every_rnx_message_does():
    """`rnx run --name=$'\xff'` said `'\udcff'` and a newline `'a\nb'`, where `rnx status`
    says `\xff` and `\x0a` (usability run)."""
    from joblet.fields import brief

    assert brief("\udcff") == "'\\xff'" and brief("a\nb") == "'a\\x0ab'" and brief("x\x1b]0;t") == "'x\\x1b]0;t'"
    assert brief("web") == "'web'" and brief("é" * 41) == "'" + "é" * 40 + "'…"  # the control: plain text as it is


@pytest.mark.parametrize("raw", [b"notjson", b"[" * 100_000, b"\xff"])
def test_a_stored_record_whose_field_is_not_json_says_so_in_one_line(raw):
    from joblet.api.record_fields import read_record
    from joblet.errors import ValidationError

    fields = {b"id": b'"' + b"a" * 32 + b'"', b"status": raw, b"spec": b'{"command": "true"}'}
    with pytest.raises(
        ValidationError, match=r"^the record of job a{32} does not read: its field 'status' is not JSON$"
    ):
        read_record("a" * 32, fields)  # a ValidationError: listings leave it out, rnx status says this
