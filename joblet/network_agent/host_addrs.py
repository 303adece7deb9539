"""The host's own IPv4 addresses, as a node publishes them in its heartbeat (`rnx nodes`), and
the networks of its containers and VMs, which no job reaches (firewall.py's `guests`)."""

from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from joblet.names import is_joblet_link


def host_addresses(default_bridge: str) -> list[str]:
    """ "ADDRESS/LEN dev IFNAME" for each IPv4 address outside loopback and joblet's own links.

    Only the addresses are dumped: an IPv4 address carries its link's name (IFA_LABEL, with
    ":alias" for an aliased one). Dumping every link as well, to name them, had pyroute2
    decode each job's veth on every heartbeat: ~30 % of the worker's Python time while 300
    bridge jobs ended at once."""
    found = []
    with IPRoute() as ipr:
        for addr in ipr.get_addr(family=2):
            name = (addr.get_attr("IFA_LABEL") or "?").split(":", 1)[0]
            if name == "lo" or is_joblet_link(name, default_bridge):
                continue
            found.append(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']} dev {name}")
    return found


GUEST_PORTS = {"veth", "tun", "dummy", "vxlan"}  # link kinds of containers' and VMs' ports (tun: taps too)
MAIN_TABLE = 254


def guest_networks(default_bridge: str, skip: tuple[str, ...] = ()) -> list[str]:
    """The IPv4 networks the host routes to its containers and VMs: out of a bridge that is
    not joblet's and has only GUEST_PORTS (Docker's docker0 and br-*, libvirt's virbr*, LXD's,
    podman's; the broker's own container in docker-compose.yml). Not a routed veth or tun: a
    host that is itself a container (LXD's) has its LANs on veths, a VPN on a tun (so
    systemd-nspawn's routed ve-* and a VM's routed tap stay reachable). A job reached a
    container by its address, past the
    blocked set (which holds the published address) and Docker's rules, which joblet's
    DOCKER-USER accept goes before (review). The main table's routes: its connected ones and
    any other (a /32 to one container, a network behind one). Not guests: the interfaces of
    the main table's default routes (a bridged uplink, br0 or vmbr0; a default route in
    another table un-guarded its container's bridge: red-team run), a bridge with a port of
    another kind (a NIC, a bond: Proxmox's vmbr1 for storage), joblet's own links and what
    lies in `skip` (the isolated pool: a route per job). They stay reachable, as the LAN.

    Only the main table's routes are dumped, then the few links they go out of."""
    skipped = [ipaddress.IPv4Network(n) for n in skip]
    with IPRoute() as ipr:
        routes = [r for r in ipr.get_routes(family=2) if r.get_attr("RTA_TABLE") == MAIN_TABLE]
        uplinks = set()
        for route in routes:
            if route["dst_len"] == 0:
                uplinks.add(route.get_attr("RTA_OIF"))
                uplinks.update(hop.get("oif") for hop in route.get_attr("RTA_MULTIPATH") or ())
        held: dict[int, set[str]] = {}
        for route in routes:
            oif, dst = route.get_attr("RTA_OIF"), route.get_attr("RTA_DST")
            if route["dst_len"] == 0 or oif is None or oif in uplinks or dst is None:
                continue
            network = ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False)
            if not any(network.subnet_of(s) for s in skipped):
                held.setdefault(oif, set()).add(str(network))
        found: set[str] = set()
        for index, networks in held.items():
            try:
                if _holds_guests(ipr, index, default_bridge):
                    found |= networks
            except NetlinkError:  # gone meanwhile
                continue
    return [str(n) for n in ipaddress.collapse_addresses(map(ipaddress.IPv4Network, found))]


def _holds_guests(ipr: IPRoute, index: int, default_bridge: str) -> bool:
    (link,) = ipr.get_links(index)
    name, kind = link.get_attr("IFLA_IFNAME") or "", link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    if kind != "bridge" or is_joblet_link(name, default_bridge):
        return False
    return {
        port.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") for port in ipr.link("dump", master=index)
    } <= GUEST_PORTS
