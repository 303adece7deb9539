"""Networks that span hosts: three throwaway hosts on a simulated LAN, one installation, the
VXLAN overlay between their bridges (joblet/network_agent/overlay.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from joblet.api.client import Client
from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.errors import Conflict
from joblet.names import VXLAN_OVERHEAD, bridge_name, vxlan_name
from joblet.network_agent.portsec import mac_for
from tests.conftest import Host, add_guest, add_upstream, need, remove_guest, remove_upstream
from tests.integration.helpers import CLIENT, SERVE, eventually, output, run, stop_all, wait_running
from tests.integration.lan import Lan, used_prefixes

PROBE = CLIENT.replace("range(100)", "range(3)").replace("timeout=5", "timeout=1")


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    need(os.geteuid() == 0, "needs root (namespaces, links, nftables)")
    made = Lan()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def hosts(redis_sock: str, lan: Lan) -> Iterator[tuple[Host, Host, Host]]:
    made: list[Host] = []
    try:
        a = Host(redis_sock, "ova", underlay_address=lan.address(0), job_net_raw="true")  # ARP made in jobs
        made.append(a)
        b = Host(redis_sock, "ovb", fleet=a, underlay_address=lan.address(1), job_net_raw="true")
        made.append(b)
        c = Host(redis_sock, "ovc", fleet=a, job_net_raw="true")  # no underlay: the default route's interface
        made.append(c)
        for i, h in enumerate(made):
            lan.attach(h.netns, i, default_route=h is c)
        for h in made:
            h.start_worker()
        yield a, b, c
    finally:
        for h in reversed(made):
            h.close()


@pytest.fixture(scope="module")
def client(hosts: tuple[Host, Host, Host]) -> Client:
    return Client(hosts[0].cfg)


@pytest.fixture(scope="module")
def server(client: Client) -> Iterator[str]:
    """A job named "srv" on node ova in network ov-a, answering on port 7000; its address."""
    client.networks.create("ov-a", "10.140.0.0/24")
    rec = client.run("python3", ("-c", SERVE), network="ov-a", name="srv", node="ova")
    try:
        yield wait_running(client, rec.id)
    finally:
        client.stop(rec.id)
        client.wait(rec.id, timeout=30)


def reaches(client: Client, target: str, network: str, node: str) -> bool:
    rec, out, _ = run(client, "python3", "-c", PROBE.format(ip=target), network=network, node=node)
    return rec.exit_code == 0 and out.strip() == b"pong"


def links_of(h: Host) -> str:
    return h.in_ns("ip", "-o", "-d", "link", "show").stdout


def test_the_lan_range_is_unused_on_this_machine(lan: Lan) -> None:
    assert not any(lan.net.overlaps(u) for u in used_prefixes() if u.prefixlen > 0), lan.net


def test_nodes_publish_underlay_and_routes(hosts: tuple[Host, Host, Host], client: Client) -> None:
    a, b, c = hosts
    nodes = client.live_nodes()
    assert nodes["ova"]["underlay"] == a.cfg.underlay_address
    assert nodes["ovb"]["underlay"] == b.cfg.underlay_address
    c_addr = c.in_ns("ip", "-4", "-j", "addr", "show", "lan0").stdout
    assert nodes["ovc"]["underlay"] == json.loads(c_addr)[0]["addr_info"][0]["local"]
    assert any("dev lan0" in label for label in nodes["ova"]["prefixes"])


def test_same_network_across_hosts_by_name_and_address(client: Client, server: str) -> None:
    assert reaches(client, "srv", "ov-a", "ovb")  # by name, from another host
    assert reaches(client, server, "ov-a", "ovc")  # by address, from a third


def test_other_networks_stay_apart_across_hosts(hosts: tuple[Host, Host, Host], client: Client, server: str) -> None:
    client.networks.create("ov-b", "10.141.0.0/24")
    assert not reaches(client, server, "ov-b", "ovc")
    assert reaches(client, server, "ov-a", "ovc")  # positive control, same host, same target
    c = hosts[2]
    vnis = {n: c.in_ns("ip", "-d", "-j", "link", "show", vxlan_name(n)).stdout for n in ("ov-a", "ov-b")}
    ids = {n: json.loads(v)[0]["linkinfo"]["info_data"]["id"] for n, v in vnis.items()}
    assert ids["ov-a"] != ids["ov-b"]


def test_internal_network_spans_hosts_but_not_the_world(
    hosts: tuple[Host, Host, Host], client: Client, server: str
) -> None:
    b = hosts[1]
    client.networks.create("ov-int", "10.142.0.0/24", internal=True)
    rec = client.run("python3", ("-c", SERVE), network="ov-int", name="isrv", node="ova")
    up = add_upstream(b)
    listener = subprocess.Popen(["ip", "netns", "exec", up, "python3", "-c", SERVE.replace("0.0.0.0", "203.0.113.2")])
    try:
        wait_running(client, rec.id)
        assert reaches(client, "isrv", "ov-int", "ovb")  # across hosts inside the network
        assert reaches(client, "203.0.113.2", "ov-a", "ovb")  # positive control: a routed network
        assert not reaches(client, "203.0.113.2", "ov-int", "ovb")
    finally:
        listener.send_signal(signal.SIGKILL)
        listener.wait()
        remove_upstream(b, up)
        client.stop(rec.id)
        client.wait(rec.id, timeout=30)


def test_spanning_network_mtu_is_the_uplinks_less_the_overlay(
    hosts: tuple[Host, Host, Host], client: Client, server: str
) -> None:
    c = hosts[2]
    route = json.loads(c.in_ns("ip", "-j", "route", "get", "192.0.2.99").stdout)[0]
    uplink = json.loads(c.in_ns("ip", "-j", "link", "show", route["dev"]).stdout)[0]["mtu"]
    probe = "cat /sys/class/net/eth0/mtu"
    for network, want in (("ov-a", uplink - VXLAN_OVERHEAD), ("bridge", uplink)):
        rec, out, _ = run(client, "sh", "-c", probe, network=network, node="ovc")
        assert rec.exit_code == 0 and int(out) == want, (network, out)
    # a full-size packet, not fragmented, crosses the overlay to the other host
    size = str(uplink - VXLAN_OVERHEAD - 28)
    rec, out, err = run(
        client, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", size, server, network="ov-a", node="ovc"
    )
    assert rec.exit_code == 0, (out, err)
    # its outer packets carry DF: a narrower underlay answers frag-needed, it never fragments
    # them for the receiving node to reassemble (red-team run)
    port = json.loads(c.in_ns("ip", "-d", "-j", "link", "show", vxlan_name("ov-a")).stdout)[0]
    assert port["linkinfo"]["info_data"].get("df") == "set", port["linkinfo"]


def test_a_spanning_network_fits_the_underlay_interface_where_it_is_smaller(
    hosts: tuple[Host, Host, Host], client: Client
) -> None:
    """The MTU followed the default-route interface (or 1500 without one) where the overlay's
    datagrams leave by the underlay's: over a 1300-byte private link a network got 1450, and
    its large frames were lost; `network create --mtu=1400` was taken (fleet run). A network
    made while the nodes' overlays differ takes the smallest on every node; one made before
    has each node's own."""
    from joblet.errors import ValidationError

    b = hosts[1]

    def refused() -> bool:
        try:
            client.networks.create("ov-mtu-big", "10.147.0.0/24", mtu=1400)
        except ValidationError as exc:
            return "does not fit the overlay on node ovb (uplink MTU 1300 - 50)" in str(exc)
        client.networks.delete("ov-mtu-big")
        return False

    control = client.networks.create("ov-mtu-ok", "10.148.0.0/24", mtu=1400)  # fits 1500 - 50
    client.networks.delete(control.name)
    assert client.networks.create("ov-mtu-early", "10.145.0.0/24").mtu is None  # the nodes agree: each its own
    b.in_ns("ip", "link", "set", "lan0", "mtu", "1300")
    try:
        eventually(refused, "an MTU the underlay cannot carry was taken", timeout=30)
        assert client.networks.create("ov-mtu", "10.146.0.0/24").mtu == 1300 - VXLAN_OVERHEAD  # the smallest
        for node in ("ovb", "ova"):
            rec, out, _ = run(client, "cat", "/sys/class/net/eth0/mtu", network="ov-mtu", node=node)
            assert rec.exit_code == 0 and int(out) == 1300 - VXLAN_OVERHEAD, (node, out)
        rec, out, _ = run(client, "cat", "/sys/class/net/eth0/mtu", network="ov-mtu-early", node="ovb")
        assert rec.exit_code == 0 and int(out) == 1300 - VXLAN_OVERHEAD, out  # its own underlay's
        rec, out, _ = run(client, "cat", "/sys/class/net/eth0/mtu", network="ov-mtu-early", node="ova")
        assert rec.exit_code == 0 and int(out) == 1500 - VXLAN_OVERHEAD, out  # the control: a's is 1500
    finally:
        b.in_ns("ip", "link", "set", "lan0", "mtu", "1500")
        for name in ("ov-mtu", "ov-mtu-early"):
            with contextlib.suppress(Exception):
                client.networks.delete(name)


