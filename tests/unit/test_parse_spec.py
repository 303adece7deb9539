"""The worker's entry for untrusted specs: every spec it cannot take becomes a one-line error
(the job is then refused FAILED), never an exception out of the task."""

from __future__ import annotations

import pytest

from joblet.api.models import JobSpec
from joblet.worker.tasks import PLACEHOLDER, parse_spec


def test_a_good_spec_is_taken():
    spec, error = parse_spec({"spec": {"command": "true", "args": ["-x"]}}, 1 << 20)
    assert error is None and spec.command == "true" and spec.args == ("-x",)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"spec": {"command": "true", "timeout": 10**400}}, "invalid job field 'timeout'"),
        ({"spec": {"command": "true"}, "extra": 1}, "invalid job field 'extra': not a message field"),
        ({"spec": ["true"]}, "invalid job field 'job': must be a mapping"),
    ],
)
def test_a_bad_spec_is_a_one_line_error(fields, says):
    spec, error = parse_spec(fields, 1 << 20)
    assert spec is PLACEHOLDER and error is not None and error.startswith(says) and "\n" not in error


def test_a_bug_in_a_check_is_a_refusal_not_an_exception(monkeypatch):
    def broken(data):
        raise TypeError("a check's bug")

    monkeypatch.setattr(JobSpec, "from_dict", staticmethod(broken))
    spec, error = parse_spec({"spec": {"command": "true"}}, 1 << 20)
    assert spec is PLACEHOLDER and error == "invalid job: its spec could not be checked (TypeError)"
