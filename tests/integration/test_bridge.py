"""The default bridge: addresses from IPAM, job-to-job TCP, NAT to an upstream network."""

from __future__ import annotations

import ipaddress
import subprocess
import time
import uuid

import pytest

from joblet.api.models import JobStatus
from joblet.api.store_ipam import IpamStore
from tests.conftest import sh
from tests.integration.helpers import run


@pytest.fixture(scope="module")
def upstream(host):
    """A namespace behind the host namespace standing for the internet (203.0.113.0/24)."""
    name = f"joblet-up-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", host.netns, "link", "add", "upl0", "type", "veth", "peer", "name", "eth0",
           "netns", name)
        sh("ip", "-n", host.netns, "addr", "add", "203.0.113.1/24", "dev", "upl0")
        sh("ip", "-n", host.netns, "link", "set", "upl0", "up")
        sh("ip", "-n", host.netns, "route", "add", "default", "via", "203.0.113.2")
        sh("ip", "-n", name, "addr", "add", "203.0.113.2/24", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)
        sh("ip", "-n", host.netns, "link", "del", "upl0", check=False)


def test_bridge_job_gets_address_in_default_range(client):
    rec, out, _ = run(client, "ip", "-4", "-o", "addr", "show", "eth0")
    addr = out.split()[3].decode()
    assert ipaddress.ip_interface(addr).network == ipaddress.ip_network("172.20.0.0/16")
    assert rec.ip == addr.split("/")[0]
    assert rec.ip not in ("172.20.0.0", "172.20.0.1", "172.20.255.255")
    _, route, _ = run(client, "ip", "route", "show", "default")
    assert route.startswith(b"default via 172.20.0.1 dev eth0")


def test_two_bridge_jobs_talk_over_tcp(client):
    server = client.run("python3", ("-c", SERVER))
    deadline = time.monotonic() + 30
    while not (rec := client.get(server.id)).ip or rec.status != JobStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    done, out, err = run(client, "python3", "-c", CLIENT.format(ip=rec.ip))
    assert done.exit_code == 0, err
    assert out == b"pong\n"
    assert client.wait(server.id, timeout=30).status == JobStatus.COMPLETED


def test_upstream_sees_host_address_nat(client, host, upstream):
    listener = subprocess.Popen(["ip", "netns", "exec", upstream, "python3", "-c", UPSTREAM],
                                stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        rec, out, err = run(client, "python3", "-c", CLIENT.format(ip="203.0.113.2"))
        assert rec.exit_code == 0, err
        seen = listener.communicate(timeout=30)[0].strip()
        assert seen == "203.0.113.1"  # masqueraded to the host's uplink address
    finally:
        listener.kill()
        listener.wait()


def test_addresses_are_freed_and_not_reused_at_once(client, host):
    first, _, _ = run(client, "true")
    second, _, _ = run(client, "true")
    assert first.ip != second.ip
    ipam = IpamStore(host.cfg.redis_url, host.cfg.key_prefix)
    live = {r.id for r in client.list() if not r.status.final}
    assert set(ipam.allocations("bridge").values()) <= live


SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(1); s.settimeout(60)
c, _ = s.accept(); c.sendall(c.recv(16).replace(b"ping", b"pong")); c.close()
"""
CLIENT = """
import socket
for _ in range(100):
    try:
        s = socket.create_connection(("{ip}", 7000), timeout=5); break
    except OSError:
        import time; time.sleep(0.1)
s.sendall(b"ping"); print(s.recv(16).decode())
"""
UPSTREAM = """
import socket
s = socket.socket(); s.bind(("203.0.113.2", 7000)); s.listen(1); s.settimeout(60)
c, addr = s.accept(); c.sendall(c.recv(16).replace(b"ping", b"pong")); print(addr[0]); c.close()
"""
