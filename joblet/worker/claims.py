"""A job's claim and its final record, each one round trip (a Lua script, atomic).

The claim was four round trips (record the job if absent, claim it, read it back, look for a
stop) and the final record three (the status transition, the expiry, the read-back for the
task result). Each round trip is a release and re-acquisition of the GIL by the job's
thread; with hundreds of jobs starting or ending at once those hand-offs, not Redis, were
what the worker waited on (perf: futex wake-ups and context switches of the worker were a
quarter of the machine's time while 300 jobs ended).

Both read the record back without its spec when the worker has the spec it checked: the
spec holds the uploads (up to the upload limit, in base64), which would otherwise cross
from Redis twice more and be checked and decoded twice more per job (~48 ms each for 12
MiB). The record then carries the spec the worker runs.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.record_fields import decoded
from joblet.api.redis_conn import translated
from joblet.api.store import (
    LUA_CREATE_IF_ABSENT,
    LUA_EXPIRE_NAME,
    LUA_IN_WORKFLOW,
    LUA_LIVE,
    LUA_SET_IF_STATUS,
    Store,
    encode_fields,
)
from joblet.worker import faults

# A record's fields as HGETALL gives them, without the spec unless `with_spec` is '1'.
_FIELDS = """
local function fields(key, with_spec)
  if with_spec == '1' then return redis.call('HGETALL', key) end
  local names = {}
  for _, name in ipairs(redis.call('HKEYS', key)) do
    if name ~= 'spec' then names[#names + 1] = name end
  end
  if #names == 0 then return {} end
  local values, flat = redis.call('HMGET', key, unpack(names)), {}
  for i, name in ipairs(names) do flat[#flat + 1] = name; flat[#flat + 1] = values[i] end
  return flat
end
"""

# KEYS: job, jobs index, claim, stop, this claim's token, the index of jobs that have not
# ended (the job joins it unless it has ended: a record another version's client wrote
# is not there yet). ARGV: the record's fields (JSON of
# JSON values), its created time, its id, this node, a token of this one claim, '1' if a claim
# by this node may be taken over. Returns false when the job was claimed before, else {the
# record's fields but its spec, 1 if a stop was asked}. The same claim sent again (redis-py
# resends a command whose reply was lost, having run it; the worker retries one whose reply
# never came) finds its own token and gets the record: it read as a duplicate, and the job,
# claimed, stayed PENDING for good. Another delivery, another token: refused, unless this node
# holds the claim, the job is still waiting and the worker runs no claim of it (`retake`):
# this node's earlier delivery claimed it and never started it (its reply lost for longer
# than the worker waited, or the worker died before the job's journal entry). A token is
# 'PLACE:random' (fleet.place): while the last claim's token lives (600 s), only a worker of
# its place takes it over, not another worker under the same node name that a claim in
# flight elsewhere would have let run the job twice.
# A record that expires has ended (stopped while queued): its claim, made after that
# record's expiry, goes with it (it stayed for good).
_CLAIM = (
    LUA_CREATE_IF_ABSENT
    + LUA_LIVE
    + _FIELDS
    + """
create_if_absent(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if live(KEYS[1]) then redis.call('ZADD', KEYS[6], ARGV[2], ARGV[3]) end
if redis.call('SET', KEYS[3], ARGV[4], 'NX') then
  redis.call('SET', KEYS[5], ARGV[5], 'EX', 600)
  local left = redis.call('TTL', KEYS[1])
  if left > 0 then redis.call('EXPIRE', KEYS[3], left) end
elseif redis.call('GET', KEYS[5]) ~= ARGV[5] then
  local status = redis.call('HGET', KEYS[1], 'status')
  local waiting = status == '"PENDING"'
  local try = redis.call('GET', KEYS[5])
  local here = not try or string.match(try, '^[^:]*:') == string.match(ARGV[5], '^[^:]*:')
  if not (ARGV[6] == '1' and waiting and here and redis.call('GET', KEYS[3]) == ARGV[4]) then return false end
  redis.call('SET', KEYS[5], ARGV[5], 'EX', 600)
end
return {fields(KEYS[1], '0'), redis.call('EXISTS', KEYS[4])}
"""
)

# KEYS: job, log, claim, stop, the index of jobs that have not ended (the job leaves it once
# the fields are set: they end it). ARGV: the allowed statuses (JSON list), the fields to set
# (JSON of JSON values), the TTL, '1' to read the spec back, the name keys' prefix, the job's
# id. Every key of the job gets the TTL (its name's too, while it names the job: LUA_EXPIRE_NAME), unless the
# job is a workflow's: its keys expire with the workflow's (workflow_store).
# Returns {1 set, 0 not allowed, -1 no record; the record's fields}.
_FINISH = (
    LUA_SET_IF_STATUS
    + LUA_IN_WORKFLOW
    + LUA_EXPIRE_NAME
    + _FIELDS
    + """
local set = set_if_status(KEYS[1], ARGV[1], ARGV[2])
if set == 1 then redis.call('ZREM', KEYS[5], ARGV[6]) end
if not in_workflow(KEYS[1]) then
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
  expire_name(KEYS[1], ARGV[5], ARGV[3])
end
return {set, fields(KEYS[1], ARGV[4])}
"""
)

_url = translated(lambda self: self.store.url)


@dataclass
class Claimed:
    record: JobRecord  # as it is now (another delivery may have ended it)
    stop_requested: bool


def _record(job_id: str, flat: list[bytes], spec: JobSpec | None) -> JobRecord | None:
    """A record from a script's flat reply of its fields; `spec` stands for the stored one,
    which the reply then leaves out. One that does not read: ValidationError (the script's
    write is done)."""
    if not flat:
        return None
    data = decoded(job_id, dict(zip(flat[::2], flat[1::2], strict=True)))
    if spec is not None:
        data["spec"] = spec
    return JobRecord.from_dict(data)


def _encoded(fields: dict[str, Any]) -> str:
    return json.dumps(encode_fields(fields))


class Claims:
    """This worker's claims and final records of jobs, one round trip each."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._claim = store.redis.register_script(_CLAIM)
        self._finish = store.redis.register_script(_FINISH)

    @_url
    def claim(self, record: JobRecord, node: str, token: str | None = None, retake: bool = False) -> Claimed | None:
        """Record the job unless it exists and claim it for `node`; None when it was claimed
        before (a redelivery: it runs at most once), unless `retake` and `node` holds a claim
        of the still waiting job (its caller runs no claim of it). `token`: this claim's own,
        the same through its retries. The record returned has `record`'s spec."""
        reply = self._claim(**self.claim_call(record, node, token or uuid.uuid4().hex, retake))
        faults.fail("claim-reply", record.id)  # tests: as if the reply were lost
        if not reply:
            return None
        current = _record(record.id, reply[0], record.spec)
        assert current is not None, "the script wrote the record if it was absent"
        return Claimed(current, bool(reply[1]))

    def claim_call(self, record: JobRecord, node: str, token: str, retake: bool = False) -> dict[str, list[Any]]:
        """The claim script's keys and arguments for one call (`token`: that claim's own)."""
        keys = self.store.keys
        return {
            "keys": [
                keys.job(record.id),
                keys.jobs,
                keys.claim(record.id),
                keys.stop(record.id),
                keys.claim_try(record.id),
                keys.live,
            ],
            "args": [
                _encoded(record.to_dict()),
                record.created or time.time(),
                record.id,
                node,
                token,
                "1" if retake else "",
            ],
        }

    @_url
    def finish(
        self, job_id: str, spec: JobSpec | None, allowed: tuple[JobStatus, ...], ttl: int, **fields: Any
    ) -> tuple[bool, JobRecord | None]:
        """Set `fields` (they end the job: it leaves the index of jobs that have not ended)
        if the job's status is one of `allowed`, give every key of the job
        `ttl` (a workflow's job: its workflow's end does), and return (whether the fields
        were set, the record as it is now, with `spec` when given, else the stored one)."""
        keys = self.store.keys
        set_, flat = self._finish(
            keys=[keys.job(job_id), keys.log(job_id), keys.claim(job_id), keys.stop(job_id), keys.live],
            args=[
                json.dumps([s.value for s in allowed]),
                _encoded(fields),
                ttl,
                "1" if spec is None else "0",
                keys.name(""),
                job_id,
            ],
        )
        return set_ == 1, _record(job_id, flat, spec)
