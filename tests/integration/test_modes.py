"""host mode, MTU following the uplink, and host mode turned off by config."""

from __future__ import annotations

import pytest

from joblet.api.client import Client
from joblet.api.models import JobSpec
from joblet.config import load
from joblet.errors import NetworkError
from joblet.network_agent.agent import NetworkAgent
from tests.conftest import Host, running_host, sh
from tests.integration.helpers import run


@pytest.fixture(scope="module")
def mtu_host(redis_sock):
    def uplink(h: Host) -> None:
        sh(
            "ip",
            "-n",
            h.netns,
            "link",
            "add",
            "uplink0",
            "mtu",
            "1400",
            "type",
            "veth",
            "peer",
            "name",
            "uplink0p",
            "mtu",
            "1400",
        )
        sh("ip", "-n", h.netns, "link", "set", "uplink0p", "up")
        sh("ip", "-n", h.netns, "addr", "add", "198.51.100.1/24", "dev", "uplink0")
        sh("ip", "-n", h.netns, "link", "set", "uplink0", "up")
        sh("ip", "-n", h.netns, "route", "add", "default", "via", "198.51.100.254")

    yield from running_host(redis_sock, "hostmtu", prepare=uplink, allow_host_network="true")


def test_interfaces_follow_the_uplink_mtu(mtu_host):
    client = Client(mtu_host.cfg)
    client.networks.create("mtu-net", "10.180.0.0/24")
    # a user network may span hosts: its MTU leaves room for the overlay's 50 bytes
    for network, mtu in (("bridge", b"1400"), ("mtu-net", b"1350")):
        rec, out, _ = run(client, "sh", "-c", "cat /sys/class/net/eth0/mtu; ip -o link show eth0", network=network)
        assert out.startswith(mtu + b"\n") and b" mtu " + mtu + b" " in out, network


def test_custom_mtu_wins(mtu_host):
    client = Client(mtu_host.cfg)
    client.networks.create("jumbo", "10.181.0.0/24", mtu=1300)
    _, out, _ = run(client, "ip", "-o", "link", "show", "eth0", network="jumbo")
    assert b" mtu 1300 " in out


def test_host_mode_shares_the_host_network(mtu_host):
    client = Client(mtu_host.cfg)
    rec, out, _ = run(client, "ip", "-o", "link", "show", "uplink0", network="host")
    assert rec.exit_code == 0 and b"uplink0" in out


def test_host_mode_can_be_turned_off():
    cfg = load(allow_host_network=False, node="n1")
    agent = NetworkAgent(cfg, None, None)  # type: ignore[arg-type]
    with pytest.raises(NetworkError, match="host networking is disabled on node 'n1'"):
        agent.facts(JobSpec(command="true", network="host"))
