"""Two hosts of one installation (one Redis, one key prefix): what crosses between them."""

from __future__ import annotations

import os
import subprocess

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from joblet.names import bridge_name
from tests.conftest import BIN, Host, need
from tests.integration.helpers import eventually, output, stop_all, wait_running
from tests.integration.lan import Lan


@pytest.fixture(scope="module")
def fleet(redis_sock):
    """Two hosts on a simulated LAN, each with its underlay address: a network's jobs may be
    placed on both (without an overlay between them, placement keeps them on one)."""
    need(os.geteuid() == 0, "needs root")
    lan = Lan()
    made: list[Host] = []
    try:
        a = Host(redis_sock, "fleeta", underlay_address=lan.address(0))
        made.append(a)
        b = Host(redis_sock, "fleetb", fleet=a, underlay_address=lan.address(1))
        made.append(b)
        for i, h in enumerate(made):
            lan.attach(h.netns, i)
        for h in made:
            h.start_worker()
        yield a, b
    finally:
        for h in reversed(made):
            h.close()
        lan.close()


def test_hosts_files_follow_jobs_on_other_hosts(fleet):
    a, b = fleet
    client = Client(a.cfg)
    client.networks.create("fleet-net", "10.120.0.0/24")
    seen = client.run(
        "sh",
        ("-c", "until grep -qE '\\sweb(\\s|$)' /etc/hosts; do sleep 0.1; done; grep -E '\\sweb(\\s|$)' /etc/hosts"),
        network="fleet-net",
        node="fleetb",
    )
    wait_running(client, seen.id)
    web = client.run("sleep", ("300",), network="fleet-net", name="web", node="fleeta")
    ip = wait_running(client, web.id)
    assert client.wait(seen.id, timeout=30).status == JobStatus.COMPLETED
    out = b"".join(data for _, data in client.logs(seen.id))
    assert out.split()[0].decode() == ip
    listed = "while grep -qE '\\sweb(\\s|$)' /etc/hosts; do sleep 0.1; done"  # web: a word of a line
    gone = client.run("sh", ("-c", listed), network="fleet-net", node="fleetb")
    wait_running(client, gone.id)
    client.stop(web.id)
    assert client.wait(gone.id, timeout=30).status == JobStatus.COMPLETED


def test_a_job_reconciled_at_its_workers_restart_leaves_its_peers_hosts_files(fleet):
    """A worker killed and started again before the fleet marked its node's jobs LOST marks
    them LOST itself, at its start: its jobs' names stayed in their peers' /etc/hosts on
    other hosts, answering for the next holder of the address (fleet run)."""
    a, b = fleet
    client = Client(a.cfg)
    client.networks.create("fleet-kill", "10.133.0.0/24")
    jobs = []
    try:
        doomed = client.run("sleep", ("300",), network="fleet-kill", name="doomed", node="fleetb")
        jobs.append(doomed.id)
        wait_running(client, doomed.id)
        there = "grep -qE '\\sdoomed(\\s|$)' /etc/hosts"
        watch = f"until {there}; do sleep 0.1; done; echo seen; while {there}; do sleep 0.1; done"
        watcher = client.run("sh", ("-c", watch), network="fleet-kill", node="fleeta")
        jobs.append(watcher.id)
        eventually(lambda: output(client, watcher.id) == b"seen\n", "the peer's name in the watcher's hosts file")
        assert b.worker is not None
        b.worker.kill()
        b.worker.wait()
        b.start_worker()
        lost = client.wait(doomed.id, timeout=30)
        assert lost.status == JobStatus.LOST and "stopped unexpectedly" in (lost.error or ""), lost
        assert client.wait(watcher.id, timeout=30).status == JobStatus.COMPLETED  # the name went
    finally:
        stop_all(client, jobs)
        client.networks.delete("fleet-kill")


def test_delete_removes_bridge_and_rules_on_every_host(fleet):
    a, b = fleet
    client = Client(a.cfg)
    client.networks.create("fleet-del", "10.121.0.0/24")
    bridge = bridge_name("fleet-del")
    for h in fleet:
        client.wait(client.run("true", network="fleet-del", node=h.name).id, timeout=30)
        assert bridge in h.in_ns("ip", "-o", "link", "show").stdout
        assert "joblet:net:fleet-del" in h.in_ns("nft", "list", "table", "inet", "joblet").stdout
    client.networks.delete("fleet-del")
    for h in fleet:
        eventually(
            lambda h=h: bridge not in h.in_ns("ip", "-o", "link", "show").stdout, f"bridge left on {h.name}", timeout=15
        )
        eventually(
            lambda h=h: "fleet-del" not in h.in_ns("nft", "list", "table", "inet", "joblet").stdout,
            f"rules left on {h.name}",
            timeout=15,
        )


def test_host_route_overlap_is_refused_by_name(fleet):
    a, _ = fleet
    assert a.in_ns("ip", "link", "add", "clash0", "type", "veth", "peer", "name", "clash0p").returncode == 0
    a.in_ns("ip", "addr", "add", "10.130.5.1/24", "dev", "clash0")
    a.in_ns("ip", "link", "set", "clash0", "up")
    proc = subprocess.run(
        ["ip", "netns", "exec", a.netns, str(BIN / "rnx"), "network", "create", "lan-clash", "--cidr=10.130.0.0/16"],
        env={**os.environ, **a.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    a.in_ns("ip", "link", "del", "clash0")
    assert proc.returncode != 0
    assert "overlaps with host route 10.130.5.0/24 dev clash0" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
