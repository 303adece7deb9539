"""User networks: definitions (pure validation) and their store in Redis.

A create checks name and CIDR, then writes under WATCH so two racing creates of overlapping
CIDRs cannot both succeed. Only real unicast networks are accepted, and none that holds the
broker's or state store's address (a job there would be on-link with the control plane).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joblet.api.keys import Keys
from joblet.api.redis_conn import connect, translated
from joblet.config_checks import PRIVATE_RANGES
from joblet.errors import Conflict, NotFound, ValidationError
from joblet.fields import (
    boolean,
    checked_all,
    epoch,
    integer,
    matching,
    optional,
    stored,
    stored_by_name,
    stored_named,
    strings,
    text,
)
from joblet.names import HOLD_VNI, VNI_MAX, VNI_MIN, bridge_name, default_vni, is_joblet_link
from joblet.text import hinted, shown

BUILTINS = ("bridge", "isolated", "none", "host")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
NOT_UNICAST = {  # ranges no job network may touch, and why
    "0.0.0.0/8": "'this network' (0.0.0.0/8)",
    "127.0.0.0/8": "loopback (127.0.0.0/8)",
    "169.254.0.0/16": "link-local (169.254.0.0/16, the cloud metadata service's range)",
    "224.0.0.0/4": "multicast (224.0.0.0/4)",
    "240.0.0.0/4": "reserved (240.0.0.0/4, with the broadcast address 255.255.255.255)",
}
PREFIXES = (8, 29)  # a network's prefix lengths: a /30 holds no job beside its gateway
# every TCP scheme config_checks.BROKER_SCHEMES takes: one missing here was blocked from no job
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671, "pyamqp": 5672}


@dataclass(frozen=True, slots=True)
class NetworkDef:
    """A user network as stored (checked by `check` before it is)."""

    name: str
    cidr: str
    internal: bool = False
    dns: tuple[str, ...] = ()
    mtu: int | None = None
    vni: int | None = None  # the overlay's VXLAN id; set at create (older definitions: derived)
    created: float | None = None  # epoch seconds of its create (older definitions: unknown)

    def __post_init__(self) -> None:
        """Field types and ranges (a definition in Redis may come from anyone who can write
        there); the CIDR's own rules are `check`'s and, on the worker, `unusable`'s."""
        checked_all(self, _NETWORK_CHECKS)

    @classmethod
    def from_json(cls, raw: str | bytes, name: str = "") -> NetworkDef:
        """A stored definition; fields this version does not know are ignored."""
        return stored(cls, raw, f'definition of network "{name}"' if name else "network definition")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "dns": list(self.dns)}

    @property
    def overlay_vni(self) -> int:
        return self.vni if self.vni is not None else default_vni(self.name)


_NETWORK_CHECKS: dict[str, Callable[[Any], Any]] = {
    "name": lambda v: matching(v, NAME_RE, "network name", "letters, digits, '-' and '_'"),
    "cidr": lambda v: str(_ipv4(text(v))),
    "internal": boolean,
    "dns": lambda v: tuple(str(ipaddress.IPv4Address(a)) for a in strings(v)),
    "mtu": lambda v: optional(integer, v, 576, 65535),
    "vni": lambda v: optional(integer, v, VNI_MIN, VNI_MAX),
    "created": lambda v: optional(epoch, v),
}


def free_vni(name: str, taken: set[int]) -> int:
    """The VNI a new network gets: derived from its name, the next free one on a clash (the
    workers' port holder's counts as taken)."""
    vni = default_vni(name)
    while vni in taken or vni == HOLD_VNI:
        vni = vni + 1 if vni < VNI_MAX else VNI_MIN
    return vni


def check(name: str, cidr: str, dns: tuple[str, ...] = (), mtu: int | None = None, internal: bool = False) -> str:
    """Validate a new network; returns the normalised CIDR. Errors say what to fix."""
    fail = f'failed to create network "{name}"'
    if not NAME_RE.match(name):
        raise ValidationError(
            f"{fail}: names are letters, digits, '-' and '_', starting with a letter or digit, at most 64"
        )
    if name.lower() in BUILTINS:  # `BRIDGE` would read as the default bridge's to a user
        raise ValidationError(f"{fail}: {name!r} is a built-in network")
    net = _ipv4_network(cidr, fail)
    problem = not_unicast(str(net))
    if problem:
        raise ValidationError(f"{fail}: {problem}")
    for server in dns:
        try:
            address = ipaddress.IPv4Address(server)
        except ValueError:
            raise ValidationError(f"{fail}: invalid DNS server {server!r}") from None
        if address.is_loopback or address.is_unspecified or address.is_multicast or address.is_reserved:
            raise ValidationError(f"{fail}: DNS server {server} is not one a job can ask (a unicast address)")
        _dns_reachable(fail, address, net, internal)
    if mtu is not None and not 576 <= mtu <= 65535:
        raise ValidationError(f"{fail}: MTU {mtu} is outside 576..65535")
    return str(net)


