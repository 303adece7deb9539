"""Fleet-wide IP allocations in Redis: atomic, owned by a job id, round-robin.

Addresses are stored as integers in one hash per network (address -> owner job id) with a
cursor, so a freed address is handed out again only after the rest of the range.
"""

from __future__ import annotations

import uuid
from typing import Any

from joblet.api.keys import Keys
from joblet.api.redis_conn import connect, translated
from joblet.api.store import LUA_LIVE

# KEYS[3]: this call's token key. redis-py sends a command again when it lost the reply
# (retry_on_timeout), though Redis ran it: the second run returns the first one's address
# instead of taking another (one slot leaked per lost reply until a worker restart).
_ALLOCATE = """
local first, last, owner = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local again = redis.call('GET', KEYS[3])
if again then return again end
local size = last - first + 1
local cur = tonumber(redis.call('GET', KEYS[2]) or first)
if cur < first or cur > last then cur = first end
for i = 0, size - 1 do
  local ip = first + ((cur - first + i) % size)
  local field = string.format('%d', ip)
  if redis.call('HSETNX', KEYS[1], field, owner) == 1 then
    local nxt = ip + 1
    if nxt > last then nxt = first end
    redis.call('SET', KEYS[2], string.format('%d', nxt))
    redis.call('SET', KEYS[3], field, 'EX', 600)
    return field
  end
end
return false
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS: a deleted network's allocations, its cursor. ARGV: the job records' key prefix. The
# addresses of jobs that ended or are gone go, and the cursor once no address is held;
# returns how many are still held. Both stayed for good: the cursor always, and the address of
# a job that ended without freeing it (its node lost), which workers free only in networks
# still defined.
_FORGET = (
    LUA_LIVE
    + """
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  if not live(ARGV[1] .. flat[i + 1]) then redis.call('HDEL', KEYS[1], flat[i]) end
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return redis.call('HLEN', KEYS[1])
"""
)

_url = translated(lambda self: self.url)


class IpamStore:
    """Allocations of every network of one installation."""

    def __init__(self, url: str, prefix: str = "joblet:", client: Any = None) -> None:
        self.url = url
        self.keys = Keys(prefix)
        self.redis = client if client is not None else connect(url)  # share a pool when given
        self._allocate = self.redis.register_script(_ALLOCATE)
        self._release = self.redis.register_script(_RELEASE)
        self._forget = self.redis.register_script(_FORGET)

    @_url
    def allocate(self, network: str, first: int, last: int, owner: str) -> int | None:
        """The next free address in [first, last] for `owner`, or None when all are taken."""
        got = self._allocate(**self.allocate_call(network, first, last, owner, uuid.uuid4().hex))
        return int(got) if got else None

    def allocate_call(self, network: str, first: int, last: int, owner: str, token: str) -> dict[str, list[Any]]:
        """The allocation script's keys and arguments for one call (`token`: that call's own)."""
        keys = [self.keys.ipam(network), self.keys.ipam_cursor(network), self.keys.ipam_try(network, token)]
        return {"keys": keys, "args": [first, last, owner]}

    @_url
    def release(self, network: str, address: int, owner: str) -> bool:
        """Free `address` if `owner` holds it; freeing twice is harmless."""
        return bool(self._release(keys=[self.keys.ipam(network)], args=[address, owner]))

    @_url
    def hold(self, network: str, address: int, owner: str) -> str | None:
        """`owner` holds `address` again (after Redis lost its allocations); the job that
        took it meanwhile, if one did."""
        key = self.keys.ipam(network)
        if self.redis.hsetnx(key, str(address), owner):
            return None
        holder = self.redis.hget(key, str(address))
        return None if holder is None or holder.decode() == owner else holder.decode()

    @_url
    def allocations(self, network: str) -> dict[int, str]:
        raw = self.redis.hgetall(self.keys.ipam(network))
        return {int(k): v.decode() for k, v in raw.items()}

    @_url
    def forget(self, network: str) -> int:
        """A deleted network's allocations: those of jobs that ended go, and its cursor once
        none is left (nothing else uses them); returns how many live jobs still hold one."""
        keys = [self.keys.ipam(network), self.keys.ipam_cursor(network)]
        return int(self._forget(keys=keys, args=[self.keys.job("")]))