def test_a_restarted_worker_drops_the_overlay_entries_of_jobs_gone_meanwhile(
    hosts: tuple[Host, Host, Host], client: Client
) -> None:
    """A worker restarted after a remote job ended kept that job's forwarding entry on its
    overlay port, and its MAC and node in the firewall's sets, until a job of the network
    started there again: ten minutes and six restarts in the fleet run."""
    c = hosts[2]  # not ova: its restart would stop the module's server
    client.networks.create("ov-rs", "10.149.0.0/24")
    try:
        rec, _, _ = run(client, "true", network="ov-rs", node="ovc")  # ovc gets the network's port
        assert rec.exit_code == 0, rec
        remote = client.run("sleep", ("300",), network="ov-rs", node="ovb")
        wait_running(client, remote.id)
        mac = mac_for(remote.id, "ov-rs")

        def fdb() -> str:
            return c.in_ns("bridge", "fdb", "show", "dev", vxlan_name("ov-rs")).stdout

        def let_in() -> str:
            return c.in_ns("nft", "list", "set", "bridge", "joblet", "overlay_macs").stdout

        eventually(lambda: mac in fdb() and mac in let_in(), "ovc does not let the remote job in", 15)
        c.stop_worker()
        client.stop(remote.id)
        client.wait(remote.id, timeout=30)
        assert mac in fdb() and mac in let_in()  # the control: what the stopped worker left
        c.start_worker()
        eventually(lambda: mac not in fdb() and mac not in let_in(), "ovc still lets a job gone meanwhile in", 15)
    finally:
        with contextlib.suppress(Exception):
            client.networks.delete("ov-rs")