def _dns_reachable(fail: str, address: ipaddress.IPv4Address, net: ipaddress.IPv4Network, internal: bool) -> None:
    """A network's own DNS server inside its range is one of its jobs: not the network's
    address, its gateway (the host, which jobs cannot reach) or its broadcast address; an
    --internal network's is inside its range (it reaches nothing else). Each was taken, and
    every lookup of its jobs hung 20 s (usability run)."""
    first, last = net.network_address + 2, net.broadcast_address - 1
    roles = {net.network_address: "network address", net.broadcast_address: "broadcast address"}
    roles[net.network_address + 1] = "gateway (the host: jobs cannot reach it)"
    if address in roles:
        raise ValidationError(
            f"{fail}: DNS server {address} is the network's {roles[address]}: a server inside {net} is one "
            f"of its jobs, {first} to {last}"
        )
    if internal and address not in net:
        raise ValidationError(
            f"{fail}: DNS server {address} is outside {net}, and an --internal network reaches nothing outside "
            "it: give one of its jobs' addresses, or no --dns"
        )


def _ipv4_network(cidr: str, fail: str) -> ipaddress.IPv4Network:
    try:
        if "/" not in cidr:  # an address alone reads as /32: say what is missing, not the bounds
            raise ValueError(cidr)
        parsed = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ValidationError(f"{fail}: invalid CIDR {cidr!r}: give ADDRESS/PREFIX, e.g. 10.10.0.0/24") from None
    if parsed.version == 6:
        raise ValidationError(
            f"{fail}: {cidr} is an IPv6 range; joblet networks are IPv4 only (give one such as 10.10.0.0/24)"
        )
    problem = prefix_problem(cidr, parsed)  # before the host bits: `did you mean 10.0.0.0/7?`
    if problem:
        raise ValidationError(f"{fail}: {problem}")
    try:
        return ipaddress.IPv4Network(cidr, strict=True)
    except ValueError:
        raise ValidationError(f"{fail}: invalid CIDR {cidr!r}: host bits are set (did you mean {parsed}?)") from None


