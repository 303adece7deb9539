"""The job indexes (a mixin of api/store.py's Store, whose Redis client and keys it uses):
the jobs that have not ended, and the newest kept jobs, each read without the rest.

`rnx network list`, `rnx volume list`, deleting a network or a volume, and the sweep of a lost
node want only the jobs that have not ended; they read every kept record (a week of `rnx
batch`, 21,500 records: 5 s a command, and the sweep on the heartbeat's thread). The index
holds at least every such job: each way a record is written adds it (submit, the worker's
claim, a restore), and each way a job ends takes it out in the same script (the final
record, a stop before the start, a failed or canceled wait); a read drops what ended by
other means (a record written by hand), checked in one script so a job written again
meanwhile stays. A Redis without the index (an older version's, or one restarted empty)
gets it from one read of every record, then a marker says it is whole, once every live
worker keeps it. While a live worker is older (its heartbeat does not say `indexes_live`:
its claims and ends leave the index as it was), every read is of every record. And the
heartbeats' sweep of the jobs index (below) puts back any job that has not ended and is
missing (one an older client or worker wrote, say across a rollback): the index is whole
again within one round of the sweep whatever wrote the records. What deletes or gives up on
something in use (a network's or a volume's delete, `rnx node forget`, the sweep of a lost
node) does not trust the index meanwhile: it reads every kept record, as before (rare
commands; 2.5 s at 21,500 records).

`rnx list` shows the newest 20 jobs and says how many older ones it left out: it read every
kept record for that (4.4 s at 21,500, every 2 s with --watch). It reads the newest from the
end of the index of every kept job (`jobs`, by creation time) and counts the rest by the
index's size. A record that expired leaves an entry there: each worker's heartbeat checks a
slice of them (SWEEP_SLICE, the oldest first, round and round), so the count is of records
that expired less than a round ago at most. A job created between two pages of the newest
shifts the ranks: an id already listed is not listed again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from joblet.api.keys import Keys
from joblet.api.models import JobRecord
from joblet.api.record_fields import read_record
from joblet.api.redis_conn import error_kind, translated
from joblet.errors import ValidationError

log = logging.getLogger(__name__)
_url = translated(lambda self: self.url)

# Whether the job of a record key has not ended (a gone record has; so has one whose status
# is no JSON, written by hand: it raised, and the index sweep stopped at it at every beat).
LUA_LIVE = """
local function live(key)
  local status = redis.call('HGET', key, 'status')
  if not status then return false end
  local ok, s = pcall(cjson.decode, status)
  return ok and (s == 'PENDING' or s == 'RUNNING')
end
"""
# KEYS: the index. ARGV: the job keys' prefix, then ids read as ended: each leaves the index
# if it still has (not one written again since the read).
PRUNE_SCRIPT = (
    LUA_LIVE
    + """
for i = 2, #ARGV do
  if not live(ARGV[1] .. ARGV[i]) then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
"""
)


# KEYS: the index of every kept job, the rank its sweep goes on from, the index of jobs that
# have not ended. ARGV: the job keys' prefix, the newest creation time a record may have
# expired by, the slice's size. Entries whose record is gone leave (none created after the
# cutoff); a job that has not ended joins the index of those, however new (where another
# version left it out); past the last entry the next slice starts over. Returns the entries
# that left.
SWEEP_SCRIPT = (
    LUA_LIVE
    + """
local start = tonumber(redis.call('GET', KEYS[2]) or '0')
local size = tonumber(ARGV[3])
local entries = redis.call('ZRANGE', KEYS[1], start, start + size - 1, 'WITHSCORES')
local kept, gone = 0, 0
for i = 1, #entries, 2 do
  local key = ARGV[1] .. entries[i]
  if redis.call('EXISTS', key) == 1 then
    if live(key) then redis.call('ZADD', KEYS[3], 'NX', entries[i + 1], entries[i]) end
  elseif tonumber(entries[i + 1]) <= tonumber(ARGV[2]) then
    redis.call('ZREM', KEYS[1], entries[i])
    gone = gone + 1
  end