def test_a_port_taken_back_at_start_of_a_network_deleted_since_is_let_go(
    hosts: tuple[Host, Host, Host], client: Client
) -> None:
    """A restarted worker takes back its overlay ports; a network deleted before any job of
    it ran there again lost its bridge and port, but the port stayed on the worker's list:
    each beat failed to make it again (`bridge ... is gone`) and skipped the rest of the
    host's upkeep, so a job's bridge deleted under it was never made again (fleet run)."""
    c = hosts[2]
    client.networks.create("ov-back", "10.129.0.0/24")
    try:
        rec, _, _ = run(client, "true", network="ov-back", node="ovc")
        assert rec.exit_code == 0, rec
        c.stop_worker()
        c.start_worker()
        eventually(lambda: "overlay ports taken back" in c.log(), "ovc took back no port", 15)
    finally:
        client.networks.delete("ov-back")
    eventually(lambda: vxlan_name("ov-back") not in links_of(c), "the deleted network's port stayed on ovc", 15)
    job = client.run("sleep", ("300",), network="bridge", node="ovc")
    try:
        wait_running(client, job.id)
        c.in_ns("ip", "link", "del", bridge_name("bridge"))
        eventually(lambda: f" {bridge_name('bridge')}:" in links_of(c), "ovc's upkeep made no bridge again", 15)
        assert "of network 'ov-back' is gone" not in c.log()
    finally:
        stop_all(client, [job.id])


