"""joblet's nftables tables, `inet joblet` and `arp joblet` (here) and `bridge joblet`
(portsec.py): rendered pure, applied together in one atomic batch.

The ruleset text starts by creating then deleting each table, so applying it replaces both
tables atomically and repeatably; a broken file is rejected with the live rules intact.

Besides isolation between networks it holds the guards no job may pass whatever its network:
- `blocked`/`blocked6`: the broker and state store (address . TCP port), dropped from job
  interfaces in the forward hook, wherever they are (the host's own addresses are covered by
  `input`);
- `no_jobs`/`no_jobs6`: networks no job may reach but for DNS (port 53), the cloud metadata
  services by default (job_blocked_networks): a job reading the host's instance credentials
  would act as the host;
- `iso_src`: the one source address each isolated (routed) link may send from;
- host-mode jobs share the host's namespace: `output` rules match their cgroup
  (`socket cgroupv2`, which must exist when the rule is loaded) and drop their connections to
  the control plane's addresses, and to its ports on any local address (a broker on this host
  answers on all of them: 127.0.0.1, ::1, the LAN address), and anything they send into the
  jobs' bridges and isolated links or to the overlay's port (the host may reach jobs; a
  host-mode job is not the host);
  an `input` rule drops connections to their sockets on the control plane's ports (one that
  took the broker's port while it restarts would be sent the worker's password);
- `overlay_peers`: the overlay's UDP port takes datagrams only from the nodes that hold a
  network's remote jobs (overlay.py), not from any host that can reach it; and on each node
  only root's sockets and the kernel's send to that port (`joblet:overlay-root`): another
  user of a node would otherwise inject frames into a network through its peers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from joblet.errors import NetworkError
from joblet.names import BRIDGED_VETH_PREFIX, NETWORK_BRIDGE_PREFIX, TABLE, VXLAN_PREFIX
from joblet.network_agent import nftlib, portsec

_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")
_CGROUP = re.compile(r"^[A-Za-z0-9_.@:/-]{1,512}\Z")


@dataclass(frozen=True)
class FwNetwork:
    """What the firewall needs to know of one bridged joblet network."""

    name: str
    bridge: str
    cidr: str
    nat: bool = True

    def checked(self) -> FwNetwork:
        # nft treats a bad address as a host name and looks it up: validate before rendering.
        ipaddress.IPv4Network(self.cidr, strict=True)
        if not _IFNAME.match(self.bridge):
            raise NetworkError(f"invalid bridge name {self.bridge!r}")
        return self


@dataclass(frozen=True)
class Guards:
    """What every job is held to, whatever its network (see the module docstring)."""

    blocked: tuple[tuple[str, int], ...] = ()  # (IPv4 or IPv6 address, TCP port) no job may reach
    ports: tuple[portsec.Port, ...] = ()  # the host ends of the jobs' links here
    host_cgroup: tuple[str, int] | None = None  # host-mode jobs: (path under /sys/fs/cgroup, level)
    overlay: tuple[tuple[str, str], ...] = ()  # (overlay port, remote job MAC) let in (overlay.py)
    vxlan_port: int | None = None  # the overlay's UDP port: no job sends to it (frame injection)
    overlay_peers: tuple[str, ...] = ()  # IPv4 underlay addresses it takes datagrams from (overlay.py)
    no_jobs: tuple[str, ...] = ()  # networks (IPv4 or IPv6) no job may reach, but for DNS
    guests: tuple[str, ...] = ()  # IPv4 networks of the host's containers and VMs (host_addrs.py)

    def checked(self) -> Guards:
        for network in self.no_jobs:  # nft would take a bad address for a host name
            ipaddress.ip_network(network, strict=True)
        for address, port in self.blocked:
            ipaddress.ip_address(address)
            if not 0 < port < 65536:
                raise NetworkError(f"invalid port {port} for {address}")
        for address in self.overlay_peers:
            ipaddress.IPv4Address(address)
        for network in self.guests:
            ipaddress.IPv4Network(network, strict=True)
        if self.host_cgroup is not None and not _CGROUP.match(self.host_cgroup[0]):
            raise NetworkError(f"invalid cgroup path {self.host_cgroup[0]!r}")
        return self


def _set(name: str, kind: str, items: list[str], flags: str = "") -> str:
    return f"  set {name} {{ type {kind};{flags}{portsec.elements(items)} }}"


# A job's packet to a `no_jobs` network: DNS (UDP or TCP port 53) passes, as some clouds'
# resolvers live there (GCP's at 169.254.169.254, AWS's at 169.254.169.253, Azure's at
# 168.63.129.16); anything else is dropped.
_NOT_DNS = ("meta l4proto != { tcp, udp }", "meta l4proto { tcp, udp } th dport != 53")


def _no_jobs_rules(job: str) -> list[str]:
    """Matched on the address the job asked for (`ct original`), before any DNAT: hosts
    often redirect the metadata address to a local or remote proxy, which would not be in
    the set."""
    return [
        f'{job} ct original {family} daddr @{name} {match} drop comment "joblet:no-metadata"'
        for family, name in (("ip", "no_jobs"), ("ip6", "no_jobs6"))
        for match in _NOT_DNS
    ]


def _job_links(nets: list[FwNetwork], iso: str | None) -> list[str]:
    """What `iifname`/`oifname` match for the jobs' links: the networks' bridges as one set,
    the isolated links' prefix."""
    bridges = ", ".join(f'"{n.bridge}"' for n in nets)
    return ([f"{{ {bridges} }}"] if nets else []) + ([iso] if iso else [])


