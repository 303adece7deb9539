"""The host's own IPv4 addresses, as a node publishes them in its heartbeat (`rnx nodes`)."""

from __future__ import annotations

from pyroute2 import IPRoute

from joblet.names import is_joblet_link


def host_addresses(default_bridge: str) -> list[str]:
    """ "ADDRESS/LEN dev IFNAME" for each IPv4 address outside loopback and joblet's own links."""
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        found = []
        for addr in ipr.get_addr(family=2):
            name = names.get(addr["index"], "?")
            if name == "lo" or is_joblet_link(name, default_bridge):
                continue
            found.append(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']} dev {name}")
        return found
