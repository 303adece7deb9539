"""What a job is given from the host's settings, checked without a host (pure)."""

from __future__ import annotations

from joblet.network_agent.host import dns_inside


def test_a_dns_server_inside_a_jobs_network_is_refused_with_the_fix():
    servers = ("203.0.113.2", "2001:db8::53")
    said = dns_inside(servers, {"tenant": "203.0.113.0/24"})
    assert said is not None and said.startswith("network 'tenant' (203.0.113.0/24) holds the DNS server jobs here")
    assert "(203.0.113.2)" in said and "give the network --dns, or another CIDR" in said
    bridge = dns_inside(servers, {"bridge": "203.0.113.0/25"})
    assert bridge is not None and "set JOBLET_BRIDGE_CIDR" in bridge
    assert dns_inside(servers, {"tenant": "10.1.0.0/24", "bridge": "172.20.0.0/16"}) is None  # the control
