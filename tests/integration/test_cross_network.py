"""What a job might slip between networks besides connections: ICMP errors that quote another
network's flow (conntrack relates an error to a flow by the packet it quotes, whoever sends it,
so the firewall lets an error from a job pass only as the job's new packets would), and ARP
answers that list the host's addresses."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import Host, running_host
from tests.integration.helpers import eventually, output, run

ECHO = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("203.0.113.2", 5353)); s.settimeout(0.2)
end, told = time.time() + 60, False
while time.time() < end:
    try:
        d, a = s.recvfrom(100); s.sendto(d, a)
        if not told:  # the port the flow has after NAT (randomized): what a forgery must quote
            print(a[1], flush=True); told = True
    except socket.timeout:
        pass
"""

VICTIM = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40000)); s.connect(("203.0.113.2", 5353)); s.settimeout(0.3)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    t = time.time()
    try:
        s.send(b"q"); s.recv(10); r = "reply"
    except ConnectionRefusedError:
        r = "refused"
    except OSError:
        r = "timeout"
    print(f"{t:.3f} {r}", flush=True)
    time.sleep(0.05)
"""

# port unreachable, to the host's address facing the upstream, quoting the victim's flow as
# the upstream saw it (masqueraded to that address, from the port the upstream saw: argv[2])
ATTACKER = """
import socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack(f"!{len(b) // 2}H", b)); s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
def ip(src, dst, proto, length):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, 1, 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:]
inner = ip("203.0.113.1", "203.0.113.2", 17, 28) + struct.pack("!HHHH", int(sys.argv[2]), 5353, 8, 0)
body = struct.pack("!BBHI", 3, 3, 0, 0) + inner
icmp = body[:2] + struct.pack("!H", csum(body)) + body[4:]
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
print(f"start {time.time():.3f}", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    r.sendto(icmp, ("203.0.113.1", 0)); time.sleep(0.02)
print(f"end {time.time():.3f}", flush=True)
"""


@pytest.fixture(scope="module")
def host(redis_sock: str) -> Iterator[Host]:
    """Jobs craft the packets here: a worker that gives them CAP_NET_RAW (Docker's default)."""
    yield from running_host(redis_sock, "hostraw", job_net_raw="true")


def attack(client, network: str, port: int) -> tuple[float, float]:
    """The window in which a job on `network` sent forged errors."""
    rec, out, err = run(client, "python3", "-c", ATTACKER, "3", str(port), network=network)
    assert rec.exit_code == 0, err
    marks = dict(line.split() for line in out.decode().splitlines())
    return float(marks["start"]), float(marks["end"])


def seen(lines: list[tuple[float, str]], window: tuple[float, float]) -> set[str]:
    return {r for t, r in lines if window[0] <= t <= window[1]}


def test_a_jobs_forged_icmp_error_does_not_reach_another_network(client, host, upstream):
    client.networks.create("icmp-a", "10.113.0.0/24")
    echo = subprocess.Popen(["ip", "netns", "exec", upstream, "python3", "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        eventually(
            lambda: subprocess.run(
                ["ip", "netns", "exec", upstream, "ss", "-Hlun", "sport = :5353"], capture_output=True, text=True
            ).stdout.strip(),
            "the upstream's echo never listened",
            15,
        )
        victim = client.run("python3", ("-c", VICTIM, "14"), network="bridge")
        eventually(lambda: b"reply" in output(client, victim.id), "the victim never got a reply", 15)
        assert echo.stdout is not None
        port = int(echo.stdout.readline())  # the victim's flow as the upstream sees it
        other = attack(client, "icmp-a", port)  # another network: must not reach it
        same = attack(client, "bridge", port)  # its own network: the control, the forged error works
        assert client.wait(victim.id, timeout=60).exit_code == 0
        lines = [(float(t), r) for t, r in (line.split() for line in output(client, victim.id).decode().splitlines())]
        assert seen(lines, other) == {"reply"}, seen(lines, other)
        assert "refused" in seen(lines, same), seen(lines, same)
    finally:
        echo.kill()
        echo.wait()
        client.networks.delete("icmp-a")


ARP_ASK = """
import socket, struct, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect((sys.argv[1], 9)); me = u.getsockname()[0]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)); s.bind(("eth0", 0)); s.settimeout(0.2)
mac = s.getsockname()[4]
for target in sys.argv[1:]:
    want = socket.inet_aton(target)
    ask = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + socket.inet_aton(me) + bytes(6) + want
    s.send(b"\\xff" * 6 + mac + b"\\x08\\x06" + ask)
    answered, end = False, time.time() + 1
    while not answered and time.time() < end:
        try:
            f = s.recv(100)
        except socket.timeout:
            continue
        answered = f[12:14] == b"\\x08\\x06" and f[20:22] == b"\\x00\\x02" and f[28:32] == want
    print(target, "answered" if answered else "silent")
"""


def test_the_host_answers_a_jobs_arp_for_its_gateway_only(client, upstream):
    client.networks.create("arp-a", "10.114.0.0/24")
    try:
        assert run(client, "true", network="bridge")[0].exit_code == 0  # the default bridge is up
        asked = ("10.114.0.1", "172.20.0.1", "203.0.113.1")
        rec, out, err = run(client, "python3", "-c", ARP_ASK, *asked, network="arp-a")
        assert rec.exit_code == 0, err
        got = dict(line.split() for line in out.decode().splitlines())
        assert got["10.114.0.1"] == "answered"  # the control: its own gateway
        assert got["172.20.0.1"] == got["203.0.113.1"] == "silent", got  # another bridge's, the uplink's
    finally:
        client.networks.delete("arp-a")


SINK = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("203.0.113.2", 7777))
seen = set()
while True:
    d, a = s.recvfrom(100)
    if a not in seen:  # the control: one true reply per peer, on the real path
        seen.add(a); s.sendto(b"legit", a)
"""

HOST_FLOW = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("203.0.113.2", 7777)); s.settimeout(0.1)
print(s.getsockname()[1], flush=True)
got, end = set(), time.time() + float(sys.argv[1])
while time.time() < end:
    s.send(b"x")
    try:
        got.add(s.recv(100).decode())
    except OSError:
        pass
print(" ".join(sorted(got)), flush=True)
"""

# a UDP datagram forged as the upstream's reply to the host's flow (source 203.0.113.2:7777)
FORGE = """
import socket, struct, sys, time
port = int(sys.argv[1])
udp = struct.pack("!HHHH", 7777, port, 8 + 6, 0) + b"forged"
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                 socket.inet_aton("203.0.113.2"), socket.inet_aton("203.0.113.1"))
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(30):
    r.sendto(ip + udp, ("203.0.113.1", 0)); time.sleep(0.03)
"""


def test_an_isolated_job_cannot_forge_the_hosts_replies(client, host, upstream):
    sink = subprocess.Popen(["ip", "netns", "exec", upstream, "python3", "-c", SINK])
    flow = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, "python3", "-c", HOST_FLOW, "6"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert flow.stdout is not None
        port = flow.stdout.readline().strip()
        rec, _, err = run(client, "python3", "-c", FORGE, port, network="isolated")
        assert rec.exit_code == 0, err
        got = flow.communicate(timeout=30)[0].split()
        assert got == ["legit"], got  # the upstream's reply came (the control), the forgery did not
    finally:
        for proc in (flow, sink):
            proc.kill()
            proc.wait()


def test_the_host_answers_an_isolated_jobs_arp_for_its_end_only(client, upstream):
    assert run(client, "true", network="bridge")[0].exit_code == 0  # the default bridge is up
    ask = 'gw=$(ip -4 route show default | cut -d" " -f3); exec python3 -c "$1" "$gw" 172.20.0.1 203.0.113.1'
    rec, out, err = run(client, "sh", "-c", ask, "sh", ARP_ASK, network="isolated")
    assert rec.exit_code == 0, err
    (own, own_answer), *others = (line.split() for line in out.decode().splitlines())
    assert own.startswith("10.") and own_answer == "answered"  # the control: the host end of its /30
    assert others == [["172.20.0.1", "silent"], ["203.0.113.1", "silent"]], others
