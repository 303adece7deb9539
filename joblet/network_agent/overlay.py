"""User networks that span hosts: one VXLAN port (`jx*`, names.py) per network on each node,
enslaved to the network's bridge, VNI from the network's definition.

No multicast and no learning: what the port sends where comes from Redis. Each worker
publishes its underlay address in its heartbeat; each running job is listed in its networks'
member hashes with its node. From that (render pure, `fdb_wanted`):
- the all-zero MAC -> every other node with jobs in the network (ARP and other broadcast),
- each remote job's MAC (derived from its id, portsec.mac_for) -> its node's underlay address.
`sync` diffs that against the port's forwarding database and applies the difference in one
`bridge -batch` (apply thin). It runs whenever a network's jobs change (discovery events) and
on every heartbeat, so a node that comes or goes is picked up within one beat.

What crosses the overlay is held by `bridge joblet` (portsec.render_bridge): frames from a
`jx*` port must carry the MAC of a remote job of that network (`overlay_macs`, from the same
view) and be IPv4 or ARP; nothing from the overlay reaches this host's own stack (each node's
bridge has the network's gateway address: remote jobs use their own node's), and nothing the
host sends goes out on it. The sending node has already held each job to its own MAC and
address at its `jv*` port. The overlay's UDP port takes datagrams only from the underlay
addresses of the nodes in those entries (`overlay_peers` in `inet joblet`): any other host
that can send to it would otherwise inject frames into a network, a remote job's MAC being
all it needs.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from joblet.api.networks import NetworkDef
from joblet.api.store import Store
from joblet.config import Settings
from joblet.errors import NetworkError
from joblet.names import NETWORK_LINK, VXLAN_PREFIX, vxlan_name
from joblet.network_agent import links, port_hold
from joblet.network_agent.portsec import mac_for

log = logging.getLogger(__name__)
ZERO_MAC = "00:00:00:00:00:00"
Fdb = frozenset[tuple[str, str]]  # (MAC, underlay address)


@dataclass(frozen=True)
class OverlayPort:
    """One network's VXLAN port on this node."""

    network: str
    device: str
    vni: int
    bridge: str
    mtu: int


def fdb_wanted(network: str, me: str, members: dict[str, str], underlays: dict[str, str]) -> Fdb:
    """The port's forwarding entries: {job id: node} of the network's running jobs and
    {node: underlay address} of the live nodes (pure)."""
    remote = {(job, underlays[node]) for job, node in members.items() if node != me and node in underlays}
    floods = {(ZERO_MAC, address) for _, address in remote}
    return frozenset(floods | {(mac_for(job, network), address) for job, address in remote})


def fdb_batch(device: str, have: Fdb, want: Fdb) -> list[str]:
    """`bridge -batch` lines that turn `have` into `want`: removals first (a job that moved)."""
    lines = [f"fdb del {mac} dev {device} dst {dst}" for mac, dst in sorted(have - want)]
    return lines + [f"fdb append {mac} dev {device} dst {dst}" for mac, dst in sorted(want - have)]


def remote_macs(device: str, fdb: Fdb) -> set[tuple[str, str]]:
    """(port, MAC) pairs the firewall lets in from this port: the remote jobs."""
    return {(device, mac) for mac, _ in fdb if mac != ZERO_MAC}


def peers(fdb: Fdb) -> set[str]:
    """The underlay addresses the firewall takes VXLAN from for this port: the nodes that
    hold the port's remote jobs (no other node sends it anything it would let in)."""
    return {address for _, address in fdb}


def _ipv4(address: str) -> bool:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        log.warning("a node's underlay address %r is not IPv4: no VXLAN taken from it", address)
        return False
    return True


# -- I/O ----------------------------------------------------------------------------------
def default_underlay() -> str | None:
    """The first IPv4 address of the interface carrying the default route."""
    ipr = IPRoute()
    try:
        for route in ipr.get_default_routes(family=2):
            oif = route.get_attr("RTA_OIF")
            for addr in ipr.get_addr(family=2, index=oif) if oif else []:
                return str(addr.get_attr("IFA_ADDRESS"))
        return None
    finally:
        ipr.close()