def _off_route(nets: list[FwNetwork], iso: str | None, pool: str | None) -> list[str]:
    """A network's addresses are reached through its bridge (the isolated pool's through its
    links) or not at all: with the bridge gone (deleted by hand, or by another tool) its
    subnet's traffic followed the default route out of the host, to whoever holds those
    addresses there (a UX test's job reached an outside server that way)."""
    rules = [f'ip daddr {n.cidr} oifname != "{n.bridge}" drop comment "joblet:off-route"' for n in nets]
    if iso and pool:
        rules.append(f'ip daddr {pool} oifname != {iso} drop comment "joblet:off-route"')
    return rules


def _guard_rules(
    nets: list[FwNetwork], iso: str | None, guards: Guards, pool: str | None = None
) -> tuple[list[str], list[str]]:
    """Forward rules that come before anything else, and the output chain's rules."""
    first: list[str] = []
    output: list[str] = []
    sources = _job_links(nets, iso)
    for src in sources:  # jobs never reach the broker, established or not, nor through a DNAT
        for match in _BROKER:  # to it (a published port of a container: review)
            first.append(f'iifname {src} {match} drop comment "joblet:no-broker"')
    for src in sources if guards.no_jobs else []:
        first.extend(_no_jobs_rules(f"iifname {src}"))
    for src in sources:  # nor the host's containers and VMs, by their addresses (the broker's too),
        for match in _NOT_DNS:  # but for DNS, as the metadata ranges (a resolver in a container)
            first.append(f'iifname {src} ip daddr @guests {match} drop comment "joblet:no-guests"')
    first.extend(_overlay_forward(sources, guards.vxlan_port))
    first.extend(_iso_port_security(iso))
    leaks = _off_route(nets, iso, pool)
    first.extend(leaks)
    if guards.host_cgroup is not None:
        path, level = guards.host_cgroup
        job = f'socket cgroupv2 level {level} "{path}"'
        for match in (*_BROKER, "fib daddr type local tcp dport @blocked_ports"):
            output.append(f'{job} {match} drop comment "joblet:no-broker"')
        if guards.no_jobs:
            output.extend(_no_jobs_rules(job))
        for dest in sources:  # they are the host's network, not a job's: no way into jobs' links
            output.append(f'{job} oifname {dest} drop comment "joblet:host-mode"')
        if guards.vxlan_port:  # nor into them through the overlay, here or on another node
            output.append(f'{job} udp dport {guards.vxlan_port} drop comment "joblet:no-overlay"')
    if guards.vxlan_port:  # a peer node takes VXLAN from this node's address: only the kernel's
        # own VXLAN sockets and root send to it, not any user of this host (meta skuid matches
        # no kernel socket: their packets pass; their VXLAN elsewhere, not to a peer, passes)
        peer = f"ip daddr @overlay_peers udp dport {guards.vxlan_port}"
        output.append(f'{peer} meta skuid != 0 drop comment "joblet:overlay-root"')
    output.extend(f"fib daddr type != local {rule}" for rule in leaks)  # the host's (not its own addresses)
    return first, output


