"""Job records, stop flags, node heartbeats and output streams in Redis.

Every Redis call of the client and the worker goes through this module (IP allocation lives
beside it in `store_ipam`), so key names and error translation stay in one place.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from joblet.api.keys import END_FIELD, Keys
from joblet.api.message import is_job_id
from joblet.api.models import JobRecord, JobStatus
from joblet.api.record_fields import encode_fields, read_record, stored_status
from joblet.api.redis_conn import connect, translated
from joblet.api.store_homes import NetworkHomes, member_entry
from joblet.api.store_index import LUA_LIVE, PRUNE_SCRIPT, SWEEP_SCRIPT, JobIndexes
from joblet.api.store_nodes import node_record
from joblet.api.store_output import END_SCRIPT, LUA_EXPIRE_WITH, OutputStreams
from joblet.errors import AmbiguousId, BackendUnavailable, NotFound, ValidationError
from joblet.fields import loaded
from joblet.names import name_key
from joblet.text import shown

log = logging.getLogger(__name__)
SHORT_ID_LEN = 12  # `rnx list` shows ids this long; a name of that shape is refused (models.py)

# Lua functions of the job scripts here and in worker/claims.py (one definition each): the
# fields set only from an allowed status (-1: no record); a record written whole unless one
# exists, and indexed (the worker's claim).
LUA_SET_IF_STATUS = """
local function set_if_status(key, allowed, fields)
  local cur = redis.call('HGET', key, 'status')
  if not cur then return -1 end
  for _, s in ipairs(cjson.decode(allowed)) do
    if cjson.encode(s) == cur then
      for k, v in pairs(cjson.decode(fields)) do redis.call('HSET', key, k, v) end
      return 1
    end
  end
  return 0
end
"""
LUA_CREATE_IF_ABSENT = """
local function create_if_absent(key, index, fields, score, id)
  if redis.call('EXISTS', key) == 1 then return 0 end
  for k, v in pairs(cjson.decode(fields)) do redis.call('HSET', key, k, v) end
  redis.call('ZADD', index, score, id)
  return 1
end
"""
# Whether a job's keys wait for its workflow's end to expire (its record names a workflow):
# the workflow's later steps read the records of its ended jobs, however long it runs.
LUA_IN_WORKFLOW = """
local function in_workflow(key)
  local wf = redis.call('HGET', key, 'workflow')
  return wf ~= false and wf ~= 'null'
end
"""
# A job's name key (`names` .. its name in lower case), while it still names this job, expires
# with the job's other keys: one key per name ever given stayed for good (`--name=build-SHA`).
# A later job of the name sets it again, and the SET drops the expiry.
LUA_EXPIRE_NAME = """
local function expire_name(key, names, ttl)
  local name, id = redis.call('HGET', key, 'name'), redis.call('HGET', key, 'id')
  if not names or not name or not id then return end
  local ok, text = pcall(cjson.decode, name)
  local ok_id, job = pcall(cjson.decode, id)
  if not ok or not ok_id or type(text) ~= 'string' or type(job) ~= 'string' then return end
  local held = names .. string.lower(text)
  if redis.call('GET', held) == job then redis.call('EXPIRE', held, ttl) end
end
"""
# KEYS: the job, the index of jobs that have not ended. ARGV: the allowed statuses, the
# fields, the job's id when the fields end it (it leaves the index), else "".
_CAS_STATUS = (
    LUA_SET_IF_STATUS
    + """
local set = set_if_status(KEYS[1], ARGV[1], ARGV[2])
if set == 1 and ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
return set
"""
)
# A job name is unique among jobs that have not ended: the job its key names, if that one has
# not ended (else false); `prefix` is the job keys' (here and in worker/restore.py).
LUA_LIVE_HOLDER = (
    LUA_LIVE
    + """
local function live_holder(key, prefix)
  local holder = redis.call('GET', key)
  if holder and live(prefix .. holder) then return holder end
  return false
end
"""
)

# The name key names its holder, and the new job's record is written in the same step, so two
# racing submits cannot both win. KEYS: the name's key, the job, the jobs index, an older
# version's name key, the index of jobs that have not ended.
_CREATE_NAMED = (
    LUA_LIVE_HOLDER
    + """
