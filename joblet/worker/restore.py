"""Jobs running here that Redis forgot (it restarted without its data, as the quickstart's
does): written again on the heartbeat, so they can be seen and stopped, their addresses are
not handed out twice and their peers find them by name.

What this worker knows of such a job is written back: its record (RUNNING, this node, its
addresses; `created` and `started` are when it started here, its submission's time having gone
with Redis, which the record says in `error`) unless one exists by then (the job's own end
writes its record whole when Redis lost it: records.py), its name unless another job took it
meanwhile, its addresses unless another job took one meanwhile (both logged: the job keeps
running, a peer may then reach the other one), its place in its networks, and the definitions
of its user networks unless their names were taken meanwhile (logged): without them the network
was gone from `rnx network list` while the job ran on it, and a network made again under its
name with another CIDR (or another name with its CIDR) rebuilt the bridge under the job and cut
it off. Volumes' definitions are not restored (a volume's data stays on its hosts and a new
definition finds it: docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from joblet.api.models import JobRecord, JobStatus
from joblet.api.networks import overlap
from joblet.api.store import LUA_LIVE_HOLDER, encode_fields
from joblet.errors import JobletError
from joblet.worker.services import Services

log = logging.getLogger(__name__)

# KEYS: the job, the jobs index, its name's key, the index of jobs that have not ended.
# ARGV: the record's fields (JSON of JSON values), created, the id, the job key prefix, '1'
# if it has a name. Nothing if the record exists (the job's own end may have written it since
# the beat looked: not RUNNING over it); the name unless a job that has not ended holds it.
# Returns 0, 1 written, 2 with its name.
_RESTORE = (
    LUA_LIVE_HOLDER
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = cjson.decode(ARGV[1])
local named = 0
if ARGV[5] == '1' then
  local holder = live_holder(KEYS[3], ARGV[4])
  if holder and holder ~= ARGV[3] then fields['name'] = nil else redis.call('SET', KEYS[3], ARGV[3]); named = 1 end
end
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
return 1 + named
"""
)
RESTORED = "restored by its worker after Redis lost its record (created: when it started)"


def restore_forgotten(svc: Services, runs: list[Any]) -> list[str]:
    """Restore each of these running jobs (JobRun, its command started) whose record is
    gone; the ids restored."""
    started = [r for r in runs if r.sandbox is not None and r.sandbox.released and r.plan is not None]
    if not started:
        return []
    statuses = svc.store.statuses([r.job_id for r in started])
    done = []
    for run, status in zip(started, statuses, strict=True):
        if status is not None or run.stopped.is_set():
            continue
        try:
            _restore(svc, run)
        except JobletError as exc:  # the next beat tries again
            log.error("job %s: could not restore its record: %s", run.job_id[:12], exc)
            continue
        done.append(run.job_id)
        log.warning("job %s: Redis had lost its record; restored it", run.job_id[:12])
    return done


def _restore(svc: Services, run: Any) -> None:
    now, plan, spec = time.time(), run.plan, run.spec
    started = getattr(run, "started_at", None) or now  # its submission's time went with Redis
    record = JobRecord(
        id=run.job_id,
        status=JobStatus.RUNNING,
        spec=spec,
        name=spec.name,
        node=svc.cfg.node,
        ips=dict(plan.ips),
        created=started,
        started=started,
        workflow=run.scope or None,
        error=RESTORED,
    )
    _restore_networks(svc, run)  # first: a failure here leaves the record missing, so the next beat tries again
    keys = svc.store.keys
    written = svc.store.redis.register_script(_RESTORE)(
        keys=[keys.job(run.job_id), keys.jobs, keys.name(spec.name) if spec.name else keys.job(""), keys.live],
        # listed where it started, not at the restore (the index is by created time)
        args=[json.dumps(encode_fields(record.to_dict())), started, run.job_id, keys.job(""), "1" if spec.name else ""],
    )
    if not written:  # its own end (or another beat) wrote it first: not RUNNING over that
        return
    if spec.name and written != 2:
        log.error("job %s: its name %s went to another job meanwhile", run.job_id[:12], spec.name)
    for network, address in plan.reserved().items():
        other = svc.agent.ipam.hold(network, address, run.job_id)
        if other is not None:
            log.error("job %s: its %s address went to job %s meanwhile", run.job_id[:12], network, other[:12])
    names = [run.job_id[:12], *([spec.name] if spec.name and written == 2 else [])]
    svc.discovery.join(run.job_id, plan.ips, names, run.write_hosts, run.scope)
    svc.discovery.refresh(list(plan.ips))


def _restore_networks(svc: Services, run: Any) -> None:
    """The job's user networks' definitions as its worker knows them, where Redis has none;
    one made meanwhile under the name, or over the CIDR, is kept and logged."""
    store = svc.agent.networks
    for net in run.plan.networks:
        stored = store.restore(net)
        if stored is not None:
            if stored != net:
                log.error("network %s: defined again otherwise while job %s ran on it", net.name, run.job_id[:12])
            continue
        log.warning("network %s: Redis had lost its definition; restored it", net.name)
        hit = overlap(net.cidr, {f"network {n.name!r}": n.cidr for n in store.all() if n.name != net.name})
        if hit:
            log.error("network %s (%s) overlaps %s, defined while Redis had lost it", net.name, net.cidr, hit)
