"""Fleet-wide IP allocations in Redis: atomic, owned by a job id, round-robin.

Addresses are stored as integers in one hash per network (address -> owner job id) with a
cursor, so a freed address is handed out again only after the rest of the range.
"""

from __future__ import annotations

import uuid
from typing import Any

from joblet.api.keys import Keys
from joblet.api.networks import BUILTINS
from joblet.api.redis_conn import connect, translated
from joblet.api.store import LUA_LIVE
from joblet.errors import NotFound
from joblet.text import shown

# KEYS[3]: this call's token key. redis-py sends a command again when it lost the reply
# (retry_on_timeout), though Redis ran it: the second run returns the first one's address
# instead of taking another (one slot leaked per lost reply until a worker restart).
# KEYS[4], ARGV[4]: the user networks' definitions and this network's name ("" for a built-in
# one): a network deleted since the job read its definition gives no address (-1), and a
# delete refuses while a job holds one (_DELETE): one or the other comes first. A job
# started while `rnx network delete` ran ran on a network no longer defined (fleet run).
_ALLOCATE = """
local first, last, owner = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local again = redis.call('GET', KEYS[3])
if again then return again end
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[4], ARGV[4]) == 0 then return -1 end
local size = last - first + 1
local cur = tonumber(redis.call('GET', KEYS[2]) or first) or first
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

# KEYS: the network's allocations. ARGV: the address, its owner. The owner holds it (nil),
# else the job that does: HSETNX then HGET in two round trips read nothing when that job
# released it in between, and said "held" for an address no one held (review).
_HOLD = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then return false end
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder == ARGV[2] then return false end
return holder
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS: the user networks' definitions, the network's allocations, its cursor, its placed
# jobs (store_homes.py). ARGV: its name, the job records' key prefix. The addresses of jobs
# that ended or are gone go; if a job that has not ended still holds one, the ids of those
# that do (the definition stays), else the definition, the cursor and where its jobs were
# placed go too (an empty list). The cursor stayed for good, and the
# address of a job that ended without freeing it (its node lost), which workers free only in
# networks still defined.
_DELETE = (
    LUA_LIVE
    + """
local flat = redis.call('HGETALL', KEYS[2])
local held = {}
for i = 1, #flat, 2 do
  if live(ARGV[2] .. flat[i + 1]) then table.insert(held, flat[i + 1])
  else redis.call('HDEL', KEYS[2], flat[i]) end
end
if #held > 0 then return held end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
return held
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
        self._hold = self.redis.register_script(_HOLD)
        self._delete = self.redis.register_script(_DELETE)

    @_url
    def allocate(self, network: str, first: int, last: int, owner: str) -> int | None:
        """The next free address in [first, last] for `owner`, or None when all are taken;
        NotFound when the user network `network` is no longer defined."""
        got = self._allocate(**self.allocate_call(network, first, last, owner, uuid.uuid4().hex))
        if got == -1:
            raise NotFound(f'network "{shown(network)}" was deleted')
        return int(got) if got else None

    def allocate_call(self, network: str, first: int, last: int, owner: str, token: str) -> dict[str, list[Any]]:
        """The allocation script's keys and arguments for one call (`token`: that call's own)."""
        keys = [self.keys.ipam(network), self.keys.ipam_cursor(network), self.keys.ipam_try(network, token)]
        user = "" if network in BUILTINS else network
        return {"keys": [*keys, self.keys.networks], "args": [first, last, owner, user]}

    @_url
    def release(self, network: str, address: int, owner: str) -> bool:
        """Free `address` if `owner` holds it; freeing twice is harmless."""
        return bool(self._release(keys=[self.keys.ipam(network)], args=[address, owner]))

    @_url
    def hold(self, network: str, address: int, owner: str) -> str | None:
        """`owner` holds `address` again (after Redis lost its allocations); the job that
        took it meanwhile, if one did."""
        holder = self._hold(keys=[self.keys.ipam(network)], args=[str(address), owner])
        return None if holder is None else holder.decode()

    @_url
    def allocations(self, network: str) -> dict[int, str]:
        """address -> owner; a field that is no address (written by other means: one stopped
        every start of a worker, red-team run) is left out."""
        raw = self.redis.hgetall(self.keys.ipam(network))
        return {int(k): v.decode(errors="replace") for k, v in raw.items() if k.isdigit() and k.isascii()}

    @_url
    def delete_network(self, network: str) -> list[str]:
        """Delete a user network's definition and its allocations at once, unless a job that
        has not ended holds an address in it: then the definition stays (only ended jobs'
        addresses go), and those jobs' ids are returned (allocate refuses a network no
        longer defined: no job gets one after)."""
        keys = [self.keys.networks, self.keys.ipam(network), self.keys.ipam_cursor(network), self.keys.placed(network)]
        # its members too: an entry a job's leave missed (Redis away at its end) outlived the
        # network, and listed that job in the /etc/hosts of a network made again under its name
        keys.append(self.keys.members(network))
        return sorted({h.decode() for h in self._delete(keys=keys, args=[network, self.keys.job("")])})
