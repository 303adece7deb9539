"""A job whose link name or MAC another running job here holds is refused before anything of
it is made (network_agent/link_owners.py). Job ids are the submitter's to choose, and both are
40 bits of a hash of the id: the second job of a clashing pair failed its start and deleted
the first one's link by name, cutting it off (red-team run). The pairs below were found by a
birthday search over ids (a few seconds of CPU)."""

from __future__ import annotations

import subprocess

import pytest

from joblet.api.client import Client
from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.errors import Conflict
from joblet.names import host_veth_name
from joblet.network_agent.portsec import mac_for
from tests.conftest import Host
from tests.integration.helpers import can_ping, stop_all, wait_running

SAME_VETH = ("c0ffee000000000000000000000de4fc", "c0ffee000000000000000000000fb533")  # on network "bridge"
SAME_MAC = ("c0ffee00000000000000000000078ea4", "c0ffee000000000000000000001116d7")


def submit(client: Client, job_id: str) -> JobRecord:
    """A job under an id of the caller's choosing, as any client can enqueue one."""
    spec, node = client.preflight.check_and_place(JobSpec(command="sleep", args=("300",), network=("bridge",)))
    return client.enqueue(JobRecord.pending(job_id, spec, node=node))


def link_exists(host: Host, name: str) -> bool:
    return subprocess.run(["ip", "-n", host.netns, "link", "show", name], capture_output=True).returncode == 0


def test_a_job_whose_link_name_or_mac_is_held_is_refused_and_the_holder_keeps_its_link(host: Host, client: Client):
    veth = host_veth_name(SAME_VETH[0], "bridge")
    mac = mac_for(SAME_MAC[0], "bridge")
    assert veth == host_veth_name(SAME_VETH[1], "bridge") and mac == mac_for(SAME_MAC[1], "bridge")
    holders = [submit(client, SAME_VETH[0]), submit(client, SAME_MAC[0])]
    try:
        ips = [wait_running(client, h.id) for h in holders]
        assert link_exists(host, veth) and all(can_ping(client, ip, "bridge") for ip in ips)  # the control
        for pair, said in (
            (SAME_VETH, f"its link name {veth} is taken by job c0ffee000000 on this node"),
            (SAME_MAC, f"its MAC {mac} on network 'bridge' is taken by job c0ffee000000"),
        ):
            second = client.wait(submit(client, pair[1]).id, timeout=60)
            assert second.status == JobStatus.FAILED and said in (second.error or ""), second
            assert "submit the job again" in (second.error or "")
        with pytest.raises(Conflict, match=f"job {SAME_VETH[0][:12]} exists: a new job needs a new id"):
            submit(client, SAME_VETH[0])  # its record was written over: PENDING, no address, while it ran
        assert client.get(SAME_VETH[0]).ips  # the holder's record as it was
        assert link_exists(host, veth)  # the holder's link: it was deleted by the second job's cleanup
        assert all(client.get(h.id).status == JobStatus.RUNNING for h in holders)
        assert all(can_ping(client, ip, "bridge") for ip in ips)
    finally:
        stop_all(client, [h.id for h in holders])