def _overlay_forward(sources: list[str], vxlan_port: int | None) -> list[str]:
    """No job sends to the overlay's port (a crafted VXLAN packet would land on a network's
    bridge), nor may the host's containers and VMs send it to a peer, NATed to the node's
    address (their own VXLAN elsewhere, a swarm's or a CNI's, passes)."""
    if not vxlan_port:
        return []
    rules = [f'iifname {src} udp dport {vxlan_port} drop comment "joblet:no-overlay"' for src in sources]
    guests = f'ip saddr @guests ip daddr @overlay_peers udp dport {vxlan_port} drop comment "joblet:no-overlay"'
    return [*rules, guests, _overlay_rpf(vxlan_port)]


def _overlay_rpf(vxlan_port: int) -> str:
    """VXLAN comes in where the route back to its sender goes out, or not at all (a strict
    reverse-path check, for this port only): a container of the host forged a peer node's
    address, which overlay_peers takes, and put frames on a network here and, forwarded, on
    a peer (red-team run; the host's loose rp_filter let it in)."""
    return f'udp dport {vxlan_port} fib saddr . iif oif missing drop comment "joblet:overlay-rpf"'


# the broker's address and port as the packet has them, and as its sender asked (`ct
# original`: before a DNAT, which the host's nat hooks do before the filter's forward and
# output, e.g. Docker's for a broker in a container published on a host address)
_BROKER = (
    "ip daddr . tcp dport @blocked",
    "ip6 daddr . tcp dport @blocked6",
    "meta l4proto tcp ct original ip daddr . ct original proto-dst @blocked",
    "meta l4proto tcp ct original ip6 daddr . ct original proto-dst @blocked6",
)

# after conntrack (-200), before the host's DNAT (dstnat, -100)
BEFORE_DNAT = -150


def _no_host_before_dnat(nets: list[FwNetwork], iso: str | None) -> list[str]:
    """A chain dropping what a job starts towards the host's own addresses before any DNAT:
    the input chain's "no host access" never saw a port the host forwards on (a container's
    published port: the packet goes to forward, past input) (review)."""
    rules = [
        f'iifname {src} fib daddr type local ct state new drop comment "joblet:no-host-access"'
        for src in _job_links(nets, iso)
    ]
    return _chain("before_dnat", f"filter hook prerouting priority {BEFORE_DNAT}", rules) if rules else []


def _iso_port_security(iso: str | None) -> list[str]:
    """A routed (isolated) link sends from its job's address only, and no IPv6: in forward,
    and in input too, where a forged source met `ct state established` first and went into
    the host's own flows (red-team run: a UDP reply forged as the host's upstream's)."""
    if iso is None:
        return []
    return [
        f'iifname {iso} iifname . ip saddr != @iso_src drop comment "joblet:port-security"',
        f'iifname {iso} meta nfproto ipv6 drop comment "joblet:port-security"',
    ]


# before conntrack's defragmentation (-400, NF_IP_PRI_CONNTRACK_DEFRAG), which would hold them
BEFORE_DEFRAG = -450


def _no_fragments(iso: str | None) -> list[str]:
    """A chain dropping every IPv4 fragment from a routed (isolated) link (portsec.FRAGMENT:
    bridged ports drop theirs in `bridge joblet`); none without the isolated pool."""
    if iso is None:
        return []
    rule = f'iifname {iso} {portsec.FRAGMENT} drop comment "joblet:no-fragments"'
    return _chain("prerouting", f"filter hook prerouting priority {BEFORE_DEFRAG}", [rule])


