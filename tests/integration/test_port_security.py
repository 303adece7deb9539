"""Port security and control-plane guards, attacked from inside jobs (issue 10 items 5-6, issue 9
item 7): forged ARP, spoofed IPv4 sources, IPv6 router advertisements, connections to the broker,
odd networks, and a setup that fails after its bridge exists. Each beside a positive control."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from joblet.api.client import Client
from joblet.api.models import JobRecord, JobStatus
from joblet.api.networks import NetworkDef, NetworkStore
from joblet.api.store_ipam import IpamStore
from joblet.names import bridge_name
from joblet.network_agent.portsec import mac_for
from joblet.worker import faults
from tests.conftest import Host, need, running_host
from tests.integration import l2
from tests.integration.helpers import (
    connect_ok,
    ending,
    eventually,
    listening,
    output,
    run,
    serve,
    wait_listening,
    wait_running,
)

BROKER = ("203.0.113.2", 6390)  # what this host's worker treats as its broker (job_blocked_addresses)
ELSEWHERE = 6391  # another port of the same upstream address: reachable
NET, CIDR, GW = "ps-a", "10.120.0.0/24", "10.120.0.1"


@pytest.fixture(scope="module")
def host(redis_sock: str) -> Iterator[Host]:
    need(os.geteuid() == 0, "needs root (namespaces, links, nftables)")
    need(shutil.which("nft") is not None, "nft is not installed")

    def faults(h: Host) -> None:
        h.env["JOBLET_FAULT_FILE"] = str(h.tmp / "faults")

    yield from running_host(
        redis_sock,
        "hostps",
        prepare=faults,
        allow_host_network="true",
        job_net_raw="true",  # attacks are crafted in jobs: Docker's CAP_NET_RAW
        job_blocked_addresses=f"{BROKER[0]}:{BROKER[1]},10.199.0.5:6379",
    )


@pytest.fixture(scope="module")
def nets(client: Client, upstream: str) -> Client:
    client.networks.create(NET, CIDR)
    return client


def link_mac(host: Host, ifname: str) -> str:
    return json.loads(host.in_ns("ip", "-j", "link", "show", ifname).stdout)[0]["address"]


def watch(client: Client, network: str, secs: float = 5.0) -> tuple[JobRecord, str]:
    """A victim job capturing what reaches it; returns its record and address once it listens."""
    rec = client.run("python3", ("-c", l2.WATCH, GW, str(secs)), network=network)
    eventually(lambda: b"ready" in output(client, rec.id), "the victim job listens")
    return rec, client.get(rec.id).ip or ""


def report(client: Client, rec: JobRecord) -> dict:
    final = client.wait(rec.id, timeout=60)
    assert final.status == JobStatus.COMPLETED, (final, output(client, rec.id, None))
    return json.loads(output(client, rec.id).splitlines()[-1])


def attack(client: Client, network: str, lines: str) -> JobRecord:
    rec, out, err = run(client, "python3", "-c", l2.attack(lines), network=network)
    assert rec.exit_code == 0 and b"sent" in out, err
    return rec


def test_arp_spoof_of_the_gateway_is_dropped(nets, host):
    victim, vip = watch(nets, NET)
    vmac, gateway_mac = mac_for(victim.id, NET), link_mac(host, bridge_name(NET))
    attacker = attack(
        nets,
        NET,
        (
            f'arp(OWN_MAC, OWN_MAC, "{GW}", mac("{vmac}"), "{vip}"); '  # "the gateway is at my MAC"
            f'arp(mac("02:66:66:66:66:66"), mac("02:66:66:66:66:66"), "{GW}", mac("{vmac}"), "{vip}"); '
            f'arp(OWN_MAC, OWN_MAC, OWN_IP, mac("{vmac}"), "{vip}")'
        ),
    )  # its own: the positive control
    seen = report(nets, victim)
    assert f"{mac_for(attacker.id, NET)} {attacker.ip}" in seen["arp"], seen
    assert [a for a in seen["arp"] if a.endswith(f" {GW}")] in ([], [f"{gateway_mac} {GW}"]), seen
    assert f"lladdr {gateway_mac}" in seen["neigh"], seen


def spoof_to_a_peer(client: Client, host: Host | None = None, flush: tuple[str, ...] = ()) -> None:
    """A spoofed and a legitimate packet to a victim job; with `flush`, the victim's port was
    secured before that nft command, and is again when joblet has restored its tables."""
    victim, vip = watch(client, NET, secs=12 if flush else 5)
    if host is not None and flush:
        assert host.in_ns("nft", *flush).returncode == 0
        eventually(
            lambda: (
                vip in host.in_ns("nft", "list", "set", "bridge", "joblet", "port_ips").stdout
                and host.in_ns("nft", "list", "table", "inet", "joblet").returncode == 0
            ),
            "joblet's tables were not restored",
            timeout=8,
        )
    attacker = attack(
        client,
        NET,
        f'udp("10.120.0.77", "{vip}", "spoof"); udp("198.51.100.99", "{vip}", "spoof"); udp(OWN_IP, "{vip}", "legit")',
    )
    assert report(client, victim)["udp"] == [f"{attacker.ip} legit"]


def test_spoofed_source_to_a_peer_is_dropped(nets):
    spoof_to_a_peer(nets)


def test_link_local_frames_move_no_jobs_mac(nets):
    """Frames to 01:80:c2:00:00:0e (LLDP) and :03 skip the bridge's prerouting hook, where a
    port is held to its MAC: sent with a victim's MAC, the bridge learned it on the
    attacker's port and sent the victim's traffic there. Each round ends with a datagram to
    the victim: the last, after twenty rounds, must reach it."""
    victim, vip = watch(nets, NET)
    vmac = mac_for(victim.id, NET)
    attacker = attack(
        nets,
        NET,
        f'link_local(mac("{vmac}"), 0x0e); link_local(mac("{vmac}"), 0x03); '
        f'globals()["N"] = globals().get("N", 0) + 1; udp(OWN_IP, "{vip}", f"after{{N}}")',
    )
    seen = report(nets, victim)
    assert f"{attacker.ip} after20" in seen["udp"], seen


def test_link_local_frames_bring_the_host_nothing(nets, host):
    """The bridge hands such frames up to the host on the job's port itself, past the
    bridge's hooks and `no-host-access` (which names the bridges): UDP to any host address
    came through, from any source. The control: a datagram from the host itself."""
    listener = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, "python3", "-c", l2.LISTEN_UDP, "0.0.0.0", "8"],  # GW's too, once made
        stdout=subprocess.PIPE,
        text=True,
    )
    with ending(listener):
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        sends = [
            f'link_local(OWN_MAC, {group}, b"\\x08\\x00", ipv4_udp({src}, "{GW}", "{what}{group}"))'
            for group in (0x0E, 0x03)
            for src, what in (("OWN_IP", "own"), ('"10.120.0.77"', "forged"))
        ]
        attack(nets, NET, "; ".join(sends))
        control = f"import socket; socket.socket(2, 2).sendto(b'control', ('{GW}', 9999))"
        assert host.in_ns("python3", "-c", control).returncode == 0
        got, _ = listener.communicate(timeout=30)
    assert [entry.split()[1] for entry in json.loads(got)] == ["control"], got  # nothing of the job's


def test_link_local_arp_fills_no_neighbour_table_of_the_host(nets, host):
    """ARP in such frames reached the host's ARP (not the inet family's rules): requests with
    any sender were answered and each sender stored, on the job's port, in a neighbour
    table whose limits the whole machine shares. Looked at while the attacker's port exists
    (its entries go with it); the control: its own ARP by broadcast is learned."""
    forged = 'mac("02:de:ad:be:ef:01")'
    sends = [
        f'link_local({forged}, {group}, b"\\x08\\x06", arp_request({forged}, "10.120.0.99", "{GW}"))'
        for group in (0x0E, 0x03)
    ]
    sends.append(f'l2.send(b"\\xff" * 6 + OWN_MAC + b"\\x08\\x06" + arp_request(OWN_MAC, OWN_IP, "{GW}"))')
    lines = l2.attack("; ".join(sends)) + "import sys; sys.stdout.flush(); time.sleep(60)\n"
    rec = nets.run("python3", ("-c", lines), network=NET)
    try:
        eventually(lambda: b"sent" in output(nets, rec.id), "the attacker did not send")
        own = nets.get(rec.id).ip or ""
        assert own and host.in_ns("ip", "neigh", "show", own).stdout.strip()  # its own ARP: learned
        assert host.in_ns("ip", "neigh", "show", "10.120.0.99").stdout.strip() == ""  # the forged: not
    finally:
        nets.stop(rec.id)
        nets.wait(rec.id, timeout=30)


@pytest.mark.parametrize("chain", [("inet", "forward"), ("bridge", "prerouting")])
def test_a_flushed_chain_of_joblets_comes_back(nets, host, chain):
    """A flushed chain left its table there, with a policy accept, and the heartbeat's check
    of the tables alone saw nothing amiss: isolation, the broker drops or port security were
    off until some other change rendered them again (review)."""

    def rules() -> int:
        listed = host.in_ns("nft", "list", "chain", chain[0], "joblet", chain[1]).stdout
        return sum(1 for line in listed.splitlines() if "comment" in line or " drop" in line)

    assert run(nets, "true", network=NET)[0].exit_code == 0  # the tables are loaded by then
    assert rules() > 0  # the control: loaded
    assert host.in_ns("nft", "flush", "chain", chain[0], "joblet", chain[1]).returncode == 0
    assert rules() == 0
    eventually(lambda: rules() > 0, f"{chain[0]} joblet {chain[1]} was not restored", timeout=10)


def test_a_flushed_set_of_the_brokers_addresses_comes_back(nets, host):
    """Flushed, the broker's drop matched nothing, and the rule counts saw nothing amiss."""

    def held() -> bool:
        return f"{BROKER[0]} . {BROKER[1]}" in host.in_ns("nft", "list", "set", "inet", "joblet", "blocked").stdout

    assert run(nets, "true", network=NET)[0].exit_code == 0 and held()  # the control: loaded
    assert host.in_ns("nft", "flush", "set", "inet", "joblet", "blocked").returncode == 0
    assert not held()
    eventually(held, "the broker's addresses were not restored", timeout=10)


