"""host mode, MTU following the uplink, host mode turned off by config, the overlay port held."""

from __future__ import annotations

import errno

import pytest

from joblet.api.client import Client
from joblet.api.models import JobSpec
from joblet.config import load
from joblet.errors import NetworkError
from joblet.network_agent.agent import NetworkAgent
from tests.conftest import Host, running_host, sh
from tests.integration.helpers import run


def uplink(h: Host) -> None:
    """An uplink of MTU 1400 with the default route: the overlay's underlay address."""
    sh(*f"ip -n {h.netns} link add uplink0 mtu 1400 type veth peer name uplink0p mtu 1400".split())
    sh("ip", "-n", h.netns, "link", "set", "uplink0p", "up")
    sh("ip", "-n", h.netns, "addr", "add", "198.51.100.1/24", "dev", "uplink0")
    sh("ip", "-n", h.netns, "link", "set", "uplink0", "up")
    sh("ip", "-n", h.netns, "route", "add", "default", "via", "198.51.100.254")


@pytest.fixture(scope="module")
def mtu_host(redis_sock):
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


BIND_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
    print("bound")
except OSError as exc:
    print(exc.errno)
"""


@pytest.fixture(scope="module")
def hold_host(redis_sock):
    yield from running_host(redis_sock, "porthold", prepare=uplink, allow_host_network="true")


def test_the_worker_holds_the_overlay_port(hold_host):
    """A host-mode job shares the host's ports, but not the overlay's: the worker holds it
    from its start, before any network has a port here (port_hold.py); the networks' ports
    still come up on it."""
    client = Client(hold_host.cfg)
    links = sh("ip", "-n", hold_host.netns, "-o", "link", "show").stdout
    assert " jx" not in links  # no network's port holds it yet
    _, out, _ = run(client, "python3", "-c", BIND_UDP, str(hold_host.cfg.vxlan_port), network="host")
    assert out == f"{errno.EADDRINUSE}\n".encode()
    _, out, _ = run(client, "python3", "-c", BIND_UDP, "4790", network="host")
    assert out == b"bound\n"  # positive control: the job binds the host's other UDP ports
    client.networks.create("held", "10.182.0.0/24")
    rec, out, _ = run(client, "cat", "/sys/class/net/eth0/mtu", network="held")
    assert rec.exit_code == 0 and out == b"1350\n"  # the network's overlay port came up
    assert " jx" in sh("ip", "-n", hold_host.netns, "-o", "link", "show").stdout
