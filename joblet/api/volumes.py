"""Named volumes: definitions (pure validation) and their store in Redis.

A volume's data lives on each worker host that mounts it (`<state_dir>/volumes/NAME`); the
definition (name, optional size) is fleet-wide, so every host creates it the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from joblet.api.keys import Keys
from joblet.api.models import VOLUME_RE
from joblet.api.redis_conn import connect, translated
from joblet.api.store_index import LUA_LIVE
from joblet.errors import Conflict, NotFound, ValidationError
from joblet.fields import (
    checked_all,
    epoch,
    integer,
    matching,
    optional,
    stored,
    stored_by_name,
    stored_named,
)
from joblet.text import hinted, shown

_SIZE = re.compile(r"^\s*(\d{1,20}(?:\.\d{1,20})?)\s*(?:([kmgt])i?)?(b?)\s*$", re.IGNORECASE | re.ASCII)
_BYTES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MIN_MB, MAX_MB = 8, 16 * 1024 * 1024


def parse_size(text: str) -> int:
    """A size in MiB: '512MB', '1GB', '1.5G', '2g', '100' (MiB), '8388608B' (bytes). One that
    is not a whole number of MiB is rounded up, as LVM rounds to its extents: a volume is never
    smaller than asked (`9000KB` and `8.5` made 8 MB, and a lone B was read as MB)."""
    m = _SIZE.match(text)
    if not m:
        raise ValidationError(f"invalid size {text!r}: use e.g. 100MB, 1GB or 1.5GB")
    number, unit, b = m.groups()
    per = _BYTES[unit.lower()] if unit else 1 if b else _BYTES["m"]
    mib = math.ceil(Fraction(number) * per / _BYTES["m"])  # exact: a float reads 8.00000000000000001 as 8
    if not MIN_MB <= mib <= MAX_MB:
        raise ValidationError(f"invalid size {text!r}: between 8MB and 16TB")
    return mib


@dataclass(frozen=True, slots=True)
class VolumeDef:
    """A volume as stored: size None is a plain directory, else an ext4 image of that size."""

    name: str
    size_mb: int | None = None
    created: float = 0.0

    def __post_init__(self) -> None:
        """Field types and ranges (a definition in Redis may come from anyone who can write
        there: a size of "x" failed its jobs with a TypeError)."""
        checked_all(
            self,
            {
                "name": lambda v: matching(v, VOLUME_RE, "volume name", "letters, digits, '.', '_' and '-'"),
                "size_mb": lambda v: optional(integer, v, 1, MAX_MB),
                "created": epoch,
            },
        )

    @classmethod
    def from_json(cls, raw: str | bytes, name: str = "") -> VolumeDef:
        """A stored definition; fields this version does not know are ignored."""
        return stored(cls, raw, f'definition of volume "{name}"' if name else "volume definition")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_url = translated(lambda self: self.url)


class VolumeStore:
    """The fleet-wide volume definitions."""

    def __init__(self, url: str, prefix: str = "joblet:", client: Any = None) -> None:
        self.url = url
        self.keys = Keys(prefix)
        self.redis = client if client is not None else connect(url)

    @_url
    def create(self, name: str, size: str | None = None) -> VolumeDef:
        if not VOLUME_RE.match(name):
            raise ValidationError(
                f"failed to create volume \"{name}\": names are letters, digits, '.', '_' and '-', "
                "starting with a letter or digit, at most 64"
            )
        try:  # `--size=` is a size left out, not none asked for
            size_mb = parse_size(size) if size is not None else None
        except ValidationError as exc:
            raise ValidationError(f'failed to create volume "{name}": {exc}') from None
        vol = VolumeDef(name=name, size_mb=size_mb, created=time.time())
        if not self.redis.hsetnx(self.keys.volumes, name, json.dumps(vol.to_dict())):
            raise Conflict(f'failed to create volume "{name}": it already exists')
        return vol

    @_url
    def all(self) -> list[VolumeDef]:
        return sorted(
            stored_by_name(VolumeDef, self.redis.hgetall(self.keys.volumes), "volume").values(), key=lambda v: v.name
        )

    @_url
    def names(self) -> list[str]:
        """The volumes' names (their definitions unread)."""
        return sorted(n.decode(errors="surrogateescape") for n in self.redis.hkeys(self.keys.volumes))

    @_url
    def get(self, name: str) -> VolumeDef:
        """One definition; one that does not read says so (ValidationError), naming it."""
        raw = self.redis.hget(self.keys.volumes, name)
        if raw is None:
            if not name:
                raise ValidationError("no volume name given")  # a usage error: exit 2
            raise NotFound(f"no such volume: {shown(name)}{hinted(name, self.names())}")
        return stored_named(VolumeDef, raw, "volume", name)

    @_url
    def deleted(self) -> dict[str, VolumeDef | None]:
        """The last deleted definition of each deleted name; None where it does not read (its
        name was deleted, when is unknown: a worker takes any data of that name but the live
        definition's for deleted, where it kept it, and a volume made again got the old files)."""
        raw = self.redis.hgetall(self.keys.volumes_deleted)
        found: dict[str, VolumeDef | None] = dict(stored_by_name(VolumeDef, raw, "volume"))
        return {key.decode(errors="replace"): None for key in raw} | found

    @_url
    def use(self, name: str, job_id: str) -> VolumeDef:
        """The definition, for a job starting with the volume, which counts among its users
        from now (one step: a delete either comes first, and the job is refused, or refuses
        while it runs); NotFound when the volume is no longer defined."""
        keys = [self.keys.volumes, self.keys.volume_users(name)]
        raw = self.redis.register_script(_USE)(keys=keys, args=[name, job_id])
        if raw is None:
            raise NotFound(f"no such volume: {shown(name)}")
        return stored_named(VolumeDef, raw, "volume", name)

    @_url
    def leave(self, names: tuple[str, ...], job_id: str) -> None:
        """The job ended: it no longer counts among these volumes' users."""
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.srem(self.keys.volume_users(name), job_id)
        pipe.execute()

    @_url
    def delete(self, name: str) -> list[str]:
        """The definition moves to the deleted ones, in one step: only what is named there is
        ever removed from a host (a Redis that lost its data, or another prefix, names none).
        Refused while a job that started with it has not ended: the ids of those jobs (none
        once deleted); NotFound when it is not defined. A job started while `rnx volume
        delete` read the records ran on the deleted volume, its writes then swept (red-team
        run: 25 of 30)."""
        keys = [self.keys.volumes, self.keys.volumes_deleted, self.keys.volume_users(name)]
        got = self.redis.register_script(_DELETE)(keys=keys, args=[name, self.keys.job("")])
        if not isinstance(got, list):
            if not got:
                raise NotFound(f"no such volume: {shown(name)}")
            return []
        return sorted(h.decode() for h in got)


_USE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
redis.call('SADD', KEYS[2], ARGV[2])
return raw
"""

# KEYS: the definitions, the deleted ones, the volume's users. ARGV: its name, the job records'
# key prefix. Users that ended (or whose record is gone) leave the set; any left: their ids.
_DELETE = (
    LUA_LIVE
    + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local held = {}
for _, job in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if live(ARGV[2] .. job) then table.insert(held, job) else redis.call('SREM', KEYS[3], job) end
end
if #held > 0 then return held end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], raw)
redis.call('DEL', KEYS[3])
return 1
"""
)
