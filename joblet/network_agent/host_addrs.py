"""The host's own IPv4 addresses, as a node publishes them in its heartbeat (`rnx nodes`)."""

from __future__ import annotations

from pyroute2 import IPRoute

JOB_PREFIXES = ("jv", "ji", "jb", "joblet")


def host_addresses() -> list[str]:
    """"ADDRESS/LEN dev IFNAME" for each IPv4 address outside loopback and joblet's own links."""
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        found = []
        for addr in ipr.get_addr(family=2):
            name = names.get(addr["index"], "?")
            if name == "lo" or name.startswith(JOB_PREFIXES):
                continue
            found.append(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']} dev {name}")
        return found