end
if #entries / 2 < size then start = 0 else start = start + size - gone end
redis.call('SET', KEYS[2], start)
return gone
"""
)
SWEEP_SLICE = 1000  # entries a heartbeat checks (< 1 ms of Redis; 200/s at the default 5 s)
MIN_KEPT = 60  # seconds: no record expires sooner after its creation (log_ttl's least)
RECENT_CHUNK = 64  # entries read at once from the newest back (expired ones are skipped)


class JobIndexes:
    """The jobs that have not ended, and the newest kept jobs, without reading the others."""

    redis: Any
    keys: Keys
    url: str
    list_jobs: Callable[[], list[JobRecord]]  # Store's: every kept record
    _prune_script: Any  # Store's registered scripts: PRUNE_SCRIPT and SWEEP_SCRIPT
    _sweep_script: Any
    every_worker_says: Callable[[str], bool]  # Store's: what every live worker's heartbeat says
    claim_holders: Callable[[list[str]], list[str | None]]  # Store's: the node claiming each job

    def record_hashes(self, ids: list[str]) -> list[dict[bytes, bytes]]:
        """Each job's record as its hash holds it ({} where it is gone), in one round trip."""
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
        return list(pipe.execute())

    def _records(self, ids: list[str]) -> tuple[list[JobRecord], list[str]]:
        """The records of these ids that read (one round trip), and the ids whose record is
        gone."""
        records, gone = [], []
        for job_id, raw in zip(ids, self.record_hashes(ids), strict=True):
            if not raw:
                gone.append(job_id)
                continue
            try:
                records.append(read_record(job_id, raw))
            except ValidationError as exc:  # an older version's, checked less: one must not hide all
                log.warning("job %s left out: %s", job_id, exc)
        return records, gone

    @_url
    def live_jobs(self) -> list[JobRecord]:
        """The jobs that have not ended, oldest first."""
        if not self.redis.exists(self.keys.live_whole) or not self.every_worker_says("indexes_live"):
            return self._index_all()
        ids = [i.decode() for i in self.redis.zrange(self.keys.live, 0, -1)]
        records, gone = self._records(ids)
        live = [r for r in records if not r.status.final]
        ended = gone + [r.id for r in records if r.status.final]
        if ended:
            self._writing(lambda: self._prune(ended))
        return live

    def _prune(self, ended: list[str]) -> None:
        """These jobs leave the index, unless one was written again since it read as ended."""
        self._prune_script(keys=[self.keys.live], args=[self.keys.job(""), *ended])

    def unfinished_jobs(self, indexed: bool) -> list[JobRecord]:
        """The jobs that have not ended: from the index, or (not `indexed`) from every kept
        record, for what deletes or gives up on something in use: a job the index has not
        got back yet (one an older client wrote, until the sweep puts it back) must hold it."""
        return self.live_jobs() if indexed else [r for r in self.list_jobs() if not r.status.final]

    def unfinished_on(self, node: str, indexed: bool = True) -> list[JobRecord]:
        """The unfinished jobs placed on, claimed by or running on `node`; the claims read in
        one round trip (one a job, on the heartbeat's thread, held up its beat in a busy
        fleet). `indexed`: the node's last heartbeat said it keeps the index (else every kept
        record is read: an older worker's claims are not in the index)."""
        unfinished = self.unfinished_jobs(indexed)
        others = [r for r in unfinished if r.node != node]
        holders = self.claim_holders([r.id for r in others])
        claimed = {r.id for r, holder in zip(others, holders, strict=True) if holder == node}
        return [r for r in unfinished if r.node == node or r.id in claimed]

    def _index_all(self) -> list[JobRecord]:
        """Every kept record read: the index made from its jobs that have not ended."""
        live = self.unfinished_jobs(indexed=False)

        def write() -> None:
            if live:
                self.redis.zadd(self.keys.live, {r.id: r.created or 0.0 for r in live})
            listed = {i.decode() for i in self.redis.zrange(self.keys.live, 0, -1)}
            ended = sorted(listed - {r.id for r in live})
            if ended:  # indexed before, ended since by a way that left it there
                self._prune(ended)
            if self.every_worker_says("indexes_live"):  # an older worker's claims would not be there
                self.redis.set(self.keys.live_whole, "1")

        self._writing(write)
        return live

    def _writing(self, write: Callable[[], object]) -> None:
        """A write of the index; a read-only (viewer) user leaves it to a writer."""
        try:
            write()
        except Exception as exc:
            if error_kind(exc) != "noperm":
                raise

    @_url
    def recent_jobs(self, count: int) -> tuple[list[JobRecord], int]:
        """The newest `count` kept jobs, oldest first, and how many older ones are kept."""
        total = self.redis.zcard(self.keys.jobs)
        found: list[JobRecord] = []
        gone: list[str] = []
        read = 0
        seen: set[str] = set()
        while len(found) < count and read < total:
            page = [i.decode() for i in self.redis.zrevrange(self.keys.jobs, read, read + RECENT_CHUNK - 1)]
            if not page:
                break
            ids = [i for i in page if i not in seen]  # a job created meanwhile moved the ranks on
            seen.update(ids)
            records, stale = self._records(ids)
            gone += stale
            wanted = records[: count - len(found)]
            found += wanted
            read += len(page) if len(wanted) == len(records) else page.index(wanted[-1].id) + 1
        if gone:
            self._writing(lambda: self.redis.zrem(self.keys.jobs, *gone))
        return found[::-1], max(0, total - read)

    @_url
    def sweep_jobs_index(self, now: float) -> int:
        """One slice of the sweep of entries whose record expired; how many left."""
        keys = [self.keys.jobs, self.keys.jobs_sweep, self.keys.live]
        return int(self._sweep_script(keys=keys, args=[self.keys.job(""), now - MIN_KEPT, SWEEP_SLICE]))
