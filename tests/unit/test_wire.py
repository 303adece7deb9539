"""The hand-written run-job message is what Celery would send, and passes the worker's checks."""

from __future__ import annotations

import base64
import json
import time

import pytest

from joblet.api import wire
from joblet.api.keys import RUN_TASK
from joblet.api.message import check, stamp
from joblet.worker.envelope import JSON_TYPE, SIGNED_TYPE, Policy, problem
from tests.integration.certs import issue

JOB = "0123456789abcdef0123456789abcdef"
SPEC = {"command": "echo", "args": ["hi", "\x00\x01"], "network": ["none"]}


def kwargs() -> dict:
    return {"spec": SPEC, **stamp(JOB, 60, time.time())}


def test_headers_are_celerys_own():
    from celery import Celery

    app = Celery("t", set_as_current=False)
    kw = kwargs()
    theirs = app.amqp.as_task_v2(JOB, RUN_TASK, args=(), kwargs=kw, ignore_result=True).headers
    ours = wire.headers(JOB, kw)
    assert ours.keys() == theirs.keys()
    assert {k: v for k, v in ours.items() if k not in ("origin", "kwargsrepr")} == {
        k: v for k, v in theirs.items() if k not in ("origin", "kwargsrepr")
    }


def test_unsigned_envelope_passes_the_worker_checks():
    kw = kwargs()
    raw = json.loads(wire.envelope(JOB, kw, "joblet", None))
    assert problem(raw, Policy(RUN_TASK, JSON_TYPE, 1 << 20)) is None
    assert raw["properties"]["delivery_info"] == {"exchange": "", "routing_key": "joblet"}
    args, body_kwargs, _ = json.loads(base64.b64decode(raw["body"]))
    assert body_kwargs == kw
    assert check(raw["headers"]["id"], args, body_kwargs, signed=False, now=time.time()).fields == {"spec": SPEC}


def test_a_wrong_policy_refuses_it():  # positive control for the test above
    raw = json.loads(wire.envelope(JOB, kwargs(), "joblet", None))
    assert "content type" in (problem(raw, Policy(RUN_TASK, SIGNED_TYPE, 1 << 20)) or "")
    assert "task" in (problem(raw, Policy("other.task", JSON_TYPE, 1 << 20)) or "")


def test_signed_envelope_verifies_with_celerys_serializer(tmp_path):
    from celery.exceptions import SecurityError
    from celery.security.certificate import FSCertStore
    from celery.security.serialization import SecureSerializer

    (tmp_path / "trust").mkdir()
    key, cert = issue(tmp_path / "trust", "admin")
    rogue_key, rogue_cert = issue(tmp_path, "rogue")
    kw = kwargs()
    raw = json.loads(wire.envelope(JOB, kw, "joblet", wire.Signer(key.read_bytes(), cert.read_bytes())))
    assert problem(raw, Policy(RUN_TASK, SIGNED_TYPE, 1 << 20)) is None
    verifier = SecureSerializer(cert_store=FSCertStore(str(tmp_path / "trust" / "*.crt")), digest="sha256")
    assert verifier.deserialize(base64.b64decode(raw["body"])) == [[], kw, wire.EMBED]
    rogue = json.loads(wire.envelope(JOB, kw, "joblet", wire.Signer(rogue_key.read_bytes(), rogue_cert.read_bytes())))
    with pytest.raises(SecurityError):
        verifier.deserialize(base64.b64decode(rogue["body"]))
    packed = base64.b64decode(base64.b64decode(raw["body"]))
    tampered = base64.b64encode(packed.replace(b'"hi"', b'"ho"'))
    with pytest.raises(SecurityError):
        verifier.deserialize(tampered)


def test_redis_urls():
    assert wire.redis_url("redis+socket:///run/r.sock") == "unix:///run/r.sock"
    assert wire.is_redis("rediss://h:6380/0") and not wire.is_redis("amqp://guest@h//")


def test_a_placed_job_names_its_node_in_the_body():
    from joblet.api.tasks import run_message
    from joblet.config import load

    cfg = load(redis_url="unix:///nonexistent.sock", queue="joblet")
    bodies = {}
    for node in (None, "nodea"):
        queue, entry = run_message(cfg, JOB, dict(SPEC), node)
        bodies[node] = (queue, json.loads(base64.b64decode(json.loads(entry)["body"]))[1]["spec"])
    assert bodies[None] == ("joblet", SPEC)  # any worker of the shared queue
    assert bodies["nodea"] == ("joblet.host.nodea", {**SPEC, "node": "nodea"})  # the worker checks it


def test_a_key_that_is_not_its_certificates_is_refused_whatever_the_certificates_kind(tmp_path):
    """Every message of a mismatched pair was refused as a bad signature (the job PENDING for
    good); an Ed25519 certificate beside an RSA key was an AttributeError traceback (review)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    key, cert = issue(tmp_path, "mine")
    other_key, _ = issue(tmp_path, "other")
    assert wire.Signer(key.read_bytes(), cert.read_bytes()).signer_id  # the control: a pair
    with pytest.raises(ValueError, match="signing_key is not the key of signing_cert"):
        wire.Signer(other_key.read_bytes(), cert.read_bytes())
    edkey = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")])
    now = datetime.datetime.now(datetime.UTC)
    edcert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(edkey.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(edkey, None)
    )
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(ValueError, match="signing_key is not the key of signing_cert"):
        wire.Signer(key.read_bytes(), edcert.public_bytes(serialization.Encoding.PEM))
