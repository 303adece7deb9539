"""The overlay's pure parts: names, VNIs, forwarding entries, its firewall rules, MTUs."""

from __future__ import annotations

import pytest

from joblet.api.client_networks import fleet_mtu_check, fleet_prefixes, fleet_resolvers
from joblet.api.networks import NetworkDef, free_vni
from joblet.errors import NetworkError, ValidationError
from joblet.names import HOLD_VNI, VNI_MAX, VNI_MIN, default_vni, is_joblet_link, vxlan_name
from joblet.network_agent import firewall, portsec
from joblet.network_agent.overlay import ZERO_MAC, fdb_batch, fdb_wanted, peers, remote_macs
from joblet.network_agent.plan import NetFacts, make_plan
from joblet.network_agent.portsec import mac_for


def test_overlay_port_names_fit_and_are_joblets():
    name = vxlan_name("a-network-with-a-rather-long-name")
    assert name.startswith("jx") and len(name) <= 15 and name == vxlan_name("a-network-with-a-rather-long-name")
    assert is_joblet_link(name) and vxlan_name("x") != vxlan_name("y")


def test_vnis_are_stable_in_range_and_never_shared():
    assert VNI_MIN <= default_vni("db") <= VNI_MAX and default_vni("db") == default_vni("db")
    taken = {default_vni("db")}
    assert free_vni("db", taken) == default_vni("db") + 1
    assert free_vni("db", set()) == default_vni("db")
    assert NetworkDef(name="db", cidr="10.0.0.0/24").overlay_vni == default_vni("db")
    assert NetworkDef(name="db", cidr="10.0.0.0/24", vni=5000).overlay_vni == 5000


def test_free_vni_wraps_around():
    name = next(n for n in (f"n{i}" for i in range(10**5)) if default_vni(n) > VNI_MAX - 20000)
    taken = set(range(default_vni(name), VNI_MAX + 1))
    assert free_vni(name, taken) == VNI_MIN


def test_no_network_gets_the_port_holders_vni():
    name = next(n for n in (f"n{i}" for i in range(10**5)) if default_vni(n) > VNI_MAX - 20000)
    taken = set(range(default_vni(name), HOLD_VNI))  # every VNI after its own up to the holder's
    assert free_vni(name, taken) == VNI_MIN  # past the holder's, around to the first
    assert free_vni(name, set()) == default_vni(name) != HOLD_VNI


