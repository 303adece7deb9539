"""Port security (pure): a job sends only from its own MAC and IPv4 address.

Jobs keep Docker's CAP_NET_RAW, so they can craft any frame: ARP replies claiming a peer's
gateway, packets with a foreign source address, IPv6 router advertisements. Docker and Podman
let those through on a shared bridge; joblet checks every frame a job port sends, in the
kernel:

- bridged and custom networks: a `bridge joblet` table. A frame from a job port (`jv*`) must
  carry the port's MAC as Ethernet source; ARP must name the port's MAC and address as sender;
  IPv4 must come from the port's address; nothing else (IPv6, VLAN tags, other ether types)
  passes. Unknown `jv*` ports are dropped too: a port whose elements are not (yet) in the sets
  sends nothing (fail closed). Nothing but IPv4 and ARP goes *to* a job port either.
- isolated (routed) links: the `inet joblet` table checks the source address of what enters
  from `ji*` (see firewall.render), and IPv6 is off on both ends.

Elements are added and deleted per job in small batches; the whole table is rendered from the
worker's state when it is (re)applied, always in the same `nft -f` batch as `inet joblet`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from joblet.errors import NetworkError
from joblet.names import BRIDGED_VETH_PREFIX as BRIDGED_PREFIX
from joblet.names import JOB_LINK as _IFNAME
from joblet.names import TABLE, VXLAN_PREFIX

_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}\Z")
_OVERLAY = re.compile(rf"^{VXLAN_PREFIX}[0-9a-f]{{10}}\Z")


# An IPv4 fragment (more to come, or an offset): none leaves a job. The host's conntrack
# reassembles what its bridges and routes carry, in one 4 MB budget per namespace
# (ipfrag_high_thresh) that every job and the host share; a job whose fragments were partly
# dropped on the way (its own --max-bandwidth queue drops them) filled it in 12 s and held
# it, each incomplete datagram for 30 s: no fragmented datagram then reached the host or
# another job (red-team run). Matched before the bridge's netfilter hooks and the routed
# path's defragmentation (firewall.py), so no fragment of a job is ever held.
FRAGMENT = "ip frag-off & 0x3fff != 0"
# the bridge's prerouting chain runs before bridge conntrack's defragmentation (-200, where
# nf_conntrack_bridge hooks once any bridge-family rule uses `ct`; at the same priority the
# order is the hooks', and this table is made again often) and br_netfilter's IP hooks (0)
BEFORE_BRIDGE_DEFRAG = -350


def mac_for(job_id: str, network: str) -> str:
    """A job interface's MAC: locally administered unicast (02:...), derived from the job."""
    digest = hashlib.sha1(f"{job_id}/{network}/mac".encode()).hexdigest()
    return "02:" + ":".join(digest[i : i + 2] for i in range(0, 10, 2))


@dataclass(frozen=True)
class Port:
    """The host end of one job link and what may be sent through it."""

    ifname: str
    address: str
    mac: str | None = None  # None: a routed (isolated) link, checked in the inet table

    def checked(self) -> Port:
        # nft treats a bad address as a host name and looks it up: validate before rendering
        if not _IFNAME.match(self.ifname):
            raise NetworkError(f"invalid job interface name {self.ifname!r}")
        ipaddress.IPv4Address(self.address)
        if self.mac is not None and not _MAC.match(self.mac):
            raise NetworkError(f"invalid MAC address {self.mac!r} for {self.ifname}")
        return self

    @property
    def bridged(self) -> bool:
        return self.mac is not None


def elements(items: list[str]) -> str:
    return f" elements = {{ {', '.join(items)} }};" if items else ""


def render_bridge(ports: list[Port], overlay: tuple[tuple[str, str], ...] = ()) -> str:
    """The whole `bridge joblet` table (replaces the live one atomically); `overlay`: the
    (overlay port, MAC) pairs of remote jobs that may come in from other nodes (overlay.py)."""
    bridged = [p.checked() for p in ports if p.bridged]
    macs = [f'"{p.ifname}" . {p.mac}' for p in bridged]
    for ifname, mac in overlay:
        if not _OVERLAY.match(ifname) or not _MAC.match(mac):
            raise NetworkError(f"invalid overlay entry {ifname!r} . {mac!r}")
    remote = [f'"{ifname}" . {mac}' for ifname, mac in overlay]
    ips = [f'"{p.ifname}" . {p.address}' for p in bridged]
    tag = 'comment "joblet:port-security"'
    return "\n".join(
        [
            f"table bridge {TABLE} {{}}",
            f"delete table bridge {TABLE}",
            f"table bridge {TABLE} {{",
            f"  set port_macs {{ type ifname . ether_addr;{elements(macs)} }}",
            f"  set port_ips {{ type ifname . ipv4_addr;{elements(ips)} }}",
            f"  set overlay_macs {{ type ifname . ether_addr;{elements(remote)} }}",
            "  chain prerouting {",
            f"    type filter hook prerouting priority {BEFORE_BRIDGE_DEFRAG}; policy accept;",
            f'    iifname "{BRIDGED_PREFIX}*" jump job_port {tag}',
            f'    iifname "{VXLAN_PREFIX}*" jump overlay_port {tag}',
            "  }",
            "  chain overlay_port {",  # frames from other nodes: their jobs' MACs, IPv4 and ARP only
            f"    iifname . ether saddr != @overlay_macs drop {tag}",
            "    ether type { ip, arp } accept",
            f"    drop {tag}",
            "  }",
            "  chain input {",  # remote jobs talk to their own node's gateway, never to this one
            "    type filter hook input priority filter; policy accept;",
            f'    iifname "{VXLAN_PREFIX}*" drop {tag}',
            "  }",
            "  chain output {",  # this host's own frames (its gateway's ARP) stay on this node
            "    type filter hook output priority filter; policy accept;",
            f'    oifname "{VXLAN_PREFIX}*" drop {tag}',
            "  }",
            "  chain job_port {",
            f"    iifname . ether saddr != @port_macs drop {tag}",
            f"    iifname . arp saddr ether != @port_macs drop {tag}",
            f"    iifname . arp saddr ip != @port_ips drop {tag}",
            "    ether type arp accept",
            f"    iifname . ip saddr != @port_ips drop {tag}",
            f'    {FRAGMENT} drop comment "joblet:no-fragments"',
            "    ether type ip accept",
            f"    drop {tag}",  # IPv6 (router advertisements, ND), VLAN tags, anything else
            "  }",
            "  chain postrouting {",
            "    type filter hook postrouting priority filter; policy accept;",
            f'    oifname "{BRIDGED_PREFIX}*" ether type != {{ ip, arp }} drop {tag}',
            "  }",
            "}",
            "",
        ]
    )


def render_elements(verb: str, ports: list[Port]) -> str:
    """`add` or `delete` the set elements of these ports (bridge and inet tables). A delete
    adds first in the same batch: deleting an element that is not there fails the batch, and
    teardown must succeed twice (nft 1.0.6 has no `destroy`)."""
    if verb not in ("add", "delete"):
        raise ValueError(verb)
    lines = []
    for p in (p.checked() for p in ports):
        if p.bridged:
            found = [
                ("bridge", "port_macs", f'"{p.ifname}" . {p.mac}'),
                ("bridge", "port_ips", f'"{p.ifname}" . {p.address}'),
            ]
        else:
            found = [("inet", "iso_src", f'"{p.ifname}" . {p.address}')]
        for family, name, element in found:
            for step in ("add", "delete") if verb == "delete" else ("add",):
                lines.append(f"{step} element {family} {TABLE} {name} {{ {element} }}")
    return "".join(f"{line}\n" for line in lines)
