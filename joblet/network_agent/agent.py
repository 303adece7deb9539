"""Build and tear down a job's network: plan (pure) -> attach -> release.

Setup is a reversible sequence: what was done is undone in reverse when a later step fails.
Teardown takes the same plan, attempts every step, treats "not found" as success and
raises the collected errors at the end (STYLE.md 1-2).
"""

from __future__ import annotations

import logging
import threading

from joblet.api.models import JobSpec
from joblet.api.networks import NetworkDef, NetworkStore, bridge_name
from joblet.api.store_ipam import IpamStore
from joblet.config import Settings
from joblet.errors import NetworkError, NotFound, TeardownError
from joblet.network_agent import firewall, host, links
from joblet.network_agent.ipam import Subnet, to_str
from joblet.network_agent.plan import Attachment, NetPlan, host_veth_name

log = logging.getLogger(__name__)


class NetworkAgent:
    """The network side of one worker."""

    def __init__(self, cfg: Settings, ipam: IpamStore, networks: NetworkStore) -> None:
        self.cfg = cfg
        self.ipam = ipam
        self.networks = networks
        self._active: dict[str, firewall.FwNetwork] = {}
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
                # once per bridge, not per job: an `nft` call costs milliseconds, and the
                # heartbeat's ensure_firewall() restores a table someone removed
                firewall.apply(firewall.render(self.firewall_networks()))

    def ensure_firewall(self) -> bool:
        """Re-apply joblet's table if someone flushed or deleted it; True when it did."""
        with self._lock:
            if self._bridge_index is None or firewall.table_exists():
                return False
            firewall.apply(firewall.render(self.firewall_networks()))
            return True

    def firewall_networks(self) -> list[firewall.FwNetwork]:
        default = firewall.FwNetwork("bridge", self.cfg.bridge_name, self.cfg.bridge_cidr)
        return [default, *self._active.values()]

    def ensure_network(self, net: NetworkDef) -> Subnet:
        """The bridge of a user network on this host, and its rules in joblet's table."""
        subnet = Subnet(net.cidr)
        bridge = bridge_name(net.name)
        with self._lock:
            if links.index_of(bridge) is None or net.name not in self._active:
                links.ensure_bridge(bridge, subnet.gateway, subnet.prefixlen, net.mtu or self._mtu)
                self._active[net.name] = firewall.FwNetwork(net.name, bridge, net.cidr, not net.internal)
                firewall.apply(firewall.render(self.firewall_networks()))
        return subnet

    # -- per job ----------------------------------------------------------------------------
    def plan(self, job_id: str, spec: JobSpec, hostname: str) -> NetPlan:
        """Check the job's networks and reserve its addresses."""
        if spec.network == ("none",):
            return NetPlan(job_id=job_id, hostname=hostname, mode="none")
        if "host" in spec.network:
            if spec.network != ("host",):
                raise NetworkError("network 'host' cannot be combined with other networks")
            if not self.cfg.allow_host_network:
                raise NetworkError(f"host networking is disabled on node {self.cfg.node!r} "
                                   "(allow_host_network = false)")
            return NetPlan(job_id=job_id, hostname=hostname, mode="host")
        self.ensure_host()
        attachments: list[Attachment] = []
        dns: tuple[str, ...] = ()
        try:
            for i, name in enumerate(spec.network):
                att, net_dns = self._attachment(job_id, name, i)
                attachments.append(att)
                dns = dns or net_dns
        except Exception:
            for att in attachments:
                self.ipam.release(att.network, att.address_int, job_id)
            raise
        return NetPlan(job_id=job_id, hostname=hostname, mode=spec.network[0],
                       attachments=tuple(attachments),
                       nameservers=dns or tuple(host.upstream_nameservers()))

    def _attachment(self, job_id: str, name: str, index: int) -> tuple[Attachment, tuple[str, ...]]:
        if name == "bridge":
            subnet, bridge, mtu, dns = self.bridge, self.cfg.bridge_name, self._mtu, ()
        else:
            try:
                net = self.networks.get(name)
            except NotFound:
                raise NetworkError(f"unknown network {name!r}") from None
            subnet, bridge = self.ensure_network(net), bridge_name(net.name)
            mtu, dns = net.mtu or self._mtu, net.dns
        address = self.ipam.allocate(name, subnet.first, subnet.last, job_id)
        if address is None:
            raise NetworkError(f'network "{name}" ({subnet.cidr}) has no free address')
        att = Attachment(network=name, bridge=bridge, host_ifname=host_veth_name(job_id, name),
                         ifname=f"eth{index}", address=to_str(address), address_int=address,
                         prefixlen=subnet.prefixlen, gateway=subnet.gateway, mtu=mtu)
        return att, dns

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
