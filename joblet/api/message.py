"""The run-job message contract shared by client and worker (pure).

Celery signs only a message's body, never its headers, so the client puts the job id, a
random nonce and an expiry time into the task's keyword arguments (the body). The worker:

- accepts only ids of joblet's own shape (32 lowercase hex digits, `uuid4().hex`), checked
  before any path, cgroup or key is built from one;
- refuses a message whose header id differs from the id in its body;
- refuses an expired message, and (in `joblet.worker.tasks`) one whose nonce was claimed
  before, with a claim that outlives the expiry;
- refuses (in `joblet.worker.tasks`) a message of another installation: the body names the
  sender's key prefix, and a worker of another prefix that took it from a queue both share
  ran the job under its own keys while its sender saw it PENDING for good.

With signing on, all three stamps are required; without it they are checked when present,
so messages of older clients (header id only) still run.
"""

from __future__ import annotations

import math
import re
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from joblet.fields import number

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
NONCE_RE = re.compile(r"^[0-9a-f]{16,64}\Z")
STAMPS = ("job_id", "nonce", "expires", "prefix")
PREFIX_MAX = 200  # characters of a key prefix a message may name
MAX_MESSAGE_TTL = 30 * 86400  # an expiry further away than this is refused
CLOCK_SKEW = 300  # seconds of clock difference between hosts the nonce claim allows for


class Refused(Exception):
    """The message is dropped; `reason` is a short counter name, the text says why."""

    def __init__(self, reason: str, detail: str, job_id: str | None = None, prefix: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.job_id = job_id  # set only when the id is joblet's and, if signed, authentic
        self.prefix = prefix  # the sender's key prefix, where the job is another installation's


@dataclass(frozen=True)
class TaskMessage:
    """A run-job message whose id and stamps passed the checks."""

    job_id: str
    nonce: str | None
    expires: float | None
    fields: dict[str, Any] = field(default_factory=dict)  # the rest: {"spec": ...} or spec fields
    prefix: str | None = None  # the sender's key prefix (None from clients before 2026-11-30)


def new_job_id() -> str:
    return uuid.uuid4().hex


def is_job_id(value: Any) -> bool:
    return isinstance(value, str) and JOB_ID_RE.match(value) is not None


def stamp(job_id: str, ttl: float, now: float, prefix: str | None = None) -> dict[str, Any]:
    """The body fields that bind a message to its job, once, until `now + ttl`, and to the
    installation (key prefix) that sent it."""
    found = {"job_id": job_id, "nonce": secrets.token_hex(16), "expires": now + ttl}
    return found if prefix is None else {**found, "prefix": prefix}


def nonce_ttl(expires: float, now: float) -> int:
    """Seconds a nonce claim must live: past the expiry, with room for clock skew."""
    return max(1, math.ceil(expires - now)) + CLOCK_SKEW


def check(header_id: Any, args: Any, kwargs: Any, signed: bool, now: float) -> TaskMessage:
    """The message's job id and stamps, or Refused naming what is wrong."""
    if not is_job_id(header_id):
        raise Refused("bad-id", f"task id {str(header_id)[:80]!r} is not a joblet job id (32 lowercase hex digits)")
    if args or not isinstance(kwargs, dict):
        raise Refused("bad-body", f"message for job {header_id}: joblet sends keyword arguments only")
    fields = {k: v for k, v in kwargs.items() if k not in STAMPS}
    body_id, nonce, expires, prefix = (kwargs.get(k) for k in STAMPS)
    if prefix is not None and not (isinstance(prefix, str) and len(prefix) <= PREFIX_MAX):
        raise Refused("bad-body", f"message for job {header_id}: prefix is not a key prefix")
    if signed and (body_id is None or nonce is None or expires is None):
        raise Refused("unstamped", f"signed message for job {header_id} lacks job_id, nonce or expires")
    if (nonce is None) != (expires is None):
        raise Refused("unstamped", f"message for job {header_id} has only one of nonce and expires")
    if body_id is not None and body_id != header_id:
        raise Refused(
            "id-mismatch", f"message header id {header_id} differs from its body's job_id {str(body_id)[:80]!r}"
        )
    if nonce is not None and not (isinstance(nonce, str) and NONCE_RE.match(nonce)):
        raise Refused("bad-nonce", f"message for job {header_id}: nonce is not 16-64 hex digits")
    if expires is not None:
        _check_expiry(header_id, expires, now)
    return TaskMessage(header_id, nonce, expires, fields, prefix)


def _check_expiry(job_id: str, expires: Any, now: float) -> None:
    try:  # a number, not its text, a bool, NaN, infinite or beyond a float (JSON's 10**400)
        number(expires if isinstance(expires, int | float) else None)
    except ValueError:
        raise Refused("bad-expiry", f"message for job {job_id}: expires is not a number") from None
    if expires > now + MAX_MESSAGE_TTL + CLOCK_SKEW:
        raise Refused(
            "bad-expiry", f"message for job {job_id}: expires more than {MAX_MESSAGE_TTL // 86400} days ahead"
        )
    if now > expires:
        raise Refused("expired", f"message for job {job_id} expired {now - expires:.0f} s ago", job_id=job_id)
