"""The checks of joblet's settings (pure): each parses a value from the TOML file, from code,
or as the text of an environment variable, and returns it checked or raises ValueError."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from joblet.api.limits import parse_bytes
from joblet.fields import boolean, bounded, brief, integer, number, text

Check = Callable[[Any], Any]
TRUE = {"1", "true", "t", "yes", "y", "on"}  # the words pydantic read
FALSE = {"0", "false", "f", "no", "n", "off"}


def optional_text(value: Any) -> str | None:
    return None if value is None else text(value)


def nonempty(value: Any) -> str:
    """Text that is not empty: `JOBLET_QUEUE=` queued jobs on `.host.NODE`, which no worker
    reads, and rnx waited for good (usability run)."""
    return text(value, 1)


def link_name(value: Any) -> str:
    """A network interface's name the kernel takes (1-15 bytes; no '/', ':' or blank), not
    one of joblet's prefixes: a bridge_name of `jbr0` was deleted at every heartbeat as a
    user network's bridge no network owns, and `jv*`, `ji*` match the rules for jobs' links
    (review)."""
    from joblet.names import JOB_VETH_PREFIXES, NETWORK_BRIDGE_PREFIX, VXLAN_PREFIX

    name = text(value, 1)
    # what the firewall's rules take (firewall._IFNAME): a bridge_name with '*' or '"' passed
    # here and failed only at the first job's render (review)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", name) or name in (".", ".."):
        raise ValueError("must be a network interface name: 1 to 15 letters, digits, '_', '.' or '-'")
    taken = (NETWORK_BRIDGE_PREFIX, VXLAN_PREFIX, *JOB_VETH_PREFIXES)
    if name.startswith(taken):
        raise ValueError(f"must not begin with {', '.join(repr(p) for p in taken)}: joblet names its own links so")
    return name


def path(value: Any) -> Path:
    return value if isinstance(value, Path) else Path(text(value, 1))


def optional_path(value: Any) -> Path | None:
    return None if value is None or value == "" else path(value)


def whole(ge: int | None = None, le: int | None = None) -> Check:
    """An integer within bounds; text of one too."""
    return partial(integer, ge=ge, le=le)


def optional_whole(ge: int | None = None, le: int | None = None) -> Check:
    """An integer within bounds, or None (unset: a default worked out where it is used)."""
    required = whole(ge, le)
    return lambda value: None if value is None or value == "" else required(value)


def real(ge: float | None = None, gt: float | None = None) -> Check:
    """A number within bounds; text of one too."""
    return partial(number, ge=ge, gt=gt)


def size(ge: int) -> Check:
    """A size in bytes, also as 64M, 512K, 1G."""
    return lambda value: int(bounded(parse_bytes(value), ge))


def flag(value: Any) -> bool:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE | FALSE:
            return word in TRUE
        raise ValueError(f"must be true or false, not {value[:40]!r}")
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return boolean(value)


def choice(*allowed: str) -> Check:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, not {brief(value)}")
        return str(value)

    return check


def listed(item: Check) -> Check:
    """A list (TOML, code) or comma-separated text (environment) of checked items, as a tuple."""

    def check(value: Any) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError(f"must be a list, not {type(value).__name__}")
        return tuple(item(v) for v in value)

    return check


def address(value: Any) -> str:
    return str(ipaddress.ip_address(text(value)))


def underlay(value: Any) -> str | None:
    return str(ipaddress.IPv4Address(text(value))) if value else None


def absolute_path(value: Any) -> str:
    found = text(value)
    if not found.startswith("/") or any(c.isspace() for c in found) or "/../" in f"{found}/":
        raise ValueError(f"{found!r} is not an absolute path without blanks or '..'")
    return found


def optional_absolute_path(value: Any) -> Path | None:
    """None, or an absolute path (a relative JOBLET_CGROUP_ROOT was blamed on `ip netns exec`,
    operator's run)."""
    if value is None or value == "":  # `JOBLET_CGROUP_ROOT=${X:-}`: not set, as before
        return None
    return value if isinstance(value, Path) and value.is_absolute() else Path(absolute_path(str(value)))


def outside_etc(value: Any) -> str:
    """An extra read-only path for jobs: not /etc or under it (jobs see the worker's copy
    of /etc there, without secrets; worker/etc_view.py)."""
    found = absolute_path(value)
    real = os.path.realpath(found)  # a link to /etc, or a parent of it (/), would bind it too
    if real == "/etc" or real.startswith("/etc/") or "/etc".startswith(real.rstrip("/") + "/"):
        raise ValueError(f"{found!r} is or holds /etc, which jobs see as a copy without its secrets")
    return found


def endpoint(value: Any) -> str:
    found = text(value)
    host, _, port = found.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{found!r} is not host:port")
    return found


REDIS_SCHEMES = ("redis", "rediss", "unix")
BROKER_SCHEMES = (*REDIS_SCHEMES, "redis+socket", "amqp", "amqps", "pyamqp")  # kombu's spellings too


def url(schemes: tuple[str, ...]) -> Check:
    """A URL with one of `schemes` whose port, when it has one, is a number (Redis and kombu
    would fail on it later, with a traceback, at the first connection)."""

    def check(value: Any) -> str:
        from urllib.parse import urlsplit

        from joblet.api.redis_conn import safe_url

        found = text(value, 1)
        parts = urlsplit(found)
        shown = repr(safe_url(found)[:60])
        if parts.scheme not in schemes:
            raise ValueError(f"{shown} must start with {', '.join(s + '://' for s in schemes)}")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError:
            raise ValueError(f"{shown} has a port that is not a number from 0 to 65535") from None
        if parts.scheme == "unix" and not parts.path:
            raise ValueError(f"{shown} names no socket path (unix:///run/redis.sock)")
        if parts.scheme in ("redis", "rediss", "unix"):
            _redis_db(parts, shown)
        return found

    return check


def _redis_db(parts: Any, shown: str) -> None:
    """A Redis URL's database (`?db=N`, or the path of a redis:// URL) is a number: `?db=abc`
    read as database 0 in rnx and failed with a traceback where redis-py read it."""
    from urllib.parse import parse_qs

    dbs = parse_qs(parts.query).get("db", [])
    if parts.scheme != "unix" and parts.path.strip("/"):
        dbs.append(parts.path.strip("/"))
    for db in dbs:
        if not (db.isascii() and db.isdigit() and len(db) <= 9):
            raise ValueError(f"{shown} names database {db[:20]!r}: give a number (redis://host:6379/0, ?db=0)")


def optional_url(schemes: tuple[str, ...]) -> Check:
    required = url(schemes)
    return lambda value: None if value is None else required(value)


def network(value: Any) -> str:
    """An IPv4 or IPv6 network written exactly (no host bits set)."""
    return str(ipaddress.ip_network(text(value), strict=True))


# what a user network's range may be by default (network_ranges) and without
# allow_public_networks: a public range's route to its bridge took the host's own traffic there
# (to 8.8.8.8, to its package mirrors and APIs) and gave it to the network's jobs (usability
# and red-team runs)
PRIVATE_RANGES = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "198.18.0.0/15",  # benchmarking
    "192.0.2.0/24",  # the three documentation ranges
    "198.51.100.0/24",
    "203.0.113.0/24",
)


def cidr(value: Any) -> str:
    net = ipaddress.IPv4Network(text(value), strict=True)
    if net.prefixlen > 29:
        raise ValueError("must be /29 or larger")
    return str(net)
