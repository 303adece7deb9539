"""The control plane's pure checks: message ids and stamps, queue envelopes, spec sizes,
signing mismatches. Fast; the live-worker versions are in tests/integration."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from joblet.api.client import make_spec
from joblet.api.message import MAX_MESSAGE_TTL, Refused, check, is_job_id, nonce_ttl, stamp
from joblet.api.models import ARG_MAX_BYTES, ENV_MAX_BYTES
from joblet.api.tasks import signing_mismatch
from joblet.errors import ValidationError
from joblet.worker.envelope import JSON_TYPE, SIGNED_SEP, SIGNED_TYPE, Policy, problem

NOW = 1_800_000_000.0
JOB = uuid.uuid4().hex
POLICY = Policy("joblet.run_job", JSON_TYPE, 1 << 20)


def refusal(header_id, kwargs, signed=False, args=()):
    with pytest.raises(Refused) as caught:
        check(header_id, list(args), kwargs, signed, NOW)
    assert "\n" not in str(caught.value)
    return caught.value.reason


@pytest.mark.parametrize(
    "bad", ["../../../victim", JOB.upper(), JOB[:31], JOB + "0", ["x"], None, 5, str(uuid.UUID(JOB)), "/sys/fs/cgroup"]
)
def test_only_joblet_ids_are_accepted(bad):
    assert not is_job_id(bad)
    assert refusal(bad, {"spec": {}}) == "bad-id"


def test_a_stamped_message_is_accepted_and_its_stamps_removed():
    msg = check(JOB, [], {"spec": {"command": "x"}, **stamp(JOB, 60, NOW)}, True, NOW)
    assert msg.job_id == JOB and msg.fields == {"spec": {"command": "x"}} and msg.expires == NOW + 60


def test_a_message_names_its_senders_key_prefix():
    """A worker of another installation on a shared queue refuses it (joblet.worker.tasks)."""
    assert check(JOB, [], {"spec": {}, **stamp(JOB, 60, NOW, "a:")}, True, NOW).prefix == "a:"
    assert check(JOB, [], {"spec": {}, **stamp(JOB, 60, NOW)}, True, NOW).prefix is None  # older clients
    for bad in (["a:"], 5, "x" * 201):
        assert refusal(JOB, {"spec": {}, **stamp(JOB, 60, NOW), "prefix": bad}, signed=True) == "bad-body"


def test_header_id_must_match_the_body():
    other = uuid.uuid4().hex
    assert refusal(other, {"spec": {}, **stamp(JOB, 60, NOW)}, signed=True) == "id-mismatch"
    assert refusal(other, {"spec": {}, "job_id": JOB}) == "id-mismatch"  # unsigned too


def test_signed_messages_need_every_stamp_and_unsigned_ones_may_omit_them():
    assert refusal(JOB, {"spec": {}}, signed=True) == "unstamped"
    assert refusal(JOB, {"spec": {}, "job_id": JOB, "nonce": "ab" * 16}) == "unstamped"
    assert check(JOB, [], {"spec": {}}, False, NOW).nonce is None


def test_expiry_and_nonce():
    assert refusal(JOB, {"spec": {}, **stamp(JOB, -1, NOW)}, signed=True) == "expired"
    assert refusal(JOB, {"spec": {}, **stamp(JOB, MAX_MESSAGE_TTL + 3600, NOW)}) == "bad-expiry"
    for expires in ("soon", True, float("nan"), None):
        body = {**stamp(JOB, 60, NOW), "expires": expires}
        assert refusal(JOB, body, signed=True) in ("bad-expiry", "unstamped")
    assert refusal(JOB, {**stamp(JOB, 60, NOW), "nonce": ["x"]}) == "bad-nonce"
    assert nonce_ttl(NOW + 60, NOW) > 60  # the claim outlives the expiry


def test_positional_arguments_are_refused():
    assert refusal(JOB, {}, args=["x"]) == "bad-body"


@given(
    header=st.one_of(st.text(max_size=40), st.integers(), st.lists(st.text(), max_size=2)),
    kwargs=st.dictionaries(
        st.sampled_from(["job_id", "nonce", "expires", "spec", "x"]),
        st.one_of(st.none(), st.floats(), st.text(max_size=40), st.integers()),
        max_size=5,
    ),
    signed=st.booleans(),
)
def test_check_only_accepts_or_refuses(header, kwargs, signed):
    try:
        msg = check(header, [], kwargs, signed, NOW)
    except Refused as exc:
        assert exc.reason and "\n" not in str(exc)
    else:
        assert is_job_id(msg.job_id) and msg.job_id == header


def envelope(
    body=b'[[], {"spec": {}}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]',
    content_type=JSON_TYPE,
    **headers,
):
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": {
            "lang": "py",
            "task": "joblet.run_job",
            "id": JOB,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": JOB,
            "parent_id": None,
            "argsrepr": "()",
            "kwargsrepr": "{}",
            "origin": "x",
            "ignore_result": False,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
            **headers,
        },
        "properties": {
            "correlation_id": JOB,
            "reply_to": "r",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "q"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": "t",
        },
    }


def test_joblets_envelope_passes():
    assert problem(envelope(), POLICY) is None
    restored = envelope(redelivered=True)  # what kombu's restore of an unacked message adds
    restored["redelivered"] = True
    assert problem(restored, POLICY) is None


@pytest.mark.parametrize(
    "change",
    [
        {"id": ["x"]},
        {"id": "x\nERROR forged log line"},
        {"id": ""},
        {"task": ["x"]},
        {"task": "celery.backend_cleanup"},
        {"eta": 5},
        {"retries": "x"},
        {"timelimit": [1, 2, 3]},
        {"stamps": {"a": [1]}},
        {"callbacks": [{"task": "x"}]},
    ],
)
def test_headers_of_the_wrong_type_or_task_are_refused(change):
    assert problem(envelope(**change), POLICY)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200000 + b"]" * 200000,
        b"{not json",
        b"[1, 2]",
        b'[["x"], {}, {}]',
        b'[[], {}, {"callbacks": [{"task": "x"}]}]',
        b"\xff\xfe",
    ],
)
def test_bad_bodies_are_refused(body):
    assert problem(envelope(body), POLICY)


def test_content_types_follow_signing():
    assert problem(envelope(content_type="application/x-python-serialize"), POLICY)
    signed = Policy("joblet.run_job", SIGNED_TYPE, 1 << 20)
    assert problem(envelope(), signed)  # JSON to a signing worker
    inner = SIGNED_SEP.join([b"c2ln", b"c2ln", b"application/json", b"utf-8", b"[[], {}, null]"])
    assert problem(envelope(base64.b64encode(inner), content_type=SIGNED_TYPE), signed) is None
    pickled = inner.replace(b"application/json", b"application/x-python-serialize")
    assert problem(envelope(base64.b64encode(pickled), content_type=SIGNED_TYPE), signed)


junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(where=st.sampled_from(["headers", "properties", "top"]), key=st.text(max_size=12), value=junk)
def test_mutated_envelopes_never_raise(where, key, value):
    env = envelope()
    target = env if where == "top" else env[where]
    target[key] = value
    json.dumps(env)
    why = problem(env, POLICY)
    assert why is None or isinstance(why, str)


def test_spec_sizes_are_refused_naming_the_field():
    with pytest.raises(ValidationError, match="field 'args'"):
        make_spec("echo", ["x" * (ARG_MAX_BYTES + 1)])
    with pytest.raises(ValidationError, match="field 'args'"):
        make_spec("echo", ["x" * 1000] * 2000)
    with pytest.raises(ValidationError, match="field 'env'"):
        make_spec("echo", env={"A": "x" * ENV_MAX_BYTES})
    # one variable past execve's limit for one string: the job failed at its exec, exit 1 with
    # no word why (red-team run); an argument of 128 KiB did too (the limit counts its NUL)
    with pytest.raises(ValidationError, match=r"field 'env': A=\.\.\. is 131072 bytes, over the limit of 131071"):
        make_spec("echo", env={"A": "x" * (ARG_MAX_BYTES - 1)})
    with pytest.raises(ValidationError, match="an argument of 131072 bytes is over the limit of 131071"):
        make_spec("echo", ["x" * (128 << 10)])
    spec = make_spec("echo", ["x" * ARG_MAX_BYTES], env={"A": "x" * (ARG_MAX_BYTES - 2)})
    for argv, env in ((["true", *spec.args], {}), (["true"], dict(spec.env))):  # the kernel takes them
        assert subprocess.run(argv, env=env).returncode == 0


def test_signing_mismatch_names_the_workers():
    live = {"a": {"signed": True}, "b": {"signed": False}, "old": {}}
    assert "'a'" in (signing_mismatch(False, live, None) or "")
    assert "'b'" in (signing_mismatch(True, live, None) or "")
    assert signing_mismatch(False, live, "b") is None
    assert signing_mismatch(True, live, "old") is None and signing_mismatch(False, {}, None) is None


def test_a_message_names_the_prefix_unless_a_live_worker_would_refuse_the_field(monkeypatch):
    """Workers before 2026-11-30 refused a body field they did not know ('prefix'), failing
    the job: while one is live (a rolling upgrade, a workflow's next job sent by a new worker
    to an old one) messages name no prefix; a worker that reads it says `prefixed`."""
    from joblet.api import store as store_mod

    monkeypatch.setattr(store_mod, "connect", lambda url: SimpleNamespace(register_script=lambda script: None))
    fleets = {
        "all new": {"a": {"prefixed": True}, "b": {"prefixed": True}},
        "one old": {"a": {"prefixed": True}, "b": {}},
        "none live": {},  # a client whose prefix no worker has: the case the field is for
    }
    named = {}
    for case, live in fleets.items():
        store = store_mod.Store("redis://x", "inst:")
        reads = []
        monkeypatch.setattr(store, "live_nodes", lambda live=live, reads=reads: reads.append(1) or live)
        named[case] = (store.prefix_stamp(), len(reads))
    assert named == {"all new": ("inst:", 1), "one old": (None, 1), "none live": ("inst:", 1)}


def test_the_live_nodes_a_placement_just_read_decide_the_prefix_without_a_read(monkeypatch):
    from joblet.api import store as store_mod

    monkeypatch.setattr(store_mod, "connect", lambda url: SimpleNamespace(register_script=lambda script: None))
    store = store_mod.Store("redis://x", "inst:")
    store._live_seen = (store_mod.time.monotonic(), {"a": {}})  # as live_nodes() leaves it
    monkeypatch.setattr(store, "live_nodes", lambda: pytest.fail("read again"))
    assert store.prefix_stamp() is None
