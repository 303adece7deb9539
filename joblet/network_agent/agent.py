"""Build and tear down a job's network: plan (pure) -> attach -> release.

Setup is a reversible sequence: what was done is undone in reverse when a later step fails.
Teardown takes the same plan, attempts every step, treats "not found" as success and
raises the collected errors at the end (STYLE.md 1-2).

The firewall state (networks, job ports, the control plane's addresses, the host-mode cgroup)
lives here, under one lock: a whole re-render and a per-job element change never interleave.
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import threading
import time
from pathlib import Path

from joblet import names
from joblet.api.limits import tbf_args
from joblet.api.models import JobSpec
from joblet.api.networks import NetworkDef, NetworkStore, control_plane, not_unicast
from joblet.api.store_ipam import IpamStore
from joblet.config import Settings
from joblet.errors import NetworkError, NotFound, TeardownError
from joblet.names import ISOLATED_VETH_PREFIX, bridge_name, host_veth_name
from joblet.network_agent import firewall, foreign, host, links, portsec
from joblet.network_agent.ipam import P2pPool, Subnet, to_str
from joblet.network_agent.netns import JobNetns
from joblet.network_agent.plan import Attachment, NetPlan
from joblet.worker import faults

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
        self.pool = P2pPool(cfg.isolated_pool)
        self._bridge_index: int | None = None
        self._mtu = 1500
        self._forward_lock = threading.Lock()
        self._forward_checked = 0.0
        self._forward_problem: str | None = None
        self._ports: dict[str, portsec.Port] = {}  # host end -> what it may send
        self._blocked: tuple[tuple[str, int], ...] = ()
        self._resolved = False
        self._host_cgroup: tuple[str, int] | None = None
        self._host_cgroup_seen: tuple[str, int, int] | None = None  # with the inode
        self._loaded = False  # the tables were loaded once: keep them there

    # -- host level -------------------------------------------------------------------------
    def ensure_host(self) -> None:
        """Forwarding on, the default bridge up, joblet's table loaded (cheap when done), and
        no foreign forward chain dropping job traffic (unless told to only warn)."""
        host.ensure_ip_forward()
        with self._lock:
            if self._bridge_index is None or links.index_of(self.cfg.bridge_name) is None:
                self.check_ranges()
                self._mtu = links.default_route_mtu()
                index, created = links.ensure_bridge(
                    self.cfg.bridge_name, self.bridge.gateway, self.bridge.prefixlen, self._mtu,
                    self._gateway_mac(self.cfg.bridge_name))
                # once per bridge, not per job: an `nft` call costs milliseconds, and the
                # heartbeat's ensure_firewall() restores a table someone removed
                self._apply_or_remove(self.cfg.bridge_name, created)
                self._bridge_index = index
        problem = self.check_forward(max_age=2.0)
        if problem and self.cfg.foreign_forward == "refuse":
            raise NetworkError(problem)

    def check_ranges(self) -> None:
        """The default bridge and the isolated pool must not hold the broker's or state store's
        address: jobs would share its link, and the worker's own route to it would lead there."""
        for setting, cidr in (("bridge_cidr", self.cfg.bridge_cidr), ("isolated_pool", self.cfg.isolated_pool)):
            net = ipaddress.ip_network(cidr)
            for address, _ in self._control_plane():
                if ipaddress.ip_address(address) in net:
                    raise NetworkError(f"{setting} {cidr} holds {address}, an address of the broker or "
                                       "state store: set another range for jobs")

    def check_forward(self, max_age: float = 0.0) -> str | None:
        """Look for foreign forward chains with a drop policy (at most every `max_age` s);
        with foreign_forward = "insert", put joblet's accept rules into them. Returns the
        problem still standing, if any."""
        with self._forward_lock:  # not the setup lock: nft runs here, bridge setups go on
            if time.monotonic() - self._forward_checked < max_age:
                return self._forward_problem
            chains = foreign.drop_chains()
            problem = foreign.explain(chains) if chains else None
            if chains and self.cfg.foreign_forward == "insert":
                patterns = [self.cfg.bridge_name, f"{names.NETWORK_BRIDGE_PREFIX}*", f"{names.ISOLATED_VETH_PREFIX}*"]
                for chain in foreign.insert_accepts(chains, patterns):
                    log.warning("inserted joblet's accept rules into forward chain %s", chain)
                problem = None
            if problem != self._forward_problem and problem:
                log.error("%s", problem)
            self._forward_problem, self._forward_checked = problem, time.monotonic()
            return problem

    def ensure_firewall(self) -> bool:
        """Re-apply joblet's table if someone flushed or deleted it; True when it did."""
        with self._lock:
            if not self._loaded or firewall.table_exists():
                return False
            self._apply()
            return True

    def firewall_networks(self) -> list[firewall.FwNetwork]:
        default = firewall.FwNetwork("bridge", self.cfg.bridge_name, self.cfg.bridge_cidr)
        return [default, *self._active.values()]

    def _apply(self) -> None:
        guards = firewall.Guards(blocked=self._control_plane(refresh=True), ports=tuple(self._ports.values()),
                                 host_cgroup=self._host_cgroup)
        firewall.apply(firewall.render(self.firewall_networks(), self.cfg.isolated_pool,
                                       ISOLATED_VETH_PREFIX, guards))
        self._loaded = True

    def _apply_or_remove(self, bridge: str, created: bool) -> None:
        """Load the rules for a new bridge; when that fails, a bridge made for it goes again."""
        try:
            faults.fail("bridge-created")
            self._apply()
        except Exception:
            if created:
                links.delete_link(bridge)
            raise

    def _gateway_mac(self, bridge: str) -> str:
        """A bridge's own MAC, set at creation: else the kernel gives it its lowest port's,
        which changes as jobs come and go and leaves the others' ARP entries pointing nowhere.
        The node is part of it: a network's bridges on several hosts must differ."""
        return portsec.mac_for(f"{self.cfg.node}/{bridge}", "gateway")

    def _control_plane(self, refresh: bool = False) -> tuple[tuple[str, int], ...]:
        """(address, TCP port) of the broker and state store, and job_blocked_addresses,
        resolved again on each whole re-render; the last known addresses stay when a name
        does not resolve now."""
        if self._resolved and not refresh:
            return self._blocked
        self._resolved = True
        cfg = self.cfg
        found = control_plane({"redis_url": cfg.redis_url, "broker_url": cfg.broker_url},
                              cfg.job_blocked_addresses)
        endpoints = tuple(sorted({e for found_for in found.values() for e in found_for}))
        if endpoints or not self._blocked:
            self._blocked = endpoints
        return self._blocked

    def ensure_network(self, net: NetworkDef) -> Subnet:
        """The bridge of a user network on this host, and its rules in joblet's table."""
        problem = not_unicast(net.cidr)  # a definition written to Redis by other means
        if problem:
            raise NetworkError(f'network "{net.name}" cannot be used: {problem}')
        subnet = Subnet(net.cidr)
        bridge = bridge_name(net.name)
        with self._lock:
            if links.index_of(bridge) is None or net.name not in self._active:
                _, created = links.ensure_bridge(bridge, subnet.gateway, subnet.prefixlen,
                                                 net.mtu or self._mtu, self._gateway_mac(bridge))
                self._active[net.name] = firewall.FwNetwork(net.name, bridge, net.cidr, not net.internal)
                try:
                    self._apply_or_remove(bridge, created)
                except Exception:
                    self._active.pop(net.name, None)
                    raise
        return subnet

    def remove_network(self, name: str) -> None:
        """Remove a deleted network's bridge and rules here (no local job may use it)."""
        with self._lock:
            links.delete_link(bridge_name(name, self.cfg.bridge_name))
            if self._active.pop(name, None) is not None:
                self._apply()

    def sweep_networks(self, existing: list[str], in_use: set[str]) -> list[str]:
        """Remove the bridges of networks that no longer exist and no local job uses."""
        wanted = {bridge_name(n) for n in existing}
        stale = [n for n in list(self._active) if n not in existing and n not in in_use]
        for name in links.bridges_with_prefix(names.NETWORK_BRIDGE_PREFIX):
            owner = next((n for n, fw in self._active.items() if fw.bridge == name), None)
            if name not in wanted and owner is None:
                links.delete_link(name)  # left by an earlier worker
        for name in stale:
            self.remove_network(name)
        return stale

    # -- per job ----------------------------------------------------------------------------
    def plan(self, job_id: str, spec: JobSpec, hostname: str) -> NetPlan:
        """Check the job's networks and reserve its addresses."""
        if spec.network == ("none",):
            return NetPlan(job_id=job_id, hostname=hostname, mode="none")
        if "isolated" in spec.network:
            if spec.network != ("isolated",):
                raise NetworkError("network 'isolated' cannot be combined with other networks")
            self.ensure_host()
            nameservers = self._nameservers(())
            return NetPlan(job_id=job_id, hostname=hostname, mode="isolated",
                           attachments=(self._p2p_attachment(job_id),), nameservers=nameservers)
        if "host" in spec.network:
            if spec.network != ("host",):
                raise NetworkError("network 'host' cannot be combined with other networks")
            if not self.cfg.allow_host_network:
                raise NetworkError(f"host networking is disabled on node {self.cfg.node!r} "
                                   "(allow_host_network = false)")
            self.guard_host_mode()
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
        try:
            nameservers = self._nameservers(dns)
        except NetworkError:
            for att in attachments:
                self.ipam.release(att.network, att.address_int, job_id)
            raise
        return NetPlan(job_id=job_id, hostname=hostname, mode=spec.network[0],
                       attachments=tuple(attachments), nameservers=nameservers)

    def _nameservers(self, network_dns: tuple[str, ...]) -> tuple[str, ...]:
        """The network's --dns, else the worker's dns_servers, else the host's upstreams."""
        found = network_dns or self.cfg.dns_servers
        if found:
            return found
        paths = (self.cfg.resolv_conf,) if self.cfg.resolv_conf else host.RESOLV_CANDIDATES
        found = tuple(host.upstream_nameservers(paths))
        if not found:
            names = ", ".join(str(p) for p in paths)
            raise NetworkError(f"no usable upstream DNS server for jobs: {names} list none but "
                               "loopback stubs; set dns_servers in the worker's config or --dns on "
                               "the network")
        return found

    def _p2p_attachment(self, job_id: str) -> Attachment:
        slot = self.ipam.allocate("isolated", 0, self.pool.slots - 1, job_id)
        if slot is None:
            raise NetworkError(f"the isolated pool {self.pool.cidr} has no free /30")
        return Attachment(network="isolated", bridge="", host_ifname=host_veth_name(job_id, "isolated"),
                          ifname="eth0", address=self.pool.job_end(slot), address_int=slot,
                          prefixlen=30, gateway=self.pool.host_end(slot), mtu=self._mtu,
                          host_address=self.pool.host_end(slot))

    def _attachment(self, job_id: str, name: str, index: int) -> tuple[Attachment, tuple[str, ...]]:
        dns: tuple[str, ...] = ()
        if name == "bridge":
            subnet, bridge, mtu = self.bridge, self.cfg.bridge_name, self._mtu
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
                         prefixlen=subnet.prefixlen, gateway=subnet.gateway, mtu=mtu,
                         mac=portsec.mac_for(job_id, name))
        return att, dns

    def attach(self, plan: NetPlan, netns: JobNetns) -> None:
        """Create the job's interfaces inside its namespace, each held to its own MAC and
        address from its first frame, and configure them; undo on failure."""
        self.secure(plan)
        done: list[str] = []
        try:
            for att in plan.attachments:
                if not att.bridge:  # point-to-point (isolated): routed, no bridge
                    done.append(att.host_ifname)
                    links.add_veth_into(att.host_ifname, att.ifname, netns.fd, att.mtu,
                                        host_address=(att.host_address or att.gateway, att.prefixlen))
                    continue
                bridge = links.index_of(att.bridge)
                if bridge is None:
                    raise NetworkError(f"bridge {att.bridge} of network {att.network!r} is gone")
                done.append(att.host_ifname)
                links.add_veth_into(att.host_ifname, att.ifname, netns.fd, att.mtu, bridge=bridge, mac=att.mac)
            netns.run(lambda ipr: links.configure_inside(ipr, list(plan.attachments)))
        except Exception:
            for name in reversed(done):
                links.delete_link(name)
            raise

    def shape(self, plan: NetPlan, netns: JobNetns, rate_in: int | None, rate_out: int | None) -> None:
        """Token buckets: into the job on the host end of each of its veths, out of it on its
        own end, inside its namespace (before its command starts)."""
        for att in plan.attachments if rate_in else ():
            _tc(["tc", "qdisc", "replace", "dev", att.host_ifname, "root", "tbf",
                 *tbf_args(rate_in or 0, att.mtu)], att.host_ifname)
        if rate_out and plan.attachments:
            batch = "".join(f"qdisc add dev {a.ifname} root tbf {' '.join(tbf_args(rate_out, a.mtu))}\n"
                            for a in plan.attachments)
            _tc(["nsenter", f"--net={netns.path}", "tc", "-batch", "-"], "the job's interfaces", batch)

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
        try:
            self.unsecure(plan)
        except NetworkError as exc:
            errors.append(str(exc))
        if errors:
            raise TeardownError(errors)

    # -- guards ---------------------------------------------------------------------------
    def secure(self, plan: NetPlan) -> None:
        """Let the plan's links send from their own MAC and address (before they exist:
        a `jv*` port not in the sets sends nothing)."""
        ports = []
        for att in plan.attachments:
            if att.bridge and att.mac is None:
                raise NetworkError(f"bridged link {att.host_ifname} has no MAC in its plan")
            # checked before it joins the state every later re-render draws from
            ports.append(portsec.Port(att.host_ifname, att.address, att.mac if att.bridge else None).checked())
        with self._lock:
            self._ports.update((p.ifname, p) for p in ports)
            self._apply_elements("add", ports)

    def unsecure(self, plan: NetPlan) -> None:
        """Forget the plan's links (safe to call twice, and for plans of an earlier worker)."""
        with self._lock:
            ports = [self._ports.pop(a.host_ifname) for a in plan.attachments if a.host_ifname in self._ports]
            if ports:
                self._apply_elements("delete", ports)

    def _apply_elements(self, verb: str, ports: list[portsec.Port]) -> None:
        """One small batch per job; when the tables are gone or out of step, render them
        whole from this worker's state instead (the caller holds the lock)."""
        try:
            firewall.apply(portsec.render_elements(verb, ports))
        except NetworkError:
            self._apply()

    def guard_host_mode(self) -> None:
        """Host-mode jobs share the host's namespace: keep them from the broker with an output
        rule on their cgroup root, loaded once it exists (nft resolves the path at load)."""
        match = host.cgroup_match(self._cgroup_root())
        with self._lock:
            if not self._control_plane():
                return
            if match is None:
                raise NetworkError("cannot keep host-mode jobs from the broker: their cgroup root "
                                   f"{self._cgroup_root()} is not a cgroup v2 directory under "
                                   "/sys/fs/cgroup")
            if match != self._host_cgroup_seen or not self._loaded:
                self._host_cgroup, self._host_cgroup_seen = match[:2], match
                self._apply()

    def _cgroup_root(self) -> Path:
        if self.cfg.cgroup_root is not None:
            return self.cfg.cgroup_root
        from joblet.worker.cgroups import detect_root  # the worker's own default

        return detect_root() / "joblet"


def _tc(argv: list[str], what: str, batch: str | None = None) -> None:
    proc = subprocess.run(argv, input=batch, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise NetworkError(f"failed to limit bandwidth on {what}: {proc.stderr.strip()}")