def _established(nets: list[FwNetwork], iso: str | None) -> list[str]:
    """Replies pass; ICMP errors conntrack calls related pass unless they come from a job.
    Conntrack relates an error to a flow by the packet it quotes, whoever sends it: a job
    that quoted another network's (or the host's) flow, to the host's masquerade address, had
    its error turned back to that flow past the rules between networks (red-team run). From a
    job they meet the rules a new packet meets: within its network, or out to the world."""
    from_jobs = [f"iifname != {links}" for links in _job_links(nets, iso)]
    return [
        'ct state established accept comment "joblet:established"',
        " ".join(["ct state related", *from_jobs, 'accept comment "joblet:related"']),
    ]


def render(
    networks: list[FwNetwork],
    isolated_pool: str | None = None,
    isolated_prefix: str = "ji",
    guards: Guards | None = None,
) -> str:
    """Both of joblet's tables for these networks, the isolated pool (if given) and guards."""
    nets = [n.checked() for n in networks]
    guards = (guards or Guards()).checked()
    iso = f'"{isolated_prefix}*"' if isolated_pool else None
    first, output = _guard_rules(nets, iso, guards, isolated_pool)
    forward = [*first, *_established(nets, iso)]
    if isolated_pool:
        ipaddress.IPv4Network(isolated_pool, strict=True)
        # nothing opens a connection to an isolated job: not the world, not other jobs
        forward.append(f'oifname {iso} drop comment "joblet:isolated"')
    nat = []
    for n in nets:
        tag = f'comment "joblet:net:{n.name}"'
        forward.append(f'iifname "{n.bridge}" oifname "{n.bridge}" accept {tag}')
        others = [o.bridge for o in nets if o.bridge != n.bridge]
        if others:  # traffic between two joblet networks is dropped, both ways
            names = ", ".join(f'"{b}"' for b in others)
            forward.append(f'iifname "{n.bridge}" oifname {{ {names} }} drop {tag}')
        if n.nat:
            forward.append(f'iifname "{n.bridge}" accept {tag}')
            nat.append(f'ip saddr {n.cidr} oifname != "{n.bridge}" masquerade random {tag}')
        else:
            forward.append(f'iifname "{n.bridge}" drop {tag}')
        forward.append(f'oifname "{n.bridge}" drop {tag}')  # isolated jobs included
    inbound = _input_rules(nets, iso, guards)
    if iso:
        forward.append(f'iifname {iso} accept comment "joblet:isolated"')
        nat.append(f'ip saddr {isolated_pool} oifname != {iso} masquerade random comment "joblet:isolated"')
    iso_src = [f'"{p.ifname}" . {p.address}' for p in guards.ports if not p.checked().bridged]
    return "\n".join(
        [
            f"table inet {TABLE} {{}}",
            f"delete table inet {TABLE}",
            f"table inet {TABLE} {{",
            _set("blocked", "ipv4_addr . inet_service", [f"{a} . {p}" for a, p in guards.blocked if ":" not in a]),
            _set("blocked6", "ipv6_addr . inet_service", [f"{a} . {p}" for a, p in guards.blocked if ":" in a]),
            _set("blocked_ports", "inet_service", sorted({str(p) for _, p in guards.blocked}, key=int)),
            _set("iso_src", "ifname . ipv4_addr", iso_src),
            _set("no_jobs", "ipv4_addr", _collapsed(guards.no_jobs, 4), " flags interval;"),
            _set("no_jobs6", "ipv6_addr", _collapsed(guards.no_jobs, 6), " flags interval;"),
            _set("overlay_peers", "ipv4_addr", sorted(set(guards.overlay_peers))),
            _set("guests", "ipv4_addr", _collapsed(guards.guests, 4), " flags interval;"),
            *_no_fragments(iso),
            *_no_host_before_dnat(nets, iso),
            *_chain("forward", "filter hook forward priority filter", forward),
            *_chain("input", "filter hook input priority filter", inbound),
            *_chain("output", "filter hook output priority filter", output),
            *_chain("postrouting", "nat hook postrouting priority srcnat", nat),
            "}",
            *_arp_table(),
            "",
        ]
    ) + portsec.render_bridge(list(guards.ports), guards.overlay)


