"""Custom networks: validation, isolation between networks, talk within one."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from joblet.api.networks import NetworkDef, NetworkStore
from joblet.errors import Conflict, NotFound, ValidationError
from joblet.names import bridge_name
from tests.integration.helpers import (
    SERVER,
    connect_ok,
    eventually,
    host_listener,
    ns_connects,
    run,
    wait_listening,
    wait_running,
)


@pytest.fixture(scope="module")
def nets(client):
    client.networks.create("tenant-a", "10.100.0.0/24")
    client.networks.create("tenant-b", "10.101.0.0/24")
    return client


def test_job_gets_address_in_its_network(nets):
    rec, out, _ = run(nets, "ip", "-4", "-o", "addr", "show", "eth0", network="tenant-a")
    assert b"inet 10.100.0." in out and rec.ip.startswith("10.100.0.")
    assert rec.node and not nets.store.redis.exists(nets.store.keys.placed("tenant-a"))  # one node: none kept


def test_same_network_connects_other_network_and_bridge_do_not(nets):
    server = nets.run("python3", ("-c", SERVER), network="tenant-a")
    ip = wait_running(nets, server.id)
    wait_listening(nets, server.id)
    assert not connect_ok(nets, ip, "tenant-b")
    assert not connect_ok(nets, ip, "bridge")
    assert connect_ok(nets, ip, "tenant-a")
    assert nets.wait(server.id, timeout=30).status == JobStatus.COMPLETED


def test_validation_errors(nets):
    with pytest.raises(Conflict, match='overlaps with existing network "tenant-a"'):
        nets.networks.create("x1", "10.100.0.0/16")
    with pytest.raises(Conflict, match="built-in network"):
        nets.networks.create("x2", "172.20.5.0/24")
    with pytest.raises(Conflict, match=r"overlaps with job_blocked_networks' 100.100.100.200/32 "):
        nets.networks.create("x4", "100.100.96.0/20")  # a job there would answer for the metadata service
    with pytest.raises(ValidationError, match=r"CIDR 168.63.129.0/24 is public address space"):
        nets.networks.create("x4", "168.63.129.0/24")  # Azure's, and public
    for cidr in ("10.1.0.1/24", "10.1.0.0/30", "nonsense", "10.0.0.0/7"):
        with pytest.raises(ValidationError):
            nets.networks.create("x3", cidr)
    for name in ("bridge", "none", "bad name", "x" * 65):
        with pytest.raises(ValidationError):
            nets.networks.create(name, "10.150.0.0/24")
    with pytest.raises(Conflict, match="already exists"):
        nets.networks.create("tenant-a", "10.151.0.0/24")


def test_racing_overlapping_creates_only_one_wins(nets):
    def create(i: int) -> bool:
        try:
            Client(nets.settings).networks.create(f"race-{i}", f"10.160.{i}.0/24" if i % 2 else "10.160.0.0/16")
            return True
        except Conflict:
            return False

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(create, range(16)))
    names = [n["name"] for n in nets.networks.list() if n["name"].startswith("race-")]
    cidrs = [n["cidr"] for n in nets.networks.list() if n["name"].startswith("race-")]
    assert sum(results) == len(names) >= 1
    import ipaddress

    nets_ = [ipaddress.ip_network(c) for c in cidrs]
    assert not any(a.overlaps(b) for i, a in enumerate(nets_) for b in nets_[i + 1 :])


def test_delete_refused_while_in_use(nets):
    nets.networks.create("short-lived", "10.170.0.0/24")
    job = nets.run("sleep", ("60",), network="short-lived")
    wait_running(nets, job.id)
    with pytest.raises(Conflict, match="use it"):
        nets.networks.delete("short-lived")
    nets.stop(job.id)
    nets.wait(job.id, timeout=30)
    nets.networks.delete("short-lived")
    assert "short-lived" not in [n["name"] for n in nets.networks.list()]


def test_unknown_network_refused_before_queueing(nets):
    with pytest.raises(ValidationError, match="no such network"):
        nets.run("true", network="nope")


def test_names_resolve_in_own_network_only_and_drop_on_stop(nets):
    db = nets.run("sleep", ("300",), network="tenant-a", name="db")
    ip = wait_running(nets, db.id)
    script = (
        "for i in $(seq 50); do getent ahostsv4 db >> /work/seen || exit 1; done; cut -d' ' -f1 /work/seen | sort -u"
    )
    rec, out, _ = run(nets, "sh", "-c", script, network="tenant-a")
    assert rec.exit_code == 0 and out.split() == [ip.encode()]
    other, _, _ = run(nets, "getent", "hosts", "db", network="tenant-b")
    assert other.exit_code != 0
    watcher = nets.run(
        "sh", ("-c", "while grep -qE '\\sdb(\\s|$)' /etc/hosts; do sleep 0.1; done; echo gone"), network="tenant-a"
    )
    wait_running(nets, watcher.id)
    assert nets.get(watcher.id).status == JobStatus.RUNNING  # the control: it sees db listed
    nets.stop(db.id)
    assert nets.wait(watcher.id, timeout=30).status == JobStatus.COMPLETED


def test_a_name_in_other_case_cannot_shadow_a_peer(nets):
    """/etc/hosts lookups ignore case, and the first line that matches wins: `WEB` or a short
    id in capitals, listed before the real one, took its lookups (red-team run)."""
    web = nets.run("sleep", ("300",), network="tenant-a", name="web")
    ip = wait_running(nets, web.id)
    with pytest.raises(ValidationError, match="'WEB' is in use by job"):
        nets.run("sleep", ("300",), network="tenant-a", name="WEB")
    with pytest.raises(ValidationError, match="shape of a job's short id"):
        nets.run("sleep", ("300",), network="tenant-a", name=web.id[:12].upper())
    other = nets.run("sleep", ("300",), network="tenant-a", name="Api")
    other_ip = wait_running(nets, other.id)
    try:
        script = f"getent hosts WEB web {web.id[:12].upper()} api API; grep -ci web /etc/hosts"
        rec, out, err = run(nets, "sh", "-c", script, network="tenant-a")
        assert rec.exit_code == 0, err
        lines = out.decode().splitlines()
        assert [line.split()[0] for line in lines[:5]] == [ip, ip, ip, other_ip, other_ip], out
        assert lines[5] == "1", out  # one line names web, in lower case
    finally:
        nets.stop(web.id)
        nets.stop(other.id)


def test_a_jobs_resolv_conf_is_its_networks_dns_else_the_workers(nets):
    nets.networks.create("tenant-dns", "10.102.0.0/24", dns=("192.0.2.77",))
    try:
        own, out, err = run(nets, "cat", "/etc/resolv.conf", network="tenant-dns")
        assert own.exit_code == 0 and out == b"nameserver 192.0.2.77\n", (out, err)
        default, out, err = run(nets, "cat", "/etc/resolv.conf", network="tenant-a")
        assert default.exit_code == 0 and out == b"nameserver 203.0.113.2\n", (out, err)  # dns_servers
    finally:
        nets.networks.delete("tenant-dns")


def test_a_network_whose_range_holds_the_workers_dns_server_is_refused_its_jobs(nets):
    """Its jobs' lookups went on-link to whichever job of the network held that address,
    which answered them all (usability run). Its own --dns is its owner's choice: it runs.
    Its create is refused where a live node gives its jobs that server (each job failed);
    one made while none was (here: written by other means) fails its jobs saying why."""
    from joblet.errors import Conflict

    with pytest.raises(Conflict, match=r"CIDR 203.0.113.0/24 holds 203.0.113.2, the DNS server jobs on node"):
        nets.networks.create("dns-clash", "203.0.113.0/24")  # the worker's dns_servers: 203.0.113.2
    assert "dns-clash" not in nets.networks.store.names()  # nothing half-built
    nets.networks.store.create(NetworkDef(name="dns-clash", cidr="203.0.113.0/24"), {})
    try:
        rec, _, _ = run(nets, "cat", "/etc/resolv.conf", network="dns-clash")
        assert rec.exit_code is None and "holds the DNS server jobs here are given (203.0.113.2)" in (rec.error or "")
    finally:
        nets.networks.delete("dns-clash")
    nets.networks.create("dns-own", "203.0.113.0/24", dns=("203.0.113.9",))
    try:
        rec, out, err = run(nets, "cat", "/etc/resolv.conf", network="dns-own")
        assert rec.exit_code == 0 and out == b"nameserver 203.0.113.9\n", (out, err)
    finally:
        nets.networks.delete("dns-own")


def test_a_public_range_is_built_by_no_worker(nets):
    """Refused at create (a public range's route took the host's own traffic for it to the
    network's jobs), and by the worker for a definition written by other means. Beside: a
    private one is built and runs."""
    with pytest.raises(ValidationError, match=r'failed to create network "pub": CIDR 8.8.8.0/24 is public'):
        nets.networks.create("pub", "8.8.8.0/24")
    assert "pub" not in nets.networks.store.names()  # nothing half-built
    nets.networks.store.create(NetworkDef(name="pub", cidr="8.8.8.0/24"), {})
    nets.networks.create("priv", "10.152.0.0/24")
    try:
        rec, _, _ = run(nets, "true", network="pub")
        assert rec.exit_code is None and "CIDR 8.8.8.0/24 is public address space" in (rec.error or ""), rec
        assert run(nets, "true", network="priv")[0].exit_code == 0
    finally:
        nets.networks.delete("pub")
        nets.networks.delete("priv")


def test_no_network_holds_a_dns_server_the_host_itself_asks(nets, host):
    """A private range over the host's resolver took its lookups to the network's jobs, one
    of which answered them (red-team run). Each heartbeat names the host's own resolvers
    (what create checks); a definition written over one by other means is built nowhere."""
    import ipaddress

    from joblet.network_agent.host import host_resolvers

    mine = host_resolvers()
    assert nets.live_nodes()[host.name]["resolvers"] == mine
    ipv4 = [ns for ns in mine if "." in ns]
    if not ipv4:  # a host that asks none over IPv4 has none to keep clear: nothing refused
        assert host_resolver_ranges() == {}
        return
    cidr = str(ipaddress.ip_network(f"{ipv4[0]}/29", strict=False))
    with pytest.raises(Conflict, match=rf"overlaps with the DNS server node hosta uses \({ipv4[0]}\)"):
        nets.networks.create("resolver", cidr)
    nets.networks.store.create(NetworkDef(name="resolver", cidr=cidr), {})
    try:
        rec, _, _ = run(nets, "true", network="resolver")
        assert rec.exit_code is None and f"the DNS server node {host.name} uses ({ipv4[0]})" in (rec.error or ""), rec
    finally:
        nets.networks.delete("resolver")


def host_resolver_ranges() -> dict[str, str]:
    from joblet.network_agent.host import resolver_ranges

    return resolver_ranges("x")


def test_job_cannot_reach_the_host_itself(nets, host):
    listener = host_listener(host.netns, seconds=30)
    try:
        for gateway in ("10.100.0.1", "172.20.0.1"):  # positive control: it listens there
            assert ns_connects(host.netns, gateway)
        assert not connect_ok(nets, "10.100.0.1", "tenant-a")  # its own gateway
        assert not connect_ok(nets, "172.20.0.1", "tenant-a")  # another network's gateway
        assert not connect_ok(nets, "172.20.0.1", "bridge")
    finally:
        listener.kill()
        listener.wait()


def test_flushed_ruleset_is_restored(nets, host):
    run(nets, "true", network="tenant-a")
    assert host.in_ns("nft", "flush", "ruleset").returncode == 0
    deadline = time.monotonic() + 15
    while any(host.in_ns("nft", "list", "table", f, "joblet").returncode for f in ("inet", "ip")):  # ip: the caps
        assert time.monotonic() < deadline, "joblet's tables were not restored"
        time.sleep(0.2)
    assert "joblet:flow-cap" in host.in_ns("nft", "list", "table", "ip", "joblet").stdout
    server = nets.run("python3", ("-c", SERVER), network="tenant-a")
    ip = wait_running(nets, server.id)
    wait_listening(nets, server.id)
    assert not connect_ok(nets, ip, "tenant-b")
    assert connect_ok(nets, ip, "tenant-a")
    nets.wait(server.id, timeout=30)


def test_a_network_made_again_while_its_delete_was_missed_is_rebuilt(nets, host):
    """Deleted and made again under its name with another CIDR, and this worker never heard
    of the delete (down, or the event lost): its next job gets the new network, not the old
    bridge's address and rules (a gateway no bridge had, and the old CIDR still routed)."""
    store = NetworkStore(host.cfg.redis_url, host.cfg.key_prefix)
    bridge = bridge_name("again")
    made = (("10.102.0.0/24", False), ("10.103.0.0/24", False), ("10.104.0.0/24", True))  # first: the control
    for cidr, restart in made:
        gateway = cidr.replace("0/24", "1")
        if restart:  # the worker is down meanwhile: it finds the old bridge with the old address
            host.stop_worker()
        nets.networks.create("again", cidr)
        if restart:
            host.start_worker()
        # the gateway answers ARP (the host takes no packet of a job: the ping itself is dropped)
        neigh = f"ping -c 1 -W 1 {gateway} >/dev/null; ip neigh show {gateway}"
        rec, out, _ = run(nets, "sh", "-c", neigh, network="again")
        assert rec.ip.startswith(gateway[:-1]) and b"lladdr" in out, (rec, out)
        addrs = host.in_ns("ip", "-4", "-o", "addr", "show", bridge).stdout
        assert f"{gateway}/24" in addrs and len(addrs.splitlines()) == 1, addrs
        rules = host.in_ns("nft", "list", "table", "inet", "joblet").stdout
        assert cidr in rules and not any(f"10.10{i}.0.0/24" in rules.replace(cidr, "") for i in (2, 3, 4)), rules
        routes = host.in_ns("ip", "route").stdout
        assert not any(f"10.10{i}.0.0/24" in routes.replace(cidr, "") for i in (2, 3, 4)), routes
        if not restart:
            store.delete("again")  # the definition only: no event reaches the worker
    nets.networks.delete("again")


def test_a_network_deleted_while_its_worker_is_down_leaves_no_rule(nets, host):
    """Its bridge went at the worker's restart, but its rules stayed in the tables the
    earlier worker had loaded (its NAT, and a drop of traffic to its range that is not its
    bridge's, which the host's own met) until the next job (usability run)."""
    bridge = bridge_name("downdel")
    nets.networks.create("downdel", "10.105.0.0/24")
    rec, _, _ = run(nets, "true", network="downdel")
    assert rec.status == JobStatus.COMPLETED
    rules = host.in_ns("nft", "list", "table", "inet", "joblet").stdout
    assert bridge in rules and "10.105.0.0/24" in rules  # the control: there while it exists
    host.stop_worker()
    try:
        nets.networks.delete("downdel")
    finally:
        host.start_worker()
    eventually(lambda: bridge not in host.in_ns("ip", "-o", "link", "show").stdout, "its bridge removed")
    rules = host.in_ns("nft", "list", "table", "inet", "joblet").stdout
    assert bridge not in rules and "10.105.0.0/24" not in rules, rules
    rec, _, _ = run(nets, "true", network="tenant-a")  # the host still builds networks
    assert rec.status == JobStatus.COMPLETED


def test_a_job_on_two_networks_is_listed_by_either_with_that_ones_address(nets, host):
    """`rnx list --network=B` showed a job on A and B under A, with its A address: the guide's
    cleanup (`select(.network == $net)`) would have called B unused."""
    import json

    job = nets.run("sleep", ("300",), network=["tenant-a", "tenant-b"])
    try:
        wait_running(nets, job.id)
        ips = nets.get(job.id).ips
        for net in ("tenant-a", "tenant-b"):
            listed = json.loads(host.rnx("list", f"--network={net}", "--json").stdout)
            mine = [j for j in listed if j["id"] == job.id]
            assert [(j["network"], j["ip"]) for j in mine] == [(net, ips[net])], listed
            table = host.rnx("list", f"--network={net}").stdout.decode()
            row = next(line for line in table.splitlines() if line.startswith(job.short_id))
            assert f" {net} " in row and ips[net] in row, table
    finally:
        nets.stop(job.id)
        nets.wait(job.id, timeout=30)


def test_a_definition_over_a_route_of_the_host_is_not_built(nets, host):
    """A definition written to Redis past `rnx network create` (which refuses it), over a route
    of the worker's host: its bridge's more specific route took the host's own traffic to that
    range (the worker's Redis connection, where Redis sat there) and handed it to a job
    (red-team run). The worker refuses to build it; a network beside it still runs."""
    import json

    from joblet.api.networks import NetworkDef

    sh = __import__("subprocess").run
    sh(["ip", "-n", host.netns, "link", "add", "lan9", "type", "veth", "peer", "name", "lan9p"], check=True)
    try:
        sh(["ip", "-n", host.netns, "addr", "add", "10.188.0.1/24", "dev", "lan9"], check=True)
        for link in ("lan9", "lan9p"):
            sh(["ip", "-n", host.netns, "link", "set", link, "up"], check=True)

        def published() -> bool:
            return any("dev lan9" in k for k in nets.live_nodes()[host.name].get("prefixes", {}))

        eventually(published, "the worker's heartbeat naming the new route")
        with pytest.raises(Conflict, match=r"overlaps with host route 10.188.0.0/24 dev lan9 on node hosta"):
            nets.networks.create("lanx", "10.188.0.0/25")  # the client's own check
        store = NetworkStore(host.cfg.redis_url, host.cfg.key_prefix)
        forged = NetworkDef(name="lanx", cidr="10.188.0.0/25", vni=5001)
        store.redis.hset(store.key, "lanx", json.dumps(forged.to_dict()))
        rec, _, _ = run(nets, "true", network="lanx")
        assert rec.status == JobStatus.FAILED, rec
        why = 'network "lanx" cannot be used on node hosta: CIDR 10.188.0.0/25 overlaps host route'
        assert why in (rec.error or ""), rec
        route = sh(["ip", "-n", host.netns, "route", "get", "10.188.0.7"], capture_output=True, text=True).stdout
        assert " dev lan9 " in route, route  # the host's traffic there still goes to its LAN
        links = sh(["ip", "-n", host.netns, "-o", "link"], capture_output=True, text=True).stdout
        assert bridge_name("lanx") not in links
        nets.networks.create("beside", "10.189.0.0/24")
        rec, _, _ = run(nets, "true", network="beside")
        assert rec.exit_code == 0, rec  # the control: a network clear of the host's routes is built
        inside = NetworkDef(name="inside", cidr="10.189.0.0/28", vni=5002)  # over "beside", whose bridge is here
        store.redis.hset(store.key, "inside", json.dumps(inside.to_dict()))
        rec, _, _ = run(nets, "true", network="inside")
        why = 'network "inside" cannot be used on node hosta: CIDR 10.189.0.0/28 overlaps network "beside" on this host'
        assert rec.status == JobStatus.FAILED and why in (rec.error or ""), rec
        far = nets.networks.create("far", "10.187.0.0/24")  # no job here: no bridge on this host
        for forged, why in (
            (NetworkDef(name="inside", cidr="10.187.0.0/28", vni=5002), 'overlaps network "far"'),
            (NetworkDef(name="inside", cidr="10.186.0.0/24", vni=far.vni), f'its VNI {far.vni} is network "far"\'s'),
        ):
            store.redis.hset(store.key, "inside", json.dumps(forged.to_dict()))
            rec, _, _ = run(nets, "true", network="inside")
            assert rec.status == JobStatus.FAILED and why in (rec.error or ""), rec
        nets.networks.delete("beside")
        nets.networks.delete("far")
    finally:
        NetworkStore(host.cfg.redis_url, host.cfg.key_prefix).delete("inside")
        NetworkStore(host.cfg.redis_url, host.cfg.key_prefix).delete("lanx")
        sh(["ip", "-n", host.netns, "link", "del", "lan9"], check=False)


def test_two_names_whose_bridge_hashes_clash_never_share_a_bridge(nets, host):
    """A bridge is `jb` + 10 hex digits of the name's sha1: v14377e and v200f89 share
    jbb7cd759e02. The second network was made, and its first job took the first's bridge: its
    gateway replaced, its jobs cut off, the second network's jobs on their segment (red-team)."""
    import json

    from joblet.api.networks import NetworkDef

    assert bridge_name("v14377e") == bridge_name("v200f89") == "jbb7cd759e02"
    nets.networks.create("v14377e", "10.191.0.0/24")
    store = NetworkStore(host.cfg.redis_url, host.cfg.key_prefix)
    try:
        with pytest.raises(Conflict, match='its bridge name jbb7cd759e02 is network "v14377e"\'s'):
            nets.networks.create("v200f89", "10.192.0.0/24")
        forged = NetworkDef(name="v200f89", cidr="10.192.0.0/24", vni=5004)  # written by other means
        store.redis.hset(store.key, "v200f89", json.dumps(forged.to_dict()))
        rec, _, _ = run(nets, "true", network="v200f89")
        assert rec.status == JobStatus.FAILED and 'is network "v14377e"\'s (a hash clash)' in (rec.error or ""), rec
        store.delete("v200f89")  # while both are defined, neither is built here
        rec, out, _ = run(nets, "ip", "-4", "-o", "addr", "show", "eth0", network="v14377e")  # the control
        assert rec.exit_code == 0 and b"10.191.0." in out, out
        gateway = host.in_ns("ip", "-4", "-o", "addr", "show", "jbb7cd759e02").stdout
        assert "10.191.0.1/24" in gateway and "10.192.0.1" not in gateway, gateway
    finally:
        store.delete("v200f89")
        nets.networks.delete("v14377e")


def test_every_row_of_the_network_list_has_the_same_fields(nets):
    """Built-ins had no dns, mtu or vni in `rnx network list --json` (a jq over all rows
    read null from some and nothing from others; usability run)."""
    rows = nets.networks.list()
    user = next(r for r in rows if r["name"] == "tenant-a")
    assert all(set(r) == set(user) for r in rows), [sorted(set(user) ^ set(r)) for r in rows]
    assert next(r for r in rows if r["name"] == "bridge")["dns"] == [] and user["vni"] is not None


def test_a_network_across_nodes_of_different_mtus_takes_the_smallest(redis_sock):
    """Without --mtu each node gave a network its own MTU (its uplink's less the VXLAN
    header): between nodes of 1500 and 1400, large UDP fragmented in the underlay. The
    smallest is the network's; nodes that agree leave it to each (the control)."""
    import uuid

    from joblet.api.client import Client
    from joblet.config import load

    client = Client(load(redis_url=redis_sock, key_prefix=f"mtu{uuid.uuid4().hex[:6]}:"))
    for node, mtu in (("big", 1500), ("small", 1400)):
        client.store.heartbeat(node, {"underlay": f"192.0.2.{mtu % 7}", "mtu": mtu, "prefixes": {}}, ttl=60)
    assert client.networks.create("mixed", "10.161.0.0/24").mtu == 1350
    assert client.networks.create("asked", "10.162.0.0/24", mtu=1300).mtu == 1300  # --mtu is the user's
    client.store.heartbeat("small", {"underlay": "192.0.2.9", "mtu": 1500, "prefixes": {}}, ttl=60)
    assert client.networks.create("even", "10.163.0.0/24").mtu is None


def test_the_readmes_backend_address_recipe_reads_the_running_one(nets, host):
    """README: `rnx list --network=N --name=backend --status=running --json | jq -r
    '.[-1].ip'`. Its `.[0]` without --status read the first backend ever run, ended (usability
    run)."""
    import json

    ended = nets.run("true", network="tenant-a", name="backend")
    assert nets.wait(ended.id, timeout=60).status == JobStatus.COMPLETED
    live = nets.run("sleep", ("300",), network="tenant-a", name="backend")
    try:
        address = wait_running(nets, live.id)
        listed = host.rnx("list", "--network=tenant-a", "--name=backend", "--status=running", "--json")
        assert json.loads(listed.stdout)[-1]["ip"] == address
        everyone = json.loads(host.rnx("list", "--network=tenant-a", "--name=backend", "--json").stdout)
        assert everyone[0]["id"] == ended.id  # the control: the old recipe's .[0] is the ended one
    finally:
        nets.stop(live.id)
        nets.wait(live.id, timeout=30)


def test_a_network_outside_the_fleets_ranges_is_refused_at_create_and_built_by_no_worker(redis_sock):
    """Any private range was taken: a network over a subnet the host reaches through its
    default route (a VPC's database) took the host's connections there to a job, and cut
    every other job off from it (red-team run). With JOBLET_NETWORK_RANGES set, a range
    outside is refused at create, and by a worker for a definition a client without the
    setting wrote; one inside (the control) is built and runs."""
    import dataclasses

    from joblet.config_checks import PRIVATE_RANGES
    from tests.conftest import running_host

    hosts = running_host(redis_sock, "ranges", network_ranges="10.200.0.0/16")
    host = next(hosts)
    narrow = Client(host.cfg)
    wide = Client(dataclasses.replace(host.cfg, network_ranges=PRIVATE_RANGES))  # a client without it
    try:
        assert host.cfg.network_ranges == ("10.200.0.0/16",)
        with pytest.raises(ValidationError, match=r"CIDR 10.0.5.0/24 is outside the ranges user networks may take"):
            narrow.networks.create("vpc", "10.0.5.0/24")
        wide.networks.create("vpc", "10.0.5.0/24")
        narrow.networks.create("own", "10.200.1.0/24")
        rec, _, _ = run(narrow, "true", network="vpc")
        assert rec.exit_code is None and "10.0.5.0/24 is outside the ranges" in (rec.error or ""), rec
        assert run(narrow, "true", network="own")[0].exit_code == 0
    finally:
        for name in ("vpc", "own"):
            with contextlib.suppress(NotFound):
                narrow.networks.delete(name)
        hosts.close()
