"""The addresses a node publishes in its heartbeat, read on the real kernel inside a
throwaway network namespace: the host's own, not loopback's nor joblet's links'."""

from __future__ import annotations

import os
import subprocess

from joblet.network_agent.host_addrs import host_addresses
from joblet.network_agent.netns import JobNetns
from joblet.worker.nsthread import JobThread
from tests.conftest import need


def test_a_node_publishes_its_own_addresses_only() -> None:
    need(os.geteuid() == 0, "needs root (network namespaces)")
    thread = JobThread("addrs")
    netns = JobNetns.create(thread)
    try:

        def setup() -> list[str]:
            for argv in (
                "link add uplink0 type veth peer name uplink1",
                "addr add 192.0.2.10/24 dev uplink0",
                "addr add 192.0.2.11/24 dev uplink0 label uplink0:1",
                "link add jv0123456789 type veth peer name jv0123456788",
                "addr add 198.51.100.1/30 dev jv0123456789",
                "link add joblet0 type bridge",
                "addr add 172.20.0.1/16 dev joblet0",
            ):
                subprocess.run(["ip", *argv.split()], check=True)
            return host_addresses("joblet0")

        assert netns.run(setup) == ["192.0.2.10/24 dev uplink0", "192.0.2.11/24 dev uplink0"]
    finally:
        netns.close()
        thread.close()
