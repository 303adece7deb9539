"""`Client().workflows`: check, submit, list, inspect and stop workflows."""

from __future__ import annotations

import builtins
import contextlib
import logging
import uuid
from typing import Any

from joblet.api import workflow_store as wfs
from joblet.api.client_networks import Networks
from joblet.api.message import new_job_id
from joblet.api.models import JobRecord, JobStatus
from joblet.api.networks import BUILTINS
from joblet.api.nodes import DRAINING, UP, constrained, incapable
from joblet.api.preflight import Preflight, fleet_view, runtimes
from joblet.api.store import Store
from joblet.api.volumes import VolumeStore
from joblet.api.workflows import Workflow, graph_problems, in_file, job_where, too_many
from joblet.config import Settings
from joblet.errors import NotFound, ValidationError
from joblet.text import did_you_mean

log = logging.getLogger(__name__)


def unplaceable(wf: Workflow, nodes: builtins.list[dict[str, Any]]) -> builtins.list[str]:
    """The jobs that no node of the fleet (its pinned one, if any) could ever take, as rnx run
    refuses them (host networking, --max-cpu, the ceilings), and those queued at submit that no
    node can take now (each draining or down), each with every node's reason; checked up
    front: placed one by one as they become free, they were FAILED or refused late."""
    out = []
    live = any(n["state"] in (UP, DRAINING) for n in nodes)
    for name, job in wf.jobs.items():
        if not live and not constrained(job.spec):
            continue  # as rnx run: it waits on the shared queue for any node (the fleet restarts, grows)
        pool = [n for n in nodes if job.spec.node in (None, n["name"])]
        # a job queued at once is judged as rnx run judges it now, less load: every node of
        # its pool draining or down failed it at once, its hint saying to submit it again
        now = not job.requires
        reasons = [
            (n["name"], incapable(job.spec, n, in_resources) or (n["state"] if now and n["state"] != UP else None))
            for n in pool
        ]
        if pool and all(why is not None for _, why in reasons):
            out.append(f"{name} ({', '.join(f'{node}: {why}' for node, why in reasons)})")
    return out


def missing(kind: str, names: list[str], known: set[str], hint: str) -> str:
    """`Missing networks: app1 (did you mean 'app'? rnx network create)`: a ❌ line with what to do."""
    guesses = [g for g in (did_you_mean(n, known) for n in names) if g]
    return f"Missing {kind}: {', '.join(names)} ({' '.join([*guesses, hint])})"


def in_resources(field: str) -> str:
    """A limit as a workflow file names it: max_cpu -> resources.max_cpu."""
    return f"resources.{field}"


MISSING = "MISSING"  # the status shown of a workflow's job whose record is gone
GONE = "its record is gone: the workflow's submit was cut short before writing it"
CREATE_CHUNK = 64  # job records written per round trip at a submit (each may carry 24 MiB of uploads)