def test_fdb_floods_to_peers_and_sends_each_remote_job_to_its_node():
    members = {"j1": "a", "j2": "b", "j3": "c", "j4": "gone"}
    want = fdb_wanted("net", "a", members, {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"})
    assert want == {
        (ZERO_MAC, "10.0.0.2"),
        (ZERO_MAC, "10.0.0.3"),
        (mac_for("j2", "net"), "10.0.0.2"),
        (mac_for("j3", "net"), "10.0.0.3"),
    }
    assert remote_macs("jx0", want) == {("jx0", mac_for("j2", "net")), ("jx0", mac_for("j3", "net"))}
    assert peers(want) == {"10.0.0.2", "10.0.0.3"}  # the nodes with remote jobs, not "gone"'s
    assert fdb_wanted("net", "a", {"j1": "a"}, {"a": "10.0.0.1"}) == frozenset()


def test_fdb_batch_removes_before_it_adds():
    have = frozenset({(ZERO_MAC, "10.0.0.2"), ("02:00:00:00:00:01", "10.0.0.2")})
    want = frozenset({(ZERO_MAC, "10.0.0.2"), ("02:00:00:00:00:01", "10.0.0.3")})
    assert fdb_batch("jx0", have, want) == [
        "fdb del 02:00:00:00:00:01 dev jx0 dst 10.0.0.2",
        "fdb append 02:00:00:00:00:01 dev jx0 dst 10.0.0.3",
    ]
    assert fdb_batch("jx0", want, want) == []


def test_bridge_table_holds_overlay_ports_to_remote_jobs():
    port = vxlan_name("net")
    text = portsec.render_bridge([], ((port, "02:00:00:00:00:01"),))
    assert f'set overlay_macs {{ type ifname . ether_addr; elements = {{ "{port}" . 02:00:00:00:00:01 }}; }}' in text
    assert 'iifname "jx*" jump overlay_port' in text
    assert "iifname . ether saddr != @overlay_macs drop" in text
    assert 'type filter hook input priority filter; policy accept;\n    iifname "jx*" drop' in text
    assert 'type filter hook output priority filter; policy accept;\n    oifname "jx*" drop' in text
    assert 'iifname "jv*" jump job_port' in text  # job ports keep their own rules


@pytest.mark.parametrize(
    "entry",
    [("jv0123456789", "02:00:00:00:00:01"), ("jx0123456789", "02:00:00:00:00"), ('jx01"; drop', "02:00:00:00:00:01")],
)
def test_bad_overlay_entries_are_refused(entry):
    with pytest.raises(NetworkError):
        portsec.render_bridge([], (entry,))


def test_jobs_never_send_to_the_overlay_port():
    nets = [firewall.FwNetwork("net", "jb0123456789", "10.1.0.0/24")]
    text = firewall.render(nets, "10.254.0.0/16", guards=firewall.Guards(vxlan_port=4789))
    assert 'iifname { "jb0123456789" } udp dport 4789 drop comment "joblet:no-overlay"' in text
    assert 'iifname "ji*" udp dport 4789 drop comment "joblet:no-overlay"' in text
    assert "4789" not in firewall.render(nets, "10.254.0.0/16")


def test_the_overlay_port_takes_datagrams_from_peer_nodes_only():
    nets = [firewall.FwNetwork("net", "jb0123456789", "10.1.0.0/24")]
    guards = firewall.Guards(vxlan_port=4789, overlay_peers=("10.0.0.3", "10.0.0.2", "10.0.0.2"))
    text = firewall.render(nets, guards=guards)
    assert "set overlay_peers { type ipv4_addr; elements = { 10.0.0.2, 10.0.0.3 }; }" in text
    rule = 'udp dport 4789 ip saddr != @overlay_peers drop comment "joblet:overlay-peers"'
    inbound = [line.strip() for line in text[text.index("chain input") : text.index("chain output")].splitlines()]
    first = ['iifname "jv*" drop comment "joblet:no-host-access"', 'iifname "jx*" drop comment "joblet:no-host-access"']
    rpf = 'udp dport 4789 fib saddr . iif oif missing drop comment "joblet:overlay-rpf"'  # a forged peer
    assert inbound[2:6] == [*first, rpf, rule]  # before anything accepts
    alone = firewall.render(nets, guards=firewall.Guards(vxlan_port=4789))  # no peer yet: none taken
    assert "set overlay_peers { type ipv4_addr; }" in alone and rule in alone
    assert "overlay_peers" not in firewall.render(nets).split("set overlay_peers")[1]  # no overlay, no rule
    with pytest.raises(ValueError):
        firewall.Guards(vxlan_port=4789, overlay_peers=("10.0.0.2; drop",)).checked()


def test_the_hosts_containers_reach_neither_jobs_nor_the_overlay_port():
    """A container or VM of a node sent VXLAN to a peer NATed to the node's address, which
    the peer takes (review): forwarded from the guests' networks, it is dropped."""
    nets = [firewall.FwNetwork("net", "jb0123456789", "10.1.0.0/24")]
    guards = firewall.Guards(vxlan_port=4789, guests=("172.18.0.0/16", "172.17.0.0/16", "172.17.5.0/24"))
    text = firewall.render(nets, guards=guards)
    assert "set guests { type ipv4_addr; flags interval; elements = { 172.17.0.0/16, 172.18.0.0/16 }; }" in text
    assert 'ip saddr @guests ip daddr @overlay_peers udp dport 4789 drop comment "joblet:no-overlay"' in text
    forward = text[text.index("chain forward") : text.index("chain input")]
    assert 'udp dport 4789 fib saddr . iif oif missing drop comment "joblet:overlay-rpf"' in forward
    dns = "meta l4proto { tcp, udp } th dport != 53"  # a resolver in a container stays reachable
    assert f'iifname {{ "jb0123456789" }} ip daddr @guests {dns} drop comment "joblet:no-guests"' in text
    assert 'iifname { "jb0123456789" } ip daddr @guests meta l4proto != { tcp, udp } drop' in text
    alone = firewall.render(nets)  # no overlay: no VXLAN rule; the guests' rule all the same
    assert "ip saddr @guests" not in alone and "joblet:no-guests" in alone
    with pytest.raises(ValueError):
        firewall.Guards(guests=("172.18.0.1/16",)).checked()


def test_only_root_and_the_kernel_send_to_the_overlay_port_of_peers():
    nets = [firewall.FwNetwork("net", "jb0123456789", "10.1.0.0/24")]
    text = firewall.render(nets, guards=firewall.Guards(vxlan_port=4789))
    rule = 'ip daddr @overlay_peers udp dport 4789 meta skuid != 0 drop comment "joblet:overlay-root"'
    output = [line.strip() for line in text[text.index("chain output") :].split("}")[0].splitlines()]
    assert rule in output
    assert "overlay-root" not in firewall.render(nets)  # no overlay, no rule


def test_user_networks_leave_room_for_the_overlay():
    facts = NetFacts(
        mtu=1500,
        network_mtu=1450,
        bridge="joblet0",
        bridge_cidr="172.20.0.0/16",
        isolated_pool="10.254.0.0/16",
        networks={
            "n": NetworkDef(name="n", cidr="10.5.0.0/24"),
            "m": NetworkDef(name="m", cidr="10.6.0.0/24", mtu=1300),
        },
    )
    plan = make_plan("job", "h", ("n", "m", "bridge"), facts, {"n": 0x0A050002, "m": 0x0A060002, "bridge": 0xAC140002})
    assert [a.mtu for a in plan.attachments] == [1450, 1300, 1500]


def test_network_create_checks_every_nodes_routes_and_mtu():
    nodes = {
        "n1": {"prefixes": {"host route 10.9.0.0/16 dev eth1": "10.9.0.0/16"}, "mtu": 1500, "underlay": "x"},
        "n2": {"mtu": 1400, "underlay": "y"},
    }
    assert fleet_prefixes(nodes) == {"host route 10.9.0.0/16 dev eth1 on node n1": "10.9.0.0/16"}
    fleet_mtu_check("n", 1350, nodes)
    with pytest.raises(ValidationError, match="MTU 1351 does not fit the overlay on node n2"):
        fleet_mtu_check("n", 1351, nodes)


def test_network_create_keeps_clear_of_every_nodes_own_resolvers():
    """A private range over the host's own DNS server took its lookups to the network's jobs,
    one of which answered them (red-team run). Each node publishes its resolvers."""
    from joblet.api.networks import overlap

    nodes = {"n1": {"resolvers": ["10.255.255.53", "2001:db8::53", "junk"]}, "n2": {}}
    reserved = fleet_resolvers(nodes)
    assert reserved == {"the DNS server node n1 uses (10.255.255.53)": "10.255.255.53/32"}
    assert overlap("10.255.255.48/29", reserved) == "the DNS server node n1 uses (10.255.255.53) (10.255.255.53/32)"
    assert overlap("10.255.254.0/24", reserved) is None  # the control: beside it


def test_public_ranges_are_refused_unless_allowed():
    """8.8.8.0/24 was taken as a network: the host then sent 8.8.8.8's traffic to the bridge
    (usability and red-team runs)."""
    from joblet.api.networks import public_problem, unusable

    assert public_problem("8.8.8.0/24").startswith("CIDR 8.8.8.0/24 is public address space")
    for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.1.0/24", "100.64.0.0/10", "203.0.113.0/24"):
        assert public_problem(private) is None, private
    assert public_problem("172.15.0.0/16") and public_problem("11.0.0.0/8")  # just outside
    assert unusable("8.8.8.0/24", {}, {}, public=False) == public_problem("8.8.8.0/24")
    assert unusable("8.8.8.0/24", {}, {}) is None  # allow_public_networks
    narrow = ("10.200.0.0/16",)  # JOBLET_NETWORK_RANGES: private ranges elsewhere are the VPC's
    assert public_problem("10.0.5.0/24", narrow).startswith("CIDR 10.0.5.0/24 is outside the ranges")
    assert public_problem("10.200.7.0/24", narrow) is None  # the control: inside
    assert public_problem("8.8.8.0/24", narrow).startswith("CIDR 8.8.8.0/24 is public address space")
    assert unusable("10.0.5.0/24", {}, {}, public=False, ranges=narrow) == public_problem("10.0.5.0/24", narrow)


class MembersStore:
    """Redis as the overlay reads it: two live nodes, one remote job in each network."""

    def live_nodes(self) -> dict[str, dict[str, str]]:
        return {"a": {"underlay": "10.0.0.1"}, "b": {"underlay": "10.0.0.2"}}

    def member_nodes(self, networks: list[str]) -> dict[str, dict[str, str]]:
        return {n: {f"job-{n}": "b"} for n in networks}


def test_one_failing_port_does_not_hold_up_the_others(monkeypatch):
    """A port whose entries cannot be read (gone, or its VNI taken) fails alone: the others
    get their entries and the firewall its new MACs; the failure is still raised."""
    from joblet.config import load
    from joblet.network_agent import overlay

    applied: list[list[str]] = []

    def read_fdb(device: str) -> frozenset[tuple[str, str]]:
        if device == vxlan_name("bad"):
            raise NetworkError(f"failed to read the forwarding entries of {device}: Cannot find device")
        return frozenset()

    monkeypatch.setattr(overlay.links, "index_of", lambda name: 7)
    monkeypatch.setattr(overlay, "read_fdb", read_fdb)
    monkeypatch.setattr(overlay, "apply_fdb", applied.append)
    ov = overlay.Overlay(load(node="a", underlay_address="10.0.0.1"), MembersStore())  # type: ignore[arg-type]
    renders: list[int] = []
    ov.on_macs = lambda: renders.append(1)
    for name, vni in (("bad", 5000), ("good", 5001)):  # the failing one first
        ov._ports[name] = overlay.OverlayPort(name, vxlan_name(name), vni, "jb0", 1450)
    with pytest.raises(NetworkError, match="Cannot find device"):
        ov.sync()
    assert any(vxlan_name("good") in line for batch in applied for line in batch)
    assert ov.macs() == ((vxlan_name("good"), mac_for("job-good", "good")),) and renders == [1]
