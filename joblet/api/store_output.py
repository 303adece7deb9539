"""A job's output stream in Redis: entries of stdout and stderr, then the end marker; read
from the start, or followed until the end (a mixin of api/store.py's Store, whose Redis
client and keys it uses)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from joblet.api.keys import END_FIELD, Keys
from joblet.api.redis_conn import error_kind, translated
from joblet.errors import BackendUnavailable

_url = translated(lambda self: self.url)

# KEYS: the job's record, its stream. ARGV: the stream's cap, the entry's id, the TTL, the
# end marker's field and summary. The marker, then the stream expires with the record (whose
# final write gave it its TTL, or its workflow's end will), or after the TTL if none is left:
# the final record's expiry had found no stream when the job had printed nothing yet, and the
# marker made one that never expired. A resent entry's refusal is the reply, after the expiry.
# A key made after its job's record got its TTL expires with the record: after what the record
# has left, or after `ttl` when the record is gone (here and in store.py's stop).
LUA_EXPIRE_WITH = """
local function expire_with(record, key, ttl)
  local left = redis.call('TTL', record)
  if left > 0 then
    redis.call('EXPIRE', key, left)
  elseif left == -2 then
    redis.call('EXPIRE', key, ttl)
  end
end
"""
END_SCRIPT = (
    LUA_EXPIRE_WITH
    + """
local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], ARGV[2], ARGV[4], ARGV[5])
expire_with(KEYS[1], KEYS[2], ARGV[3])
return added
"""
)


# A final record seen this long with no end marker after it: none is coming (a worker killed
# between a job's final record and its marker, Redis gone between those two writes, a marker
# given up), and a follower waited for good (review). The pump's END_WAIT (30 s, for pipes a
# job's leftovers hold) and a margin.
END_GRACE = 45.0
END_LOOK = 5.0  # seconds between a follower's looks at the record while nothing arrives


class EndWatch:
    """A follower's look at its job's record while its stream is quiet: over() once the record
    has been final, and the stream quiet, for END_GRACE (the follower tells it what it
    `heard`: output after the final record, a pump behind on Redis, starts the grace again)."""

    def __init__(self, streams: OutputStreams, job_id: str) -> None:
        self.streams, self.job_id, self.grace, self.every = streams, job_id, END_GRACE, END_LOOK
        self._next = time.monotonic() + self.every
        self._final_since: float | None = None

    def over(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every
        try:
            status, _ = self.streams.where_is(self.job_id)
        except BackendUnavailable:  # the follower's own reads wait that out
            return False
        return self.saw(status, now)

    def saw(self, status: Any, now: float | None = None) -> bool:
        """over(), judged on a status the follower read itself (`rnx run` reads it every 5 s
        for its notes): the next look of its own is a full interval away."""
        now = time.monotonic() if now is None else now
        self._next = now + self.every
        if status is None or not status.final:  # gone: Redis restarted empty, its worker writes it again
            self._final_since = None
            return False
        self._final_since = self._final_since or now
        return now - self._final_since >= self.grace

    def heard(self) -> None:
        """Entries arrived: a final record's grace counts from the next quiet look (one gap
        of the writer's 45 s after the record was first seen final ended `rnx run` with the
        rest of its output unread (review))."""
        self._final_since = None


class OutputStreams:
    """The output streams of an installation's jobs."""

    url: str
    keys: Keys
    redis: Any
    _end: Any  # END_SCRIPT, registered by the store
    where_is: Callable[[str], tuple[Any, str | None]]  # Store's: a job's status and node

    @_url
    def job_output_limit(self, job_id: str) -> int | None:
        """The job's own output cap (its spec's limits.max_output), if it set one."""
        raw = self.redis.hget(self.keys.job(job_id), "spec")
        limit = json.loads(raw).get("limits", {}).get("max_output") if raw else None
        return limit if isinstance(limit, int) else None

    @_url
    def append_output(self, job_id: str, field: bytes, data: bytes, cap: int, entry_id: str = "*") -> None:
        """One entry; with the writer's own `entry_id` (increasing), a resend of an entry Redis
        already took (a command timed out, then retried) is refused there and dropped here."""
        self._xadd(job_id, {field: data}, cap, entry_id)

    @_url
    def end_output(self, job_id: str, summary: dict[str, Any], cap: int, ttl: int, entry_id: str = "*") -> None:
        """The end marker; the stream expires with the job's record, or after `ttl` (log_ttl)
        if the record is gone. One round trip, as the XADD alone was (END_SCRIPT)."""
        keys = [self.keys.job(job_id), self.keys.log(job_id)]
        args = [cap, entry_id, ttl, END_FIELD, json.dumps(summary)]
        self._resent_ok(entry_id, lambda: self._end(keys=keys, args=args))

    def _xadd(self, job_id: str, fields: dict[Any, Any], cap: int, entry_id: str) -> None:
        key = self.keys.log(job_id)
        self._resent_ok(entry_id, lambda: self.redis.xadd(key, fields, id=entry_id, maxlen=cap, approximate=True))

    @staticmethod
    def _resent_ok(entry_id: str, write: Callable[[], Any]) -> None:
        """Run `write`; Redis's refusal of an entry it took before (the writer's own id) is success."""
        try:
            write()
        except Exception as exc:
            if entry_id == "*" or error_kind(exc) != "response" or "equal or smaller" not in str(exc):
                raise

    @_url
    def read_output(self, job_id: str, after: str, block_ms: int | None) -> list[tuple[str, bytes, bytes]]:
        """Entries after `after` as (entry id, field, data); waits up to block_ms for new ones."""
        reply = self.redis.xread({self.keys.log(job_id): after}, count=1000, block=block_ms)
        out = []
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                for field, data in fields.items():
                    out.append((entry_id.decode(), field, data))
        return out

    @_url
    def last_output_id(self, job_id: str) -> str:
        """Id of the newest entry of a job's stream ("0-0" when empty)."""
        last = self.redis.xrevrange(self.keys.log(job_id), count=1)
        return str(last[0][0].decode()) if last else "0-0"

    def follow_output(
        self,
        job_id: str,
        follow: bool,
        block_ms: int = 1000,
        outage: Callable[[BackendUnavailable | None], None] | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """(field, data) pairs from the start; with follow, until the end marker arrives.
        `outage`, given a failed read, returns to read again from where it was, or raises;
        given None, it hears that a read worked again (the outage is over)."""
        after, failing = "0-0", False
        ended = EndWatch(self, job_id)
        while True:
            try:
                entries = self.read_output(job_id, after, block_ms if follow else None)
            except BackendUnavailable as exc:
                if outage is None:
                    raise
                outage(exc)
                failing = True
                continue
            if failing and outage is not None:
                outage(None)
                failing = False
            if entries:
                ended.heard()
            for entry_id, field, data in entries:
                after = entry_id
                yield field, data
                if field == END_FIELD:
                    return
            if not follow and not entries:
                return
            if not entries:
                if ended.over():  # final long since, no marker: none is coming
                    return
                yield b"", b""  # heartbeat: lets callers check the job while nothing arrives
