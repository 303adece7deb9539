"""host mode, MTU following the uplink, jobs' ARP retries, host mode turned off by config, the overlay
port held."""

from __future__ import annotations

import errno
import json
import subprocess

import pytest

from joblet.api.client import Client
from joblet.api.models import JobSpec
from joblet.api.networks import NetworkDef, NetworkStore
from joblet.config import load
from joblet.errors import NetworkError
from joblet.names import HOLD_VNI, vxlan_name
from joblet.network_agent.agent import NetworkAgent
from tests.conftest import Host, running_host, sh
from tests.integration.helpers import eventually, run


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


def test_job_links_resend_arp_after_200_ms_and_host_links_keep_their_own(mtu_host):
    """A job's first ARP request to a job on another node may reach that node before its
    worker learnt of the job: the second one goes 200 ms later, not 1 s (links.py)."""
    client = Client(mtu_host.cfg)
    client.networks.create("arp-net", "10.182.0.0/24")
    neigh = "cat /proc/sys/net/ipv4/neigh/{0}/retrans_time_ms /proc/sys/net/ipv4/neigh/{0}/mcast_solicit"
    for network in ("bridge", "arp-net", "isolated"):
        _, out, _ = run(client, "sh", "-c", neigh.format("eth0"), network=network)
        assert out.split() == [b"200", b"15"], network
    host_own = mtu_host.in_ns("sh", "-c", neigh.format("uplink0")).stdout.split()
    _, out, _ = run(client, "sh", "-c", neigh.format("uplink0"), network="host")
    assert out.split() == [v.encode() for v in host_own] and host_own != ["200", "15"], out


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


def test_a_network_with_the_holders_vni_fails_alone(hold_host):
    """A definition written past the API (or by an older joblet) with the holder's VNI: its
    job fails in one clear line; another network's job and its overlay port are unaffected."""
    client = Client(hold_host.cfg)
    store = NetworkStore(hold_host.cfg.redis_url, hold_host.cfg.key_prefix)
    clash = NetworkDef(name="clash", cidr="10.183.0.0/24", vni=HOLD_VNI)
    store.redis.hset(store.key, "clash", json.dumps(clash.to_dict()))  # create() would pick another
    try:
        rec, _, _ = run(client, "true", network="clash")
        assert rec.status.value == "FAILED" and f"VNI {HOLD_VNI} is in use on UDP port 4789" in (rec.error or ""), rec
        client.networks.create("fine", "10.184.0.0/24")
        rec, _, _ = run(client, "true", network="fine")
        assert rec.exit_code == 0 and vxlan_name("fine") in sh("ip", "-n", hold_host.netns, "-o", "link").stdout
    finally:
        store.delete("clash")


TAKE_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("bound", flush=True)
sys.stdin.read()
"""


def test_a_port_taken_before_the_worker_started_is_held_once_free(redis_sock):
    """Something else held the port when the worker started: the worker says so and holds it
    at a heartbeat once it is free (not only when a network's next port is made)."""
    taker: list[subprocess.Popen[bytes]] = []

    def take(h: Host) -> None:
        uplink(h)
        argv = ["ip", "netns", "exec", h.netns, "python3", "-c", TAKE_UDP, str(h.cfg.vxlan_port)]
        taker.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        assert taker[0].stdout is not None and taker[0].stdout.readline() == b"bound\n"

    try:
        for h in running_host(redis_sock, "portlate", prepare=take, allow_host_network="true"):
            client = Client(h.cfg)
            eventually(lambda h=h: "trying again at each heartbeat" in h.log(), "the worker's warning", 10)
            taker[0].communicate(b"")  # lets the port go

            def held(client: Client = client, h: Host = h) -> bool:
                _, out, _ = run(client, "python3", "-c", BIND_UDP, str(h.cfg.vxlan_port), network="host")
                return out == f"{errno.EADDRINUSE}\n".encode()

            eventually(held, "the worker holding the port once free", 15)
            assert "holding UDP port 4789 for the overlay now" in h.log()
    finally:
        for proc in taker:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
