"""A job's link requests sent several at once (network_agent/rtnl.py) on the real kernel, in
throwaway namespaces: every request of a send is applied, and a failing one is reported by
name and cause."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from joblet.errors import NetworkError
from joblet.network_agent import links
from joblet.network_agent.netns import JobNetns
from joblet.worker.nsthread import JobThread
from tests.conftest import need


class Att:
    ifname, address, prefixlen, gateway, routed = "eth0", "10.77.0.2", 24, "10.77.0.1", True


@pytest.fixture
def pair() -> Iterator[tuple[JobThread, JobNetns, JobThread, JobNetns]]:
    """A "host" namespace and a "job" namespace, each kept by a thread of its own."""
    need(os.geteuid() == 0, "needs root (network namespaces)")
    host_thread, job_thread = JobThread("rtnl-host"), JobThread("rtnl-job")
    host, job = JobNetns.create(host_thread), JobNetns.create(job_thread)
    try:
        yield host_thread, host, job_thread, job
    finally:
        for ns, thread in ((job, job_thread), (host, host_thread)):
            ns.close()
            thread.close()


def _addresses(ifname: str) -> list[str]:
    with IPRoute() as ipr:
        index = socket.if_nametoindex(ifname)
        return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=socket.AF_INET)]


def _default_gateway() -> str | None:
    with IPRoute() as ipr:
        routes = ipr.get_default_routes(family=socket.AF_INET)
        return routes[0].get_attr("RTA_GATEWAY") if routes else None


def test_a_point_to_point_pair_is_created_and_configured_on_both_ends(pair) -> None:
    _, host, _, job = pair
    host.run(lambda: links.add_veth_into("jvrtnl0", "eth0", job.fd, 1400, host_address=("10.77.0.1", 24)))
    job.run(lambda: links.configure_inside([Att()]))
    assert host.run(lambda: _addresses("jvrtnl0")) == ["10.77.0.1"]
    assert job.run(lambda: _addresses("eth0")) == ["10.77.0.2"]
    assert job.run(_default_gateway) == "10.77.0.1"
    assert job.run(lambda: links.index_of("jvrtnl0")) is None  # the peer only, inside
    assert job.run(lambda: _reaches(Att.gateway))  # both ends up: the host end answers


def _reaches(address: str) -> bool:
    """A TCP connection to a port nothing listens on is refused (RST): the peer answered."""
    with socket.socket() as sock:
        sock.settimeout(5)
        try:
            sock.connect((address, 9))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return True


def test_a_failing_request_names_the_step_and_the_cause(pair) -> None:
    _, host, _, job = pair
    host.run(lambda: links.add_veth_into("jvrtnl1", "eth0", job.fd, 1500, host_address=("10.77.1.1", 24)))
    with pytest.raises(NetworkError, match="failed to create veth jvrtnl1: File exists"):
        host.run(lambda: links.add_veth_into("jvrtnl1", "eth1", job.fd, 1500, host_address=("10.77.2.1", 24)))
    job.run(lambda: links.configure_inside([Att()]))  # positive control: configured once
    with pytest.raises(NetworkError, match="failed to configure the job's network: File exists"):
        job.run(lambda: links.configure_inside([Att()]))  # the same address and route again