def _ipv4(cidr: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(cidr, strict=True)
    except ValueError:
        raise ValueError(f"is not an IPv4 network: {cidr[:40]!r}") from None


def not_unicast(cidr: str) -> str | None:
    """Why `cidr` is no network for jobs (it touches a non-unicast range), or None."""
    net = ipaddress.IPv4Network(cidr)
    for block, why in NOT_UNICAST.items():
        if net.overlaps(ipaddress.IPv4Network(block)):
            return f"CIDR {cidr} overlaps {why}; use a private unicast range"
    return None


def public_problem(cidr: str, ranges: tuple[str, ...] = PRIVATE_RANGES) -> str | None:
    """Why `cidr` is refused without allow_public_networks (it is not within `ranges`, the
    network_ranges setting), or None."""
    net = ipaddress.IPv4Network(cidr)
    if any(net.subnet_of(ipaddress.IPv4Network(p)) for p in ranges):
        return None
    if not any(net.overlaps(ipaddress.IPv4Network(p)) for p in PRIVATE_RANGES):
        return (
            f"CIDR {cidr} is public address space: the hosts would send their own traffic for it to the "
            "network's jobs, not to the internet; use a private range (10.0.0.0/8, 172.16.0.0/12, "
            "192.168.0.0/16, 100.64.0.0/10), or set JOBLET_ALLOW_PUBLIC_NETWORKS=true on the workers and here"
        )
    return (
        f"CIDR {cidr} is outside the ranges user networks may take ({', '.join(ranges)}: JOBLET_NETWORK_RANGES, "
        "set to what the hosts reach nowhere else)"
    )


def unusable(
    cidr: str,
    held: dict[str, list[str]],
    reserved: dict[str, str],
    public: bool = True,
    ranges: tuple[str, ...] = PRIVATE_RANGES,
) -> str | None:
    """Why a worker builds no network of `cidr`, or None: a range that is not unicast, of a
    prefix out of PREFIXES, holding an address of `held` ({setting: addresses} of the broker,
    the state store, job_blocked_addresses) or overlapping one of `reserved` ({label: cidr}).
    The client checks as much at create (`check`, `holds_control_plane`, the store's
    overlaps), but a definition may come from anyone who can write Redis, or from before a
    setting or route it now clashes with: the more specific route to a network's bridge took
    the host's own traffic to that range, its Redis connection included (red-team run)."""
    problem = not_unicast(cidr) or prefix_problem(cidr, ipaddress.IPv4Network(cidr)) or holds_control_plane(cidr, held)
    if problem:
        return problem
    if not public and (problem := public_problem(cidr, ranges)):  # `public`: allow_public_networks
        return problem
    hit = overlap(cidr, reserved)
    return None if hit is None else f"CIDR {cidr} overlaps {hit}"


def prefix_problem(written: str, net: ipaddress.IPv4Network) -> str | None:
    """A prefix outside PREFIXES: 32.0.0.0/3 would route an eighth of IPv4 to jobs."""
    if PREFIXES[0] <= net.prefixlen <= PREFIXES[1]:
        return None
    return f"CIDR {written} must be between /{PREFIXES[0]} and /{PREFIXES[1]}"


def fixed_ranges(bridge_cidr: str, isolated_pool: str, blocked: tuple[str, ...]) -> dict[str, str]:
    """What no user network may overlap whatever else exists, by a worker's settings (or the
    client's, at create): the default bridge, the isolated-mode pool, job_blocked_networks."""
    return {
        'built-in network "bridge"': bridge_cidr,
        "the isolated-mode pool": isolated_pool,
        **blocked_ranges(blocked),
    }


def blocked_ranges(networks: tuple[str, ...]) -> dict[str, str]:
    """The IPv4 ranges of job_blocked_networks as reserved ranges: a job network there would
    hand a job the cloud metadata service's address (Azure's 168.63.129.16, Alibaba's
    100.100.100.200) on every host where it has jobs."""
    ranges = (ipaddress.ip_network(n, strict=False) for n in networks)
    return {f"job_blocked_networks' {r}": str(r) for r in ranges if r.version == 4}


def holds_control_plane(cidr: str, held: dict[str, list[str]]) -> str | None:
    """Why a network of `cidr` may not be made, if it holds an address of `held` ({setting:
    addresses} of the broker, the state store, job_blocked_addresses): jobs would share its
    link, and the host's route to it would lead to their bridge."""
    found = held_in(cidr, held)
    return None if found is None else f"CIDR {cidr} contains {found[1]}, an address of the control plane ({found[0]})"


def held_in(cidr: str, held: dict[str, list[str]]) -> tuple[str, str] | None:
    """(setting, address): the first address of `held` inside `cidr` (an IPv6 address is in
    no IPv4 network)."""
    net = ipaddress.ip_network(cidr)
    for setting, addresses in sorted(held.items()):
        inside = next((a for a in addresses if ipaddress.ip_address(a) in net), None)
        if inside is not None:
            return setting, inside
    return None


def addresses_of(endpoints: dict[str, list[tuple[str, int]]]) -> dict[str, list[str]]:
    """control_plane's {setting: [(address, port)]} as {setting: [address]}."""
    return {setting: sorted({address for address, _ in found}) for setting, found in endpoints.items()}


def url_endpoint(url: str | None) -> tuple[str, int] | None:
    """(host, TCP port) a broker or state-store URL connects to; None for a unix socket. A URL
    without a host (`amqp:///`, `redis://:pw@/0`) is localhost's, as kombu and redis-py
    connect it (review: such a broker was blocked from no job)."""
    from urllib.parse import urlsplit

    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        return None
    try:
        return parts.hostname or "localhost", parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:  # a port that is no number: the URL is unusable anyway
        return None


def resolve(host: str, port: int) -> list[tuple[str, int]]:
    """IPv4 and IPv6 addresses of `host` (a name or an address), with `port`; [] when it
    does not resolve."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found = {(str(info[4][0]).split("%")[0], port) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)}
    return sorted(found)


def control_plane(urls: dict[str, str | None], extra: tuple[str, ...] = ()) -> dict[str, list[tuple[str, int]]]:
    """{setting: [(address, port)]} of the broker and state store, resolved, plus `extra`
    host:port pairs (job_blocked_addresses)."""
    found: dict[str, list[tuple[str, int]]] = {}
    for setting, url in urls.items():
        endpoint = url_endpoint(url)
        if endpoint is not None:
            found[setting] = resolve(*endpoint)
    for item in extra:
        host, _, port = item.rpartition(":")
        found.setdefault("job_blocked_addresses", []).extend(resolve(host.strip("[]"), int(port)))
    return found


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
    def create(self, net: NetworkDef, reserved: dict[str, str]) -> NetworkDef:
        """Store `net` with a VNI no other network has, unless its name exists or its CIDR
        overlaps (atomic under WATCH); returns what was stored."""
        import redis

        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self.key)
                    defs = self._decode(pipe.hgetall(self.key))
                    if net.name in {n.name for n in defs}:
                        raise Conflict(f'failed to create network "{net.name}": it already exists')
                    clash = next((n.name for n in defs if bridge_name(n.name) == bridge_name(net.name)), None)
                    if clash is not None:  # one bridge (and overlay port) for two networks (red-team)
                        raise Conflict(
                            f'failed to create network "{net.name}": its bridge name {bridge_name(net.name)} is '
                            f"network \"{clash}\"'s (the names' hashes clash): choose another name"
                        )
                    existing = {f'existing network "{n.name}"': n.cidr for n in defs}
                    hit = overlap(net.cidr, {**reserved, **existing})
                    if hit:
                        raise Conflict(f'failed to create network "{net.name}": CIDR {net.cidr} overlaps with {hit}')
                    net = dataclasses.replace(net, vni=free_vni(net.name, {n.overlay_vni for n in defs}))
                    pipe.multi()
                    pipe.hset(self.key, net.name, json.dumps(net.to_dict()))
                    pipe.execute()
                    return net
                except redis.WatchError:
                    continue

    @_url
    def restore(self, net: NetworkDef) -> NetworkDef | None:
        """Write a definition Redis lost back as it was (a worker's running job still uses
        it), unless the name was defined meanwhile: then that definition, else None."""
        if self.redis.hsetnx(self.key, net.name, json.dumps(net.to_dict())):
            return None
        raw = self.redis.hget(self.key, net.name)
        return None if raw is None else NetworkDef.from_json(raw)

    @_url
    def all(self) -> list[NetworkDef]:
        return self._decode(self.redis.hgetall(self.key))

    @_url
    def names(self) -> list[str]:
        """The user networks' names (their definitions unread)."""
        return sorted(n.decode(errors="surrogateescape") for n in self.redis.hkeys(self.key))

    @_url
    def get(self, name: str) -> NetworkDef:
        """One definition; one that does not read says so (ValidationError), naming it."""
        raw = self.redis.hget(self.key, name)
        if raw is None:
            if not name:
                raise ValidationError("no network name given")  # a usage error: exit 2
            raise NotFound(f"no such network: {shown(name)}{hinted(name, self.names())}")
        return stored_named(NetworkDef, raw, "network", name)

    @_url
    def delete(self, name: str) -> bool:
        return bool(self.redis.hdel(self.key, name))

    @staticmethod
    def _decode(raw: dict[bytes, bytes]) -> list[NetworkDef]:
        """The definitions that read (`stored_by_name`), by name."""
        return sorted(stored_by_name(NetworkDef, raw, "network").values(), key=lambda n: n.name)


def host_prefixes() -> dict[str, str]:
    """This host's addresses and routes (all tables) as {description: cidr}, if `ip` exists."""
    import subprocess

    found: dict[str, str] = {}
    try:
        out = subprocess.run(
            ["ip", "-4", "-j", "route", "show", "table", "all"], capture_output=True, text=True, timeout=10
        ).stdout
        routes = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.SubprocessError):
        return found
    for route in routes:
        dst, dev = route.get("dst", ""), route.get("dev", "")
        if dst in ("default", "") or is_joblet_link(dev):
            continue
        try:
            cidr = str(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
        except ValueError:
            continue
        found[f"host route {cidr} dev {dev}"] = cidr
    return found