for _, key in ipairs({KEYS[1], KEYS[4]}) do
  local holder = live_holder(key, ARGV[4])
  if holder == ARGV[3] then return false end  -- this very create, sent again (its reply lost)
  if holder then return holder end
end
redis.call('SET', KEYS[1], ARGV[3])
local fields = cjson.decode(ARGV[1])
for k, v in pairs(fields) do redis.call('HSET', KEYS[2], k, v) end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[3])
return false
"""
)

# A job no worker has started ends here: `status` if it is still `allowed`, its stream's end
# marker, out of the index of jobs that have not ended, its keys (job, log, claim, stop) and
# its name expiring, unless `with_workflow` and its workflow's end expires them (a stop, whose
# workflow advances; a failed send's job expires itself: nothing advances its workflow).
# KEYS: those four, the index.
LUA_END_UNSTARTED = (
    LUA_SET_IF_STATUS
    + LUA_IN_WORKFLOW
    + LUA_EXPIRE_NAME
    + """
local function end_unstarted(allowed, fields, end_field, summary, cap, ttl, id, names, with_workflow)
  local set = set_if_status(KEYS[1], allowed, fields)
  if set == 1 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', cap, '*', end_field, summary)
    redis.call('ZREM', KEYS[5], id)
    if not (with_workflow and in_workflow(KEYS[1])) then
      for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
      expire_name(KEYS[1], names, ttl)
    end
  end
  return set
end
"""
)

# KEYS: job, log, claim, stop, the index of jobs that have not ended. ARGV: the waiting
# statuses (JSON list), the STOPPED fields (JSON of JSON values), the end marker's field and
# summary, the stream's cap, the TTL, the stop channel, the job id, the name keys' prefix. The
# stop flag, its notice, and for a job no worker has taken yet STOPPED (out of the index)
# with its stream ended and every key expiring (unless its workflow's end expires
# them): three round trips before, and no key expired (the record had no TTL, and the end
# marker made the stream without one). The flag of a job that had ended goes with its
# record, or after the TTL when none is left. Returns 1 when it stopped the job.
_STOP = (
    LUA_END_UNSTARTED
    + LUA_EXPIRE_WITH
    + """