# pairs of job ids whose MACs on network "ov-mac" are one (a birthday search, seconds of CPU)
SAME_MAC = (
    ("c0ffee02000000000000000000039cae", "c0ffee02000000000000000000139627"),
    ("c0ffee03000000000000000000050558", "c0ffee0300000000000000000005a1ba"),
)


def test_a_job_with_a_remote_jobs_mac_is_refused(hosts: tuple[Host, Host, Host], client: Client) -> None:
    """A job id is the client's to choose and a job's MAC comes from it: one with the MAC of
    a job of its network on another node would have drawn that job's frames through the
    overlay. Refused on ovb, whether the network has no port there yet (its members read)
    or has one (its last sync)."""

    def submit(job_id: str, node: str) -> JobRecord:
        spec, target = client.preflight.check_and_place(
            JobSpec(command="sleep", args=("300",), network=("ov-mac",), node=node)
        )
        return client.enqueue(JobRecord.pending(job_id, spec, node=target))

    client.networks.create("ov-mac", "10.126.0.0/24")
    jobs = [submit(held, "ova") for held, _ in SAME_MAC]
    try:
        for job in jobs:
            wait_running(client, job.id)
        said = f"its MAC {mac_for(SAME_MAC[0][0], 'ov-mac')} on network 'ov-mac' is taken by a job on another node"
        first = client.wait(submit(SAME_MAC[0][1], "ovb").id, timeout=60)  # no port on ovb yet
        assert first.status == JobStatus.FAILED and said in (first.error or ""), first
        jobs.append(submit("c0ffee04" + "0" * 24, "ovb"))  # the control: a job of any other id runs there
        wait_running(client, jobs[-1].id)
        second = client.wait(submit(SAME_MAC[1][1], "ovb").id, timeout=60)  # ovb's port synced
        assert second.status == JobStatus.FAILED and "is taken by a job on another node" in (second.error or "")
        assert all(client.get(j.id).status == JobStatus.RUNNING for j in jobs)
    finally:
        stop_all(client, [j.id for j in jobs])
        client.networks.delete("ov-mac")


def test_delete_removes_the_overlay_on_every_host(hosts: tuple[Host, Host, Host], client: Client, server: str) -> None:
    client.networks.create("ov-del", "10.143.0.0/24")
    for h in hosts:
        assert (
            client.wait(client.run("true", network="ov-del", node=h.name).id, timeout=30).status == JobStatus.COMPLETED
        )
        assert vxlan_name("ov-del") in links_of(h)
    client.networks.delete("ov-del")
    for h in hosts:
        eventually(lambda h=h: vxlan_name("ov-del") not in links_of(h), f"overlay port left on {h.name}", 15)
        eventually(lambda h=h: bridge_name("ov-del") not in links_of(h), f"bridge left on {h.name}", 15)
    assert vxlan_name("ov-a") in links_of(hosts[0])  # positive control: a live network keeps its port


ARP_WHO_HAS_GATEWAY = r"""
import fcntl, socket, struct, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)); s.bind(("eth0", 0))
src = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
me = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", b"eth0"))[20:24]  # SIOCGIFADDR
gw = next(struct.pack("<L", int(f[2], 16)) for f in (l.split() for l in open("/proc/net/route")) if f[1] == "00000000")
s.send(b"\xff" * 6 + src + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + src + me + b"\0" * 6 + gw)
s.settimeout(0.1); seen = set(); end = time.time() + 1.5
while time.time() < end:
    try:
        d = s.recv(128)
    except socket.timeout:
        continue
    if d[12:14] == b"\x08\x06" and d[20:22] == b"\0\2" and d[28:32] == gw:
        seen.add(d[22:28].hex(":"))
print(" ".join(sorted(seen)))
"""


def test_only_the_own_nodes_gateway_answers(hosts: tuple[Host, Host, Host], client: Client, server: str) -> None:
    """Every node's bridge holds the network's gateway address: ARP for it must not cross."""
    c = hosts[2]
    rec, out, err = run(client, "python3", "-c", ARP_WHO_HAS_GATEWAY, network="ov-a", node="ovc")
    assert rec.exit_code == 0, err
    own = c.in_ns("cat", f"/sys/class/net/{bridge_name('ov-a')}/address").stdout.strip()
    assert out.decode().split() == [own]  # one answer (positive), none from ova's bridge


