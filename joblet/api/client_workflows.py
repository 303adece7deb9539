"""`Client().workflows`: check, submit, list, inspect and stop workflows."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from joblet.api import workflow_store as wfs
from joblet.api.message import new_job_id
from joblet.api.models import JobRecord, JobStatus
from joblet.api.workflows import Workflow, graph_problems
from joblet.errors import NotFound, ValidationError

if TYPE_CHECKING:
    from joblet.api.client import Client


class Workflows:
    """Workflow operations of a Client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def check(self, wf: Workflow) -> list[tuple[bool, str]]:
        """The prerequisites, as (ok, line) in the order the CLI prints them."""
        c = self.client
        known = {n["name"] for n in c.networks.list()}
        missing_nets = sorted(wf.networks() - known)
        have_vols = {v.name for v in c.volumes.store.all()}
        missing_vols = sorted(wf.volumes() - have_vols)
        offered = {r["name"] for r in c.runtimes()}
        missing_rts = sorted(wf.runtimes() - offered)
        graph = graph_problems(wf)
        return [
            (not missing_nets, "All required networks exist" if not missing_nets
             else f"Missing networks: {', '.join(missing_nets)}"),
            (not missing_vols, "All required volumes exist" if not missing_vols
             else f"Missing volumes: {', '.join(missing_vols)}"),
            (not missing_rts, "All required runtimes are available" if not missing_rts
             else f"Missing runtimes: {', '.join(missing_rts)}"),
            (not graph, "Job dependencies are valid" if not graph else "; ".join(graph)),
        ]

    def submit(self, wf: Workflow) -> wfs.WorkflowRecord:
        """Record every job (PENDING), then queue those with nothing to wait for."""
        failed = [line for ok, line in self.check(wf) if not ok]
        if failed:
            raise ValidationError(f"workflow {wf.name}: " + "; ".join(failed))
        store, cfg = self.client.store, self.client.settings
        wf_id = uuid.uuid4().hex
        jobs = {}
        for name, job in wf.jobs.items():
            self.client._check_size(job.spec)
            self.client._check_networks(job.spec)
            spec = self.client._check_resources(job.spec)
            self.client.check_fleet(spec.node)
            jobs[name] = (new_job_id(), spec, job.requires)
        record = wfs.new_record(wf_id, wf.name, jobs)
        wfs.save(store, record, cfg.log_ttl)
        for name, (job_id, spec, _) in jobs.items():
            store.create_job(JobRecord(id=job_id, status=JobStatus.PENDING, spec=spec, name=name,
                                       created=record.created, workflow=wf_id))
        wfs.advance(store, cfg, wf_id)
        return record

    def list(self) -> list[dict[str, Any]]:
        out = []
        for wf_id in wfs.all_ids(self.client.store):
            try:
                out.append(self.status(wf_id))
            except NotFound:
                continue  # expired
        return out

    def status(self, wf_id: str) -> dict[str, Any]:
        store = self.client.store
        wf = wfs.get(store, wf_id)
        recs = wfs.records(store, wf)
        states = [r.status for r in recs.values()]
        if all(s.final for s in states):
            overall = "COMPLETED" if all(s == JobStatus.COMPLETED for s in states) else "FAILED"
        else:
            overall = "RUNNING" if any(s != JobStatus.PENDING for s in states) else "PENDING"
        return {"id": wf.id, "name": wf.name, "status": overall, "jobs": [
            {"name": n, "id": r.id, "status": r.status.value, "node": r.node, "ip": r.ip,
             "requires": {d: s.value for d, s in wf.requires[n].items()}, "error": r.error}
            for n, r in recs.items()]}

    def stop(self, wf_id: str) -> list[str]:
        store, cfg = self.client.store, self.client.settings
        wf = wfs.get(store, wf_id)
        touched = wfs.stop(store, cfg, wf.id)
        wfs.advance(store, cfg, wf.id)
        return touched