def ensure_device(port: OverlayPort, local: str, dstport: int) -> None:
    """The VXLAN port, created if absent (or remade when its VNI or local address differ),
    IPv6 off, enslaved to its bridge and up."""
    bridge = links.index_of(port.bridge)
    if bridge is None:
        raise NetworkError(f"bridge {port.bridge} of network {port.network!r} is gone")
    ipr = IPRoute()
    try:
        found = ipr.link_lookup(ifname=port.device)
        if found and _vxlan_of(ipr, found[0]) != (port.vni, local, VXLAN_DF_SET):
            ipr.link("del", index=found[0])
            found = []
        if not found:
            ipr.link(
                "add",
                ifname=port.device,
                kind="vxlan",
                vxlan_id=port.vni,
                vxlan_local=local,
                vxlan_port=dstport,
                vxlan_learning=0,
                vxlan_df=VXLAN_DF_SET,
                mtu=port.mtu,
            )
        index = ipr.link_lookup(ifname=port.device)[0]
        links.disable_ipv6(port.device)
        ipr.link("set", index=index, master=bridge, state="up")
    except NetlinkError as exc:
        why = f"VNI {port.vni} is in use on UDP port {dstport}" if exc.code == errno.EEXIST else str(exc)
        raise NetworkError(f"failed to create overlay port {port.device} of network {port.network!r}: {why}") from None
    finally:
        ipr.close()


# Outer packets carry DF: an underlay path narrower than a network's MTU allows (a node that
# joined with a smaller uplink, a tunnel on the way) answers frag-needed, which the port turns
# into one for the job's own flow, instead of fragmenting them: their fragments were
# reassembled in the receiving node's namespace, whose 4 MB budget a job's lossy flood
# filled (red-team run), as jobs' own fragments did before they were dropped (portsec.py).
VXLAN_DF_SET = 1


def _vxlan_of(ipr: IPRoute, index: int) -> tuple[int, str, int] | None:
    """(VNI, local address, DF mode) of a vxlan device, None for another kind."""
    info = ipr.get_links(index)[0].get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
        return None
    data = info.get_attr("IFLA_INFO_DATA")
    df = data.get_attr("IFLA_VXLAN_DF")
    return int(data.get_attr("IFLA_VXLAN_ID")), str(data.get_attr("IFLA_VXLAN_LOCAL")), int(df or 0)


