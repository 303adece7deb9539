"""Isolated mode's pool, its firewall rules, foreign forward chains and DNS choice (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from joblet.config import load
from joblet.errors import ConfigError, NetworkError
from joblet.network_agent import firewall, foreign
from joblet.network_agent.host import job_nameservers
from joblet.network_agent.ipam import P2pPool


def test_pool_slots_are_consecutive_thirty_twos():
    pool = P2pPool("10.254.0.0/16")
    assert pool.slots == 16384
    assert (pool.host_end(0), pool.job_end(0)) == ("10.254.0.1", "10.254.0.2")
    assert (pool.host_end(1), pool.job_end(1)) == ("10.254.0.5", "10.254.0.6")
    assert pool.job_end(16383) == "10.254.255.254"
    with pytest.raises(ValueError):
        pool.job_end(16384)


def test_isolated_rules_come_first_and_last():
    text = firewall.render([firewall.FwNetwork("bridge", "joblet0", "172.20.0.0/16")], "10.254.0.0/16")
    forward = text[text.index("chain forward") : text.index("chain input")].splitlines()
    rules = [line.strip() for line in forward if "comment" in line]
    kinds = ("joblet:no-broker", "joblet:port-security", "joblet:off-route", "joblet:no-guests")
    guards = [r for r in rules if any(kind in r for kind in kinds)]
    assert rules[: len(guards)] == guards  # the guards hold for established traffic too
    rules = rules[len(guards) :]
    assert rules[0].startswith("ct state established accept")
    # ICMP errors a job sends pass only as its new packets would (a quoted flow is no proof)
    assert rules[1] == 'ct state related iifname != { "joblet0" } iifname != "ji*" accept comment "joblet:related"'
    assert rules[2] == 'oifname "ji*" drop comment "joblet:isolated"'  # before any accept
    assert rules[-1] == 'iifname "ji*" accept comment "joblet:isolated"'  # after every drop
    assert 'iifname "ji*" drop comment "joblet:no-host-access"' in text
    assert 'ip saddr 10.254.0.0/16 oifname != "ji*" masquerade' in text
    # a network's subnet leaves through its bridge or not at all (a deleted bridge: the default route)
    assert 'ip daddr 172.20.0.0/16 oifname != "joblet0" drop comment "joblet:off-route"' in guards
    output = text[text.index("chain output") : text.index("chain postrouting")]
    assert 'fib daddr type != local ip daddr 10.254.0.0/16 oifname != "ji*" drop comment "joblet:off-route"' in output


def test_foreign_drop_chains_are_found_in_ip_and_inet_only():
    chains = [
        {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "policy": "drop"},
        {"family": "inet", "table": "joblet", "name": "forward", "hook": "forward", "policy": "drop"},
        {"family": "inet", "table": "fw", "name": "fwd_chain", "hook": "forward", "policy": "accept"},
        {"family": "ip6", "table": "f6", "name": "FORWARD", "hook": "forward", "policy": "drop"},
        {"family": "ip", "table": "filter", "name": "INPUT", "hook": "input", "policy": "drop"},
    ]
    found = foreign.drop_chains(chains)
    assert found == [foreign.Chain("ip", "filter", "FORWARD")]
    message = foreign.explain(found)
    assert '"ip filter FORWARD"' in message and 'foreign_forward = "insert"' in message


def test_accepts_go_to_docker_user_when_there_is_one():
    chain = foreign.Chain("ip", "filter", "FORWARD")
    listing = [{"family": "ip", "table": "filter", "name": "DOCKER-USER"}]
    assert foreign.target_of(chain, listing) == foreign.Chain("ip", "filter", "DOCKER-USER")
    assert foreign.target_of(chain, []) == chain
    text = foreign.render_accepts(chain, ["joblet0", "jb*"])
    lines = text.splitlines()
    assert len(lines) == 4 and all(line.endswith('accept comment "joblet:accept"') for line in lines)
    assert lines[-1] == 'insert rule ip filter FORWARD iifname "joblet0" accept comment "joblet:accept"'


def test_dns_servers_setting_accepts_a_list_and_refuses_garbage():
    assert load(dns_servers="192.0.2.1, 192.0.2.2").dns_servers == ("192.0.2.1", "192.0.2.2")
    with pytest.raises(ConfigError, match="dns_servers"):
        load(dns_servers="nope")
    with pytest.raises(ConfigError, match="isolated_pool"):
        load(isolated_pool="10.254.0.1/16")


def test_no_usable_upstream_dns_is_a_clear_error(tmp_path: Path):
    stub = tmp_path / "resolv.conf"
    stub.write_text("nameserver 127.0.0.53\noptions edns0\n")
    with pytest.raises(NetworkError, match="no usable upstream DNS server"):
        job_nameservers((), stub)
    assert job_nameservers(("192.0.2.53",), stub) == ("192.0.2.53",)  # the worker's dns_servers win
    stub.write_text("nameserver 127.0.0.53\nnameserver 192.0.2.9\n")
    assert job_nameservers((), stub) == ("192.0.2.9",)


def test_fragments_from_isolated_links_are_dropped_before_defragmentation():
    text = firewall.render([firewall.FwNetwork("bridge", "joblet0", "172.20.0.0/16")], "10.254.0.0/16")
    chain = text[text.index("chain prerouting") : text.index("chain forward")]
    assert "type filter hook prerouting priority -450;" in chain  # conntrack defragments at -400
    assert 'iifname "ji*" ip frag-off & 0x3fff != 0 drop comment "joblet:no-fragments"' in chain
    without = firewall.render([firewall.FwNetwork("bridge", "joblet0", "172.20.0.0/16")])
    assert "chain prerouting" not in without.split("table bridge")[0]  # no isolated links: no hook
