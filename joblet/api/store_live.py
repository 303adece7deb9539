"""The index of jobs that have not ended (a mixin of api/store.py's Store, whose Redis client
and keys it uses).

`rnx network list`, `rnx volume list`, deleting a network or a volume, and the sweep of a lost
node want only the jobs that have not ended; they read every kept record (a week of `rnx
batch`, 21,500 records: 5 s a command, and the sweep on the heartbeat's thread). The index
holds at least every such job: each way a record is written adds it (submit, the worker's
claim, a restore), the final record's script and a stop before the start take it out, and
a read drops what has ended since by other ways (a failed or canceled wait, LOST), checked
in one script so a job written again meanwhile stays. A Redis without the index (an older
version's, or one restarted empty) gets it from one read of every record, then a marker
says it is whole. While a live worker is older (its heartbeat does not say `indexes_live`: its
claims and ends leave the index as it was), every read is of every record.
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

# Whether the job of a record key has not ended (a gone record has).
LUA_LIVE = """
local function live(key)
  local status = redis.call('HGET', key, 'status')
  if not status then return false end
  local s = cjson.decode(status)
  return s == 'PENDING' or s == 'SCHEDULED' or s == 'RUNNING'
end
"""
# KEYS: the index. ARGV: the job keys' prefix, then ids read as ended: each leaves the index
# if it still has (not one written again since the read).
_PRUNE = (
    LUA_LIVE
    + """
for i = 2, #ARGV do
  if not live(ARGV[1] .. ARGV[i]) then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
"""
)


class LiveIndex:
    """The jobs that have not ended, without reading the others."""

    redis: Any
    keys: Keys
    url: str
    list_jobs: Callable[[], list[JobRecord]]  # Store's: every kept record
    every_worker_says: Callable[[str], bool]  # Store's: what every live worker's heartbeat says

    def _records(self, ids: list[str]) -> tuple[list[JobRecord], list[str]]:
        """The records of these ids that read (one round trip), and the ids whose record is
        gone."""
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
        records, gone = [], []
        for job_id, raw in zip(ids, pipe.execute(), strict=True):
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
        self.redis.register_script(_PRUNE)(keys=[self.keys.live], args=[self.keys.job(""), *ended])

    def _index_all(self) -> list[JobRecord]:
        """Every kept record read: the index made from its jobs that have not ended."""
        live = [r for r in self.list_jobs() if not r.status.final]

        def write() -> None:
            if live:
                self.redis.zadd(self.keys.live, {r.id: r.created or 0.0 for r in live})
            listed = {i.decode() for i in self.redis.zrange(self.keys.live, 0, -1)}
            ended = sorted(listed - {r.id for r in live})
            if ended:  # indexed before, ended since by a way that left it there
                self._prune(ended)
            self.redis.set(self.keys.live_whole, "1")

        self._writing(write)
        return live

    def _writing(self, write: Any) -> None:
        """A write of the index; a read-only (viewer) user leaves it to a writer."""
        try:
            write()
        except Exception as exc:
            if error_kind(exc) != "noperm":
                raise