@pytest.mark.parametrize("flush", [("flush", "ruleset"), ("delete", "table", "bridge", "joblet")])
def test_port_security_comes_back_after_a_flush(nets, host, flush):
    spoof_to_a_peer(nets, host, flush)


def test_gateway_mac_stays_as_jobs_come_and_go(nets, host):
    bridge = bridge_name(NET)
    wanted = mac_for(f"{host.name}/{bridge}", "gateway")
    server_id, _ = serve(nets, NET)
    assert link_mac(host, bridge) == wanted
    nets.stop(server_id)
    nets.wait(server_id, timeout=30)
    assert link_mac(host, bridge) == wanted


@pytest.mark.parametrize("network", [NET, "isolated"])
def test_spoofed_source_to_the_upstream_is_dropped(nets, upstream, network):
    listener = subprocess.Popen(
        ["ip", "netns", "exec", upstream, "python3", "-c", l2.LISTEN_UDP, "203.0.113.2", "6"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        attack(
            nets,
            network,
            'udp("198.51.100.99", "203.0.113.2", "spoof"); '
            'udp("10.254.0.6", "203.0.113.2", "spoof"); udp("10.120.0.78", "203.0.113.2", "spoof"); '
            'udp(OWN_IP, "203.0.113.2", "legit")',
        )
        seen = json.loads(listener.communicate(timeout=30)[0].splitlines()[-1])
    finally:
        listener.kill()
        listener.wait()
    assert seen == ["203.0.113.1 legit"]  # NATed, and nothing else


def test_router_advertisement_reaches_no_peer_and_not_the_host(nets, host):
    victim, vip = watch(nets, NET)
    attacker = attack(nets, NET, f'router_advertisement(OWN_MAC); udp(OWN_IP, "{vip}", "legit")')
    seen = report(nets, victim)
    assert seen["udp"] == [f"{attacker.ip} legit"]
    assert seen["ipv6"] == 0 and "default" not in seen["route6"], seen
    assert host.in_ns("ip", "-6", "route", "show", "default").stdout.strip() == ""
    assert "2001:db8:1" not in host.in_ns("ip", "-6", "addr").stdout


def test_job_links_have_no_ipv6(nets, host):
    rec, out, _ = run(
        nets,
        "sh",
        "-c",
        "ip -6 addr show dev eth0; cat /sys/class/net/eth0/address /proc/sys/net/ipv6/conf/eth0/disable_ipv6",
        network=NET,
    )
    assert b"inet6" not in out and out.split()[-2:] == [mac_for(rec.id, NET).encode(), b"1"], out
    assert host.in_ns("ip", "-6", "addr", "show", "dev", bridge_name(NET)).stdout.strip() == ""


def test_normal_traffic_still_flows(nets, listeners):
    server_id, ip = serve(nets, NET)
    try:
        assert connect_ok(nets, ip, NET)
        rec, _, _ = run(nets, "ping", "-c", "1", "-W", "2", ip, network=NET)
        assert rec.exit_code == 0
    finally:
        nets.stop(server_id)
    for network in (NET, "bridge", "isolated"):
        assert reaches(nets, network, ELSEWHERE), network


PROBE = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)"


def reaches(client: Client, network: str, port: int, address: str = BROKER[0]) -> bool:
    rec, _, _ = run(client, "python3", "-c", PROBE, address, str(port), network=network)
    return rec.exit_code == 0


@pytest.fixture()
def listeners(host: Host, upstream: str) -> Iterator[None]:
    """The "broker" port and another one, in the upstream namespace and on the host itself."""
    upstream_ports = listening(upstream, BROKER[0], BROKER[1], ELSEWHERE)
    with ending(upstream_ports):
        with ending(listening(host.netns, "::", BROKER[1], 6392)):
            yield


METADATA = "169.254.169.254"  # where the clouds' instance metadata services answer


@pytest.fixture(scope="module")
def metadata(upstream: str) -> Iterator[None]:
    """A "metadata service" upstream: its HTTP port and its DNS port (GCP's resolver is there)."""
    subprocess.run(["ip", "-n", upstream, "addr", "add", f"{METADATA}/32", "dev", "lo"], check=True)
    with ending(listening(upstream, METADATA, 80, 53)):
        yield


@pytest.mark.parametrize("network", [NET, "bridge", "isolated", "host"])
def test_no_job_reaches_the_cloud_metadata_service_but_its_dns(nets, host, metadata, network):
    assert host.in_ns("python3", "-c", PROBE, METADATA, "80").returncode == 0  # the worker's host does
    assert reaches(nets, network, 53, METADATA)  # DNS: the same address and route
    assert not reaches(nets, network, 80, METADATA)


_TO_PROXY = f"ip daddr {METADATA} tcp dport 80 dnat to {BROKER[0]}:{ELSEWHERE}"
REDIRECT = f"""
table ip joblet_test_redirect {{
  chain prerouting {{ type nat hook prerouting priority dstnat; {_TO_PROXY}; }}
  chain output {{ type nat hook output priority -100; {_TO_PROXY}; }}
}}
"""


@pytest.mark.parametrize("network", [NET, "host"])
def test_a_metadata_address_redirected_to_a_proxy_stays_closed(nets, host, listeners, network):
    """Hosts often DNAT the metadata address to a proxy: the drop matches the address the job
    asked for. Beside: the worker's host reaches the proxy through the redirect, and the job
    reaches the proxy's own address."""
    rules = host.tmp / "redirect.nft"
    rules.write_text(REDIRECT)
    assert host.in_ns("nft", "-f", str(rules)).returncode == 0
    try:
        assert host.in_ns("python3", "-c", PROBE, METADATA, "80").returncode == 0  # redirected
        assert reaches(nets, network, ELSEWHERE)
        assert not reaches(nets, network, 80, METADATA)
    finally:
        host.in_ns("nft", "delete", "table", "ip", "joblet_test_redirect")


_PUBLISHED = (  # the broker as a container's published port (Docker's DNAT), and a host's own port
    f"ip daddr 10.199.0.5 tcp dport 6379 dnat to {BROKER[0]}:{ELSEWHERE}",
    f"ip daddr 203.0.113.1 tcp dport 6394 dnat to {BROKER[0]}:{ELSEWHERE}",
)
PUBLISH = f"""
table ip joblet_test_publish {{
  chain prerouting {{ type nat hook prerouting priority dstnat; {"; ".join(_PUBLISHED)}; }}
  chain output {{ type nat hook output priority -100; {"; ".join(_PUBLISHED)}; }}
}}
"""


@pytest.mark.parametrize("network", [NET, "isolated"])
def test_a_broker_or_host_port_behind_a_dnat_stays_closed(nets, host, listeners, network):
    """A broker published by DNAT (10.199.0.5:6379, in job_blocked_addresses) was matched on
    the address after the DNAT, which no set held; a port the host forwards from its own
    address went to forward, past input's "no host access" (review). Beside: the worker's
    host reaches both through the DNAT, and the job the place they lead to."""
    rules = host.tmp / "publish.nft"
    rules.write_text(PUBLISH)
    assert host.in_ns("nft", "-f", str(rules)).returncode == 0
    try:
        assert host.in_ns("python3", "-c", PROBE, "10.199.0.5", "6379").returncode == 0  # published
        assert host.in_ns("python3", "-c", PROBE, "203.0.113.1", "6394").returncode == 0
        assert reaches(nets, network, ELSEWHERE)
        assert not reaches(nets, network, 6379, "10.199.0.5")
        assert not reaches(nets, network, 6394, "203.0.113.1")
    finally:
        host.in_ns("nft", "delete", "table", "ip", "joblet_test_publish")


def test_no_job_pings_the_cloud_metadata_service(nets, metadata):
    rec, _, _ = run(nets, "ping", "-c", "1", "-W", "2", BROKER[0], network=NET)
    assert rec.exit_code == 0  # ICMP goes out
    rec, _, _ = run(nets, "ping", "-c", "1", "-W", "2", METADATA, network=NET)
    assert rec.exit_code != 0


@pytest.mark.parametrize("network", [NET, "bridge", "isolated", "host"])
def test_no_job_reaches_the_broker(nets, listeners, network):
    assert reaches(nets, network, ELSEWHERE)  # the same upstream address, another port
    assert not reaches(nets, network, BROKER[1])


def test_host_mode_job_reaches_no_broker_port_on_the_host(nets, listeners):
    """A broker on the host answers on every local address: its port is closed to host-mode
    jobs on all of them, while other local ports stay open."""
    for address in ("127.0.0.1", "::1", "203.0.113.1"):
        assert reaches(nets, "host", 6392, address), address
        assert not reaches(nets, "host", BROKER[1], address), address


@pytest.mark.parametrize("network", [NET, "isolated"])
def test_a_host_mode_job_reaches_no_job(nets, host, network):
    """The host may open connections to jobs; a host-mode job shares its network but is a job."""
    server_id, ip = serve(nets, network)
    try:
        assert host.in_ns("python3", "-c", PROBE, ip, "7000").returncode == 0  # the host reaches it
        assert not reaches(nets, "host", 7000, ip)
    finally:
        nets.stop(server_id)
        nets.wait(server_id, timeout=30)


SQUAT = """
import socket, sys, time
held = []
for port in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(port))); s.listen(8); held.append(s)
print("listening", flush=True)
time.sleep(60)
"""


def test_a_host_mode_job_on_a_broker_port_is_sent_nothing(nets, host):
    """A host-mode job that takes the broker's port while the broker restarts would be sent
    the worker's password: the host's connections to it there are dropped, not to its other
    ports."""
    rec = nets.run("python3", ("-c", SQUAT, str(BROKER[1]), "6393"), network="host")
    try:
        wait_listening(nets, rec.id)
        assert host.in_ns("python3", "-c", PROBE, "127.0.0.1", "6393").returncode == 0
        assert host.in_ns("python3", "-c", PROBE, "127.0.0.1", str(BROKER[1])).returncode != 0
    finally:
        nets.stop(rec.id)
        nets.wait(rec.id, timeout=30)


def test_no_job_reaches_the_host_itself(nets, listeners):
    assert reaches(nets, "host", 6392, "203.0.113.1")  # the listener is there
    for network in (NET, "isolated"):
        assert not reaches(nets, network, 6392, "203.0.113.1")


@pytest.mark.parametrize(
    "cidr",
    ["169.254.0.0/16", "0.0.0.0/8", "224.0.0.0/8", "240.0.0.0/8", "255.255.255.0/29", "127.0.0.0/8", "10.199.0.0/24"],
)
def test_network_create_refuses_odd_networks_in_one_line(host, cidr):
    proc = host.rnx("network", "create", "odd", f"--cidr={cidr}")
    assert proc.returncode == 2 and len(proc.stderr.decode().strip().splitlines()) == 1, proc
    assert b'failed to create network "odd"' in proc.stderr


def test_network_create_accepts_a_unicast_network(host):
    assert host.rnx("network", "create", "even", "--cidr=10.198.0.0/24").returncode == 0
    assert host.rnx("network", "delete", "even").returncode == 0


def assert_nothing_left(host: Host, name: str, gateway: str) -> None:
    assert host.in_ns("ip", "link", "show", bridge_name(name)).returncode != 0, f"bridge of {name} left"
    assert gateway not in host.in_ns("ip", "-4", "addr").stdout
    assert IpamStore(host.cfg.redis_url, host.cfg.key_prefix).allocations(name) == {}


def test_failed_setup_leaves_no_bridge_and_no_address(nets, host):
    nets.networks.create("ps-fail", "10.121.0.0/24")
    faults.arm(Path(host.env["JOBLET_FAULT_FILE"]), "bridge-created", "RuntimeError", 1)
    rec, _, _ = run(nets, "true", network="ps-fail")
    assert rec.status == JobStatus.FAILED and "injected at bridge-created" in (rec.error or ""), rec
    assert_nothing_left(host, "ps-fail", "10.121.0.1")
    rec, _, _ = run(nets, "true", network="ps-fail")  # positive control: the same network works
    assert rec.status == JobStatus.COMPLETED, rec
    assert host.in_ns("ip", "link", "show", bridge_name("ps-fail")).returncode == 0


def test_odd_network_written_past_the_api_builds_nothing(nets, host):
    store = NetworkStore(host.cfg.redis_url, host.cfg.key_prefix)
    store.create(NetworkDef(name="meta", cidr="169.254.0.0/16"), {})
    rec, _, _ = run(nets, "true", network="meta")
    assert rec.status == JobStatus.FAILED and "link-local" in (rec.error or ""), rec
    assert_nothing_left(host, "meta", "169.254.0.1")
    assert "169.254" not in host.in_ns("ip", "route").stdout
    store.delete("meta")


def test_job_inherits_no_socket_of_the_worker(nets):
    """The worker's in-process nftables handle (a netlink socket in the host's namespace) is
    close-on-exec: a job holding it could rewrite the host's firewall."""
    code = (
        "import os\nfor f in os.listdir('/proc/self/fd'):\n"
        " try: print(os.readlink(f'/proc/self/fd/{f}'))\n except OSError: pass"
    )
    rec, out, err = run(nets, "python3", "-c", code, network=NET)
    assert rec.exit_code == 0 and b"pipe:" in out and b"socket:" not in out, (out, err)


JOIN_GROUPS = """
import socket, struct, time
socks = []
for n in range(300):
    if n % 20 == 0:  # igmp_max_memberships: 20 groups a socket
        socks.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    group = socket.inet_aton(f"239.1.{n // 250}.{n % 250 + 1}")
    socks[-1].setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group + socket.inet_aton("0.0.0.0"))
print("joined", len(socks), flush=True)
time.sleep(60)
"""


def test_a_jobs_multicast_groups_take_no_room_in_its_bridge(nets, host):
    """A job joining more groups than the bridge's table holds (4096) turned multicast
    snooping off on its bridge for good, and held that many entries of kernel memory no
    cgroup counts (red-team run): bridges snoop nothing, multicast goes to every port."""
    job = nets.run("python3", ("-c", JOIN_GROUPS), network=NET)
    try:
        eventually(lambda: b"joined 15" in output(nets, job.id), "the job never joined its groups")  # the control
        bridge = bridge_name(NET)
        details = json.loads(host.in_ns("ip", "-d", "-j", "link", "show", bridge).stdout)[0]
        assert details["linkinfo"]["info_data"]["mcast_snooping"] == 0, details["linkinfo"]
        entries = host.in_ns("bridge", "-j", "mdb", "show", "dev", bridge).stdout
        assert "239.1." not in entries, entries
    finally:
        nets.stop(job.id)
        nets.wait(job.id, timeout=60)


def test_forged_arp_senders_on_an_isolated_link_make_no_neighbour_entries(nets, host):
    """An isolated job with CAP_NET_RAW asking for its gateway with a new forged sender
    address each time made a neighbour entry on the host for each: enough of them fill the
    host's table for every namespace (review). Its own address still gets one (control)."""
    forged = 'globals()["N"] = globals().get("N", 0) + 1; ask(f"10.77.0.{N}"); ask(OWN_IP)'
    script = l2.attack(forged).replace(
        "def checksum(data):",
        "GW = subprocess.run(['ip', 'route', 'show', 'default'], capture_output=True, text=True).stdout.split()[2]\n"
        "def ask(sender):\n"
        "    l2.send(b'\\xff' * 6 + OWN_MAC + b'\\x08\\x06' + arp_request(OWN_MAC, sender, GW))\n\n"
        "def checksum(data):",
    )
    held = script.replace('print("sent")', 'print("sent", flush=True)') + "time.sleep(60)\n"  # its link stays
    job = nets.run("python3", ("-c", held), network="isolated")
    try:
        ip = wait_running(nets, job.id)
        eventually(lambda: b"sent" in output(nets, job.id), "the job never sent its requests")
        neighbours = host.in_ns("ip", "-4", "neigh", "show").stdout
        assert ip in neighbours, neighbours  # the control: its own address is learned
        assert "10.77.0." not in neighbours, neighbours
    finally:
        nets.stop(job.id)
        nets.wait(job.id, timeout=60)