def _input_rules(nets: list[FwNetwork], iso: str | None, guards: Guards) -> list[str]:
    """The input chain: what of the jobs' traffic the host itself takes (replies only)."""
    # a bridge hands frames to the link-local group addresses (LLDP's 01:80:c2:00:00:0e)
    # up to the host on the port they came in on, past the bridge's own hooks: UDP to any
    # host address, with any source, came through that way (and, forged as a peer node's,
    # VXLAN into another network). No packet of the host's arrives on a job's bridge port,
    # nor on an overlay port (nothing from the overlay reaches the node).
    inbound = [*_FROM_PORTS, *_iso_port_security(iso)]
    if guards.vxlan_port:  # VXLAN from anyone but the nodes holding remote jobs: injection
        peers = f"udp dport {guards.vxlan_port} ip saddr != @overlay_peers"
        inbound.append(_overlay_rpf(guards.vxlan_port))
        inbound.append(f'{peers} drop comment "joblet:overlay-peers"')
    if guards.host_cgroup is not None:  # a host-mode job listening on a broker's port (while it
        # restarts) would be sent the worker's password: nothing reaches such a listener
        path, level = guards.host_cgroup
        job = f'socket cgroupv2 level {level} "{path}"'
        inbound.append(f'tcp dport @blocked_ports {job} drop comment "joblet:no-broker"')
    if nets:  # jobs never open connections to the host itself (the broker, other gateways)
        inbound.extend(_established(nets, iso))
        inbound.append(f'iifname {_job_links(nets, None)[0]} drop comment "joblet:no-host-access"')
    if iso:
        inbound.append(f'iifname {iso} drop comment "joblet:no-host-access"')
    return inbound


# nothing the host takes arrives on a job's bridge port or an overlay port (inet and arp)
_FROM_PORTS = tuple(
    f'iifname "{prefix}*" drop comment "joblet:no-host-access"' for prefix in (BRIDGED_VETH_PREFIX, VXLAN_PREFIX)
)


def _arp_table() -> list[str]:
    """`arp joblet`: the ARP half of the input rule above. What a bridge hands up from a
    job's or an overlay port (link-local group addresses, past the bridge's hooks) is ARP
    too, which the inet family does not see: a job's forged requests were answered by the
    host and filled its neighbour table (shared by every namespace) with any address."""
    return [
        f"table arp {TABLE} {{}}",
        f"delete table arp {TABLE}",
        f"table arp {TABLE} {{",
        *_chain("input", "filter hook input priority filter", list(_FROM_PORTS)),
        "}",
    ]


def _collapsed(networks: tuple[str, ...], version: int) -> list[str]:
    """One family's networks with overlaps merged (nft refuses overlapping intervals)."""
    nets = list(map(ipaddress.ip_network, networks))
    if version == 4:
        return [str(n) for n in ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network))]
    return [str(n) for n in ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network))]


def _chain(name: str, hook: str, rules: list[str]) -> list[str]:
    return [f"  chain {name} {{", f"    type {hook}; policy accept;", *(f"    {rule}" for rule in rules), "  }"]


def apply(ruleset: str) -> None:
    """Load a ruleset in one transaction (atomic: all or nothing)."""
    rc, error = nftlib.run(ruleset)
    if rc != 0:
        raise NetworkError(f"failed to load nftables rules: {error}")


FAMILIES = ("inet", "arp", "bridge", "ip")  # `ip joblet`: the connection caps (render_caps)


def table_exists(caps: bool = True) -> bool:
    """All of joblet's tables are loaded (someone may flush the ruleset or delete one); the
    caps' too unless `caps` is off (they could not be loaded on this host)."""
    return all(has_table(family) for family in FAMILIES if caps or family != "ip")


def has_table(family: str) -> bool:
    return nftlib.run(f"list table {family} {TABLE}")[0] == 0


RULED = ("inet", "arp", "bridge", "ip")  # joblet's tables; of `ip joblet` (the caps) its chains only


