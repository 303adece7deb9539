"""A simulated LAN between throwaway hosts: a bridge inside a namespace of its own, one veth
per host, addresses from a range this machine does not use (PITFALLS 31: its uplink has sat
on a TEST-NET range, so the range is checked against `ip route` and `ip addr` first)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import uuid

CANDIDATES = ("198.18.0.0/24", "198.19.77.0/24", "198.51.100.0/24", "100.127.200.0/24")


def used_prefixes() -> list[ipaddress.IPv4Network]:
    """Every IPv4 route destination and address of this machine (all tables)."""
    found = []
    routes = json.loads(
        subprocess.run(
            ["ip", "-4", "-j", "route", "show", "table", "all"], capture_output=True, text=True, check=True
        ).stdout
        or "[]"
    )
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default":
            found.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
    addrs = json.loads(
        subprocess.run(["ip", "-4", "-j", "addr"], capture_output=True, text=True, check=True).stdout or "[]"
    )
    for link in addrs:
        for info in link.get("addr_info", []):
            found.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    return found


def free_range() -> ipaddress.IPv4Network:
    """The first candidate range that overlaps nothing this machine routes or holds."""
    used = used_prefixes()
    for cidr in CANDIDATES:
        net = ipaddress.IPv4Network(cidr)
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError(f"every test LAN range is in use here: {CANDIDATES}")


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


class Lan:
    """The LAN namespace with its bridge; `attach` plugs a host namespace in."""

    def __init__(self) -> None:
        self.net = free_range()
        self.netns = f"joblet-lan-{uuid.uuid4().hex[:6]}"
        self.hosts: list[str] = []
        sh("ip", "netns", "add", self.netns)
        sh("ip", "-n", self.netns, "link", "add", "lan", "type", "bridge")
        sh("ip", "-n", self.netns, "link", "set", "lan", "up")

    def address(self, index: int) -> str:
        return str(self.net.network_address + index + 1)

    def attach(self, host_netns: str, index: int, default_route: bool = False) -> str:
        """A veth `lan0` in the host with the LAN's address number `index`; returns it."""
        port = f"p{index}"
        sh("ip", "-n", self.netns, "link", "add", port, "type", "veth", "peer", "name", "lan0", "netns", host_netns)
        sh("ip", "-n", self.netns, "link", "set", port, "master", "lan", "up")
        address = self.address(index)
        sh("ip", "-n", host_netns, "addr", "add", f"{address}/{self.net.prefixlen}", "dev", "lan0")
        sh("ip", "-n", host_netns, "link", "set", "lan0", "up")
        if default_route:  # the underlay is then found from the default route, not a setting
            gateway = str(self.net.broadcast_address - 1)
            sh("ip", "-n", host_netns, "route", "add", "default", "via", gateway)
        self.hosts.append(host_netns)
        return address

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.netns], check=False, capture_output=True)
