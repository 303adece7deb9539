"""Specs are validated before anything is queued; errors name the field."""

from __future__ import annotations

import pytest

from joblet.api.client import make_spec
from joblet.api.models import JobSpec, Upload
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
