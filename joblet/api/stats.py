"""What `rnx stats` shows: each running job's latest resource sample, as its worker published
it (joblet/worker/stats.py), joined with the job's name, node and status."""

from __future__ import annotations

import math
from typing import Any

from joblet.api.models import JobStatus, iso

FIELDS = ("cpu_percent", "memory", "memory_limit", "pids", "pids_limit", "disk_used", "disk_size", "net_in", "net_out")


def collect(client: Any, job_ids: list[str]) -> list[dict[str, Any]]:
    """One row per job: every running job, oldest first, or exactly the jobs asked for. A
    running job not sampled yet (up to a heartbeat after its start) has a row without figures:
    only sampled ones were listed, so a job just started, or one whose node is down, was
    missing while `rnx list` showed it RUNNING, and rows came in the order of Redis's keys."""
    store = client.store
    if job_ids:
        records = store.find_jobs(job_ids)
    else:
        records = client.list(status=JobStatus.RUNNING)
        job_ids = [r.id for r in records]
    samples = store.stats(job_ids)
    return [
        row(job_id, r.name, r.node, r.status.value, samples.get(job_id))
        for job_id, r in zip(job_ids, records, strict=True)
        if r is not None
    ]


def row(job_id: str, name: str | None, node: str | None, status: str, sample: dict[str, Any] | None) -> dict[str, Any]:
    """A job's row (pure); the sample's fields are None when there is none (job not running)."""
    sample = sample if status == JobStatus.RUNNING.value else None
    out: dict[str, Any] = {"id": job_id, "name": name, "node": node, "status": status}
    for field in FIELDS:
        out[field] = _number((sample or {}).get(field))
    out["sampled"] = iso(_number((sample or {}).get("sampled")))
    return out


def _number(value: Any) -> int | float | None:
    """A sample's figure, or None for one that is no number (a sample written by other
    means than a worker: "abc" failed every rnx stats with a traceback)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return value if number and math.isfinite(value) else None
