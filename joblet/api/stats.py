"""What `rnx stats` shows: each running job's latest resource sample, as its worker published
it (joblet/worker/stats.py), joined with the job's name, node and status."""

from __future__ import annotations

from typing import Any

from joblet.api.models import JobStatus, iso

FIELDS = ("cpu_percent", "memory", "memory_limit", "pids", "pids_limit", "disk_used", "disk_size", "net_in", "net_out")


def collect(client: Any, job_ids: list[str]) -> list[dict[str, Any]]:
    """One row per job: every running job with a sample, or exactly the jobs asked for."""
    store = client.store
    samples = store.stats(job_ids or None)
    ids = job_ids or list(samples)
    rows = []
    for job_id in ids:
        record = store.find_job(job_id)
        if record is None or (not job_ids and record.status != JobStatus.RUNNING):
            continue
        rows.append(row(job_id, record.name, record.node, record.status.value, samples.get(job_id)))
    return rows


def row(job_id: str, name: str | None, node: str | None, status: str, sample: dict[str, Any] | None) -> dict[str, Any]:
    """A job's row (pure); the sample's fields are None when there is none (job not running)."""
    sample = sample if status == JobStatus.RUNNING.value else None
    out: dict[str, Any] = {"id": job_id, "name": name, "node": node, "status": status}
    for field in FIELDS:
        out[field] = (sample or {}).get(field)
    out["sampled"] = iso((sample or {}).get("sampled"))
    return out