@pytest.mark.parametrize("nf_call", ["0", "1"])
def test_isolation_holds_whatever_br_netfilter_says(
    hosts: tuple[Host, Host, Host], client: Client, server: str, nf_call: str
) -> None:
    """Bridged overlay traffic reaches the inet forward hook only at 1 (PITFALLS 21)."""
    key = "net.bridge.bridge-nf-call-iptables"
    before = [h.in_ns("sysctl", "-n", key).stdout.strip() for h in hosts]
    try:
        for h in hosts:
            assert h.in_ns("sysctl", "-w", f"{key}={nf_call}").returncode == 0
        client.networks.create(f"ov-nf{nf_call}", f"10.15{nf_call}.0.0/24")
        assert reaches(client, server, "ov-a", "ovb")  # positive control
        assert not reaches(client, server, f"ov-nf{nf_call}", "ovb")
    finally:
        for h, value in zip(hosts, before, strict=True):
            h.in_ns("sysctl", "-w", f"{key}={value}")


def test_network_create_checks_the_routes_of_every_node(hosts: tuple[Host, Host, Host], client: Client) -> None:
    """A route on another node (not where the client runs) refuses an overlapping network."""
    b = hosts[1]
    assert b.in_ns("ip", "link", "add", "far0", "type", "veth", "peer", "name", "far0p").returncode == 0
    try:
        b.in_ns("ip", "addr", "add", "10.131.5.1/24", "dev", "far0")
        b.in_ns("ip", "link", "set", "far0", "up")
        eventually(
            lambda: "10.131.5.0/24" in client.live_nodes()["ovb"]["prefixes"].values(),
            "ovb did not publish its new route",
            15,
        )
        with pytest.raises(Conflict, match="host route 10.131.5.0/24 dev far0 on node ovb"):
            client.networks.create("far-clash", "10.131.0.0/16")
        client.networks.create("far-fine", "10.132.0.0/16")  # positive control
    finally:
        b.in_ns("ip", "link", "del", "far0")


RECEIVE = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 7001)); s.settimeout(30)
print("ready", flush=True)
while (data := s.recv(64).decode()) != "end":
    print(data, flush=True)
"""

# A VXLAN datagram by hand: one IPv4/UDP packet inside an Ethernet frame, sent to a node's
# overlay port as any host on the LAN could (argv: node, port, VNI, frame's source and
# destination MAC and address, then the payloads, one datagram each).
CRAFT = r"""
import socket, struct, sys
node, port, vni, smac, dmac, sip, dip, *payloads = sys.argv[1:]
def checksum(b):
    s = sum(struct.unpack("!10H", b)); s = (s & 0xFFFF) + (s >> 16)
    return struct.pack("!H", ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF)
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for text in payloads:
    udp = struct.pack("!HHHH", 40000, 7001, 8 + len(text), 0) + text.encode()
    addrs = socket.inet_aton(sip) + socket.inet_aton(dip)
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0) + addrs
    ip = ip[:10] + checksum(ip) + ip[12:]
    eth = bytes.fromhex(dmac.replace(":", "")) + bytes.fromhex(smac.replace(":", "")) + b"\x08\x00"
    out.sendto(struct.pack("!II", 0x08000000, int(vni) << 8) + eth + ip + udp, (node, int(port)))
