"""Fuzzed input (hypothesis): every entry point either accepts a value or raises our own
ValidationError naming the field, in one line; never another exception."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from joblet.api.client import make_spec
from joblet.api.limits import parse_rate
from joblet.api.networks import check
from joblet.api.volumes import parse_size
from joblet.api.workflows import graph_problems, load
from joblet.errors import ValidationError

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)  # NUL, odd unicode included
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=12
)
FIELDS = [
    "args",
    "env",
    "name",
    "network",
    "uploads",
    "node",
    "timeout",
    "volumes",
    "runtime",
    "user",
    "limits",
    "bogus",
]


def one_line_naming_a_field(exc: ValidationError) -> bool:
    message = str(exc)
    return "\n" not in message.strip() and message.startswith("invalid job field '")


@settings(max_examples=400, deadline=None)
@given(command=text, fields=st.dictionaries(st.sampled_from(FIELDS), values, max_size=5))
def test_job_specs(command, fields):
    try:
        spec = make_spec(command, fields.pop("args", ()), **fields)
    except ValidationError as exc:
        assert one_line_naming_a_field(exc), str(exc)
        return
    assert spec.command.strip() and "\x00" not in spec.command


@settings(max_examples=300, deadline=None)
@given(
    limits=st.dictionaries(
        st.sampled_from(
            ["max_cpu", "max_memory", "max_iobps", "max_bandwidth", "max_bandwidth_in", "max_bandwidth_out"]
        ),
        st.one_of(st.integers(), text, st.floats()),
        max_size=4,
    )
)
def test_limits(limits):
    try:
        make_spec("true", limits=limits)
    except ValidationError as exc:
        assert "invalid job field 'limits" in str(exc) and "\n" not in str(exc)


@settings(max_examples=400, deadline=None)
@given(
    name=text,
    cidr=st.one_of(text, st.from_regex(r"\d{1,3}(\.\d{1,3}){3}/\d{1,2}", fullmatch=True)),
    dns=st.lists(text, max_size=3),
    mtu=st.one_of(st.none(), st.integers()),
)
def test_network_definitions(name, cidr, dns, mtu):
    try:
        normal = check(name, cidr, tuple(dns), mtu)
    except ValidationError as exc:
        assert str(exc).startswith(f'failed to create network "{name}"') and "\n" not in str(exc).replace(name, "")
        return
    assert normal.count("/") == 1


@given(value=text)
def test_rates_and_sizes(value):
    for parse in (parse_rate, parse_size):
        try:
            parse(value)
        except (ValueError, ValidationError) as exc:
            assert "\n" not in str(exc).replace(value, "")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(values, st.dictionaries(st.just("jobs"), st.dictionaries(text, values, max_size=3))))
def test_workflow_files(tmp_path: Path, doc):
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        wf = load(path)
    except ValidationError as exc:
        assert str(exc).startswith(("workflow", "cannot read workflow"))
        return
    graph_problems(wf)  # never raises


def test_a_field_named_after_a_key_with_a_quote_reads_like_the_others():
    """Found by test_job_specs: an env key holding ' made the message switch quote style."""
    with pytest.raises(ValidationError) as caught:
        make_spec("true", env={"'": 1})
    assert one_line_naming_a_field(caught.value) and str(caught.value).startswith("invalid job field 'env.\\''")
