"""joblet's nftables table `inet joblet`: rendered pure, applied in one atomic batch.

The ruleset text starts by creating then deleting the table, so applying it replaces the
whole table atomically and repeatably; a broken file is rejected with the live rules intact.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass

from joblet.errors import NetworkError

TABLE = "joblet"
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


@dataclass(frozen=True)
class FwNetwork:
    """What the firewall needs to know of one bridged joblet network."""

    name: str
    bridge: str
    cidr: str
    nat: bool = True

    def checked(self) -> FwNetwork:
        # nft treats a bad address as a host name and looks it up: validate before rendering.
        ipaddress.IPv4Network(self.cidr, strict=True)
        if not _IFNAME.match(self.bridge):
            raise NetworkError(f"invalid bridge name {self.bridge!r}")
        return self


def render(networks: list[FwNetwork], isolated_pool: str | None = None,
           isolated_prefix: str = "ji") -> str:
    """The whole table for these networks and, if given, isolated mode's pool."""
    nets = [n.checked() for n in networks]
    forward = ["ct state established,related accept comment \"joblet:established\""]
    iso = f'"{isolated_prefix}*"'
    if isolated_pool:
        ipaddress.IPv4Network(isolated_pool, strict=True)
        # nothing opens a connection to an isolated job: not the world, not other jobs
        forward.append(f'oifname {iso} drop comment "joblet:isolated"')
    nat = []
    for n in nets:
        tag = f'comment "joblet:net:{n.name}"'
        forward.append(f'iifname "{n.bridge}" oifname "{n.bridge}" accept {tag}')
        others = [o.bridge for o in nets if o.bridge != n.bridge]
        if others:  # traffic between two joblet networks is dropped, both ways
            names = ", ".join(f'"{b}"' for b in others)
            forward.append(f"iifname \"{n.bridge}\" oifname {{ {names} }} drop {tag}")
        if n.nat:
            forward.append(f'iifname "{n.bridge}" accept {tag}')
            nat.append(f'ip saddr {n.cidr} oifname != "{n.bridge}" masquerade {tag}')
        else:
            forward.append(f'iifname "{n.bridge}" drop {tag}')
        forward.append(f'oifname "{n.bridge}" drop {tag}')  # isolated jobs included
    inbound = ['ct state established,related accept comment "joblet:established"'] if nets else []
    if nets:  # jobs never open connections to the host itself (the broker, other gateways)
        bridges = ", ".join(f'"{n.bridge}"' for n in nets)
        inbound.append(f'iifname {{ {bridges} }} drop comment "joblet:no-host-access"')
    if isolated_pool:
        forward.append(f'iifname {iso} accept comment "joblet:isolated"')
        inbound.append(f'iifname {iso} drop comment "joblet:no-host-access"')
        nat.append(f'ip saddr {isolated_pool} oifname != {iso} masquerade comment "joblet:isolated"')
    return "\n".join([
        f"table inet {TABLE} {{}}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        *(f"    {rule}" for rule in forward),
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        *(f"    {rule}" for rule in inbound),
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *(f"    {rule}" for rule in nat),
        "  }",
        "}",
        "",
    ])


def apply(ruleset: str) -> None:
    """Load a ruleset with `nft -f -` (atomic: all or nothing)."""
    try:
        proc = subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True, text=True,
                              timeout=30)
    except FileNotFoundError:
        raise NetworkError("nft not found: install nftables") from None
    if proc.returncode != 0:
        raise NetworkError(f"failed to load nftables rules: {proc.stderr.strip()}")


def table_exists() -> bool:
    proc = subprocess.run(["nft", "list", "table", "inet", TABLE], capture_output=True, timeout=30)
    return proc.returncode == 0