def loaded_rules() -> dict[str, str]:
    """Joblet's tables as loaded now, what must not change between loads ({family/part:
    text}): each table's flags, each chain's type, policy and rules, the elements of the
    sets only a load changes (STATIC_SETS). A flushed chain (`nft flush chain ...`, a
    tool's cleanup) left its table there with a policy accept, and the check of the tables
    alone saw nothing amiss; so did a table set dormant, a rule replaced in place, or a set's
    element swapped for another (reviews: isolation, the broker drops and port security off
    until some other change rendered them again)."""
    found: dict[str, str] = {}
    for family in RULED:
        rc, text = nftlib.listing(f"list table {family} {TABLE}")
        if rc == 0:
            found.update(rules_of(family, text))
    return found


# sets whose elements change only when the tables are loaded whole (not per job): flushed,
# the broker's or the metadata service's drop matched nothing (review)
STATIC_SETS = ("blocked", "blocked6", "blocked_ports", "no_jobs", "no_jobs6", "guests")
_COUNTER = re.compile(r"counter packets \d+ bytes \d+")


def rules_of(family: str, listing: str) -> dict[str, str]:
    """{family/table: its flags, family/chain NAME: its lines, family/set NAME: its elements
    (STATIC_SETS; no set of `ip joblet`, whose elements are its live counts)} of one table's
    listing (pure)."""
    found: dict[str, str] = {f"{family}/table": ""}
    part: str | None = None
    for line in listing.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "chain" and words[2] == "{":
            part = f"{family}/chain {words[1]}"
            found[part] = ""
        elif len(words) == 3 and words[0] == "set" and words[2] == "{":
            part = f"{family}/set {words[1]}" if words[1] in STATIC_SETS and family != "ip" else "-"
            found[part] = ""
        elif words == ["}"]:
            part = None
        elif part is not None:
            found[part] += " ".join(_COUNTER.sub("counter", line).split()) + "\n"
        elif words and words[0] == "flags":
            found[f"{family}/table"] += " ".join(words)
    found.pop("-", None)
    return found


def render_caps(default_bridge: str, isolated_prefix: str, per_job: int, all_jobs: int) -> str:
    """`ip joblet`: caps on the connections jobs have in the host's connection tracking
    table, shared by the whole host: a job sending UDP to every port of a host that answers
    filled its 262,144 entries, and the host's own connections (its Redis, ssh) and other
    jobs' failed until they expired (red-team run). Each job address may have `per_job`
    tracked at once, all jobs together `all_jobs` (0: no cap); new ones past a cap are
    dropped. A table apart from `inet joblet`, made once and not rendered again with it: its
    counts live in its sets, which a table's renewal would empty. It matches what comes in
    on any job link by name (the default bridge, jb*, the isolated links), after `inet
    joblet` has let it through (priority filter + 1): only connections that go somewhere count.
    Each connection is counted at its first packet, while its entry is unconfirmed: `ct state
    new` matches every packet of one not answered yet (a SYN retransmitted to a full backlog,
    a one-way UDP flow), and each walked its key's list of up to `per_job` (and `all_jobs`)
    entries in softirq, outside every job's CPU limit: two jobs held to 10 % each took 1.6 of
    a host's 2 cores (red-team run; 79 s of softirq in 15 s, 0.8 s counted once)."""
    if not _IFNAME.match(default_bridge) or not _IFNAME.match(isolated_prefix):
        raise NetworkError(f"invalid link name {default_bridge!r} or {isolated_prefix!r}")
    links = [f'"{default_bridge}"', f'"{NETWORK_BRIDGE_PREFIX}*"', f'"{isolated_prefix}*"']
    caps = [f"@job_flows {{ ip saddr ct count over {per_job} }}"] if per_job else []
    # one element for all (every packet here is IPv4): one count across the rules
    caps += [f"@all_flows {{ ct l3proto ct count over {all_jobs} }}"] if all_jobs else []
    first = "ct state new ct status & confirmed == 0"
    rules = [f'iifname {link} {first} add {cap} drop comment "joblet:flow-cap"' for link in links for cap in caps]
    return "\n".join(
        [
            f"table ip {TABLE} {{}}",
            f"delete table ip {TABLE}",
            f"table ip {TABLE} {{",
            "  set job_flows { type ipv4_addr; size 65535; flags dynamic; }",
            "  set all_flows { type nf_proto; size 4; flags dynamic; }",
            *_chain("forward", "filter hook forward priority filter + 1", rules),
            "}",
            "",
        ]
    )