def read_fdb(device: str) -> Fdb:
    """The port's own forwarding entries that have a remote (what `sync` manages)."""
    proc = subprocess.run(["bridge", "-j", "fdb", "show", "dev", device], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise NetworkError(f"failed to read the forwarding entries of {device}: {proc.stderr.strip()}")
    entries: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    return frozenset((str(e["mac"]), str(e["dst"])) for e in entries if "dst" in e and "master" not in e)


def apply_fdb(lines: list[str]) -> None:
    if not lines:
        return
    proc = subprocess.run(
        ["bridge", "-force", "-batch", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=30
    )
    if proc.returncode != 0:
        raise NetworkError(f"failed to update overlay forwarding entries: {proc.stderr.strip()}")


class Overlay:
    """This node's overlay ports and their forwarding entries, kept in step with Redis."""

    def __init__(self, cfg: Settings, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self._ports: dict[str, OverlayPort] = {}
        self._macs: dict[str, set[tuple[str, str]]] = {}
        self._peers: dict[str, set[str]] = {}
        self._lock = threading.Lock()  # one sync at a time: fdb diffs must not interleave
        self._underlay = cfg.underlay_address
        self._local_only: set[str] = set()  # networks seen while this node had no underlay
        self._hold: int | None = None  # the holder's namespace (port_hold.py) once it holds the port
        self._hold_error: str | None = None  # why the last try to hold it failed
        self._hold_lock = threading.Lock()
        self.on_macs: Callable[[], None] = lambda: None  # the firewall re-renders

    def underlay(self) -> str | None:
        """The address other nodes reach this one at (the setting, else the uplink's)."""
        if self._underlay is None:
            self._underlay = default_underlay()
        return self._underlay

    def macs(self) -> tuple[tuple[str, str], ...]:
        with self._lock:
            return tuple(sorted(m for found in self._macs.values() for m in found))

    def remote_mac(self, network: str, mac: str) -> bool:
        """Whether a job of this network on another node has this MAC: from the last sync
        where the network has a port here (no lock: a sync may hold it for seconds, and
        replaces a network's set whole), else from its members in Redis (its first job here)."""
        if self.underlay() is None:
            return False  # the network stays on this host: no remote job shares its frames
        if network in self._ports:
            return any(m == mac for _, m in self._macs.get(network, ()))
        members = self.store.member_nodes([network]).get(network, {})
        return any(node != self.cfg.node and mac_for(job, network) == mac for job, node in members.items())

    def peers(self) -> tuple[str, ...]:
        """The underlay addresses of the nodes with remote jobs (IPv4 ones: another node's
        heartbeat could carry anything, and one bad entry must not stop every render)."""
        with self._lock:
            found = {a for addresses in self._peers.values() for a in addresses}
        return tuple(sorted(a for a in found if _ipv4(a)))

    def hold_port(self) -> None:
        """Hold the overlay's UDP port from now on (port_hold.py), on a node with an underlay;
        tried again at each heartbeat and before each new network's port while it fails (a
        restarted worker's previous holder goes with its namespace, which the kernel may
        still be removing)."""
        if self.underlay() is None:
            return
        with self._hold_lock:  # the heartbeat's and a job's: one holder
            if self._hold is not None:
                return
            try:
                self._hold = port_hold.hold(self.cfg.vxlan_port)
            except NetworkError as exc:
                if str(exc) != self._hold_error:  # once per cause, not at every heartbeat
                    log.warning("%s: trying again at each heartbeat", exc)
                self._hold_error = str(exc)
                return
            if self._hold_error is not None:
                log.info("holding UDP port %d for the overlay now", self.cfg.vxlan_port)
            self._hold_error = None

    def stale(self, net: NetworkDef) -> bool:
        """Whether this network's port here carries another VNI than its definition's."""
        port = self._ports.get(net.name)  # no lock: a sync may hold it for seconds
        return port is not None and port.vni != net.overlay_vni

    def attached(self, network: str) -> bool:
        return network in self._ports or network in self._local_only

    def attach(self, net: NetworkDef, bridge: str, mtu: int) -> None:
        """Give a network's bridge its overlay port (when this node has an underlay)."""
        local = self.underlay()
        if local is None:
            if net.name not in self._local_only:
                log.warning("network %s stays on this host: no underlay address (set underlay_address)", net.name)
                self._local_only.add(net.name)
            return
        port = OverlayPort(net.name, vxlan_name(net.name), net.overlay_vni, bridge, mtu)
        with self._lock:
            if net.name in self._ports:
                return  # another job's setup made it while this one waited
            self.hold_port()
            ensure_device(port, local, self.cfg.vxlan_port)
            self._ports[net.name] = port
        try:
            self.sync([net.name])
        except Exception:
            with self._lock:  # the network's next job attaches again, not past a port never synced
                self._ports.pop(net.name, None)
            raise

    def adopt(self, networks: list[NetworkDef]) -> list[str]:
        """Take back the ports a previous worker left here for networks that still exist, as
        they are (bridge, MTU) where their VNI and local address are still right (others the
        network's next job remakes), so that syncs keep their entries in step: after a
        restart they kept the entries of remote jobs long gone, and the firewall's sets kept
        those jobs' MACs and nodes, until a job of the network started here (fleet run).
        Synced at once, and the firewall told (its sets, left by the previous worker, are
        rendered from what is now); returns the networks taken back."""
        local = self.underlay()
        if local is None:
            return []
        present = set(links.names_with_prefix(VXLAN_PREFIX, "vxlan"))
        taken = []
        with self._lock, IPRoute() as ipr:
            for net in networks:
                device = vxlan_name(net.name)
                if net.name in self._ports or device not in present:
                    continue
                found = ipr.link_lookup(ifname=device)
                if not found:
                    continue  # removed meanwhile
                link = ipr.get_links(found[0])[0]
                vxlan, master = _vxlan_of(ipr, found[0]), link.get_attr("IFLA_MASTER")
                if vxlan != (net.overlay_vni, local, VXLAN_DF_SET) or not master:
                    continue  # another VNI, local address or DF mode, or off its bridge: the next job remakes it
                bridge = str(ipr.get_links(master)[0].get_attr("IFLA_IFNAME"))
                mtu = int(link.get_attr("IFLA_MTU"))
                self._ports[net.name] = OverlayPort(net.name, device, vxlan[0], bridge, mtu)
                taken.append(net.name)
        if taken and not self.sync(taken):  # sync tells the firewall when what it lets in changed
            self.on_macs()
        return taken

    def reattach(self, bridges: set[str]) -> None:
        """Put the ports whose bridge was made again back on it (deleting a bridge frees its
        ports: the port itself, and its forwarding entries, stay)."""
        local = self.underlay()
        if local is None:
            return
        with self._lock:
            for port in [p for p in self._ports.values() if p.bridge in bridges]:
                try:
                    ensure_device(port, local, self.cfg.vxlan_port)
                except Exception as exc:  # noqa: BLE001 - the bridge could not be made, the port went meanwhile: the next beat
                    log.warning("overlay port %s: %s", port.device, exc)

    def detach(self, network: str) -> None:
        with self._lock:
            self._ports.pop(network, None)
            self._local_only.discard(network)
            changed = bool(self._macs.pop(network, None)) | bool(self._peers.pop(network, None))
            links.delete_link(vxlan_name(network))
        if changed:
            self.on_macs()

    def attached_networks(self) -> set[str]:
        """The networks this worker holds a port of (or keeps on this host)."""
        with self._lock:
            return {*self._ports, *self._local_only}

    def sweep(
        self, existing: list[str], in_use: set[str], attached: set[str], now: Callable[[], list[str]] | None = None
    ) -> None:
        """Remove overlay ports of networks that no longer exist (left by any worker), unless
        a job here still uses the network (as its bridge stays). A port this worker holds goes
        from its list too: one taken back at its start, of a network deleted before a job of
        it ran here, was made again each beat, on a bridge no longer there (fleet run).
        `attached`: those held before `existing` was read (a network made since, its port
        attached by its first job meanwhile, is not let go: review). `now`: the networks as
        defined now, read before a port is deleted (one made since `existing` was read may
        have had its port made meanwhile, which this deleted under its first job: review)."""
        kept = set(existing) | set(in_use)
        for network in attached - kept:
            self.detach(network)
        wanted = {vxlan_name(n) for n in kept}
        doomed = [
            name
            for name in links.names_with_prefix(VXLAN_PREFIX, "vxlan")
            if NETWORK_LINK.match(name) and name not in wanted
        ]
        if doomed and now is not None:
            wanted |= {vxlan_name(n) for n in now()}
        for name in doomed:
            if name not in wanted:
                links.delete_link(name)

    def sync(self, networks: list[str] | None = None) -> bool:
        """Bring the ports of these networks (default: all here) in step with Redis; whether
        what the firewall lets in changed (it was told: on_macs)."""
        with self._lock:
            ports = [p for n, p in self._ports.items() if networks is None or n in networks]
            if not ports:
                return False
            local = self.underlay()
            # one node's bad underlay (IPv6, a newline) failed every port's `bridge -batch` here
            # for good, and went into that batch as text (review): left out, said
            beats = self.store.live_nodes().items()
            underlays = {n: str(i["underlay"]) for n, i in beats if i.get("underlay") and _ipv4(str(i["underlay"]))}
            members = self.store.member_nodes([p.network for p in ports])
            changed, failures = False, []
            for port in ports:  # one port that fails does not hold up the others
                try:
                    if links.index_of(port.device) is None and local is not None:
                        ensure_device(port, local, self.cfg.vxlan_port)  # someone removed it
                    want = fdb_wanted(port.network, self.cfg.node, members.get(port.network, {}), underlays)
                    apply_fdb(fdb_batch(port.device, read_fdb(port.device), want))
                except Exception as exc:  # noqa: BLE001 - raised below, after the other ports
                    failures.append(exc)
                    continue
                macs, sources = remote_macs(port.device, want), peers(want)
                changed |= macs != self._macs.get(port.network, set())
                changed |= sources != self._peers.get(port.network, set())
                self._macs[port.network], self._peers[port.network] = macs, sources
        if changed:
            self.on_macs()
        for failure in failures[1:]:
            log.warning("overlay: %s", failure)
        if failures:
            raise failures[0]
        return changed
