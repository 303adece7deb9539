"""Claims of link names and MACs (network_agent/link_owners.py), pure."""

from __future__ import annotations

import pytest

from joblet.errors import NetworkError
from joblet.network_agent.link_owners import LinkOwners
from joblet.network_agent.plan import job_links

A, B = "a" * 32, "b" * 32


def test_a_held_name_or_mac_refuses_the_whole_claim_until_its_holder_lets_go():
    owners = LinkOwners()
    owners.claim(A, ["jv1", "jv2"], [("app", "02:00:00:00:00:01")])
    with pytest.raises(NetworkError, match=r"its link name jv2 is taken by job aaaaaaaaaaaa on this node"):
        owners.claim(B, ["jv3", "jv2"], [])
    with pytest.raises(NetworkError, match=r"its MAC 02:00:00:00:00:01 on network 'app' is taken by job aaaa"):
        owners.claim(B, ["jv4"], [("app", "02:00:00:00:00:01")])
    owners.claim(B, ["jv3"], [("other", "02:00:00:00:00:01")])  # the control: jv3 was not kept by the refusal
    owners.claim(A, ["jv1"], [])  # a job's own claim again: no clash with itself
    owners.release(A)
    owners.claim(B, ["jv2", "jv1"], [("app", "02:00:00:00:00:01")])
    owners.release(A)  # twice, or after another took them: B's stay
    with pytest.raises(NetworkError, match="taken by job bbbb"):
        owners.claim(A, ["jv1"], [])


def test_a_mac_someone_else_has_is_refused():
    owners = LinkOwners()
    taken = {("app", "02:00:00:00:00:09"): "the network's gateway"}
    with pytest.raises(NetworkError, match="is taken by the network's gateway"):
        owners.claim(A, ["jv1"], [("app", "02:00:00:00:00:09")], taken=lambda n, m: taken.get((n, m)))
    owners.claim(B, ["jv1"], [("app", "02:00:00:00:00:08")], taken=lambda n, m: taken.get((n, m)))  # the control


def test_a_plans_links_are_claimed_isolated_ones_without_a_mac():
    names, macs = job_links(A, ("bridge", "app"))
    assert [n[:2] for n in names] == ["jv", "jv"] and [net for net, _ in macs] == ["bridge", "app"]
    names, macs = job_links(A, ("isolated",))
    assert names[0].startswith("ji") and macs == []
    assert job_links(A, ("none",)) == ([], []) and job_links(A, ("host",)) == ([], [])
