"""The run-job message written straight onto a Redis broker's list, without Celery.

`rnx` spent ~70 ms importing Celery and building its app to send one message (PITFALLS 20).
What Celery 5 + kombu's Redis transport put on the queue is small and fixed: a JSON envelope
(protocol 2 headers, properties, a base64 body) LPUSHed onto the list named after the queue
(priority 0, the default exchange, routing key = queue). This module writes the same envelope,
field for field, and the worker's checks (`joblet.worker.envelope`, `joblet.api.message`)
accept it unchanged. With signing on, the body is Celery's `auth` serializer payload, made here
with `cryptography` the way `celery.security.serialization.SecureSerializer` makes it:
base64 of `b64(signer) SEP b64(signature) SEP content type SEP encoding SEP json`, an RSA-PSS
(MGF1 SHA-256, maximal salt) signature of the JSON bytes, the signer being the certificate's
issuer values and serial number. Tests check both against Celery's own deserializer.

Other brokers (amqp://) still go through Celery (`joblet.api.tasks`).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from functools import lru_cache
from typing import Any

from joblet.api.keys import RUN_TASK

JSON_TYPE = "application/json"
SIGNED_TYPE = "application/data"
SEP = b"\x00\x01"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
REPR_MAX = 1024  # Celery truncates argsrepr/kwargsrepr (informational headers) the same way
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+socket://")


def is_redis(url: str) -> bool:
    return url.startswith(REDIS_SCHEMES)


def redis_url(url: str) -> str:
    """kombu spells a unix socket `redis+socket://`, redis-py `unix://`."""
    return "unix://" + url[len("redis+socket://") :] if url.startswith("redis+socket://") else url


class Signer:
    """Signs a body as Celery's auth serializer does (RSA keys only, like Celery)."""

    def __init__(self, key_pem: bytes, cert_pem: bytes) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        key = serialization.load_pem_private_key(key_pem, password=None)
        cert = x509.load_pem_x509_certificate(cert_pem)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("only RSA signing keys are supported (as in Celery)")
        der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
            # every message would be refused as a bad signature (operator's run: a TypeError
            # in the worker's log, the job PENDING for good)
            raise ValueError("signing_key is not the key of signing_cert (its public key is another's)")
        self._key = key
        self._hash = hashes.SHA256()
        self._pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
        self.signer_id = signer_id(cert)

    def pack(self, body: bytes) -> str:
        signature = self._key.sign(body, self._pad, self._hash)
        fields = SEP.join(
            [base64.b64encode(self.signer_id.encode()), base64.b64encode(signature), JSON_TYPE.encode(), b"utf-8", body]
        )
        return base64.b64encode(fields).decode()


def signer_id(cert: Any) -> str:
    """What names a certificate in a signed message and in Celery's trust store: its
    issuer's values and its serial number."""
    issuer = " ".join(str(attr.value) for attr in cert.issuer)
    return f"{issuer} {cert.serial_number}"


def trusted_ids(pattern: str) -> list[str]:
    """The signer ids of the certificates a worker's signing_trust names (one a file, as
    Celery's store reads them); ValueError when it names none or a file is no certificate."""
    import glob

    from cryptography import x509

    paths = sorted(glob.glob(pattern))
    if not paths:
        # the worker started and refused every message, each job PENDING for good (operator's run)
        raise ValueError(f"signing_trust {pattern} names no file")
    ids = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                ids.append(signer_id(x509.load_pem_x509_certificate(fh.read())))
        except (OSError, ValueError) as exc:
            raise ValueError(f"signing_trust: {path} is not a PEM certificate ({exc})") from None
    return ids


@lru_cache(maxsize=4)
def signer(key_path: str, cert_path: str) -> Signer:
    with open(key_path, "rb") as key, open(cert_path, "rb") as cert:
        return Signer(key.read(), cert.read())


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_MAX else text[: REPR_MAX - 3] + "..."


def headers(job_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Celery's protocol 2 headers for one task call, as `send_task(..., ignore_result=True)`
    writes them."""
    return {
        "lang": "py",
        "task": RUN_TASK,
        "id": job_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": job_id,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": _short_repr(kwargs),
        "origin": f"gen{os.getpid()}@{socket.gethostname()}",
        # no Celery result is stored: joblet's clients read the job's own record and stream (a
        # result held the record and up to 1 MiB of stdout a job for log_ttl, read by nobody);
        # `run_job.delay()`, whose AsyncResult is read, goes through Celery and keeps its own
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }


def envelope(job_id: str, kwargs: dict[str, Any], queue: str, sign: Signer | None) -> bytes:
    """The queue entry kombu's Redis transport would LPUSH for this task call."""
    body = json.dumps([[], kwargs, EMBED]).encode()
    payload = sign.pack(body).encode() if sign is not None else body
    message = {
        "body": base64.b64encode(payload).decode(),
        "content-encoding": "utf-8",
        "content-type": SIGNED_TYPE if sign is not None else JSON_TYPE,
        "headers": headers(job_id, kwargs),
        "properties": {
            "correlation_id": job_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(message).encode()
