"""A job record's fields as its Redis hash holds them (each value JSON), and back."""

from __future__ import annotations

import json
from typing import Any

from joblet.api.models import JobRecord, JobStatus
from joblet.errors import ValidationError
from joblet.fields import loaded


def encode_fields(fields: dict[str, Any]) -> dict[str, str]:
    """A record's fields as its hash holds them: each value JSON."""
    return {k: json.dumps(v.value if isinstance(v, JobStatus) else v) for k, v in fields.items()}


def decode_fields(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """A record's hash back to its fields."""
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def decoded(job_id: str, raw: dict[bytes, bytes]) -> dict[str, Any]:
    """A stored record's fields, or ValidationError naming one that is not JSON (written by
    other means: one hid every listing, and stopped a worker's start, red-team run)."""
    try:
        return decode_fields(raw)
    except (ValueError, RecursionError):
        bad = next((k for k, v in raw.items() if not _reads(v)), b"?").decode(errors="replace")
        raise ValidationError(f"the record of job {job_id} does not read: its field {bad[:64]!r} is not JSON") from None


def read_record(job_id: str, raw: dict[bytes, bytes]) -> JobRecord:
    """A stored record; one this version's checks refuse (an older version wrote it) says so."""
    fields = decoded(job_id, raw)
    try:
        return JobRecord.from_dict(fields)
    except ValidationError as exc:
        raise ValidationError(f"the record of job {job_id} does not read with this version: {exc}") from None


def _reads(value: bytes) -> bool:
    return value == b"null" or loaded(value) is not None


def stored_status(raw: bytes | None) -> JobStatus | None:
    """A record's stored status, or None where it is gone or does not read (written by other
    means: one failed every heartbeat's look for the jobs the fleet made LOST; red-team run)."""
    try:
        return JobStatus(loaded(raw))
    except ValueError:  # none, not JSON, or no status's name
        return None
