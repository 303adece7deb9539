"""`Client().networks`: create, list, inspect and delete networks."""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from typing import Any

from joblet.api.networks import (
    BUILTINS,
    NetworkDef,
    NetworkStore,
    addresses_of,
    check,
    control_plane,
    fixed_ranges,
    holds_control_plane,
    host_prefixes,
    public_problem,
)
from joblet.api.store import Store
from joblet.api.store_ipam import IpamStore
from joblet.config import Settings
from joblet.errors import Conflict, NotFound, ValidationError
from joblet.names import VXLAN_OVERHEAD, bridge_name
from joblet.text import listed, shown


def fleet_prefixes(nodes: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The routes every live node published in its heartbeat, named by node: a network spans
    hosts, so it must clash with none of theirs (not only the routes of the machine of `rnx`)."""
    found: dict[str, str] = {}
    for node, info in sorted(nodes.items()):
        for label, cidr in dict(info.get("prefixes") or {}).items():
            found[f"{label} on node {node}"] = str(cidr)
    return found


def fleet_resolvers(nodes: dict[str, dict[str, Any]]) -> dict[str, str]:
    """{label: address/32} of the DNS servers each live node itself asks (its heartbeat's
    `resolvers`): a network over one took that node's lookups to its jobs (red-team run)."""
    found: dict[str, str] = {}
    for node, info in sorted(nodes.items()):
        for ns in info.get("resolvers") or ():
            try:
                found[f"the DNS server node {node} uses ({ns})"] = f"{ipaddress.IPv4Address(ns)}/32"
            except ValueError:  # IPv6, or a heartbeat that does not read: no IPv4 network holds it
                continue
    return found


def fleet_dns_check(name: str, cidr: str, nodes: dict[str, dict[str, Any]]) -> None:
    """Refuse a range holding a DNS server some live node gives its jobs (its heartbeat's
    `dns`), for a network without its own --dns: every job on it failed to start there
    (usability run: a network over 203.0.113.0/24, the workers' server 203.0.113.2)."""
    net = ipaddress.ip_network(cidr)

    def held(ns: object) -> bool:  # a heartbeat is anyone's who may write to Redis: one that does not read is none
        try:
            return isinstance(ns, str) and ipaddress.ip_address(ns) in net
        except ValueError:
            return False

    for node, info in sorted(nodes.items()):
        inside = [ns for ns in info.get("dns") or () if held(ns)]
        if inside:  # a clash with what exists, as one with a node's own resolvers (rnx exits 1)
            raise Conflict(
                f'failed to create network "{name}": CIDR {cidr} holds {inside[0]}, the DNS server jobs on '
                f"node {node} are given (their lookups would stay inside the network); give it --dns, "
                "or another CIDR"
            )


def fleet_mtu(nodes: dict[str, dict[str, Any]]) -> int | None:
    """The MTU a new network takes where the live nodes' overlays would give it different ones
    (each node's: its uplink's less the VXLAN header): the smallest, so every node agrees
    (large UDP between nodes of different MTUs fragmented in the underlay). None where they
    agree (or one node, or none with an overlay): each node's own, as before."""
    spanning = [info for info in nodes.values() if info.get("underlay") and isinstance(info.get("mtu"), int)]
    mtus = {info["mtu"] - VXLAN_OVERHEAD for info in spanning}
    return min(mtus) if len(mtus) > 1 else None


def fleet_mtu_check(name: str, mtu: int, nodes: dict[str, dict[str, Any]]) -> None:
    """Refuse an MTU some live node's uplink cannot carry through the overlay."""
    for node, info in sorted(nodes.items()):
        uplink = info.get("mtu")
        if info.get("underlay") and isinstance(uplink, int) and mtu > uplink - VXLAN_OVERHEAD:
            raise ValidationError(
                f'failed to create network "{name}": MTU {mtu} does not fit the '
                f"overlay on node {node} (uplink MTU {uplink} - {VXLAN_OVERHEAD}); "
                f"use at most {uplink - VXLAN_OVERHEAD}"
            )


class Networks:
    """Network operations of a Client."""

    def __init__(self, settings: Settings, jobs: Store, store: NetworkStore) -> None:
        self.settings = settings
        self.jobs = jobs
        self.store = store

    def create(
        self, name: str, cidr: str, internal: bool = False, dns: tuple[str, ...] = (), mtu: int | None = None
    ) -> NetworkDef:
        cidr = check(name, cidr, dns, mtu, internal)
        net = NetworkDef(name=name, cidr=cidr, internal=internal, dns=tuple(dns), mtu=mtu, created=time.time())
        cfg = self.settings
        self._dns_elsewhere(name, dns)
        endpoints = control_plane({"redis_url": cfg.redis_url, "broker_url": cfg.broker_url}, cfg.job_blocked_addresses)
        problem = holds_control_plane(cidr, addresses_of(endpoints))
        if not problem and not cfg.allow_public_networks:
            problem = public_problem(cidr, cfg.network_ranges)
        if problem:
            raise ValidationError(f'failed to create network "{name}": {problem}')
        nodes = self.jobs.live_nodes()
        if mtu is not None:
            fleet_mtu_check(name, mtu, nodes)
        elif (agreed := fleet_mtu(nodes)) is not None:
            net = dataclasses.replace(net, mtu=agreed)
        if not dns:
            fleet_dns_check(name, cidr, nodes)
        reserved = {
            **fixed_ranges(cfg.bridge_cidr, cfg.isolated_pool, cfg.job_blocked_networks),
            **host_prefixes(),
            **fleet_prefixes(nodes),
            **fleet_resolvers(nodes),
        }
        try:
            return self.store.create(net, reserved)
        except Conflict as exc:  # the guide's 10.0.0.0/8 and 172.16.0.0/12 hold both defaults
            moved = {"built-in network": "JOBLET_BRIDGE_CIDR", "isolated-mode pool": "JOBLET_ISOLATED_POOL"}
            hint = next((f"; set {v} on every worker to move it" for k, v in moved.items() if k in str(exc)), "")
            raise Conflict(f"{exc}{hint}") from None

    def _dns_elsewhere(self, name: str, dns: tuple[str, ...]) -> None:
        """A --dns server in the default bridge, the isolated pool or another user network is
        out of its jobs' reach (networks do not reach each other): it was taken, and every
        lookup hung 20 s (usability run). The cloud's DNS in job_blocked_networks is reached."""
        cfg = self.settings
        ranges = fixed_ranges(cfg.bridge_cidr, cfg.isolated_pool, ())
        ranges |= {f'network "{other.name}"': other.cidr for other in self.store.all() if other.name != name}
        for server in dns:
            address = ipaddress.ip_address(server)
            held = next((label for label, cidr in ranges.items() if address in ipaddress.ip_network(cidr)), None)
            if held is not None:
                raise ValidationError(
                    f'failed to create network "{name}": DNS server {server} is in {held} ({ranges[held]}), '
                    "which its jobs cannot reach: give a server outside joblet's networks, or one of its own jobs"
                )

    def list(self) -> list[dict[str, Any]]:
        """Built-ins first, then user networks, each with its count of live jobs."""
        counts: dict[str, int] = {}
        for rec in self.jobs.live_jobs():
            for net in rec.spec.network:
                counts[net] = counts.get(net, 0) + 1
        cfg = self.settings
        rows: list[dict[str, Any]] = [
            {"name": "bridge", "cidr": cfg.bridge_cidr, "bridge": cfg.bridge_name, "internal": False, "builtin": True},
            {"name": "isolated", "cidr": cfg.isolated_pool, "bridge": None, "internal": False, "builtin": True},
        ]
        rows += [
            {"name": n, "cidr": None, "bridge": None, "internal": n == "none", "builtin": True}
            for n in BUILTINS
            if n not in ("bridge", "isolated")
        ]
        rows += [{**net.to_dict(), "bridge": bridge_name(net.name), "builtin": False} for net in self.store.all()]
        for row in rows:  # every row with every key (a built-in's dns: the worker's; mtu: its uplink's)
            row.setdefault("dns", [])
            row.setdefault("mtu", None)
            row.setdefault("vni", None)
            row.setdefault("created", None)  # epoch seconds, as a volume's; --json prints ISO
            row["jobs"] = counts.get(row["name"], 0)
        return rows

    def inspect(self, name: str) -> dict[str, Any]:
        row = next((r for r in self.list() if r["name"] == name), None)
        if row is None:
            other_case = name != name.lower() and name.lower() in BUILTINS  # `inspect BRIDGE`
            builtin = f" (the built-in one is {name.lower()!r})" if other_case else ""
            try:
                self.store.get(name)  # one that does not read says so (listings leave it out)
            except NotFound as exc:
                raise NotFound(f"{exc}{builtin}") from None
            raise NotFound(f"no such network: {shown(name)}")  # store.get refused an empty name
        row["job_list"] = [
            {"id": r.id, "name": r.name, "status": r.status.value, "ip": r.ips.get(name), "node": r.node}
            for r in self.jobs.live_jobs()
            if name in r.spec.network
        ]
        return row

    def delete(self, name: str) -> None:
        if not name:
            raise ValidationError("no network name given")  # a usage error: exit 2
        if name.lower() in BUILTINS:  # any case: the names are reserved so (`delete NONE` read no such network)
            raise ValidationError(f'failed to delete network "{shown(name)}": it is built in')
        try:
            self.store.get(name)
        except ValidationError:
            pass  # a definition that does not read (written by other means) can still go
        users = [r.short_id for r in self.jobs.unfinished_jobs(indexed=False) if name in r.spec.network]
        if not users:  # none was seen: gone at once, unless one took an address meanwhile
            ipam = IpamStore(self.settings.redis_url, self.settings.key_prefix, self.jobs.redis)
            users = [job_id[:12] for job_id in ipam.delete_network(name)]
        if users:
            raise Conflict(
                f'failed to delete network "{name}": {len(users)} job(s) use it ({listed(users)}); stop them first'
            )
        self.jobs.announce("network-deleted", name=name)  # every host drops its bridge
