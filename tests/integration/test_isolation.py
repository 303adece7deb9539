"""The guide's isolation scenarios: isolated mode, internal networks, both settings of
bridge-nf-call-iptables, and another tool's forward chain with a drop policy."""

from __future__ import annotations

import ipaddress
import subprocess

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from joblet.errors import Conflict, ValidationError
from tests.conftest import Host, add_guest, add_upstream, remove_guest, remove_upstream, sh
from tests.integration.helpers import (
    UPSTREAM,
    can_ping,
    connect_ok,
    eventually,
    host_listener,
    ns_connects,
    output,
    run,
    serve,
    wait_port,
)


@pytest.fixture(scope="module")
def nets(client, upstream):
    client.networks.create("iso-a", "10.110.0.0/24")
    client.networks.create("iso-b", "10.111.0.0/24")
    client.networks.create("iso-int", "10.112.0.0/24", internal=True)
    return client


def upstream_sees(client: Client, upstream: str, network: str) -> str | None:
    """The source address the upstream namespace sees for a job's connection, if it gets one."""
    listener = subprocess.Popen(
        ["ip", "netns", "exec", upstream, "python3", "-c", UPSTREAM.replace("settimeout(60)", "settimeout(8)")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_port(upstream, 7000)
        ok = connect_ok(client, "203.0.113.2", network)
        seen = listener.communicate(timeout=30)[0].strip()
        return seen if ok else None
    finally:
        listener.kill()
        listener.wait()


def test_isolated_job_gets_a_point_to_point_link(nets, host):
    rec, out, _ = run(nets, "sh", "-c", "ip -4 -o addr show eth0; ip route show default", network="isolated")
    addr = ipaddress.ip_interface(out.split()[3].decode())
    assert addr.network.prefixlen == 30
    assert addr.network.subnet_of(ipaddress.ip_network(host.cfg.isolated_pool))
    assert rec.ip == str(addr.ip)
    assert f"default via {addr.ip - 1} dev eth0".encode() in out


def test_isolated_reaches_upstream_through_nat(nets, upstream):
    assert upstream_sees(nets, upstream, "isolated") == "203.0.113.1"


def test_isolated_reaches_no_job_and_no_job_reaches_it(nets, host):
    servers = {net: serve(nets, net) for net in ("bridge", "iso-a", "isolated")}
    listener = host_listener(host.netns)
    try:
        # positive controls: each server answers on its own network, the host reaches the isolated one
        assert connect_ok(nets, servers["bridge"][1], "bridge") and connect_ok(nets, servers["iso-a"][1], "iso-a")
        assert ns_connects(host.netns, servers["isolated"][1])
        assert ns_connects(host.netns, str(ipaddress.ip_address(servers["isolated"][1]) - 1))
        for net, (_, ip) in servers.items():
            assert not connect_ok(nets, ip, "isolated"), f"isolated reached {net}"
            assert not can_ping(nets, ip, "isolated"), f"isolated pinged {net}"
        iso_ip = servers["isolated"][1]
        for net in ("bridge", "iso-a", "isolated"):
            assert not connect_ok(nets, iso_ip, net), f"{net} reached an isolated job"
        assert not connect_ok(nets, str(ipaddress.ip_address(iso_ip) - 1), "isolated")  # the host
        assert not connect_ok(nets, "172.20.0.1", "isolated")
    finally:
        listener.kill()
        listener.wait()
        for job_id, _ in servers.values():
            nets.stop(job_id)
    for job_id, _ in servers.values():
        assert nets.wait(job_id, timeout=30).status == JobStatus.STOPPED
    # the kernel removes them with the job's namespace, right after the final record
    eventually(
        lambda: "ji" not in host.in_ns("ip", "-o", "link", "show").stdout.replace("jv", ""),
        "an isolated job's host link is left",
        timeout=5,
    )


def test_internal_network_talks_inside_but_not_out(nets, upstream):
    job_id, ip = serve(nets, "iso-int")
    try:
        assert connect_ok(nets, ip, "iso-int")
        assert upstream_sees(nets, upstream, "iso-int") is None
        assert upstream_sees(nets, upstream, "iso-a") == "203.0.113.1"
    finally:
        nets.stop(job_id)
    # no default route on an internal network ("no route out": a connection fails at once);
    # a job also on a network with NAT has its route there, whichever network comes first
    routes = "ip -4 route show default; echo end"
    assert output_of(nets, routes, ("iso-int",)) == b"end\n"
    assert output_of(nets, routes, ("iso-int", "iso-a")) == b"default via 10.110.0.1 dev eth1 \nend\n"
    assert output_of(nets, routes, ("iso-a", "iso-int")) == b"default via 10.110.0.1 dev eth0 \nend\n"
    probe = "import socket; socket.create_connection(('203.0.113.2', 7000), timeout=30)"
    rec, _, err = run(nets, "python3", "-c", probe, network=("iso-int",))
    assert rec.exit_code == 1 and b"Network is unreachable" in err, err
    # no DNS server it cannot reach (each lookup hung 20 s): none named; the control, with NAT, has one
    servers = "grep -c ^nameserver /etc/resolv.conf; getent hosts example.invalid; echo $?"
    assert output_of(nets, servers, ("iso-int",)).split() == [b"0", b"2"]
    assert output_of(nets, "grep -c ^nameserver /etc/resolv.conf", ("iso-int", "iso-a")) != b"0\n"


def output_of(client: Client, script: str, network: tuple[str, ...]) -> bytes:
    rec, out, err = run(client, "sh", "-c", script, network=network)
    assert rec.exit_code == 0, err
    return out


@pytest.mark.parametrize("call_iptables", ["0", "1"])
def test_networks_isolated_whatever_bridge_nf_call_iptables(nets, host, call_iptables):
    key = "net.bridge.bridge-nf-call-iptables"
    assert host.in_ns("sysctl", "-w", f"{key}={call_iptables}").returncode == 0
    try:
        a_id, a_ip = serve(nets, "iso-a")
        b_id, b_ip = serve(nets, "iso-b")
        try:
            assert connect_ok(nets, a_ip, "iso-a") and can_ping(nets, a_ip, "iso-a")
            assert not connect_ok(nets, a_ip, "iso-b") and not can_ping(nets, a_ip, "iso-b")
            assert not connect_ok(nets, b_ip, "iso-a") and not can_ping(nets, b_ip, "iso-a")
            assert not connect_ok(nets, a_ip, "bridge") and not can_ping(nets, a_ip, "bridge")
        finally:
            nets.stop(a_id)
            nets.stop(b_id)
    finally:
        host.in_ns("sysctl", "-w", f"{key}=1")


def test_isolated_cannot_be_combined_and_pool_is_reserved(nets):
    with pytest.raises(ValidationError, match="'isolated' cannot be combined"):
        nets.run("true", network=["isolated", "bridge"])
    with pytest.raises(Conflict, match="the isolated-mode pool .*; set JOBLET_ISOLATED_POOL on every worker"):
        nets.networks.create("in-pool", "10.254.8.0/24")
    with pytest.raises(Conflict, match='built-in network "bridge" .*; set JOBLET_BRIDGE_CIDR on every worker'):
        nets.networks.create("medium-net", "172.16.0.0/12")  # the guide's: it holds the default bridge


FOREIGN = "add table ip foreign; add chain ip foreign FORWARD { type filter hook forward priority 0; policy drop; }"


def test_foreign_drop_chain_is_refused_with_the_fix(nets, host, upstream):
    assert host.in_ns("nft", FOREIGN).returncode == 0
    try:  # the worker looks again at most every 2 s: the first jobs may still run
        eventually(
            lambda: run(nets, "true", network="bridge")[0].status == JobStatus.FAILED,
            "bridged jobs were never refused",
            timeout=20,
        )
        rec, _, _ = run(nets, "true", network="bridge")
        assert rec.status == JobStatus.FAILED
        assert 'forward chain "ip foreign FORWARD"' in (rec.error or "")
        assert "foreign_forward" in (rec.error or "")
        none, _, _ = run(nets, "true", network="none")  # no network, nothing to drop
        assert none.status == JobStatus.COMPLETED
    finally:
        host.in_ns("nft", "delete", "table", "ip", "foreign")
    eventually(lambda: run(nets, "true")[0].status == JobStatus.COMPLETED, "bridged jobs never ran again", 20)


def test_foreign_drop_chain_with_insert_setting(redis_sock):
    h = Host(redis_sock, "hostfwd", foreign_forward="insert")
    up = add_upstream(h)
    try:
        sh("ip", "netns", "exec", h.netns, "nft", FOREIGN)
        h.start_worker()
        client = Client(h.cfg)
        client.networks.create("fwd-a", "10.113.0.0/24")
        assert upstream_sees(client, up, "fwd-a") == "203.0.113.1"
        assert upstream_sees(client, up, "bridge") == "203.0.113.1"
        job_id, ip = serve(client, "fwd-a")
        assert connect_ok(client, ip, "fwd-a")
        assert not connect_ok(client, ip, "bridge")  # joblet's own table still decides
        client.stop(job_id)
        chain = h.in_ns("nft", "list", "chain", "ip", "foreign", "FORWARD").stdout
        assert 'iifname "jb*" accept comment "joblet:accept"' in chain
        assert "inserted joblet's accept rules" in (h.tmp / "worker.log").read_text()
    finally:
        remove_upstream(h, up)
        h.close()


def test_a_network_whose_bridge_is_gone_sends_nothing_out_of_the_host(nets, host, upstream):
    """With a network's bridge deleted (by hand, or by another tool), its subnet's traffic
    followed the default route out of the host, to whoever holds those addresses there (a UX
    test's job and the host itself reached an outside server that way): now dropped."""
    keeper = nets.run("true", network="iso-a")  # the network's bridge is up (and stays: no job
    assert nets.wait(keeper.id, timeout=60).status == JobStatus.COMPLETED  # runs there to repair it)
    listener = host_listener(upstream)  # the upstream answers on 7000, on 10.110.0.77 too
    sh("ip", "-n", upstream, "addr", "add", "10.110.0.77/32", "dev", "eth0")
    try:
        bridges = sh("ip", "-n", host.netns, "-o", "-4", "addr", "show", "to", "10.110.0.1").stdout.split()
        bridge = bridges[1]
        assert bridge.startswith("jb"), bridges
        assert job_connects(nets, "203.0.113.2") and ns_connects(host.netns, "203.0.113.2")  # controls
        sh("ip", "-n", host.netns, "link", "del", bridge)
        assert not job_connects(nets, "10.110.0.77"), "a job reached iso-a's subnet out of the host"
        assert not ns_connects(host.netns, "10.110.0.77"), "the host reached iso-a's subnet out of the host"
        assert job_connects(nets, "203.0.113.2")  # the rest still goes out
    finally:
        sh("ip", "-n", upstream, "addr", "del", "10.110.0.77/32", "dev", "eth0", check=False)
        listener.kill()
        listener.wait()
    rec, out, _ = run(nets, "ip", "-4", "-o", "addr", "show", "eth0", network="iso-a")  # made again
    assert rec.exit_code == 0 and b"10.110.0." in out


def test_a_bridge_deleted_under_running_jobs_is_made_again_with_them_on_it(nets, host):
    """The next job of the network made its bridge again, but the running ones stayed cut off
    (their host ends on no bridge) while their records said RUNNING: the heartbeat puts them
    back."""
    server, ip = serve(nets, "iso-b")
    try:
        assert connect_ok(nets, ip, "iso-b")  # the control
        bridge = sh("ip", "-n", host.netns, "-o", "-4", "addr", "show", "to", "10.111.0.1").stdout.split()[1]
        sh("ip", "-n", host.netns, "link", "del", bridge)
        eventually(lambda: connect_ok(nets, ip, "iso-b"), "the running server reachable again", timeout=60)
    finally:
        nets.stop(server)
        nets.wait(server, timeout=30)


def job_connects(client: Client, ip: str) -> bool:
    """Can a job on the default bridge open a TCP connection to ip:7000 (within 2 s)?"""
    probe = f"import socket; socket.create_connection(('{ip}', 7000), timeout=2).close()"
    return run(client, "python3", "-c", probe)[0].exit_code == 0


UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("203.0.113.2", 7001)); print("up", flush=True)
while True:
    data, peer = s.recvfrom(64); s.sendto(data, peer)
"""
# n flows (one socket, so one source port, each) to the upstream's echo; prints how many
# answered, then holds its sockets (its flows stay the job's until it ends)
FLOWS = """
import selectors, socket, sys, time
n, sel = int(sys.argv[1]), selectors.DefaultSelector()
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("203.0.113.2", 7001))
    sel.register(s, selectors.EVENT_READ)