"""


# The same datagram from a container of a node, its source forged as a peer node's address
# (raw socket: Docker gives containers CAP_NET_RAW); argv: the forged source, then CRAFT's.
FORGED = CRAFT.replace(
    "out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
    "forged, *sys.argv[1:] = sys.argv[1:]\n"
    "node, port, vni, smac, dmac, sip, dip, *payloads = sys.argv[1:]\n"
    "raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)\n"
    "class Out:\n"
    "    def sendto(self, data, to):\n"
    "        outer = struct.pack('!HHHH', 50000, to[1], 8 + len(data), 0) + data\n"
    "        head = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(outer), 0, 0, 64, 17, 0,\n"
    "                           socket.inet_aton(forged), socket.inet_aton(to[0]))\n"
    "        raw.sendto(head + outer, (to[0], 0))\n"
    "out = Out()",
)


def test_only_fleet_nodes_reach_the_overlay_port(hosts: tuple[Host, Host, Host], client: Client, lan: Lan) -> None:
    """Frames crafted by a LAN host that is no node (even carrying a remote job's MAC and
    address, past `overlay_macs`) never reach a job: the overlay port takes datagrams from
    the live nodes' underlay addresses only, and from a node only as root (not any user of
    it), nor from a node's container forging a peer's address. The same frames from a node as
    root do (control)."""
    a, b, _ = hosts
    remote = client.run("sleep", ("120",), network="ov-a", node="ovb")  # its MAC may cross to ova
    receiver = client.run("python3", ("-c", RECEIVE), network="ov-a", node="ova")
    stranger = f"joblet-t-stranger-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", stranger], check=True)
    guest = add_guest(a.netns, "10.197.0.0/24")  # a container of ova's, on a bridge of its own
    try:
        remote_ip, receiver_ip = wait_running(client, remote.id), wait_running(client, receiver.id)
        eventually(lambda: b"ready" in output(client, receiver.id), "the receiver did not get ready")
        remote_mac = mac_for(remote.id, "ov-a")
        eventually(
            lambda: remote_mac in a.in_ns("nft", "list", "set", "bridge", "joblet", "overlay_macs").stdout,
            "ova does not let the remote job's MAC in yet",
            15,
        )
        lan.attach(stranger, 3)
        link = json.loads(a.in_ns("ip", "-d", "-j", "link", "show", vxlan_name("ov-a")).stdout)[0]
        frame = [
            lan.address(0),
            str(a.cfg.vxlan_port),
            str(link["linkinfo"]["info_data"]["id"]),
            remote_mac,
            mac_for(receiver.id, "ov-a"),
            remote_ip,
            receiver_ip,
        ]

        def send(netns: str, *payloads: str, user: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
            python = "/usr/bin/python3" if user else "python3"  # the system's: any user may run it
            argv = ["ip", "netns", "exec", netns, *user, python, "-c", CRAFT, *frame, *payloads]
            return subprocess.run(argv, check=not user, capture_output=True, text=True)

        send(stranger, "stranger", "stranger")
        forged = ["ip", "netns", "exec", guest, "python3", "-c", FORGED, lan.address(1), *frame, "guest", "guest"]
        subprocess.run(forged, check=True)  # as ovb, from ova's own container: in where no route goes back
        send(b.netns, "node")  # control: the same frame from ovb's underlay address, as root
        nobody = send(b.netns, "user", user=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"))
        assert "Operation not permitted" in nobody.stderr, nobody  # another user of ovb: refused there
        send(stranger, "stranger", "stranger")
        send(b.netns, "end")
        done = client.wait(receiver.id, timeout=40)
        assert done.exit_code == 0, done
        assert output(client, receiver.id).split() == [b"ready", b"node"]
    finally:
        subprocess.run(["ip", "netns", "del", stranger], check=False)
        remove_guest(a.netns, guest)
        for job in (remote, receiver):
            client.stop(job.id)
            client.wait(job.id, timeout=30)


def test_a_bridge_deleted_under_a_spanning_network_gets_its_overlay_port_back(
    hosts: tuple[Host, Host, Host], client: Client, server: str
) -> None:
    """The heartbeat made the bridge again and put the jobs back on it, but the network's
    VXLAN port, freed by the deletion, stayed off it: the server answered its own node's jobs,
    not other nodes'."""
    a = hosts[0]
    assert reaches(client, "srv", "ov-a", "ovb")  # the control, across hosts
    a.in_ns("ip", "link", "del", bridge_name("ov-a"))
    port = vxlan_name("ov-a")
    eventually(lambda: reaches(client, "srv", "ov-a", "ovb"), "srv reachable from node ovb again", timeout=60)
    assert f"master {bridge_name('ov-a')} " in a.in_ns("ip", "-o", "link", "show", port).stdout
