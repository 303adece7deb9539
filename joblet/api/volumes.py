"""Named volumes: definitions (pure validation) and their store in Redis.

A volume's data lives on each worker host that mounts it (`<state_dir>/volumes/NAME`); the
definition (name, optional size) is fleet-wide, so every host creates it the same way.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from joblet.api.keys import Keys
from joblet.api.models import VOLUME_RE
from joblet.api.redis_conn import connect, translated
from joblet.errors import Conflict, NotFound, ValidationError

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_MB = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}


def parse_size(text: str) -> int:
    """A size in MiB: '512MB', '1GB', '2g', '100' (MiB)."""
    m = _SIZE.match(text)
    if not m:
        raise ValidationError(f"invalid size {text!r}: use e.g. 100MB or 1GB")
    mib = int(int(m.group(1)) * _MB[m.group(2).lower()])
    if not 8 <= mib <= 16 * 1024 * 1024:
        raise ValidationError(f"invalid size {text!r}: between 8MB and 16TB")
    return mib


class VolumeDef(BaseModel):
    """A volume as stored: size None is a plain directory, else an ext4 image of that size."""

    model_config = ConfigDict(frozen=True)

    name: str
    size_mb: int | None = None
    created: float = 0.0


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
                f"failed to create volume \"{name}\": names are letters, digits, '.', '_' and '-', at most 64"
            )
        vol = VolumeDef(name=name, size_mb=parse_size(size) if size else None, created=time.time())
        if not self.redis.hsetnx(self.keys.volumes, name, vol.model_dump_json()):
            raise Conflict(f'failed to create volume "{name}": it already exists')
        return vol

    @_url
    def all(self) -> list[VolumeDef]:
        raw = self.redis.hgetall(self.keys.volumes)
        return sorted((VolumeDef.model_validate(json.loads(v)) for v in raw.values()), key=lambda v: v.name)

    @_url
    def get(self, name: str) -> VolumeDef:
        raw = self.redis.hget(self.keys.volumes, name)
        if raw is None:
            raise NotFound(f"no such volume: {name}")
        return VolumeDef.model_validate(json.loads(raw))

    @_url
    def delete(self, name: str) -> bool:
        return bool(self.redis.hdel(self.keys.volumes, name))
