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


def guest_networks(default_bridge: str) -> list[str]:
    """The IPv4 networks of this host's bridges that are not joblet's and hold only its
    containers and VMs (Docker's docker0 and br-*, libvirt's virbr*, LXD's, podman's): the
    broker's own container among them in docker-compose.yml. A job reached a container by its
    address, past the blocked set (which holds the published address) and Docker's rules,
    which joblet's DOCKER-USER accept goes before (review). A bridge is the host's LAN where
    it carries a default route (a bridged uplink, br0 or vmbr0) or has a port of another kind
    than GUEST_PORTS (a NIC, a bond, a VLAN: Proxmox's vmbr1 for storage): it stays reachable,
    as other routes' networks do.

    Only addresses are dumped (host_addresses' reason), then the few links holding one and
    the ports of those that are bridges."""
    with IPRoute() as ipr:
        uplinks = set()
        for route in ipr.get_default_routes(family=2):
            uplinks.add(route.get_attr("RTA_OIF"))
            uplinks.update(hop.get("oif") for hop in route.get_attr("RTA_MULTIPATH") or ())
        held: dict[int, set[str]] = {}
        for addr in ipr.get_addr(family=2):
            if addr["index"] in uplinks:
                continue
            network = ipaddress.IPv4Network(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}", strict=False)
            held.setdefault(addr["index"], set()).add(str(network))
        found: set[str] = set()
        for index, networks in held.items():
            try:
                (link,) = ipr.get_links(index)
                name = link.get_attr("IFLA_IFNAME") or ""
                if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "bridge" or is_joblet_link(
                    name, default_bridge
                ):
                    continue
                kinds = {port.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") for port in ipr.link("dump", master=index)}
            except NetlinkError:  # gone meanwhile
                continue
            if kinds <= GUEST_PORTS:
                found |= networks
    return sorted(found)