class Workflows:
    """Workflow operations of a Client."""

    def __init__(
        self, settings: Settings, store: Store, preflight: Preflight, networks: Networks, volumes: VolumeStore
    ) -> None:
        self.settings = settings
        self.store = store
        self.preflight = preflight
        self.networks = networks
        self.volumes = volumes

    def check(self, wf: Workflow) -> list[tuple[bool, str]]:
        """The prerequisites, as (ok, line) in the order the CLI prints them."""
        # the names alone: list() counts every kept job's networks (8 s at 21,500 records)
        known = {*BUILTINS, *self.networks.store.names()}
        missing_nets = sorted(wf.networks() - known)
        have_vols = {v.name for v in self.volumes.all()}
        missing_vols = sorted(wf.volumes() - have_vols)
        offered = {r["name"] for r in runtimes(self.store.live_nodes())}
        missing_rts = sorted(wf.runtimes() - offered)
        nodes = fleet_view(self.store, self.settings)
        missing_nodes = sorted(wf.nodes() - {n["name"] for n in nodes})  # a typo: it would wait PENDING for good
        misfits = unplaceable(wf, nodes)
        graph = graph_problems(wf)
        limit = self.settings.workflow_max_jobs
        size = [(False, too_many(len(wf.jobs), limit))] if len(wf.jobs) > limit else []
        fits = (not misfits, "Every job fits a node" if not misfits else f"Jobs no node can run: {'; '.join(misfits)}")
        # volumes, runtimes and pinned nodes are checked where some job names one: a ✅ line for
        # what no job uses said nothing (usability run)
        used = [
            (
                wf.volumes(),
                not missing_vols,
                "All required volumes exist"
                if not missing_vols
                else missing("volumes", missing_vols, have_vols, "rnx volume create"),
            ),
            (
                wf.runtimes(),
                not missing_rts,
                "All required runtimes are available"
                if not missing_rts
                else missing("runtimes", missing_rts, offered, "rnx runtime list"),
            ),
            (
                wf.nodes(),
                not missing_nodes,
                "All pinned nodes are in the fleet"
                if not missing_nodes
                else f"No such nodes: {', '.join(missing_nodes)} (rnx nodes)",
            ),
        ]
        uploads = any(j.spec.uploads for j in wf.jobs.values()) or wf.missing_uploads
        absent = wf.missing_uploads
        files = (False, f"Missing uploads in {absent}") if absent else (True, "All upload files exist")
        return [
            *size,
            (
                not missing_nets,
                "All required networks exist"
                if not missing_nets
                else missing("networks", missing_nets, known, "rnx network create"),
            ),
            *([files] if uploads else []),  # after the networks' line, the guide's first
            *((ok, line) for names, ok, line in used if names),
            # not ✅ beside a pinned node that is not there (its jobs were not looked at: usability run)
            *([] if missing_nodes and not misfits else [fits]),
            (not graph, "Job dependencies are valid" if not graph else "; ".join(graph)),
        ]

    def submit(self, wf: Workflow, checked: bool = False) -> wfs.WorkflowRecord:
        """Record every job (PENDING), then queue those with nothing to wait for. `checked`:
        the caller has just run check() and found nothing wrong (`rnx workflow run` prints
        its lines first: it read the networks, volumes and nodes twice); each job's spec is
        checked again below all the same."""
        failed = [f"missing uploads in {wf.missing_uploads}"] if wf.missing_uploads else []  # checked or not
        failed = failed or ([] if checked else [line for ok, line in self.check(wf) if not ok])
        if failed:
            raise ValidationError(f"workflow {wf.name}: " + "; ".join(failed))
        store, cfg = self.store, self.settings
        wf_id = uuid.uuid4().hex
        jobs = {}
        for name, job in wf.jobs.items():
            try:
                spec = self.preflight.check(job.spec)
            except ValidationError as exc:  # which of a thousand jobs it was, by the file's own fields
                raise in_file(job_where(wf.name, name), exc) from None
            jobs[name] = (new_job_id(), spec, job.requires)
        record = wfs.new_record(wf_id, wf.name, jobs, (n for n, job in wf.jobs.items() if job.service))
        made = [
            JobRecord(id=job_id, status=JobStatus.PENDING, spec=spec, name=name, created=record.created, workflow=wf_id)
            for name, (job_id, spec, _) in jobs.items()
        ]
        try:
            wfs.save(store, record, cfg.log_ttl)
            for first in range(0, len(made), CREATE_CHUNK):  # a round trip a chunk, not a job
                store.create_jobs(made[first : first + CREATE_CHUNK])
        except BaseException:  # Ctrl-C, Redis gone: the jobs written so far waited for good (review)
            with contextlib.suppress(Exception):  # Redis gone for good: `rnx workflow stop` then
                wfs.stop(store, cfg, wf_id)
            raise
        wfs.start(store, cfg, wf_id)  # stops the workflow itself where its first step fails
        return record

    def list(self) -> list[dict[str, Any]]:
        out = []
        for wf_id in wfs.all_ids(self.store):
            try:
                out.append(self.status(wf_id))
            except NotFound:
                continue  # expired
            except ValidationError as exc:  # written by other means: one hid every workflow (red-team run)
                log.warning("%s: left out", exc)
        return out

    def status(self, wf_id: str) -> dict[str, Any]:
        store = self.store
        wf = wfs.get(store, wf_id)
        recs = wfs.records(store, wf)
        return {
            "id": wf.id,
            "name": wf.name,
            "status": wfs.overall(recs, wf.services),
            "created": wf.created,
            "jobs": [
                {
                    "name": n,
                    "id": wf.jobs[n],
                    "status": r.status.value if r else MISSING,
                    "node": r and r.node,
                    "ip": r and r.ip,
                    "requires": {d: s.value for d, s in wf.requires[n].items()},
                    "exit_code": r and r.exit_code,
                    "error": r.error if r else GONE,
                    "started": r and r.started,
                    "finished": r and r.finished,
                }
                for n, r in recs.items()
            ],
        }

    def stop(self, wf_id: str) -> builtins.list[str]:
        store, cfg = self.store, self.settings
        wf = wfs.get(store, wf_id)
        touched = wfs.stop(store, cfg, wf.id)
        with contextlib.suppress(NotFound):  # a submit cut short, without some jobs: stop ended it
            wfs.advance(store, cfg, wf.id)
        return touched
