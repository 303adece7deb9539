"""A job's network: facts (read, checked) -> reserve (IPAM) -> plan (pure, plan.py) -> setup
(applies only) ... teardown (the same plan; every step tried, "not found" is success, errors
collected: STYLE.md 1-2) -> free (IPAM). The job's life (worker/job.py) pushes each undo.
Host level: forwarding, bridges, joblet's nftables tables, foreign forward chains.

The firewall state (networks, job ports, the control plane's addresses, the host-mode cgroup)
lives here, under one lock: a whole re-render and a per-job element change never interleave.
"""

from __future__ import annotations

import logging
import threading
import time

from joblet import names
from joblet.api.models import JobSpec
from joblet.api.networks import (
    BUILTINS,
    NetworkDef,
    NetworkStore,
    addresses_of,
    control_plane,
    fixed_ranges,
    held_in,
    host_prefixes,
    unusable,
)
from joblet.api.store_ipam import IpamStore
from joblet.config import Settings
from joblet.errors import NetworkError, NotFound, TeardownError
from joblet.names import ALONE, ISOLATED_VETH_PREFIX, bridge_name
from joblet.network_agent import firewall, foreign, host, links, portsec, shaping
from joblet.network_agent.conntrack import FORGET_ALL_FOR, REUSED_SOON, Janitor
from joblet.network_agent.conntrack import setting as conntrack_setting
from joblet.network_agent.host_addrs import guest_networks
from joblet.network_agent.ipam import P2pPool, Subnet
from joblet.network_agent.link_owners import LinkOwners
from joblet.network_agent.netns import JobNetns
from joblet.network_agent.overlay import Overlay
from joblet.network_agent.plan import NetFacts, NetPlan, job_links, wants_addresses
from joblet.worker import faults

log = logging.getLogger(__name__)
FORGET_WAIT = 5.0  # seconds a job's release waits for its conntrack entries to go (conntrack.py)


