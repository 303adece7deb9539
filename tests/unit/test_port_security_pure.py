"""Port security, control-plane guards and unicast-only networks, rendered and checked without root."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from joblet.api.networks import check, control_plane, holds_control_plane, not_unicast, url_endpoint
from joblet.config import load
from joblet.errors import ConfigError, NetworkError, ValidationError
from joblet.network_agent import firewall, portsec
from joblet.network_agent.agent import NetworkAgent
from joblet.network_agent.host import cgroup2_mount, match_for

JOB = "a" * 32
BRIDGED = portsec.Port("jv0123456789", "172.20.0.5", "02:11:22:33:44:55")
ROUTED = portsec.Port("ji0123456789", "10.254.0.2")


def test_job_macs_are_local_unicast_and_stable():
    mac = portsec.mac_for(JOB, "bridge")
    assert mac.startswith("02:") and len(mac) == 17
    assert mac == portsec.mac_for(JOB, "bridge")
    assert mac != portsec.mac_for(JOB, "db") != portsec.mac_for("b" * 32, "bridge")


def test_bridge_table_checks_mac_arp_and_source_and_drops_the_rest():
    text = portsec.render_bridge([BRIDGED, ROUTED])
    assert text.startswith("table bridge joblet {}\ndelete table bridge joblet\n")
    assert 'elements = { "jv0123456789" . 02:11:22:33:44:55 };' in text
    assert 'elements = { "jv0123456789" . 172.20.0.5 };' in text
    assert "ji0123456789" not in text  # routed links are checked in the inet table
    chain = text[text.index("chain job_port") : text.index("chain postrouting")]
    rules = [line.strip().removesuffix(' comment "joblet:port-security"') for line in chain.splitlines()[1:-2]]
    assert rules == [
        "iifname . ether saddr != @port_macs drop",
        "iifname . arp saddr ether != @port_macs drop",
        "iifname . arp saddr ip != @port_ips drop",
        "ether type arp accept",
        "iifname . ip saddr != @port_ips drop",
        'ip frag-off & 0x3fff != 0 drop comment "joblet:no-fragments"',
        "ether type ip accept",
        "drop",
    ]
    assert 'iifname "jv*" jump job_port' in text  # unknown job ports send nothing
    assert "type filter hook prerouting priority -350;" in text  # before bridge conntrack's defrag (-200)
    assert 'oifname "jv*" ether type != { ip, arp } drop' in text


def test_empty_bridge_table_has_no_elements():
    text = portsec.render_bridge([])
    assert "set port_macs { type ifname . ether_addr; }" in text


def test_element_batches_add_and_delete_idempotently():
    assert portsec.render_elements("add", [BRIDGED, ROUTED]) == (
        'add element bridge joblet port_macs { "jv0123456789" . 02:11:22:33:44:55 }\n'
        'add element bridge joblet port_ips { "jv0123456789" . 172.20.0.5 }\n'
        'add element inet joblet iso_src { "ji0123456789" . 10.254.0.2 }\n'
    )
    delete = portsec.render_elements("delete", [ROUTED])
    assert delete == (
        'add element inet joblet iso_src { "ji0123456789" . 10.254.0.2 }\n'
        'delete element inet joblet iso_src { "ji0123456789" . 10.254.0.2 }\n'
    )


@pytest.mark.parametrize(
    "port",
    [
        portsec.Port("eth0", "172.20.0.5", "02:11:22:33:44:55"),
        portsec.Port("jv0123456789", "172.20.0.999", "02:11:22:33:44:55"),
        portsec.Port("jv0123456789", "172.20.0.5", "02:11:22:33:44"),
        portsec.Port('jv"; flush', "172.20.0.5"),
    ],
)
def test_bad_ports_are_refused_before_nft_sees_them(port):
    with pytest.raises((NetworkError, ValueError)):
        portsec.render_elements("add", [port])


def test_guards_come_first_in_forward_and_host_mode_gets_an_output_rule():
    guards = firewall.Guards(
        blocked=(("203.0.113.2", 6390), ("2001:db8::2", 6390), ("10.0.0.9", 6379)),
        ports=(BRIDGED, ROUTED),
        host_cgroup=("unified/joblet", 1),
    )
    text = firewall.render([firewall.FwNetwork("bridge", "joblet0", "172.20.0.0/16")], "10.254.0.0/16", guards=guards)
    assert "set blocked { type ipv4_addr . inet_service; elements = { 203.0.113.2 . 6390, 10.0.0.9 . 6379 }; }" in text
    assert "set blocked6 { type ipv6_addr . inet_service; elements = { 2001:db8::2 . 6390 }; }" in text
    assert "set blocked_ports { type inet_service; elements = { 6379, 6390 }; }" in text
    assert 'set iso_src { type ifname . ipv4_addr; elements = { "ji0123456789" . 10.254.0.2 }; }' in text
    forward = [line.strip() for line in text[text.index("chain forward") : text.index("chain input")].splitlines()]
    dnat = "meta l4proto tcp ct original ip daddr . ct original proto-dst @blocked"
    dnat6 = "meta l4proto tcp ct original ip6 daddr . ct original proto-dst @blocked6"
    assert forward[2:20] == [
        'iifname { "joblet0" } ip daddr . tcp dport @blocked drop comment "joblet:no-broker"',
        'iifname { "joblet0" } ip6 daddr . tcp dport @blocked6 drop comment "joblet:no-broker"',
        f'iifname {{ "joblet0" }} {dnat} drop comment "joblet:no-broker"',  # as asked, before a DNAT
        f'iifname {{ "joblet0" }} {dnat6} drop comment "joblet:no-broker"',
        'iifname "ji*" ip daddr . tcp dport @blocked drop comment "joblet:no-broker"',
        'iifname "ji*" ip6 daddr . tcp dport @blocked6 drop comment "joblet:no-broker"',
        f'iifname "ji*" {dnat} drop comment "joblet:no-broker"',
        f'iifname "ji*" {dnat6} drop comment "joblet:no-broker"',
        # the host's containers, but for DNS
        'iifname { "joblet0" } ip daddr @guests meta l4proto != { tcp, udp } drop comment "joblet:no-guests"',
        'iifname { "joblet0" } ip daddr @guests meta l4proto { tcp, udp } th dport != 53 '
        'drop comment "joblet:no-guests"',
        'iifname "ji*" ip daddr @guests meta l4proto != { tcp, udp } drop comment "joblet:no-guests"',
        'iifname "ji*" ip daddr @guests meta l4proto { tcp, udp } th dport != 53 drop comment "joblet:no-guests"',
        'iifname "ji*" iifname . ip saddr != @iso_src drop comment "joblet:port-security"',
        'iifname "ji*" meta nfproto ipv6 drop comment "joblet:port-security"',
        'ip daddr 172.20.0.0/16 oifname != "joblet0" drop comment "joblet:off-route"',
        'ip daddr 10.254.0.0/16 oifname != "ji*" drop comment "joblet:off-route"',
        'ct state established accept comment "joblet:established"',
        'ct state related iifname != { "joblet0" } iifname != "ji*" accept comment "joblet:related"',
    ]
    output = [line.strip() for line in text[text.index("chain output") : text.index("chain postrouting")].splitlines()]
    job = 'socket cgroupv2 level 1 "unified/joblet"'
    assert output[2:7] == [
        f'{job} ip daddr . tcp dport @blocked drop comment "joblet:no-broker"',
        f'{job} ip6 daddr . tcp dport @blocked6 drop comment "joblet:no-broker"',
        f'{job} {dnat} drop comment "joblet:no-broker"',
        f'{job} {dnat6} drop comment "joblet:no-broker"',
        f'{job} fib daddr type local tcp dport @blocked_ports drop comment "joblet:no-broker"',
    ]
    before = [line.strip() for line in text[text.index("chain before_dnat") : text.index("chain forward")].splitlines()]
    assert before[1:4] == [  # what a job starts towards the host, before the host's DNAT sees it
        "type filter hook prerouting priority -150; policy accept;",
        'iifname { "joblet0" } fib daddr type local ct state new drop comment "joblet:no-host-access"',
        'iifname "ji*" fib daddr type local ct state new drop comment "joblet:no-host-access"',
    ]
    overlaid = firewall.render(
        [firewall.FwNetwork("bridge", "joblet0", "172.20.0.0/16")], guards=dataclasses.replace(guards, vxlan_port=4789)
    )
    assert 'socket cgroupv2 level 1 "unified/joblet" udp dport 4789 drop comment "joblet:no-overlay"' in overlaid
    assert output[7:9] == [  # nor into the jobs' links
        'socket cgroupv2 level 1 "unified/joblet" oifname { "joblet0" } drop comment "joblet:host-mode"',
        'socket cgroupv2 level 1 "unified/joblet" oifname "ji*" drop comment "joblet:host-mode"',
    ]
    inbound = [line.strip() for line in text[text.index("chain input") : text.index("chain output")].splitlines()]
    assert inbound[2:7] == [  # first: nothing arrives from a job's bridge port or an overlay port
        # (link-local frames go up on them, past the bridge's hooks), an isolated link's source is its
        # job's (before `established`: a forged one went into the host's flows), no host-mode job on a
        # broker's port is reached
        'iifname "jv*" drop comment "joblet:no-host-access"',
        'iifname "jx*" drop comment "joblet:no-host-access"',
        'iifname "ji*" iifname . ip saddr != @iso_src drop comment "joblet:port-security"',
        'iifname "ji*" meta nfproto ipv6 drop comment "joblet:port-security"',
        'tcp dport @blocked_ports socket cgroupv2 level 1 "unified/joblet" drop comment "joblet:no-broker"',
    ]
    assert "table bridge joblet {" in text  # one batch, all tables
    arp = text[text.index("table arp joblet {\n") :]
    assert 'iifname "jv*" drop' in arp and 'iifname "jx*" drop' in arp  # ARP handed up from a port too


def test_metadata_networks_are_dropped_for_jobs_but_dns():
    guards = firewall.Guards(
        host_cgroup=("unified/joblet", 1),
        no_jobs=("169.254.169.254/32", "169.254.0.0/16", "100.100.100.200/32", "fd00:ec2::254/128"),
    )
    text = firewall.render([firewall.FwNetwork("bridge", "joblet0", "172.20.0.0/16")], "10.254.0.0/16", guards=guards)
    assert "set no_jobs { type ipv4_addr; flags interval; elements = { 100.100.100.200/32, 169.254.0.0/16 }; }" in text
    assert "set no_jobs6 { type ipv6_addr; flags interval; elements = { fd00:ec2::254/128 }; }" in text
    rules = [line.strip() for line in text.splitlines() if "joblet:no-metadata" in line]
    for job in ('iifname { "joblet0" }', 'iifname "ji*"', 'socket cgroupv2 level 1 "unified/joblet"'):
        for family, name in (("ip", "no_jobs"), ("ip6", "no_jobs6")):
            original = f"{job} ct original {family} daddr @{name}"  # before any DNAT
            assert f"{original} meta l4proto != {{ tcp, udp }} drop" in " ".join(rules)
            assert f"{original} meta l4proto {{ tcp, udp }} th dport != 53 drop" in " ".join(rules)
    assert len(rules) == 12
    forward = text[text.index("chain forward") : text.index("chain input")]
    assert forward.index("joblet:no-metadata") < forward.index("joblet:established")


def test_no_metadata_rules_when_nothing_is_blocked():
    text = firewall.render([firewall.FwNetwork("bridge", "joblet0", "172.20.0.0/16")], guards=firewall.Guards())
    assert "set no_jobs { type ipv4_addr; flags interval; }" in text and "no-metadata" not in text


@pytest.mark.parametrize(
    "guards",
    [
        firewall.Guards(no_jobs=("metadata.internal",)),
        firewall.Guards(no_jobs=("169.254.169.254/16",)),
        firewall.Guards(blocked=(("redis.example", 6379),)),
        firewall.Guards(blocked=(("10.0.0.1", 0),)),
        firewall.Guards(host_cgroup=('x" drop', 1)),
    ],
)
def test_bad_guards_are_refused(guards):
    with pytest.raises((NetworkError, ValueError)):
        firewall.render([], guards=guards)


@pytest.mark.parametrize(
    "cidr",
    [
        "0.0.0.0/8",
        "127.0.0.0/8",
        "127.1.0.0/16",
        "169.254.0.0/16",
        "224.0.0.0/8",
        "239.1.0.0/16",
        "240.0.0.0/8",
        "255.255.255.0/29",
        "255.0.0.0/8",
    ],
)
def test_only_unicast_networks(cidr):
    assert not_unicast(cidr)
    with pytest.raises(ValidationError, match=f'failed to create network "n": CIDR {cidr} overlaps .*; use a'):
        check("n", cidr)


def test_unicast_private_and_public_ranges_pass():
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.7.0/24", "100.64.0.0/10", "1.0.0.0/8", "223.255.255.0/24"):
        assert check("n", cidr) == cidr


def test_network_holding_the_control_plane_is_refused():
    assert holds_control_plane("10.1.0.0/24", {"redis_url": ["10.2.0.5"]}) is None
    assert holds_control_plane("10.2.0.0/16", {"redis_url": ["10.2.0.5"], "broker_url": ["::1"]}) == (
        "CIDR 10.2.0.0/16 contains 10.2.0.5, an address of the control plane (redis_url)"
    )


def test_control_plane_endpoints_from_urls():
    assert url_endpoint("redis://:pw@10.2.0.5:6390/0") == ("10.2.0.5", 6390)
    assert url_endpoint("rediss://10.2.0.5") == ("10.2.0.5", 6379)
    assert url_endpoint("unix:///run/redis.sock") is None
    assert url_endpoint(None) is None
    assert url_endpoint("pyamqp://u:p@10.2.0.9//") == ("10.2.0.9", 5672)  # review: blocked from no job
    assert url_endpoint("amqp:///") == url_endpoint("redis://:pw@/0")[:1] + (5672,) == ("localhost", 5672)
    found = control_plane({"redis_url": "redis://10.2.0.5/0", "broker_url": None}, ("203.0.113.2:6390",))
    assert found == {"redis_url": [("10.2.0.5", 6379)], "job_blocked_addresses": [("203.0.113.2", 6390)]}


def test_every_tcp_broker_scheme_has_an_endpoint():
    """A scheme the settings take that url_endpoint did not know (pyamqp) made no rule."""
    from joblet.config_checks import BROKER_SCHEMES

    for scheme in BROKER_SCHEMES:
        endpoint = url_endpoint(f"{scheme}://10.2.0.9/x")
        assert (endpoint is None) == (scheme in ("unix", "redis+socket")), scheme


def test_job_blocked_addresses_setting():
    cfg = load(job_blocked_addresses="203.0.113.2:6390, redis.internal:6379")
    assert cfg.job_blocked_addresses == ("203.0.113.2:6390", "redis.internal:6379")
    for bad in ("203.0.113.2", "host:0", "host:http", ":80"):
        with pytest.raises(ConfigError, match="job_blocked_addresses"):
            load(job_blocked_addresses=bad)


def test_host_mode_cgroup_match():
    info = (
        "35 25 0:30 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw\n"
        "36 25 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
    )
    mount = cgroup2_mount(info)
    assert mount == Path("/sys/fs/cgroup/unified")
    assert match_for(Path("/sys/fs/cgroup/unified/joblet-t-1"), mount) == ("unified/joblet-t-1", 1)
    assert match_for(Path("/sys/fs/cgroup/joblet"), Path("/sys/fs/cgroup")) == ("joblet", 1)
    assert match_for(Path("/sys/fs/cgroup/unified"), mount) is None  # the whole host
    assert match_for(Path("/elsewhere/joblet"), mount) is None


def test_default_ranges_must_not_hold_the_control_plane():
    agent = NetworkAgent(load(job_blocked_addresses="10.50.0.9:6379", bridge_cidr="10.50.0.0/16"), None, None)
    held = r"bridge_cidr 10.50.0.0/16 holds 10.50.0.9, an address of the control plane \(job_blocked_addresses\)"
    with pytest.raises(NetworkError, match=held):
        agent.check_ranges()
    NetworkAgent(load(job_blocked_addresses="10.51.0.9:6379", bridge_cidr="10.50.0.0/16"), None, None).check_ranges()


def test_default_ranges_must_not_hold_a_dns_server_of_the_host():
    """A job given the address of the host's resolver answered the host's lookups."""
    agent = NetworkAgent(load(bridge_cidr="10.50.0.0/16", isolated_pool="10.60.0.0/16"), None, None)
    for resolver, setting in (("10.50.0.53", "bridge_cidr 10.50.0.0/16"), ("10.60.3.1", "isolated_pool 10.60.0.0/16")):
        with pytest.raises(NetworkError, match=rf"^{setting} holds {resolver}, a DNS server this host uses"):
            agent.check_ranges(["fd00::53", resolver])
    agent.check_ranges(["10.51.0.53", "fd00::53"])  # outside both: fine


def test_what_a_worker_will_not_build():
    """The worker's own check of a definition from Redis (the client's can be gone past)."""
    from joblet.api.networks import blocked_ranges, unusable

    plane = {"redis_url": ["10.2.0.5", "::1"]}
    assert unusable("10.5.0.0/24", plane, {"the default bridge": "172.20.0.0/16"}) is None
    assert "link-local" in unusable("169.254.0.0/24", {}, {})
    held = unusable("10.2.0.0/24", plane, {})
    assert held == "CIDR 10.2.0.0/24 contains 10.2.0.5, an address of the control plane (redis_url)"
    reserved = blocked_ranges(("169.254.0.0/16", "168.63.129.16/32", "100.100.100.200", "fd00:ec2::254/128"))
    assert reserved == {
        "job_blocked_networks' 169.254.0.0/16": "169.254.0.0/16",
        "job_blocked_networks' 168.63.129.16/32": "168.63.129.16/32",
        "job_blocked_networks' 100.100.100.200/32": "100.100.100.200/32",
    }
    assert unusable("168.63.129.0/24", {}, reserved) == (
        "CIDR 168.63.129.0/24 overlaps job_blocked_networks' 168.63.129.16/32 (168.63.129.16/32)"
    )
    assert unusable("172.20.5.0/24", {}, {"the default bridge": "172.20.0.0/16"}) == (
        "CIDR 172.20.5.0/24 overlaps the default bridge (172.20.0.0/16)"
    )
    assert unusable("32.0.0.0/3", {}, {}) == "CIDR 32.0.0.0/3 must be between /8 and /29"  # an eighth of IPv4
    assert unusable("10.5.0.0/30", {}, {}) == "CIDR 10.5.0.0/30 must be between /8 and /29"


def test_what_must_not_change_between_loads_is_read_from_a_listing():
    """A flushed chain, a rule replaced in place, a table set dormant, a static set's element
    swapped: each changes what rules_of reads (reviews); a per-job set's elements do not."""
    listing = (
        "table inet joblet {\n\tset port_ips {\n\t\ttype ipv4_addr\n\t\telements = { 1.2.3.4 }\n\t}\n\n"
        "\tset blocked {\n\t\ttype ipv4_addr . inet_service\n"
        "\t\telements = { 10.0.0.9 . 6379,\n\t\t\t     203.0.113.2 . 6390 }\n\t}\n"
        "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n"
        '\t\tiifname { "x" } ip daddr @s drop comment "c"\n\t\tct state established accept\n\t}\n\n'
        "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n"
    )
    base = firewall.rules_of("inet", listing)
    assert set(base) == {"inet/table", "inet/chain forward", "inet/chain input", "inet/set blocked"}
    assert base["inet/chain forward"].count("\n") == 3 and base["inet/table"] == ""
    per_job = listing.replace("1.2.3.4", "1.2.3.5")
    assert firewall.rules_of("inet", per_job) == base  # the control: jobs come and go
    changed = (
        listing.replace("ct state established accept", "ct state established counter"),  # replaced in place
        listing.replace("table inet joblet {\n", "table inet joblet {\n\tflags dormant\n"),
        listing.replace("203.0.113.2 . 6390", "192.0.2.250 . 1"),
        listing.replace('\t\tiifname { "x" } ip daddr @s drop comment "c"\n', ""),  # flushed, in part
    )
    for text in changed:
        assert firewall.rules_of("inet", text) != base, text
    counted = listing.replace("accept\n\t}", "counter packets 12 bytes 900 accept\n\t}", 1)
    again = counted.replace("packets 12 bytes 900", "packets 13 bytes 950")
    assert firewall.rules_of("inet", counted) == firewall.rules_of("inet", again)  # counters move
