"""User networks: definitions (pure validation) and their store in Redis.

A create checks name and CIDR, then writes under WATCH so two racing creates of overlapping
CIDRs cannot both succeed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from joblet.api.keys import Keys
from joblet.api.redis_conn import connect, translated
from joblet.errors import Conflict, NotFound, ValidationError

BUILTINS = ("bridge", "isolated", "none", "host")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class NetworkDef(BaseModel):
    """A user network as stored."""

    model_config = ConfigDict(frozen=True)

    name: str
    cidr: str
    internal: bool = False
    dns: tuple[str, ...] = ()
    mtu: int | None = None


def check(name: str, cidr: str, dns: tuple[str, ...] = (), mtu: int | None = None) -> str:
    """Validate a new network; returns the normalised CIDR. Errors say what to fix."""
    fail = f'failed to create network "{name}"'
    if not NAME_RE.match(name):
        raise ValidationError(f"{fail}: names are letters, digits, '-' and '_', at most 64")
    if name in BUILTINS:
        raise ValidationError(f"{fail}: {name!r} is a built-in network")
    net = _ipv4_network(cidr, fail)
    if not 8 <= net.prefixlen <= 29:
        raise ValidationError(f"{fail}: CIDR {cidr} must be between /8 and /29")
    for server in dns:
        try:
            ipaddress.IPv4Address(server)
        except ValueError:
            raise ValidationError(f"{fail}: invalid DNS server {server!r}") from None
    if mtu is not None and not 576 <= mtu <= 65535:
        raise ValidationError(f"{fail}: MTU {mtu} is outside 576..65535")
    return str(net)


def _ipv4_network(cidr: str, fail: str) -> ipaddress.IPv4Network:
    try:
        parsed = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ValidationError(f"{fail}: invalid CIDR {cidr!r}: give ADDRESS/PREFIX, e.g. 10.10.0.0/24") from None
    if parsed.version == 6:
        raise ValidationError(f"{fail}: {cidr} is an IPv6 range; joblet networks are IPv4 only "
                              "(give one such as 10.10.0.0/24)")
    try:
        return ipaddress.IPv4Network(cidr, strict=True)
    except ValueError:
        raise ValidationError(f"{fail}: invalid CIDR {cidr!r}: host bits are set (did you mean "
                              f"{parsed}?)") from None


def overlap(cidr: str, others: dict[str, str]) -> str | None:
    """The first of `others` ({label: cidr}) that overlaps cidr, as a message fragment."""
    net = ipaddress.IPv4Network(cidr)
    for label, other in sorted(others.items()):
        if net.overlaps(ipaddress.IPv4Network(other)):
            return f"{label} ({other})"
    return None


_url = translated(lambda self: self.url)


class NetworkStore:
    """The fleet-wide network definitions."""

    def __init__(self, url: str, prefix: str = "joblet:", client: Any = None) -> None:
        self.url = url
        self.keys = Keys(prefix)
        self.redis = client if client is not None else connect(url)  # share a pool when given

    @property
    def key(self) -> str:
        return self.keys.networks

    @_url
    def create(self, net: NetworkDef, reserved: dict[str, str]) -> None:
        """Store `net` unless its name exists or its CIDR overlaps (atomic under WATCH)."""
        import redis

        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self.key)
                    defs = self._decode(pipe.hgetall(self.key))
                    if net.name in {n.name for n in defs}:
                        raise Conflict(f'failed to create network "{net.name}": it already exists')
                    existing = {f'existing network "{n.name}"': n.cidr for n in defs}
                    hit = overlap(net.cidr, {**reserved, **existing})
                    if hit:
                        raise Conflict(f'failed to create network "{net.name}": CIDR {net.cidr} '
                                       f"overlaps with {hit}")
                    pipe.multi()
                    pipe.hset(self.key, net.name, net.model_dump_json())
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    @_url
    def all(self) -> list[NetworkDef]:
        return self._decode(self.redis.hgetall(self.key))

    def get(self, name: str) -> NetworkDef:
        for net in self.all():
            if net.name == name:
                return net
        raise NotFound(f"no such network: {name}")

    @_url
    def delete(self, name: str) -> bool:
        return bool(self.redis.hdel(self.key, name))

    @staticmethod
    def _decode(raw: dict[bytes, bytes]) -> list[NetworkDef]:
        return sorted((NetworkDef.model_validate(json.loads(v)) for v in raw.values()),
                      key=lambda n: n.name)


def bridge_name(network: str, default_bridge: str = "joblet0") -> str:
    """Kernel bridge of a network: 'jb' + a short hash (names are at most 15 bytes)."""
    if network == "bridge":
        return default_bridge
    import hashlib

    return "jb" + hashlib.sha1(network.encode()).hexdigest()[:10]


def host_prefixes() -> dict[str, str]:
    """This host's addresses and routes (all tables) as {description: cidr}, if `ip` exists."""
    import subprocess

    found: dict[str, str] = {}
    try:
        out = subprocess.run(["ip", "-4", "-j", "route", "show", "table", "all"],
                             capture_output=True, text=True, timeout=10).stdout
        routes = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.SubprocessError):
        return found
    for route in routes:
        dst, dev = route.get("dst", ""), route.get("dev", "")
        if dst in ("default", "") or dev == "joblet0" or dev.startswith(("jb", "ji")):
            continue
        try:
            cidr = str(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
        except ValueError:
            continue
        found[f"host route {cidr} dev {dev}"] = cidr
    return found
