"""This worker's part in the fleet: what its heartbeat publishes, refusing jobs while its node
drains, and sweeping nodes that stopped beating.

A node silent for `node_down_after` is shown down (clients place nothing there); silent for
`node_down_after + node_lost_grace`, its unfinished jobs become LOST, their streams end (so
attached clients return), their network memberships and addresses are freed fleet-wide and
their workflows advance. Every live worker looks on each heartbeat; a `SET NX` on the node
and the time of its last beat lets one of them act per silence (the claim expires, so a
sweeper that dies half-way is replaced; the finished sweep is recorded). A node that comes
back reconciles as after any crash and cannot write over LOST (a job's record moves only
from PENDING/RUNNING).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from joblet.api.models import JobRecord, JobStatus
from joblet.api.nodes import when
from joblet.api.store import Store
from joblet.config import Settings
from joblet.errors import BackendUnavailable, JobletError
from joblet.worker.reconcile import free_orphan_addresses
from joblet.worker.services import Services

log = logging.getLogger(__name__)
# a sweeper that dies half-way is replaced after this long (the sweep repeats safely); 300 s
# held the rest of a lost node's jobs that long (fleet-failure run), where a sweep of a
# thousand jobs takes seconds
SWEEP_CLAIM_TTL = 60


def place(state_dir: Path, boot_id: str = "/proc/sys/kernel/random/boot_id") -> str:
    """Where this worker runs: its host's boot and its state_dir, published with every
    heartbeat. A worker restarted here finds its predecessor's heartbeat (alive for up to
    three intervals) from its own place; one from another place is another worker."""
    try:
        boot = Path(boot_id).read_text().strip()
    except OSError:  # a /proc without it (some sandboxes): the host's name stands in
        boot = socket.gethostname()
    return hashlib.sha256(f"{boot}\0{state_dir.resolve()}".encode()).hexdigest()[:16]


def refuse_taken_node(store: Store, node: str, here: str) -> None:
    """Refuse to start under a node name another worker beats with: the two took each
    other's jobs from the node's queue, and the one that died left its jobs RUNNING for good,
    the name kept alive by the other (red-team run; the name defaults to the hostname, which
    cloned VMs share). Redis out of reach: the first heartbeats tell."""
    try:
        beat = store.node_beat(node)
    except BackendUnavailable:
        return
    other = beat.get("place") if beat else None
    if beat is not None and other is not None and other != here:
        age = max(0.0, time.time() - float(beat.get("beat") or 0))
        raise JobletError(
            f"node {node!r} is up on another worker (its last heartbeat {age:.0f} s ago): give this one "
            "another name (--node, JOBLET_NODE), or stop that one and wait for its heartbeat to expire"
        )


def other_worker(node: str, replaced: dict[str, Any] | None, here: str, seen: set[str]) -> None:
    """Log, once per worker, another worker beating under this node's name (both started at
    once, or one whose Redis was out of reach at its start)."""
    other = replaced.get("place") if replaced else None
    if other is None or other == here or other in seen:
        return
    seen.add(other)
    log.error(
        "node %s: another worker beats under this name too: each takes the other's jobs, and "
        "jobs of one that stops stay RUNNING; give one of them another --node",
        node,
    )


def capabilities(svc: Services) -> dict[str, Any]:
    """What a node can run and where it is, published with every heartbeat."""
    from joblet.network_agent.host_addrs import host_addresses

    cfg = svc.cfg
    try:
        addresses = host_addresses(cfg.bridge_name)
    except Exception as exc:  # noqa: BLE001 - the heartbeat goes on without them
        log.warning("reading this host's addresses: %s", exc)
        addresses = []
    return {
        "version": _version(),
        "concurrency": cfg.concurrency,
        "stop_grace": cfg.stop_grace,  # what rnx stop tells and waits for
        "cpus": len(os.sched_getaffinity(0)),  # what --max-cpu can ask of this node
        "memory_ceiling": svc.jobs_memory_mb or None,  # MB, all its jobs together: what --max-memory can
        "disk_ceiling": cfg.job_disk_ceiling,  # what --max-disk and --max-pids can (placement)
        "pids_ceiling": cfg.job_pids_ceiling,
        "output_ceiling": cfg.output_max_bytes,  # what --max-output can
        "host_network": cfg.allow_host_network,
        "prefixed": True,  # reads the key prefix a message names (Store.prefix_stamp)
        "indexes_live": True,  # keeps the index of jobs that have not ended (store_index.py)
        "cgroup": "v2" if svc.cgroup_v2 else "v1+v2 (limits in v1)",
        "sandbox": {
            "bwrap": shutil.which("bwrap") is not None,
            "seccomp": True,
            "pid_namespace": True,
            "net_raw": cfg.job_net_raw,  # root jobs keep CAP_NET_RAW (raw and packet sockets)
            "user_namespace": False,
        },
        "addresses": addresses,
    }


def _version() -> str:
    try:
        return version("joblet")
    except PackageNotFoundError:
        return "unknown"


def draining_refusal(sup: Any) -> str | None:
    """The error a job gets when it reaches this node while the node drains, or None."""
    node = sup.cfg.node
    if not sup.nodes.is_drained(node):
        return None
    return (
        f"node {node!r} is draining and takes no new jobs; refused, not run (submit it again: "
        f"rnx places it on another node; or rnx node undrain {node})"
    )


def sweep_lost(sup: Any, now: float | None = None) -> list[str]:
    """Mark the jobs of nodes silent past the grace period LOST; returns the nodes swept.
    Silence counts from this node's own return at the earliest: after an outage of Redis
    itself every node's last beat was old, and the first node back swept every other node's
    running jobs LOST; whether another was silent while this one could not see is unknown."""
    cfg = sup.cfg
    now = time.time() if now is None else now
    present = sup.present_since
    if present is None:  # its own heartbeat has not gone through
        return []
    swept = []
    done = sup.nodes.swept()
    for name, record in sup.nodes.records().items():
        beat = float(record.get("beat", 0))
        silent = now - max(beat, present)
        if name == cfg.node or done.get(name) == beat or silent < cfg.node_down_after + cfg.node_lost_grace:
            continue
        if sup.nodes.claim_sweep(name, beat, ttl=SWEEP_CLAIM_TTL):
            lose_jobs(sup.svc, name, beat)
            sup.nodes.mark_swept(name, beat)
            swept.append(name)
    return swept


def lose_jobs(svc: Services, node: str, beat: float) -> list[str]:
    """Every unfinished job of `node` becomes LOST, but one that never reached its worker
    and could go elsewhere (`place_unstarted`); the names and addresses of the lost are
    freed. Found among every kept record, not the index of jobs that have not ended: one it
    has not got back yet (an older worker's claim) would run on, RUNNING for good
    (store_index.py)."""
    reason = f"node {node} stopped heartbeating at {when(beat)}"
    unfinished = svc.store.unfinished_on(node, indexed=False)
    moved = place_unstarted(svc.store, svc.cfg, node, unfinished)
    lost = [r for r in unfinished if r.id not in moved and svc.records.mark_lost(r.id, reason)]
    networks = sorted({n for r in lost for n in (*r.ips, *r.spec.network)})
    for rec in lost:
        svc.discovery.leave(rec.id, list(rec.ips))
        log.warning("job %s LOST: %s", rec.short_id, reason)
    if lost:
        try:
            free_orphan_addresses(svc)
            svc.discovery.refresh(networks)
        except JobletError as exc:
            log.error("after node %s was lost: %s", node, exc)
    return [r.id for r in lost]


def place_unstarted(store: Store, cfg: Settings, node: str, records: list[JobRecord]) -> set[str]:
    """The ids of `records` sent to another node: those queued on `node`, still PENDING, not
    claimed (no worker has taken them) and not pinned there. They waited in a dead node's
    queue and ended LOST, never having run, where a live node could take them (fleet run).
    The message left in that queue is refused if its worker comes back and the other node
    claimed the job first (the job's claim is one: whichever delivery claims first runs it).
    One for which placement picks `node` itself is left in its queue, PENDING: the node beat
    again while it was swept (cut off, then back), and its worker reads it (fleet-failure run:
    6 of a returning node's 26 queued jobs ended LOST, never having run)."""
    waiting = [r for r in records if r.status == JobStatus.PENDING and r.spec.node is None]
    holders = store.claim_holders([r.id for r in waiting])
    return {
        r.id
        for r, holder in zip(waiting, holders, strict=True)
        if holder is None and place_elsewhere(store, cfg, r, node, swept=True)
    }


def place_elsewhere(store: Store, cfg: Settings, record: JobRecord, node: str, swept: bool = False) -> str | None:
    """Send a PENDING job not pinned to a node to the node placement picks now, if it is
    not `node` (where it is queued and cannot run); the node, or None (nowhere else).

    Its user networks are held while it is placed, and where it goes is written under them:
    a lost node's queued jobs of one network, placed one by one, each read the network's home
    as the dead node (down: ignored) and went to nodes at random, where, with no overlay
    between them, they did not reach each other (fleet-failure run). With `swept` (a lost
    node's sweep): `node` itself when placement picks it (up again), the job left in its
    queue; and a job no node can take now (every live one full, say) that any node could run
    goes to the shared queue, as a workflow's next job does, to wait for a free slot (review:
    it ended LOST, never having run); that queue's name is returned.

    Sent, then named: named first, a sweeper that died (or a Redis that failed) before the
    send left the job PENDING for good, its record naming a node no message went to, where no
    sweep looks (review, fleet-failure run). Sent first, it still names `node`, whose sweep
    finds it again (the claim lets one delivery run it); a job that started or ended
    meanwhile is not renamed (its worker named it)."""
    from joblet.api.nodes import constrained
    from joblet.api.preflight import best_effort_target
    from joblet.api.store_homes import user_networks
    from joblet.api.tasks import send_run

    user = user_networks(record.spec.network)
    with store.holding_networks(user) if user else contextlib.nullcontext():  # as Client.submit holds them
        try:
            target = best_effort_target(store, cfg, record.spec)
        except JobletError:
            return None
        if swept and target == node:
            log.info("job %s queued on node %s, which is up again: left in its queue", record.short_id, node)
            return node
        if target == node or (target is None and (not swept or constrained(record.spec))):
            return None
        if user and target is not None:  # where it goes now: its network's next job goes there too
            store.mark_placed(record.id, record.spec.network, target)
        try:
            send_run(cfg, record.id, record.spec.to_dict(), target, store.prefix_stamp())
        except JobletError as exc:  # it still names `node`: LOST with the others, or swept again
            log.warning("job %s could not be sent to %s: %s", record.short_id, target or "the shared queue", exc)
            return None
    store.transition(record.id, [JobStatus.PENDING], node=target)
    log.info("job %s queued on node %s, which cannot run it: sent to %s", record.short_id, node, target or cfg.queue)
    return target or cfg.queue


def stop_lost_here(sup: Any, job_ids: list[str]) -> None:
    """Jobs still running here that the fleet has given up on (this node was silent too
    long): stop them, their records stay LOST."""
    for job_id, status in zip(job_ids, sup.store.statuses(job_ids), strict=True):
        if status == JobStatus.LOST:
            log.warning("job %s was marked LOST while this node was silent: stopping it", job_id[:12])
            sup.stop_local(job_id)
