"""After a crash: what a dead worker left on this host is removed, and its jobs become LOST
(those whose end it kept because Redis missed it get that end).

Three sweeps, each safe to repeat: the journal's entries (each job's cgroup, addresses,
network membership and files, as it recorded them before making them), then whatever the
kernel and disk still hold with joblet's names (job cgroups, jv/ji veths, job directories
and their mounts), then addresses anywhere in the fleet whose owner job has ended.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from joblet.errors import JobletError, ValidationError
from joblet.names import JOB_LINK, JOB_VETH_PREFIXES
from joblet.network_agent import links
from joblet.worker.cgroups import JobCgroup
from joblet.worker.journal import Entry
from joblet.worker.mounts import remove_dirs
from joblet.worker.services import Services
from joblet.worker.undo import UndoStack

log = logging.getLogger(__name__)
LOST = "the worker running it stopped unexpectedly"


def reconcile(svc: Services, running: set[str]) -> None:
    """Tear down what the journal lists and no live job here owns; mark such jobs LOST. Their
    networks' peers are told (as when the fleet marks a node's jobs LOST): a job's name
    stayed in the other jobs' /etc/hosts, for the next holder of its address (fleet run)."""
    left: set[str] = set()
    for entry in svc.journal.entries():
        if entry.job_id in running:
            continue
        problems = teardown_entry(svc, entry)
        left.update(entry.plan.ips if entry.plan is not None else ())
        said = f": {'; '.join(problems)}" if problems else ""
        try:
            record_end(svc, entry)
        except ValidationError as exc:  # its record does not read: its end is written where it could be, and
            # trying again reads the same (one such record stopped every start of the worker, red-team run)
            log.error("job %s: its record does not read, its entry forgotten: %s", entry.job_id[:12], exc)
            svc.journal.forget(entry.job_id)
            continue
        except JobletError as exc:  # kept, and the heartbeat tries again once Redis is back
            log.error("job %s: could not record its end (the heartbeat tries again): %s", entry.job_id[:12], exc)
            svc.records.finals.add(
                f"job {entry.job_id}", f"reconciled job {entry.job_id[:12]}'s end", lambda e=entry: record_end(svc, e)
            )
            continue
        log.warning("reconciled job %s%s", entry.job_id[:12], said)
    try:
        svc.discovery.refresh(sorted(left))
    except JobletError as exc:
        log.error("telling the peers of the reconciled jobs: %s", exc)
    scan_leftovers(svc)


def record_end(svc: Services, entry: Entry) -> None:
    """A reconciled job's end in Redis (the one it kept, else LOST), then its entry forgotten.
    Redis out of reach when a worker starts (a host's boot before Redis's): the entry waited
    for the worker's next start, weeks later, the job RUNNING meanwhile, its addresses and
    name held, its workflow waiting (review); the heartbeat retries it now (records.Finals)."""
    # it ended while Redis was gone: its own end, not LOST
    if entry.outcome is None or not svc.records.settle(entry.job_id, entry.outcome):
        svc.records.mark_lost(entry.job_id, LOST)
    svc.journal.forget(entry.job_id)


def teardown_entry(svc: Services, entry: Entry) -> list[str]:
    """The undo of a journaled job's whole setup, in the order a run would undo it."""
    undo = UndoStack()
    job_id, plan, cgroup = entry.job_id, entry.plan, JobCgroup(Path(entry.cgroup))
    dirs = [Path(d) for d in (entry.work_dir, entry.run_dir) if d]  # an older worker's (now never made)
    undo.push("remove files", lambda: remove_dirs(dirs))
    if plan is not None:
        undo.push("free addresses", lambda: svc.agent.free(job_id, plan.reserved()))
        undo.push("forget its flows", lambda: svc.agent.forget_flows(plan))  # a crashed worker's job's too
    undo.push("remove cgroup", cgroup.remove)
    if plan is not None:
        undo.push("tear down network", lambda: svc.agent.teardown(plan))
        undo.push("leave networks", lambda: svc.discovery.leave(job_id, list(plan.ips)))
    undo.push("stop processes", cgroup.kill)
    return undo.unwind()


def scan_leftovers(svc: Services) -> None:
    """At start nothing of ours runs here: remove what the kernel and disk still hold
    (job cgroups, job veths, job dirs) and free addresses whose owner has ended."""
    root = svc.cgroup_root
    for group in [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []:
        try:
            JobCgroup(group).remove()
            log.warning("removed leftover cgroup %s", group.name[:12])
        except JobletError as exc:
            log.error("leftover cgroup %s: %s", group, exc)
    for name in links.names_with_prefix(JOB_VETH_PREFIXES):
        if JOB_LINK.match(name):  # not one of ours otherwise: job links are jv/ji + 10 hex digits
            links.delete_link(name)
            log.warning("removed leftover interface %s", name)
    for base in (svc.cfg.run_dir / "jobs", svc.cfg.state_dir / "jobs"):
        # older workers' job directories; what they mounted there on the host is detached
        remove_dirs(list(base.iterdir()) if base.is_dir() else [])
    try:
        free_orphan_addresses(svc)
    except JobletError as exc:
        log.error("freeing addresses of ended jobs: %s", exc)


def free_orphan_addresses(svc: Services) -> None:
    """Release every address (fleet-wide) whose owner job has ended or is gone."""
    ipam = svc.agent.ipam
    for network in ["bridge", "isolated", *(n.name for n in svc.agent.networks.all())]:
        for address, owner in ipam.allocations(network).items():
            try:
                rec = svc.store.find_job(owner)
            except ValidationError as exc:  # its record does not read: the others are freed all the same
                log.warning("%s address %s: %s", network, address, exc)
                continue
            if rec is None or rec.status.final:
                ipam.release(network, address, owner)
                if network == "isolated":  # a slot of its pool: the job's end (0.0.0.5 was shown: review)
                    try:
                        shown: object = svc.agent.pool.job_end(address)
                    except ValueError:  # a slot of a larger pool, another node's (pools may differ)
                        shown = f"slot {address}"
                else:
                    shown = ipaddress.IPv4Address(address) if 0 <= address < 1 << 32 else address
                log.warning("freed %s address %s of ended job %s", network, shown, owner[:12])
