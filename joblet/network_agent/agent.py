"""Build and tear down a job's network: plan (pure) -> attach -> release.

Setup is a reversible sequence: what was done is undone in reverse when a later step fails.
Teardown takes the same plan, attempts every step, treats "not found" as success and
raises the collected errors at the end (STYLE.md 1-2).
"""

from __future__ import annotations

import logging
import threading

from joblet.api.models import JobSpec
from joblet.api.store_ipam import IpamStore
from joblet.config import Settings
from joblet.errors import NetworkError, TeardownError
from joblet.network_agent import firewall, host, links
from joblet.network_agent.ipam import Subnet, to_str
from joblet.network_agent.plan import Attachment, NetPlan, host_veth_name

log = logging.getLogger(__name__)


class NetworkAgent:
    """The network side of one worker."""

    def __init__(self, cfg: Settings, ipam: IpamStore) -> None:
        self.cfg = cfg
        self.ipam = ipam
        self.bridge = Subnet(cfg.bridge_cidr)
        self._lock = threading.Lock()
        self._bridge_index: int | None = None
        self._mtu = 1500

    # -- host level -------------------------------------------------------------------------
    def ensure_host(self) -> None:
        """Forwarding on, the default bridge up, joblet's table loaded (cheap when done)."""
        host.ensure_ip_forward()
        with self._lock:
            if self._bridge_index is None or links.index_of(self.cfg.bridge_name) is None:
                self._mtu = links.default_route_mtu()
                self._bridge_index = links.ensure_bridge(
                    self.cfg.bridge_name, self.bridge.gateway, self.bridge.prefixlen, self._mtu)
            if not firewall.table_exists():
                firewall.apply(firewall.render(self.firewall_networks()))

    def firewall_networks(self) -> list[firewall.FwNetwork]:
        return [firewall.FwNetwork("bridge", self.cfg.bridge_name, self.cfg.bridge_cidr)]

    def remove_host(self) -> None:
        """Remove the default bridge and joblet's table (for `joblet-worker --cleanup`)."""
        firewall.remove()
        links.delete_link(self.cfg.bridge_name)
        self._bridge_index = None

    # -- per job ----------------------------------------------------------------------------
    def plan(self, job_id: str, spec: JobSpec, hostname: str) -> NetPlan:
        """Check the job's networks and reserve its addresses."""
        mode = spec.network[0]
        if len(spec.network) > 1 or mode not in ("bridge", "none"):
            raise NetworkError(f"unknown network {spec.network[0]!r}" if mode not in ("bridge", "none")
                               else "several networks per job are not supported yet")
        if mode == "none":
            return NetPlan(job_id=job_id, hostname=hostname, mode="none")
        self.ensure_host()
        address = self.ipam.allocate("bridge", self.bridge.first, self.bridge.last, job_id)
        if address is None:
            raise NetworkError(f"network \"bridge\" ({self.bridge.cidr}) has no free address")
        att = Attachment(
            network="bridge", bridge=self.cfg.bridge_name,
            host_ifname=host_veth_name(job_id, "bridge"), ifname="eth0",
            address=to_str(address), address_int=address, prefixlen=self.bridge.prefixlen,
            gateway=self.bridge.gateway, mtu=self._mtu,
        )
        return NetPlan(job_id=job_id, hostname=hostname, mode="bridge", attachments=(att,),
                       nameservers=tuple(host.upstream_nameservers()))

    def attach(self, plan: NetPlan, pid: int) -> None:
        """Create the job's interfaces inside the namespace of `pid`; undo on failure."""
        done: list[str] = []
        try:
            for att in plan.attachments:
                bridge = links.index_of(att.bridge)
                if bridge is None:
                    raise NetworkError(f"bridge {att.bridge} of network {att.network!r} is gone")
                links.add_veth_into(att.host_ifname, att.ifname, pid, bridge, att.mtu)
                done.append(att.host_ifname)
        except Exception:
            for name in reversed(done):
                links.delete_link(name)
            raise

    def release(self, plan: NetPlan) -> None:
        """Remove what the plan built and free its addresses; safe to call twice."""
        errors = []
        for att in plan.attachments:
            try:
                links.delete_link(att.host_ifname)
            except NetworkError as exc:
                errors.append(str(exc))
            try:
                self.ipam.release(att.network, att.address_int, plan.job_id)
            except Exception as exc:  # noqa: BLE001 - collect and keep going
                errors.append(f"failed to free {att.address}: {exc}")
        if errors:
            raise TeardownError(errors)
