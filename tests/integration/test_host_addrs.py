"""The addresses a node publishes in its heartbeat, read on the real kernel inside a
throwaway network namespace: the host's own, not loopback's nor joblet's links'."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from joblet.network_agent.host_addrs import guest_networks, host_addresses
from joblet.network_agent.netns import JobNetns
from joblet.worker.nsthread import JobThread
from tests.conftest import need


def read_after(commands: list[str], read: Callable[[], list[str]]) -> list[str]:
    """`read()` in a throwaway network namespace, after these `ip` commands were run there."""
    need(os.geteuid() == 0, "needs root (network namespaces)")
    thread = JobThread("addrs")
    netns = JobNetns.create(thread)

    def setup() -> list[str]:
        for argv in commands:
            subprocess.run(["ip", *argv.split()], check=True)
        return read()

    try:
        return netns.run(setup)
    finally:
        netns.close()
        thread.close()


def test_a_node_publishes_its_own_addresses_only() -> None:
    commands = [
        "link add uplink0 type veth peer name uplink1",
        "addr add 192.0.2.10/24 dev uplink0",
        "addr add 192.0.2.11/24 dev uplink0 label uplink0:1",
        "link add jv0123456789 type veth peer name jv0123456788",
        "addr add 198.51.100.1/30 dev jv0123456789",
        "link add joblet0 type bridge",
        "addr add 172.20.0.1/16 dev joblet0",
    ]
    found = read_after(commands, lambda: host_addresses("joblet0"))
    assert found == ["192.0.2.10/24 dev uplink0", "192.0.2.11/24 dev uplink0"]


def test_the_guests_networks_are_the_foreign_bridges_without_the_default_route() -> None:
    """Docker's and libvirt's bridges hold the host's containers and VMs (no job reaches
    them); a bridge holding the default route is the host's uplink (br0, vmbr0), one with a
    port of another kind (a NIC, a VLAN: vmbr1) a LAN; joblet's own bridges and other kinds
    of links are not guests."""
    commands = [
        "link add docker0 type bridge",
        "addr add 172.17.0.1/16 dev docker0",
        "link add dkv0 type veth peer name dkv1",  # a container's port on docker0
        "link set dkv0 master docker0",
        "link add virbr0 type bridge",
        "addr add 192.168.122.1/24 dev virbr0",
        "link add br0 type bridge",  # the uplink: its LAN stays reachable
        "addr add 192.0.2.10/24 dev br0",
        "link add joblet0 type bridge",
        "addr add 172.20.0.1/16 dev joblet0",
        "link add jb0123456789 type bridge",
        "addr add 10.1.0.1/24 dev jb0123456789",
        # NICs: ifb, the one link of no container's kind this test kernel has (no dummy, vlan)
        "link add lan1 type ifb",  # another LAN, on a NIC
        "addr add 198.51.100.1/24 dev lan1",
        "link add vmbr1 type bridge",  # a storage LAN's bridge, on a NIC of its own
        "addr add 203.0.113.1/24 dev vmbr1",
        "link add nic1 type ifb",
        "link set nic1 master vmbr1",
        "link add ve-box type veth peer name host0",  # a routed veth: a LAN of a host that is
        "addr add 10.22.0.1/28 dev ve-box",  # itself a container as much as an nspawn's box
        *(
            f"link set {link} up"
            for link in ("docker0", "virbr0", "br0", "joblet0", "jb0123456789", "lan1", "vmbr1", "ve-box")
        ),
        "route add default via 192.0.2.1",
        "route add 10.23.0.5/32 dev docker0",  # one container's route, outside its bridge's range
        "route add default via 172.17.0.9 table 200",  # another table's default: not the uplink
    ]
    found = read_after(commands, lambda: guest_networks("joblet0"))
    assert found == ["10.23.0.5/32", "172.17.0.0/16", "192.168.122.0/24"]