redis.call('SET', KEYS[4], '1')
redis.call('PUBLISH', ARGV[7], ARGV[8])
local set = end_unstarted(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[8], ARGV[9], true)
if set ~= 1 then expire_with(KEYS[1], KEYS[4], ARGV[6]) end
return set
"""
)

# A job that never ran and never will, in one step: FAILED if still waiting (the three round
# trips it took left a FAILED record without its TTL when cut short, and its name's key for
# good), its keys expiring even in a workflow, as before. KEYS: as LUA_END_UNSTARTED's. ARGV:
# allowed statuses, fields, end field, summary, cap, ttl, the job's id, the name keys' prefix.
_FAIL_WAITING = LUA_END_UNSTARTED + "return end_unstarted(unpack(ARGV))\n"

_url = translated(lambda self: self.url)
NODE_INDEX_KEEP = 3600  # seconds a silent node stays in the node index (its key says if it lives)


def resolve_names(entries: list[dict[str, Any]], scope: str = "", reserved: Iterable[str] = ()) -> dict[str, str]:
    """name -> address from member entries, for a job of `scope`. A job's first name (its
    id's first twelve digits) resolves everywhere, and so do the names of jobs outside any
    workflow (unique among running jobs); a workflow job's name ("db") only for the jobs of
    its own workflow, and before another job's of the same name: two runs of one workflow,
    or a workflow beside a job of that name, each find their own, and no workflow takes a
    name from the rest of the network. `reserved`: the names of the jobs of the workflow
    `scope` (running or not), which resolve only to its own: while its `db` had not started
    (or had ended), its jobs' `db` was an outside job of that name (red-team run). Names are
    lower case: /etc/hosts lookups ignore case, and `WEB` listed before `web` took its
    lookups (red-team run)."""
    found: dict[str, str] = {}
    own: dict[str, str] = {}
    ids: dict[str, str] = {}
    for entry in entries:
        names, ip, of = [name_key(str(n)) for n in entry["names"]], str(entry["ip"]), str(entry.get("scope") or "")
        ids.update(dict.fromkeys(names[:1], ip))
        if not of:
            found.update(dict.fromkeys(names[1:], ip))
        elif of == scope:
            own.update(dict.fromkeys(names[1:], ip))
    for name in map(name_key, reserved):
        found.pop(name, None)
    return {**found, **own, **ids}  # an id is the job's whatever another calls itself


def _jobs_of(raw: bytes | None) -> dict[Any, Any]:
    """A stored workflow record's jobs (name -> id); empty where it has none, or the record
    does not read (one written by other means failed every name's lookup)."""
    try:
        jobs = json.loads(raw).get("jobs") if raw else None
    except (ValueError, RecursionError, AttributeError):
        return {}
    return jobs if isinstance(jobs, dict) else {}


def _job_names(raw: bytes | None) -> set[str]:
    """The names of the jobs in a stored workflow record."""
    return {n for n in _jobs_of(raw) if isinstance(n, str)}


def _job_named(raw: bytes | None, wanted: str) -> str | None:
    """The id of the job named `wanted` in a stored workflow record; None where it has none."""
    found = next((i for n, i in _jobs_of(raw).items() if isinstance(n, str) and name_key(n) == wanted), None)
    return found if isinstance(found, str) else None


def _beat(raw: bytes | None) -> dict[str, Any] | None:
    return node_record(raw)[0]


WORKFLOW_NAMES_KEPT = 1024  # workflows whose job names members() keeps (then forgets them all)
PREFIX_SEEN = 5.0  # seconds a read of the live nodes decides whether messages name the prefix
WORKFLOW_CHUNK = 16  # workflow records the first round trip of a name's lookup reads (the newest)
LIVE_STATUSES = frozenset(s.value for s in JobStatus if not s.final)  # what a name prefers


class Store(OutputStreams, JobIndexes, NetworkHomes):
    """Redis-backed state of one installation (one key prefix); its jobs' output streams are
    in store_output.py, its job indexes in store_index.py, where each user network's jobs are
    in store_homes.py."""

    def __init__(self, url: str, prefix: str = "joblet:", client: Any = None) -> None:
        """`client`: a connection to share (another installation's keys on the same Redis)."""
        self.url = url
        self.keys = Keys(prefix)
        self.redis = client if client is not None else connect(url)
        self._cas = self.redis.register_script(_CAS_STATUS)
        self._create_named = self.redis.register_script(_CREATE_NAMED)
        self._stop = self.redis.register_script(_STOP)
        self._fail_waiting = self.redis.register_script(_FAIL_WAITING)
        self._end = self.redis.register_script(END_SCRIPT)
        self._prune_script = self.redis.register_script(PRUNE_SCRIPT)
        self._sweep_script = self.redis.register_script(SWEEP_SCRIPT)
        self.node_info: dict[str, Any] = {}  # a worker's extra heartbeat fields (e.g. "signed")
        self._live_seen: tuple[float | None, dict[str, dict[str, Any]]] = (None, {})  # every_worker_says
        self._workflow_names: dict[str, set[str]] = {}  # members(): each workflow's job names

    # -- jobs -------------------------------------------------------------------------------
    @_url
    def create_job(self, record: JobRecord, placed: bool = True, ttl: int | None = None) -> None:
        """`placed`: name its node under its user networks (store_homes.py: a fleet of more
        than one node, where placement reads them). `ttl`: its keys expire then, in the same
        step (a final record written again: a worker killed between two steps left it for good)."""
        fields = record.to_dict()
        pipe = self.redis.pipeline()
        pipe.hset(self.keys.job(record.id), mapping=encode_fields(fields))
        pipe.zadd(self.keys.jobs, {record.id: record.created or time.time()})
        if not record.status.final:
            pipe.zadd(self.keys.live, {record.id: record.created or time.time()})
        if placed:
            self._place(pipe, [record])
        if ttl is not None:
            for key in self._job_keys(record.id):
                pipe.expire(key, ttl)
        pipe.execute()

    def _job_keys(self, job_id: str) -> tuple[str, ...]:
        """What expire_job expires: a job's record, stream, claim and stop."""
        return (self.keys.job(job_id), self.keys.log(job_id), self.keys.claim(job_id), self.keys.stop(job_id))

    @_url
    def create_jobs(self, records: list[JobRecord], placed: bool = True) -> None:
        """Write many records in one round trip (`placed`: as create_job's)."""
        pipe = self.redis.pipeline(transaction=False)
        for record in records:
            pipe.hset(self.keys.job(record.id), mapping=encode_fields(record.to_dict()))
        pipe.zadd(self.keys.jobs, {r.id: r.created or time.time() for r in records})
        live = {r.id: r.created or time.time() for r in records if not r.status.final}
        if live:
            pipe.zadd(self.keys.live, live)
        if placed:
            self._place(pipe, records)
        pipe.execute()

    @_url
    def create_named_job(self, record: JobRecord, placed: bool = True) -> str | None:
        """Write a named job's record unless a job that has not ended holds its name; returns
        that holder's id, or None when the record was written (`placed`: as create_job's)."""
        assert record.name is not None
        fields, keys = encode_fields(record.to_dict()), self.keys
        older = keys.name(record.name, as_given=True)  # an older version's key for the name
        holder = self._create_named(
            keys=[keys.name(record.name), keys.job(record.id), keys.jobs, older, keys.live],
            args=[json.dumps(fields), record.created or time.time(), record.id, keys.job("")],
        )
        if holder:
            return holder.decode()
        if placed and record.node:
            self.mark_placed(record.id, record.spec.network, record.node)
        return None

    @_url
    def name_unless_held(self, name: str, job_id: str, ttl: int) -> None:
        """Give `name` to this job unless another job holds it: a final record written again
        whole (Redis lost it) is found by its name too, not over a job that took it since."""
        self.redis.set(self.keys.name(name), job_id, nx=True, ex=ttl)

    @_url
    def find_job(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hgetall(self.keys.job(job_id))
        return read_record(job_id, raw) if raw else None

    def get_job(self, job_id: str) -> JobRecord:
        record = self.find_job(job_id)
        if record is None:
            raise NotFound(f"no such job: {shown(job_id)}")
        return record

    def _newer_workflow_job(self, name: str, since: float) -> str | None:
        """The job called `name` in the newest workflow submitted after `since`, if one is kept:
        the latest job of a name, where a workflow's has no name key (`rnx run --name=build`,
        then a workflow with a `build` job: the workflow's is the latest). Workflows only since
        the named job, the newest first, in round trips of WORKFLOW_CHUNK, then four times as
        many each: a name key's lookup reads no more than the runs after it, no older ones
        than the newest with that job, and a few round trips where none has it."""
        wf_ids = self.redis.zrevrangebyscore(self.keys.workflows, "+inf", f"({since!r}")
        wanted = name_key(name)
        start, chunk = 0, WORKFLOW_CHUNK
        while start < len(wf_ids):
            pipe = self.redis.pipeline()
            for wf_id in wf_ids[start : start + chunk]:
                pipe.get(self.keys.workflow(wf_id.decode()))
            start, chunk = start + chunk, chunk * 4
            for raw in pipe.execute():
                job_id = _job_named(raw, wanted)
                if job_id and self.redis.zscore(self.keys.jobs, job_id) is not None:
                    return job_id
        return None

    def _live_among(self, job_ids: list[str]) -> list[str]:
        """Those of these jobs that have not ended, in their order (one round trip)."""
        if len(job_ids) < 2:
            return []  # one job: nothing to choose between
        pipe = self.redis.pipeline()
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "status")
        states = [json.loads(raw) if raw else None for raw in pipe.execute()]
        return [i for i, st in zip(job_ids, states, strict=True) if st in LIVE_STATUSES]

    def _names(self, job_ids: list[str]) -> list[str]:
        """Each job's name as a key (lower case; "" for none or a record gone), in one round
        trip of the name field alone: a short prefix reads every kept job's (resolve), and
        whole records carry their specs and uploads."""
        pipe = self.redis.pipeline()
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "name")
        return [name_key(str(json.loads(raw) or "")) if raw else "" for raw in pipe.execute()]

    @_url
    def find_jobs(self, job_ids: list[str]) -> list[JobRecord | None]:
        """Each job's record (None where it is gone), in one round trip."""
        hashes = self.record_hashes(job_ids)
        return [read_record(i, raw) if raw else None for i, raw in zip(job_ids, hashes, strict=True)]

    @_url
    def resolve(self, prefix: str) -> str:
        """The full id of the job `prefix` names, as Docker looks a container up: a whole id,
        else a name (the latest job given it, a workflow's job too; `rnx stop db`), else the
        one id it begins. A
        workflow job's name has no key of its own (two runs of a workflow each have a `db`):
        shorter than a short id, where a name may look like an id's start ("db", "a", "6c4d"),
        the records are read for it before the ids; `rnx stop db` stopped whichever job's id
        began with "db", or said two did (red-team run). A name cannot be a short id's shape."""
        if not prefix:
            raise ValidationError("no job id given: name a job by its id, short id or name")  # a usage error: exit 2
        if is_job_id(prefix) and self.redis.zscore(self.keys.jobs, prefix) is not None:
            return prefix  # a whole id: one lookup, not the index of every job kept (days of them)
        named = (self.redis.get(self.keys.name(prefix)) or b"").decode()
        since = self.redis.zscore(self.keys.jobs, named) if named else None
        if since is not None:
            newer = self._newer_workflow_job(prefix, since)
            return (self._live_among([newer, named]) or [newer or named])[0] if newer else named
        ids = [i.decode() for i in self.redis.zrange(self.keys.jobs, 0, -1)]
        if prefix in ids:
            return prefix
        matches: list[str] = [i for i in ids if i.startswith(prefix)]
        if not matches or len(prefix) < SHORT_ID_LEN:
            named_jobs = [i for i, name in zip(ids, self._names(ids), strict=True) if name == name_key(prefix)]
            # the latest that has not ended, else the latest: `rnx stop s1` took a stopped
            # workflow's s1 while another workflow's ran on (usability run)
            matches = (self._live_among(named_jobs) or named_jobs)[-1:] or matches
        if not matches:  # `rnx stop svc` of a workflow said only this (usability run)
            what = "name" if self.redis.hexists(self.keys.workflow_names, prefix) else None
            if what is None and len(prefix) >= 6:  # `rnx log <a workflow's id>` gave no hint, nor
                # its 12 characters, which `rnx workflow list` shows (usability runs)
                wf_ids = [i.decode() for i in self.redis.zrange(self.keys.workflows, 0, -1)]
                found = [i for i in wf_ids if i.startswith(prefix)]
                if len(found) == 1 and self.redis.exists(self.keys.workflow(found[0])):
                    what = "id"
            hint = f" (a workflow's {what}: rnx workflow status|stop {shown(prefix)})" if what else ""
            raise NotFound(f"no such job: {shown(prefix)}{hint}")
        if len(matches) > 1:
            raise AmbiguousId(f"job id prefix '{shown(prefix)}' matches {len(matches)} jobs; give more")
        return matches[0]

    @_url
    def list_jobs(self) -> list[JobRecord]:
        """Every kept job, oldest first."""
        ids = [i.decode() for i in self.redis.zrange(self.keys.jobs, 0, -1)]
        records, stale = self._records(ids)
        if stale:  # records expired after their TTL: drop them from the indexes too

            def drop() -> None:
                self.redis.zrem(self.keys.jobs, *stale)
                self._prune(stale)

            self._writing(drop)  # a read-only (viewer) user: a writer tidies up later
        return records

    @_url
    def transition(self, job_id: str, allowed: Iterable[JobStatus], **fields: Any) -> bool:
        """Set fields only if the job's status is one of `allowed` (atomic)."""
        status = fields.get("status")
        ends = status is not None and JobStatus(status).final
        result = self._cas(
            keys=[self.keys.job(job_id), self.keys.live],
            args=[json.dumps([s.value for s in allowed]), json.dumps(encode_fields(fields)), job_id if ends else ""],
        )
        return bool(result == 1)

    def mark_output_truncated(self, job_id: str) -> bool:
        """Record that the job's output passed its cap (only on an existing record)."""
        return self.transition(job_id, list(JobStatus), output_truncated=True)

    @_url
    def statuses(self, job_ids: list[str]) -> list[JobStatus | None]:
        """Each job's status (None where its record is gone, or its status does not read: one
        such record, written by other means than joblet, failed every heartbeat's look for the
        jobs the fleet made LOST; red-team run), in one round trip."""
        pipe = self.redis.pipeline()
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "status")
        return [stored_status(raw) for raw in pipe.execute()]

    @_url
    def job_exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.keys.job(job_id)))

    @_url
    def where_is(self, job_id: str) -> tuple[JobStatus | None, str | None]:
        """A job's status and node alone (one round trip of two fields, not its record: a spec
        with uploads is megabytes); (None, None) where its record is gone."""
        pipe = self.redis.pipeline()
        pipe.hget(self.keys.job(job_id), "status")
        pipe.hget(self.keys.job(job_id), "node")
        status, node = pipe.execute()
        if status is None:
            return None, None
        where = json.loads(node) if node else None
        return JobStatus(json.loads(status)), where if isinstance(where, str) else None

    @_url
    def fail_waiting(
        self, job_id: str, error: str, log_ttl: int, cap: int, waiting: Iterable[JobStatus] = (JobStatus.PENDING,)
    ) -> bool:
        """A job that never ran and never will: FAILED with `error` if it is still `waiting`,
        its stream ended and every key expiring after log_ttl, as a worker's end does (a bare
        status change left them for good). Whether it was. One script: three round trips
        left a FAILED record without its TTL when cut after the first, and its name's key
        never expired (review)."""
        keys = self.keys
        fields = {"status": JobStatus.FAILED, "error": error, "finished": time.time()}
        ended = self._fail_waiting(
            keys=[keys.job(job_id), keys.log(job_id), keys.claim(job_id), keys.stop(job_id), keys.live],
            args=[
                json.dumps([s.value for s in waiting]),
                json.dumps(encode_fields(fields)),
                END_FIELD,
                json.dumps({"status": "FAILED"}),
                cap,
                log_ttl,
                job_id,
                keys.name(""),
            ],
        )
        return bool(ended == 1)

    def expire_job(self, job_id: str, ttl: int) -> None:
        pipe = self.redis.pipeline()
        for key in self._job_keys(job_id):
            pipe.expire(key, ttl)
        pipe.execute()

    # -- claims and stops -------------------------------------------------------------------
    def claim_holder(self, job_id: str) -> str | None:
        """The node that claimed the job, if one did."""
        return self.claim_holders([job_id])[0]

    @_url
    def claim_holders(self, job_ids: list[str]) -> list[str | None]:
        """Each job's claim_holder, in one round trip."""
        found = self.redis.mget([self.keys.claim(j) for j in job_ids]) if job_ids else []
        return [None if h is None else h.decode() for h in found]

    @_url
    def claim_nonce(self, nonce: str, job_id: str, ttl: int) -> bool:
        """True for the first delivery of a message: its nonce was not seen in `ttl` seconds."""
        return bool(self.redis.set(self.keys.nonce(nonce), job_id, nx=True, ex=ttl))

    @_url
    def count_drop(self, node: str, reason: str) -> None:
        self.redis.hincrby(self.keys.dropped(node), reason, 1)

    @_url
    def dropped(self, node: str) -> dict[str, int]:
        """Messages this node's worker dropped, by reason."""
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self.keys.dropped(node)).items()}

    @_url
    def request_stop(self, job_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.set(self.keys.stop(job_id), "1")
        pipe.publish(self.keys.stop_channel, job_id)
        pipe.execute()

    @_url
    def stop_job(self, job_id: str, cap: int, ttl: int) -> bool:
        """request_stop; a job no worker has taken yet is STOPPED at once (True), its stream
        ended and its keys expiring after `ttl` (log_ttl; `cap`: log_max_entries)."""
        keys = self.keys
        fields = {"status": JobStatus.STOPPED, "finished": time.time(), "error": "stopped before it started"}
        ended = self._stop(
            keys=[keys.job(job_id), keys.log(job_id), keys.claim(job_id), keys.stop(job_id), keys.live],
            args=[
                json.dumps([JobStatus.PENDING.value]),
                json.dumps(encode_fields(fields)),
                END_FIELD,
                json.dumps({"status": "STOPPED"}),
                cap,
                ttl,
                keys.stop_channel,
                job_id,
                keys.name(""),
            ],
        )
        return bool(ended == 1)

    @_url
    def stops_among(self, job_ids: list[str]) -> list[str]:
        if not job_ids:
            return []
        flags = self.redis.mget([self.keys.stop(j) for j in job_ids])
        return [j for j, f in zip(job_ids, flags, strict=True) if f]

    @_url
    def subscribe(self) -> Any:
        """A pubsub on the stop channel and the events channel."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.keys.stop_channel, self.keys.events)
        return pubsub

    @_url
    def publish_event(self, kind: str, **data: Any) -> None:
        """Tell every worker: {"kind": "hosts", "networks": [...]} or {"kind": "network-deleted"}."""
        self.redis.publish(self.keys.events, json.dumps({"kind": kind, **data}))

    def announce(self, kind: str, **data: Any) -> None:
        """publish_event of what is done already (a network's or volume's delete): Redis gone
        then read as the delete's failure, which a retry answered "no such volume" (review);
        every worker's heartbeat sweep drops what the event would have."""
        try:
            self.publish_event(kind, **data)
        except BackendUnavailable as exc:
            log.warning("%s %s: done; the workers learn it at their next heartbeat (%s)", kind, data, exc)

    # -- discovery ----------------------------------------------------------------------------
    @_url
    def join_networks(
        self, job_id: str, ips: dict[str, str], names: list[str], node: str = "", scope: str = ""
    ) -> None:
        """List a running job under its names (and its node) in each of its networks' member
        hashes; `scope` (its workflow's id) limits its names but the first to its workflow."""
        entry = {"names": names, "node": node, **({"scope": scope} if scope else {})}
        pipe = self.redis.pipeline()
        for network, ip in ips.items():
            pipe.hset(self.keys.members(network), job_id, json.dumps({"ip": ip, **entry}))
            pipe.hdel(self.keys.placed(network), job_id)  # running now: its members entry says where
        pipe.execute()

    @_url
    def member_nodes(self, networks: list[str]) -> dict[str, dict[str, str]]:
        """{network: {job id: node}} of the running jobs in these networks (the overlay's view)."""
        pipe = self.redis.pipeline()
        for network in networks:
            pipe.hgetall(self.keys.members(network))
        found: dict[str, dict[str, str]] = {}
        for network, entries in zip(networks, pipe.execute(), strict=True):
            read = ((k.decode(errors="replace"), member_entry(v)) for k, v in entries.items())
            found[network] = {k: str(e.get("node") or "") for k, e in read if e is not None}
        return found

    @_url
    def leave_networks(self, job_id: str, networks: list[str]) -> None:
        pipe = self.redis.pipeline()
        for network in networks:
            pipe.hdel(self.keys.members(network), job_id)
            pipe.hdel(self.keys.placed(network), job_id)  # one that failed before it joined
        pipe.execute()

    @_url
    def members(self, networks: list[str], scope: str = "") -> dict[str, str]:
        """name -> address of the running jobs in these networks, as a job of `scope` (its
        workflow's id; "" for none) resolves them (`resolve_names`)."""
        pipe = self.redis.pipeline()
        for network in networks:
            pipe.hvals(self.keys.members(network))
        reserved = self._workflow_names.get(scope) if scope else set()
        if reserved is None:  # read once per workflow: its jobs are fixed when it is submitted
            pipe.get(self.keys.workflow(scope))
        answers = pipe.execute()
        if reserved is None:
            if len(self._workflow_names) >= WORKFLOW_NAMES_KEPT:
                self._workflow_names.clear()
            reserved = self._workflow_names[scope] = _job_names(answers.pop())
        entries = (member_entry(raw) for values in answers for raw in values)
        return resolve_names([e for e in entries if e is not None], scope, reserved)

    # -- nodes ------------------------------------------------------------------------------
    @_url
    def heartbeat(self, node: str, info: dict[str, Any], ttl: int) -> dict[str, Any] | None:
        """Presence (expires after `ttl`), the node's lasting record (`store_nodes`) and the
        live-node index; the live heartbeat this one replaced, if any."""
        now = time.time()
        text = json.dumps({**info, **self.node_info, "beat": now})
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.node(node))
        pipe.set(self.keys.node(node), text, ex=ttl)
        pipe.hset(self.keys.nodes, node, text)
        pipe.zadd(self.keys.node_index, {node: now + ttl})
        pipe.zremrangebyscore(self.keys.node_index, "-inf", now - NODE_INDEX_KEEP)
        return _beat(pipe.execute()[0])

    @_url
    def node_beat(self, node: str) -> dict[str, Any] | None:
        """The node's live heartbeat, if it has one."""
        return _beat(self.redis.get(self.keys.node(node)))

    @_url
    def live_nodes(self) -> dict[str, dict[str, Any]]:
        """node -> its latest heartbeat, for nodes whose heartbeat key has not expired.

        Read through the node index (two commands, whatever the size of the keyspace: a SCAN
        for `node:*` took 30 ms at 100,000 keys, twice per `rnx run`); a keyspace without an
        index (workers of an older joblet) is scanned as before."""
        names = [n.decode() for n in self.redis.zrange(self.keys.node_index, 0, -1)]
        if names:
            keys = [self.keys.node(n) for n in names]
        else:
            keys = [k.decode() for k in self.redis.scan_iter(match=self.keys.node_pattern, count=500)]
        values = self.redis.mget(keys) if keys else []
        prefix_len = len(self.keys.node(""))
        beats = ((k[prefix_len:], node_record(v)[0]) for k, v in zip(keys, values, strict=True) if v)
        live = {name: beat for name, beat in beats if beat is not None}  # one that does not read failed every submit
        self._live_seen = (time.monotonic(), live)
        return live

    def prefix_stamp(self) -> str | None:
        """The key prefix a run-job message names (a worker of another installation refuses it,
        joblet.worker.tasks), unless a live worker does not read the field: each that does says
        `prefixed` in its heartbeat (workers before 2026-11-30 refused the field, failing the
        job, during a rolling upgrade). With no live worker it is named: the case it is for is
        a client whose prefix no worker has (its JOBLET_QUEUE another installation's). A
        submit's placement has just read the live nodes."""
        return self.keys.prefix if self.every_worker_says("prefixed") else None

    def every_worker_says(self, field: str) -> bool:
        """Whether every live worker's heartbeat says `field` is true (what a newer version
        does: during a rolling upgrade an older one does not), from the live nodes this Store
        read in the last PREFIX_SEEN seconds, else read now. True with no live worker."""
        seen, live = self._live_seen
        if seen is None or time.monotonic() - seen > PREFIX_SEEN:
            live = self.live_nodes()
        return all(info.get(field) is True for info in live.values())

    @_url
    def drop_node(self, node: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.keys.node(node))
        pipe.zrem(self.keys.node_index, node)
        pipe.execute()

    # -- resource samples (rnx stats) -------------------------------------------------------
    @_url
    def put_stats(self, samples: dict[str, dict[str, Any]], ttl: float) -> None:
        """Each running job's latest sample, gone `ttl` seconds after its worker stops writing."""
        pipe = self.redis.pipeline()
        for job_id, sample in samples.items():
            key = self.keys.stats(job_id)
            pipe.delete(key)
            pipe.hset(key, mapping={k: json.dumps(v) for k, v in sample.items()})
            pipe.pexpire(key, int(ttl * 1000))
        pipe.execute()

    @_url
    def stats(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """job id -> latest sample, for those of these jobs sampled lately."""
        pipe = self.redis.pipeline()
        for job_id in job_ids:
            pipe.hgetall(self.keys.stats(job_id))
        found = {}
        for job_id, raw in zip(job_ids, pipe.execute(), strict=True):
            sample = {k.decode(errors="replace"): loaded(v) for k, v in raw.items()}
            if sample:  # a figure that does not read shows none (api/stats.py): one failed every rnx stats
                found[job_id] = sample
        return found