answered = []
while len(answered) < n and (ready := sel.select(timeout=2)):
    for key, _ in ready:
        key.fileobj.recv(8); answered.append(key.fileobj); sel.unregister(key.fileobj)
print(len(answered), flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:  # its flows kept alive (a UDP flow's entry lasts 30 s unused)
    time.sleep(5)
    for s in answered:
        s.sendto(b"k", ("203.0.113.2", 7001))
"""
COUNT = """
import sys
from pyroute2 import Conntrack
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
print(sum(len(list(Conntrack().dump_entries(tuple_orig=NFCTAttrTuple(saddr=a)))) for a in sys.argv[1:]))
"""


def test_jobs_connections_in_the_hosts_conntrack_table_are_capped_and_go_with_them(redis_sock):
    """One job sending UDP to every port of a host that answers filled the host's whole
    connection tracking table (262,144 entries): the host's own connections and other jobs'
    failed until they expired (red-team run). A job address may hold job_max_connections,
    all jobs jobs_max_connections; the host's own are not counted. A job's entries go when
    it ends (an established TCP flow's stayed five days, counted against the caps)."""
    import sys

    h = Host(redis_sock, "hostflows", job_max_connections="40", jobs_max_connections="100")
    up = add_upstream(h)
    echo = subprocess.Popen(
        ["ip", "netns", "exec", up, "python3", "-c", UDP_ECHO], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    client: Client | None = None
    held: list[str] = []
    try:
        assert echo.stdout is not None and echo.stdout.readline() == b"up\n"
        h.start_worker()
        client = Client(h.cfg)

        def answered(flows: int) -> int:  # by a job that holds its flows until stopped
            job = client.run("python3", ("-c", FLOWS, str(flows), "300"))
            held.append(job.id)
            eventually(lambda: output(client, job.id).strip() != b"", "the job never counted its answers", 30)
            return int(output(client, job.id))

        def tracked(*addresses: str) -> int:
            return int(sh("ip", "netns", "exec", h.netns, sys.executable, "-c", COUNT, *addresses).stdout)

        assert answered(30) == 30  # the control: under the caps, every flow is answered
        assert answered(50) == 40  # its own cap; the first job's 30 are held still
        assert answered(50) == 30  # all jobs' cap: 100, less the others' 70
        host_flows = sh("ip", "netns", "exec", h.netns, "python3", "-c", FLOWS, "50", "0").stdout
        assert int(host_flows) == 50  # the host's own are not the jobs'
        caps = h.in_ns("nft", "list", "table", "ip", "joblet").stdout
        assert "ct count over 40" in caps and "ct count over 100" in caps, caps
        assert caps.count("ct state new ct status ! confirmed add @") == 6, caps  # a connection's first packet
        addresses = [client.get(job_id).ip for job_id in held]
        assert tracked(*addresses) == 100  # the answered: a dropped first packet leaves no entry
        for job_id in held:
            client.stop(job_id)
        eventually(lambda: tracked(*addresses) == 0, "an ended job's flows stayed in the host's table", 10)  # < 30 s
        held.clear()
        assert answered(50) == 40  # their counts went with them
    finally:
        for job_id in held:
            if client is not None:
                client.stop(job_id)
        echo.kill()
        echo.wait()
        remove_upstream(h, up)
        h.close()


def test_an_ended_jobs_flows_go_where_its_network_gives_its_address_again_soon(redis_sock):
    """The table not busy, an ended job's flows stayed until they timed out; on a network of
    few addresses its address went to another job within minutes, and its predecessor's
    flows (a UDP reply stream through NAT) reached that job (review). Deleted at its end
    there; on the default bridge's /16 (the control) they are left to expire."""
    import sys

    from joblet.api.store_ipam import IpamStore

    h = Host(redis_sock, "reused")
    up = add_upstream(h)
    echo = subprocess.Popen(
        ["ip", "netns", "exec", up, "python3", "-c", UDP_ECHO], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    client: Client | None = None
    try:
        assert echo.stdout is not None and echo.stdout.readline() == b"up\n"
        h.start_worker()
        client = Client(h.cfg)
        client.networks.create("few", "10.182.0.0/26")

        def tracked(address: str) -> int:
            return int(sh("ip", "netns", "exec", h.netns, sys.executable, "-c", COUNT, address).stdout)

        left, ipam = {}, IpamStore(h.cfg.redis_url, h.cfg.key_prefix)
        for network in ("few", "bridge"):
            job = client.run("python3", ("-c", FLOWS, "5", "300"), network=network)
            eventually(lambda j=job: output(client, j.id).strip() != b"", "the job never counted its answers", 30)
            assert int(output(client, job.id)) == 5
            address = client.get(job.id).ip
            assert tracked(address) == 5  # its flows, held
            client.stop(job.id)
            assert client.wait(job.id, timeout=60).status == JobStatus.STOPPED
            freed = lambda j=job, n=network: j.id not in ipam.allocations(n).values()  # noqa: E731
            eventually(freed, "its address freed (after its flows were dealt with)", 20)
            left[network] = tracked(address)
        assert left == {"few": 0, "bridge": 5}, left
    finally:
        echo.kill()
        echo.wait()
        remove_upstream(h, up)
        h.close()


UDP_ONCE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(30)
print("ready", flush=True)
data, src = s.recvfrom(100)
print(data.decode(), src[1], flush=True)
if len(sys.argv) > 3:  # then sends to the host's own port, from the port the job wrote to
    s.sendto(b"to-host", (sys.argv[3], int(sys.argv[4])))
"""

SHADOW = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))  # the port of the host's own service
s.sendto(b"open", ("203.0.113.2", 40003))
s.settimeout(3)
try:
    print("job got", s.recvfrom(100)[0].decode(), flush=True)
except socket.timeout:
    print("job got nothing", flush=True)
"""


@pytest.mark.parametrize("network", ["bridge", "isolated"])
def test_a_job_cannot_take_the_hosts_own_udp_port_through_nat(nets, host, upstream, network):
    """NAT kept a job's source port: a job that sent from port 9999 (or the overlay's 4789) to
    a peer got the entry whose replies are that peer's datagrams to the host's own port, and
    took them from the host's service (a peer node's VXLAN frames, red-team). The source port
    is randomized now: the upstream sees another, and its datagram to the host reaches the host."""

    def listen(netns: str, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "python3", "-c", UDP_ONCE, *argv], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    own = listen(host.netns, "0.0.0.0", "9999")  # the host's service
    peer = listen(upstream, "203.0.113.2", "40003", "203.0.113.1", "9999")
    try:
        rec, out, _ = run(nets, "python3", "-c", SHADOW, network=network)
        seen_port = int(peer.communicate(timeout=30)[0].split()[-1])
        got = own.communicate(timeout=30)[0].split()
    finally:
        for proc in (own, peer):
            proc.kill()
            proc.wait()
    assert rec.exit_code == 0 and out.strip() == b"job got nothing", out
    assert seen_port != 9999  # the job's port was not kept
    assert got == ["to-host", "40003"], got  # the control and the point: the host's service got it


SIZES = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("203.0.113.2", 9100)); s.settimeout(20); print("ready", flush=True)
while True:
    size = len(s.recv(65535)); print(size, flush=True)
    if size == 1000:
        break
"""
SEND = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for size in (4000, 1000):  # over the link's MTU: sent in fragments; then within it
    s.sendto(b"x" * size, ("203.0.113.2", 9100))
"""


@pytest.mark.parametrize("network", ["bridge", "iso-a", "isolated"])
def test_no_ipv4_fragment_leaves_a_job(nets, upstream, network):
    """The host reassembles what it forwards in one budget that all jobs share: a job whose
    fragments were partly dropped (its own --max-bandwidth queue) filled it, and no
    fragmented datagram reached the host or another job for 30 s (red-team run). A datagram
    within the MTU, sent after the fragmented one on the same path, is the control."""
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", upstream, "python3", "-c", SIZES], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        rec, _, err = run(nets, "python3", "-c", SEND, network=network)
        assert rec.exit_code == 0, err
        sizes = receiver.communicate(timeout=30)[0].split()
    finally:
        receiver.kill()
        receiver.wait()
    assert sizes == ["1000"], sizes


def test_the_hosts_containers_are_out_of_a_jobs_reach(nets, host, upstream):
    """A container on a bridge of the host's (Docker's br-*, where docker-compose.yml runs
    the broker) was reached by its own address: not the host's, not the published one in the
    blocked set (review). The host reaches it, and jobs still reach the world (controls)."""
    guest = add_guest(host.netns, "10.199.0.0/24")
    try:
        listeners = [host_listener(guest), host_listener(upstream)]
        try:
            assert ns_connects(host.netns, "10.199.0.2") and job_connects(nets, "203.0.113.2")  # controls
            eventually(  # at the heartbeat after the bridge came
                lambda: "10.199.0.0/24" in host.in_ns("nft", "list", "set", "inet", "joblet", "guests").stdout,
                "the worker never found the guests' bridge",
                15,
            )
            assert not job_connects(nets, "10.199.0.2"), "a job on the default bridge reached the container"
            probe = "import socket; socket.create_connection(('10.199.0.2', 7000), timeout=2).close()"
            for network in ("iso-a", "isolated"):
                rec = run(nets, "python3", "-c", probe, network=network)[0]
                assert rec.exit_code == 1, (network, rec)  # refused (a traceback), not a setup failure
        finally:
            for listener in listeners:
                listener.kill()
                listener.wait()
    finally:
        remove_guest(host.netns, guest)
