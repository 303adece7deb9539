"""The host's own IPv4 addresses, as a node publishes them in its heartbeat (`rnx nodes`)."""

from __future__ import annotations

from pyroute2 import IPRoute

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