class NetworkAgent:
    """The network side of one worker."""

    def __init__(self, cfg: Settings, ipam: IpamStore, networks: NetworkStore) -> None:
        self.cfg = cfg
        self.ipam = ipam
        self.networks = networks
        self._active: dict[str, firewall.FwNetwork] = {}
        self._mtus: dict[str, int | None] = {}  # the --mtu each active network was built for
        self.bridge = Subnet(cfg.bridge_cidr)
        self._lock = threading.Lock()
        self._redefined = threading.Lock()  # one rebuild of a redefined network at a time
        self.pool = P2pPool(cfg.isolated_pool)
        self._bridge_index: int | None = None
        self._mtu = 1500
        self._underlay_mtu: int | None = None  # the underlay address's interface's (overlay_mtu)
        self._underlay_mtu_read = -1e9
        self._mtu_read = 0.0
        self._forward = foreign.ForwardCheck(
            cfg.foreign_forward == "insert",
            [cfg.bridge_name, f"{names.NETWORK_BRIDGE_PREFIX}*", f"{names.ISOLATED_VETH_PREFIX}*"],
        )
        self._ports: dict[str, portsec.Port] = {}  # host end -> what it may send
        self._found_by: dict[str, list[tuple[str, int]]] = {}  # each setting's last resolved endpoints
        self._guest_nets: tuple[str, ...] | None = None  # the host's containers' and VMs' networks
        self._caps_loaded = False  # `ip joblet`, the connection caps
        self._caps_failed = False  # could not be loaded here: not looked for again
        self._resolved = False
        self._host_cgroup: tuple[str, int] | None = None
        self._host_cgroup_seen: tuple[str, int, int] | None = None  # with the inode
        self._loaded = False  # the tables were loaded once: keep them there
        self._rules: dict[str, str] = {}  # the tables as last loaded (ensure_firewall)
        self.overlay: Overlay | None = None  # user networks span hosts (set by the worker)
        self.owners = LinkOwners()  # which job holds each link name and MAC here
        # an ended job's flows leave the host's conntrack table, once it holds half a job's cap
        # (always on a network that gives addresses again soon: conntrack.REUSED_SOON)
        self.conntrack = Janitor(busy=max(1, cfg.job_max_connections // 2))

    # -- host level -------------------------------------------------------------------------
    def ensure_host(self) -> None:
        """Forwarding on, the default bridge up, joblet's table loaded (cheap when done), and
        no foreign forward chain dropping job traffic (unless told to only warn)."""
        host.ensure_ip_forward()
        with self._lock:
            if self._bridge_index is None or links.index_of(self.cfg.bridge_name) is None:
                self.check_ranges()
                index, created = links.ensure_bridge(
                    self.cfg.bridge_name,
                    self.bridge.gateway,
                    self.bridge.prefixlen,
                    self.uplink_mtu(),
                    self._gateway_mac(self.cfg.bridge_name),
                )
                # once per bridge, not per job: an `nft` call costs milliseconds, and the
                # heartbeat's ensure_firewall() restores a table someone removed
                self._apply_or_remove(self.cfg.bridge_name, created)
                self._bridge_index = index
        problem = self.check_forward(max_age=2.0)
        if problem and self.cfg.foreign_forward == "refuse":
            raise NetworkError(problem)

    def check_ranges(self, resolvers: list[str] | None = None) -> None:
        """The default bridge and the isolated pool must not hold the broker's or state store's
        address: jobs would share its link, and the worker's own route to it would lead there;
        nor a DNS server the host asks (`resolvers`, else its resolv.conf files'): a job given
        its address would answer the host's lookups, as a user network over it would."""
        found_resolvers = host.host_resolvers() if resolvers is None else resolvers
        for setting, cidr in (("bridge_cidr", self.cfg.bridge_cidr), ("isolated_pool", self.cfg.isolated_pool)):
            found = held_in(cidr, self._held())
            if found is not None:
                raise NetworkError(
                    f"{setting} {cidr} holds {found[1]}, an address of the control plane ({found[0]}): "
                    "set another range for jobs"
                )
            found = held_in(cidr, {"resolv.conf": found_resolvers})
            if found is not None:
                raise NetworkError(
                    f"{setting} {cidr} holds {found[1]}, a DNS server this host uses: set another range for jobs"
                )

    def check_forward(self, max_age: float = 0.0) -> str | None:
        """Foreign forward chains with a drop policy (foreign.py), looked at most every
        `max_age` s; the problem still standing, if any."""
        return self._forward.check(max_age)

    def ensure_firewall(self) -> bool:
        """Re-apply joblet's tables if someone deleted one, or changed a chain, a
        static set or a table's flags (firewall.loaded_rules); True when it did."""
        with self._lock:
            if not self._loaded:
                return False
            if firewall.table_exists(caps=not self._caps_failed) and firewall.loaded_rules() == self._rules:
                return False
            self._caps_loaded = self._caps_failed or firewall.has_table("ip")  # kept with its counts
            self._apply()
            return True

    def firewall_networks(self) -> list[firewall.FwNetwork]:
        default = firewall.FwNetwork("bridge", self.cfg.bridge_name, self.cfg.bridge_cidr)
        return [default, *self._active.values()]

    def _apply(self) -> None:
        overlay = self.overlay
        guards = firewall.Guards(
            blocked=self._control_plane(),  # resolved at the first load, then by each heartbeat
            ports=tuple(self._ports.values()),
            host_cgroup=self._host_cgroup,
            overlay=overlay.macs() if overlay else (),
            vxlan_port=self.cfg.vxlan_port if overlay else None,
            overlay_peers=overlay.peers() if overlay else (),
            no_jobs=self.cfg.job_blocked_networks,
            guests=self._guests(),
        )
        firewall.apply(firewall.render(self.firewall_networks(), self.cfg.isolated_pool, ISOLATED_VETH_PREFIX, guards))
        self._loaded = True
        if not self._caps_loaded:  # once: its counts live in its sets (firewall.render_caps)
            self._apply_caps()
        self._rules = firewall.loaded_rules()  # as loaded: what ensure_firewall compares with

    def _apply_caps(self) -> None:
        """Load `ip joblet`; where it cannot be (a kernel without nft_connlimit), say so once
        and go on without it: the jobs' networks stand without their caps."""
        cfg = self.cfg
        all_jobs = cfg.jobs_max_connections
        if all_jobs == 0:  # half of the table, read after `inet joblet` loaded conntrack
            all_jobs = (conntrack_setting("max") or 0) // 2
        caps = firewall.render_caps(cfg.bridge_name, ISOLATED_VETH_PREFIX, cfg.job_max_connections, max(0, all_jobs))
        self._caps_loaded = True
        try:
            firewall.apply(caps)
        except NetworkError as exc:
            self._caps_failed = True
            log.error("jobs' connections are not capped on this host: %s", exc)

    def _apply_or_remove(self, bridge: str, created: bool) -> None:
        """Load the rules for a new bridge; when that fails, a bridge made for it goes again."""
        try:
            faults.fail("bridge-created")
            self._apply()
        except Exception:
            if created:
                links.delete_link(bridge)
            raise

    def _mac_taken(self, network: str, mac: str) -> str | None:
        """Who else has this MAC on the network: its gateway here, a job on another node."""
        if mac == self._gateway_mac(bridge_name(network, self.cfg.bridge_name)):
            return "the network's gateway"
        if network not in BUILTINS and self.overlay is not None and self.overlay.remote_mac(network, mac):
            return "a job on another node"  # user networks only: the default bridge spans no hosts
        return None

    def _gateway_mac(self, bridge: str) -> str:
        """A bridge's own MAC, set at creation: else the kernel gives it its lowest port's,
        which changes as jobs come and go and leaves the others' ARP entries pointing nowhere.
        The node is part of it: a network's bridges on several hosts must differ."""
        return portsec.mac_for(f"{self.cfg.node}/{bridge}", "gateway")

    def _control_plane(self) -> tuple[tuple[str, int], ...]:
        """(address, TCP port) of the broker and state store, and job_blocked_addresses:
        resolved at the first call, then by refresh_control_plane."""
        if not self._resolved:
            self._take_control_plane(self._resolve_control_plane())
        return _endpoints(self._found_by)

    def _resolve_control_plane(self) -> dict[str, list[tuple[str, int]]]:
        cfg = self.cfg
        return control_plane({"redis_url": cfg.redis_url, "broker_url": cfg.broker_url}, cfg.job_blocked_addresses)

    def _take_control_plane(self, found: dict[str, list[tuple[str, int]]]) -> bool:
        """Keep what `found` resolved, setting by setting: a setting whose names do not
        resolve now keeps its last known addresses (when the broker's alone failed, beside a
        job_blocked_addresses literal that always resolves, the broker left the blocked set
        for the outage: review); whether the addresses changed."""
        self._resolved = True
        before = _endpoints(self._found_by)
        self._found_by = {**self._found_by, **{setting: ends for setting, ends in found.items() if ends}}
        return _endpoints(self._found_by) != before

    def refresh_control_plane(self) -> bool:
        """Resolve the broker's and state store's names again (each heartbeat), outside the
        lock, and load the tables again when their addresses changed; whether they did. Each
        re-render resolved them under the lock, where a slow resolver held every job's start,
        and a name that moved (a managed Redis's failover) was blocked at its new address only
        when something else re-rendered (review)."""
        found = self._resolve_control_plane()
        with self._lock:
            if not self._take_control_plane(found):
                return False
            if self._loaded:
                self._apply()
            return True

    def _guests(self) -> tuple[str, ...]:
        """The networks of the host's containers and VMs: found at the first load, then by
        refresh_guests (each heartbeat)."""
        if self._guest_nets is None:
            self._guest_nets = tuple(guest_networks(self.cfg.bridge_name, (self.cfg.isolated_pool,)))
        return self._guest_nets

    def refresh_guests(self) -> bool:
        """Look for the host's containers' and VMs' networks again (a compose project or a
        libvirt network made since), outside the lock; load the tables again when they
        changed; whether they did. Until then, a new one is reachable by jobs: at most one
        heartbeat interval."""
        found = tuple(guest_networks(self.cfg.bridge_name, (self.cfg.isolated_pool,)))
        with self._lock:
            if found == self._guest_nets:
                return False
            before, self._guest_nets = self._guest_nets, found
            if not self._loaded:  # the first load takes them
                return False
            try:
                self._apply()
            except BaseException:  # tried again at the next beat (it compared equal: never again)
                self._guest_nets = before
                raise
            return True

    def _held(self) -> dict[str, list[str]]:
        """The control plane's addresses by setting ({setting: [address]}): `_control_plane`'s."""
        self._control_plane()
        return addresses_of(self._found_by)

    def check_usable(self, net: NetworkDef, routes: bool = False) -> None:
        """Refuse a network this host must not build (`unusable`); with `routes` (when its
        bridge is made here: an `ip` call and one read of every definition), also one over a
        route of this host or another network's range, or with another network's VNI (its
        overlay port would join that network's across the fleet)."""
        cfg = self.cfg
        others = {n.name: n for n in self.networks.all() if n.name != net.name} if routes else {}
        twin = next((n for n in others.values() if n.overlay_vni == net.overlay_vni), None)
        if twin is not None:
            raise NetworkError(
                f'network "{net.name}" cannot be used on node {cfg.node}: its VNI {net.overlay_vni} is '
                f'network "{twin.name}"\'s'
            )
        clash = next((n for n in others.values() if names.bridge_name(n.name) == names.bridge_name(net.name)), None)
        if clash is not None:  # one bridge for two networks: one's jobs on the other's segment (red-team)
            raise NetworkError(
                f'network "{net.name}" cannot be used on node {cfg.node}: its bridge name '
                f'{names.bridge_name(net.name)} is network "{clash.name}"\'s (a hash clash)'
            )
        reserved = {
            **fixed_ranges(cfg.bridge_cidr, cfg.isolated_pool, cfg.job_blocked_networks),
            # the networks with a bridge here (their routes are joblet's, which host_prefixes
            # leaves out): a /28 written over one's /24 took its jobs' traffic from the host
            **{f'network "{n}" on this host': fw.cidr for n, fw in list(self._active.items()) if n != net.name},
            **(host_prefixes() if routes else {}),
            **{f'network "{n}"': other.cidr for n, other in others.items()},
            **(host.resolver_ranges(f"node {cfg.node}") if routes else {}),
        }
        public, ranges = cfg.allow_public_networks, cfg.network_ranges
        problem = unusable(net.cidr, self._held(), reserved, public=public, ranges=ranges)
        if problem:
            raise NetworkError(f'network "{net.name}" cannot be used on node {cfg.node}: {problem}')

    def ensure_network(self, net: NetworkDef) -> Subnet:
        """The bridge of a user network on this host, and its rules in joblet's table (its
        definition checked by `facts`, and again with this host's routes when its bridge is
        made here)."""
        subnet = Subnet(net.cidr)
        bridge = bridge_name(net.name)
        mtu = net.mtu or self.network_mtu()
        fw = firewall.FwNetwork(net.name, bridge, net.cidr, not net.internal)
        self._drop_if_redefined(net, fw)
        if links.index_of(bridge) is None or net.name not in self._active:
            self.check_usable(net, routes=True)  # an `ip` call: not inside the lock other jobs wait on
        with self._lock:
            if links.index_of(bridge) is None or net.name not in self._active:
                _, created = links.ensure_bridge(
                    bridge, subnet.gateway, subnet.prefixlen, mtu, self._gateway_mac(bridge), only_gateway=True
                )
                self._active[net.name] = fw
                self._mtus[net.name] = net.mtu
                try:
                    self._apply_or_remove(bridge, created)
                except Exception:
                    self._active.pop(net.name, None)
                    raise
        # outside the lock (a sync re-renders the rules); a second job of a new network waits
        # here on the overlay's lock until the first one's port exists
        if self.overlay is not None and not self.overlay.attached(net.name):
            self.overlay.attach(net, bridge, mtu)
        return subnet

    def _drop_if_redefined(self, net: NetworkDef, fw: firewall.FwNetwork) -> None:
        """Remove what this worker built for an earlier network of this name (made again while
        it missed the delete), checked again inside the lock: two jobs of the new network must
        not remove what the first one has just rebuilt."""

        def stale() -> bool:  # another range or NAT, another VNI, or another --mtu: a bridge
            # and port kept at the old MTU dropped the new one's larger frames (review)
            built = self._active.get(net.name)
            if built is not None and (built != fw or self._mtus.get(net.name) != net.mtu):
                return True
            return self.overlay is not None and self.overlay.stale(net)

        if not stale():
            return
        with self._redefined:
            if stale():
                log.warning("network %s was made again with another definition: rebuilding it here", net.name)
                self.remove_network(net.name)

    def network_mtu(self) -> int:
        """A user network's MTU when it sets none: the uplink's, or the underlay interface's
        where that is less, less the overlay's overhead."""
        if self.overlay is None:
            return self.uplink_mtu()
        return self.overlay_mtu() - names.VXLAN_OVERHEAD

    def overlay_mtu(self, max_age: float = 5.0) -> int:
        """The MTU the overlay's datagrams leave with: the uplink's, or the underlay address's
        interface's where that is less (a 1300-byte private link under networks of 1450 lost
        their large frames; fleet run). The default bridge and isolated jobs go out by the
        uplink: uplink_mtu."""
        if time.monotonic() - self._underlay_mtu_read > max_age:  # a netlink call: not per job
            underlay = self.overlay.underlay() if self.overlay is not None else None
            self._underlay_mtu = links.mtu_holding(underlay) if underlay else None
            self._underlay_mtu_read = time.monotonic()
        uplink = self.uplink_mtu()
        return min(uplink, self._underlay_mtu or uplink)

    def overlay_changed(self) -> None:
        """The remote jobs the overlay lets in changed: render the tables again (also those a
        previous worker left here, whose sets named remote jobs of its time)."""
        with self._lock:
            if self._loaded or firewall.has_table("inet"):
                self._apply()

    def remove_network(self, name: str) -> bool:
        """Remove a deleted network's bridge and rules here (no local job may use it); whether
        it was set up here (two sweeps at once, a deletion's event and the upkeep's, each
        said they removed it)."""
        if self.overlay is not None:
            self.overlay.detach(name)
        with self._lock:
            links.delete_link(bridge_name(name, self.cfg.bridge_name))
            self._mtus.pop(name, None)
            if self._active.pop(name, None) is None:
                return False
            self._apply()
            return True

    def sweep_networks(self, existing: list[str], in_use: set[str], attached: set[str] | None = None) -> list[str]:
        """Remove the bridges of networks that no longer exist and no local job uses (and the
        overlay ports of `attached`, read before `existing`: overlay.sweep)."""
        wanted = {bridge_name(n) for n in existing}
        stale = [n for n in list(self._active) if n not in existing and n not in in_use]
        orphans = [  # left by an earlier worker
            name
            for name in links.bridges_with_prefix(names.NETWORK_BRIDGE_PREFIX)
            if names.NETWORK_LINK.match(name)
            and name not in wanted
            and not any(fw.bridge == name for fw in list(self._active.values()))
        ]
        if stale or orphans:  # a network made since `existing` was read: its first job may have
            # made its bridge meanwhile, which this deleted under it (review). Its definition came
            # before its bridge: read after the bridges were listed, it names every such network
            now = {n.name for n in self.networks.all()}
            stale = [n for n in stale if n not in now]
            orphans = [name for name in orphans if name not in {bridge_name(n) for n in now}]
        if orphans:  # their rules are in an earlier worker's tables: loaded again without them,
            # before the bridges go (a network deleted while the worker was down kept its NAT and
            # a drop of traffic to its range, which the host's own met, until the next job's load)
            with self._lock:
                self._apply()
        for name in orphans:
            links.delete_link(name)
        removed = [name for name in stale if self.remove_network(name)]
        if self.overlay is not None:
            self.overlay.sweep(existing, in_use, attached or set(), lambda: [n.name for n in self.networks.all()])
        return removed

    # -- per job: facts -> reserve -> (pure plan) -> setup ... teardown -> free --------------
    def facts(self, spec: JobSpec) -> NetFacts:
        """Check the job's networks and read what its plan needs; changes nothing."""
        nets = spec.network
        for alone in ALONE:
            if alone in nets and len(nets) > 1:
                raise NetworkError(f"network {alone!r} cannot be combined with other networks")
        if nets == ("host",) and not self.cfg.allow_host_network:
            raise NetworkError(f"host networking is disabled on node {self.cfg.node!r} (allow_host_network = false)")
        user: dict[str, NetworkDef] = {}
        for name in (n for n in nets if n not in ALONE and n != "bridge"):
            try:
                user[name] = self.networks.get(name)
            except NotFound:
                raise NetworkError(f"unknown network {name!r}") from None
            self.check_usable(user[name])  # a definition written to Redis by other means
        dns = next((n.dns for n in user.values() if n.dns), ())
        wanted = wants_addresses(nets) and not dns  # a network's --dns comes first (plan.py)
        servers = host.job_nameservers(self.cfg.dns_servers, self.cfg.resolv_conf) if wanted else ()
        ranges = {name: net.cidr for name, net in user.items()}
        if "bridge" in nets:
            ranges["bridge"] = self.cfg.bridge_cidr
        problem = host.dns_inside(servers, ranges)
        if problem:
            raise NetworkError(problem)
        return NetFacts(
            mtu=self.uplink_mtu(),
            network_mtu=self.network_mtu(),
            bridge=self.cfg.bridge_name,
            bridge_cidr=self.cfg.bridge_cidr,
            isolated_pool=self.cfg.isolated_pool,
            networks=user,
            nameservers=servers,
        )

    def reserve(self, job_id: str, spec: JobSpec, facts: NetFacts) -> dict[str, int]:
        """An address (or an isolated /30) per network, from the fleet-wide IPAM; all or none.
        First the job's link names and MACs, which no other job may hold (link_owners.py)."""
        self.owners.claim(job_id, *job_links(job_id, spec.network), taken=self._mac_taken)
        reserved: dict[str, int] = {}
        try:
            for name in wants_addresses(spec.network):
                if name == "isolated":
                    first, last, what = 0, self.pool.slots - 1, f"the isolated pool {self.pool.cidr}"
                else:
                    subnet = Subnet(facts.networks[name].cidr if name in facts.networks else facts.bridge_cidr)
                    first, last, what = subnet.first, subnet.last, f'network "{name}" ({subnet.cidr})'
                slot = self.ipam.allocate(name, first, last, job_id)
                if slot is None:
                    raise NetworkError(f"{what} has no free address")
                reserved[name] = slot
        except Exception:
            self.free(job_id, reserved)
            raise
        return reserved

    def free(self, job_id: str, reserved: dict[str, int]) -> None:
        """Give reserved addresses back (owned by `job_id`; freeing twice is harmless), and
        the job's link names and MACs (its links are gone by now)."""
        self.owners.release(job_id)
        errors = []
        for network, slot in reserved.items():
            try:
                self.ipam.release(network, slot, job_id)
            except Exception as exc:  # noqa: BLE001 - collect and keep going
                errors.append(f"failed to free {network} slot {slot}: {exc}")
        if errors:
            raise TeardownError(errors)

    def setup(self, plan: NetPlan, netns: JobNetns | None) -> None:
        """Apply the plan: host forwarding, bridges and rules, the job's ports held to their own
        MAC and address, its veths (born in its namespace) configured, its rates shaped."""
        if plan.mode == "host":
            self.guard_host_mode()
            return
        if not plan.attachments or netns is None:
            return
        self.ensure_host()
        for net in plan.networks:
            self.ensure_network(net)
        self.secure(plan)
        for att in plan.attachments:
            if not att.bridge:  # point-to-point (isolated): routed, no bridge
                links.add_veth_into(
                    att.host_ifname,
                    att.ifname,
                    netns.fd,
                    att.mtu,
                    host_address=(att.host_address or att.gateway, att.prefixlen),
                )
                continue
            bridge = links.index_of(att.bridge)
            if bridge is None:
                raise NetworkError(f"bridge {att.bridge} of network {att.network!r} is gone")
            links.add_veth_into(att.host_ifname, att.ifname, netns.fd, att.mtu, bridge=bridge, mac=att.mac)
        netns.run(lambda: links.configure_inside(list(plan.attachments)))
        shaping.apply(plan, netns.path)

    def teardown(self, plan: NetPlan) -> None:
        """Undo `setup` (safe to call twice, after a partial setup, or for an earlier worker's
        plan): the host ends of the job's veths and its port rules. Addresses: `free`."""
        errors = []
        try:
            self.unsecure(plan)
        except NetworkError as exc:
            errors.append(str(exc))
        for att in plan.attachments:
            try:
                links.delete_link(att.host_ifname)
            except NetworkError as exc:
                errors.append(str(exc))
        if errors:
            raise TeardownError(errors)

    def released(self, plan: NetPlan) -> None:
        """`teardown` for a job whose namespace was let go: the kernel removes its veths in
        the background (waited for here; what lingers past 2 s is deleted), and only then its
        port rules go. Until then the namespace may still send what its sockets hold (a
        shaped queue, a closing TCP connection), under the rules of the address it holds."""
        try:
            links.await_gone([att.host_ifname for att in plan.attachments])
        finally:  # a veth that could not be deleted is still the job's no more: nor its rules
            self.unsecure(plan)
            self.forget_flows(plan)

    def forget_flows(self, plan: NetPlan) -> None:
        """An ended job's flows leave the host's conntrack table before its addresses are
        another's (conntrack.py; waited for up to FORGET_WAIT, or while an address soon given
        again is cleared: the janitor's FORGET_ALL_FOR, and as long again for the rounds of
        others ahead of its last). Past that the janitor leaves them: they are freed."""
        soon = self.reused_soon(plan)  # all of them then, the address freed only once they are gone
        addresses = list(plan.ips.values())
        done = self.conntrack.forget(addresses, always=soon).wait(2 * FORGET_ALL_FOR if soon else FORGET_WAIT)
        if soon and not done:
            log.warning("gave up waiting for the conntrack entries of %s to go", ", ".join(addresses))

    def reused_soon(self, plan: NetPlan) -> bool:
        """Whether one of the job's addresses may be another job's within conntrack's
        timeouts: its network's, or for an isolated link the pool's, count of addresses (a
        /30 each) is below REUSED_SOON. An isolated job's was never: a small pool (a /22, 256
        links) handed its address on in seconds, with its NATed flows (review)."""
        return any(
            (1 << (32 - att.prefixlen) if att.bridge else self.pool.slots) < REUSED_SOON for att in plan.attachments
        )

    def uplink_mtu(self, max_age: float = 5.0) -> int:
        """The default-route interface's MTU, read again at most every `max_age` seconds."""
        if time.monotonic() - self._mtu_read > max_age:
            self._mtu, self._mtu_read = links.default_route_mtu(), time.monotonic()
        return self._mtu

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
        """Host-mode jobs share the host's namespace: keep them from the broker, the blocked
        networks and the jobs' links with output rules on their cgroup root, loaded once it
        exists (nft resolves the path at load)."""
        root = host.jobs_cgroup_root(self.cfg)
        match = host.cgroup_match(root)
        with self._lock:
            if match is None:
                raise NetworkError(
                    "cannot keep host-mode jobs from the broker and other jobs: their cgroup root "
                    f"{root} is not a cgroup v2 directory under "
                    "/sys/fs/cgroup"
                )
            if match != self._host_cgroup_seen or not self._loaded:
                self._host_cgroup, self._host_cgroup_seen = match[:2], match
                self._apply()


def _endpoints(found_by: dict[str, list[tuple[str, int]]]) -> tuple[tuple[str, int], ...]:
    """Every setting's endpoints, once each, sorted: the blocked set's elements."""
    return tuple(sorted({e for found_for in found_by.values() for e in found_for}))
