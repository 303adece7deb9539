"""The default bridge: addresses from IPAM, job-to-job TCP, NAT to an upstream network."""

from __future__ import annotations

import ipaddress
import subprocess
import time

from joblet.api.models import JobStatus
from joblet.api.store_ipam import IpamStore
from tests.integration.helpers import CLIENT, SERVER, UPSTREAM, eventually, run, wait_listening, wait_running


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
    wait_running(client, server.id)
    wait_listening(client, server.id)
    rec = client.get(server.id)
    done, out, err = run(client, "python3", "-c", CLIENT.format(ip=rec.ip))
    assert done.exit_code == 0, err
    assert out == b"pong\n"
    assert client.wait(server.id, timeout=30).status == JobStatus.COMPLETED


def test_upstream_sees_host_address_nat(client, host, upstream):
    listener = subprocess.Popen(
        ["ip", "netns", "exec", upstream, "python3", "-c", UPSTREAM], stdout=subprocess.PIPE, text=True
    )
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
    # freed right after the final record (the client does not wait for it)
    eventually(
        lambda: set(ipam.allocations("bridge").values()) <= {r.id for r in client.list() if not r.status.final},
        "an ended job still holds its address",
        timeout=5,
    )
