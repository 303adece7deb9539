"""The network plan of one job (pure): names, addresses, routes, MACs, tc rates and the files
it gets, computed by `make_plan` from the job's networks, what the worker knows of the host
and the networks (NetFacts), and the addresses IPAM reserved.

The same plan drives setup and teardown and is kept in the host journal, so teardown never
guesses (STYLE.md 6). Kernel names derive from the job id: a restarted worker finds them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from joblet.api.models import SHORT_ID_RE
from joblet.api.networks import NetworkDef
from joblet.names import bridge_name, host_veth_name, name_key
from joblet.network_agent.ipam import P2pPool, Subnet, to_str
from joblet.network_agent.portsec import mac_for


class NetFacts(BaseModel):
    """What planning needs to know, read before it: the uplink, the built-in ranges, the
    definitions of the user networks a job names, and the DNS servers jobs get by default."""

    model_config = ConfigDict(frozen=True)

    mtu: int
    network_mtu: int | None = None  # user networks without their own: less the overlay's 50
    bridge: str
    bridge_cidr: str
    isolated_pool: str
    networks: dict[str, NetworkDef] = {}
    nameservers: tuple[str, ...] = ()


class Attachment(BaseModel):
    """One interface of a job: on a bridge, or point-to-point with the host (isolated)."""

    model_config = ConfigDict(frozen=True)

    network: str
    bridge: str  # "" for a point-to-point link
    host_ifname: str
    ifname: str
    address: str
    address_int: int  # the IPAM slot: the address (bridged) or the /30's index (isolated)
    prefixlen: int
    gateway: str
    mtu: int
    host_address: str | None = None  # the host end's address on a point-to-point link
    mac: str | None = None  # the job end's MAC (bridged links; port security checks it)
    routed: bool = True  # may carry the job's default route: not an internal network's (no route out)


class NetPlan(BaseModel):
    """Everything joblet builds for one job's network, and so everything it must remove."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    hostname: str
    mode: str
    attachments: tuple[Attachment, ...] = ()
    nameservers: tuple[str, ...] = ()
    rate_in: int | None = None  # bits/s into the job (tc, see shaping.py)
    rate_out: int | None = None  # bits/s out of the job
    networks: tuple[NetworkDef, ...] = ()  # the user networks whose bridges it needs

    @property
    def isolated_netns(self) -> bool:
        return self.mode != "host"

    @property
    def ips(self) -> dict[str, str]:
        return {a.network: a.address for a in self.attachments}

    def reserved(self) -> dict[str, int]:
        """The address slots this plan holds, per network (what IPAM must free)."""
        return {a.network: a.address_int for a in self.attachments}

    def hosts_file(self, peers: dict[str, str] | None = None) -> str:
        """/etc/hosts: localhost, the job itself, then its peers (name -> address)."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        own = self.attachments[0].address if self.attachments else "127.0.1.1"
        lines.append(f"{own}\t{self.hostname}")
        names: dict[str, list[str]] = {}  # a peer's address: its names, its short id last
        for name, address in sorted((peers or {}).items(), key=lambda item: (_is_short_id(item[0]), item[0])):
            if name != name_key(self.hostname):  # peers' names are keys (store.resolve_names)
                names.setdefault(address, []).append(name)
        # one line an address, its name first: a reverse lookup takes a line's first name, and
        # a peer's short id sorted before its name (`ping db`: "64 bytes from 63534bbe5bd3")
        lines += [f"{address}\t{' '.join(each)}" for address, each in sorted(names.items(), key=_named_first)]
        return "\n".join(lines) + "\n"

    def resolv_file(self) -> str | None:
        """The job's resolv.conf: its network's --dns, else the worker's servers; for a job on
        --internal networks only, none without one of theirs: it reaches no server, and every
        lookup of a name not in /etc/hosts hung 20 s on the worker's (usability run). With
        no server named the resolver asks the job's own loopback, and fails at once."""
        if not self.attachments:
            return None
        if not any(a.routed for a in self.attachments) and not any(n.dns for n in self.networks):
            return NO_DNS
        if not self.nameservers:
            return None
        return "".join(f"nameserver {ns}\n" for ns in self.nameservers)


NO_DNS = (
    "# joblet: this job's networks are --internal and name no DNS server: its peers' names are\n"
    "# in /etc/hosts (rnx network create NAME --internal --dns=ADDRESS of one of its jobs)\n"
)


def _named_first(line: tuple[str, list[str]]) -> tuple[bool, list[str]]:
    return _is_short_id(line[1][0]), line[1]


def _is_short_id(name: str) -> bool:
    return SHORT_ID_RE.match(name) is not None


def wants_addresses(networks: tuple[str, ...]) -> list[str]:
    """The networks a job needs an address (or an isolated /30) in."""
    return [] if networks in (("none",), ("host",)) else list(networks)


def job_links(job_id: str, networks: tuple[str, ...]) -> tuple[list[str], list[tuple[str, str]]]:
    """The host link names and (network, MAC) pairs a job's plan will hold (make_plan)."""
    wanted = wants_addresses(networks)
    return [host_veth_name(job_id, n) for n in wanted], [(n, mac_for(job_id, n)) for n in wanted if n != "isolated"]


def make_plan(
    job_id: str,
    hostname: str,
    networks: tuple[str, ...],
    facts: NetFacts,
    reserved: dict[str, int],
    rate_in: int | None = None,
    rate_out: int | None = None,
) -> NetPlan:
    """The whole plan, from what was read and reserved before (no I/O)."""
    if networks in (("none",), ("host",)):
        return NetPlan(job_id=job_id, hostname=hostname, mode=networks[0])
    rates = {"rate_in": rate_in, "rate_out": rate_out}
    if networks == ("isolated",):
        return NetPlan(
            job_id=job_id,
            hostname=hostname,
            mode="isolated",
            nameservers=facts.nameservers,
            attachments=(_p2p(job_id, facts, reserved["isolated"]),),
            **rates,
        )
    attachments = tuple(_bridged(job_id, name, i, facts, reserved[name]) for i, name in enumerate(networks))
    user = tuple(facts.networks[n] for n in networks if n in facts.networks)
    dns = next((n.dns for n in user if n.dns), ()) or facts.nameservers
    return NetPlan(
        job_id=job_id,
        hostname=hostname,
        mode=networks[0],
        attachments=attachments,
        nameservers=dns,
        networks=user,
        **rates,
    )


def _p2p(job_id: str, facts: NetFacts, slot: int) -> Attachment:
    pool = P2pPool(facts.isolated_pool)
    return Attachment(
        network="isolated",
        bridge="",
        host_ifname=host_veth_name(job_id, "isolated"),
        ifname="eth0",
        address=pool.job_end(slot),
        address_int=slot,
        prefixlen=30,
        gateway=pool.host_end(slot),
        mtu=facts.mtu,
        host_address=pool.host_end(slot),
    )


def _bridged(job_id: str, name: str, index: int, facts: NetFacts, address: int) -> Attachment:
    net = facts.networks.get(name)
    subnet = Subnet(net.cidr if net else facts.bridge_cidr)
    mtu = ((net.mtu or facts.network_mtu) if net else None) or facts.mtu
    return Attachment(
        network=name,
        bridge=bridge_name(name, facts.bridge),
        host_ifname=host_veth_name(job_id, name),
        ifname=f"eth{index}",
        address=to_str(address),
        address_int=address,
        prefixlen=subnet.prefixlen,
        gateway=subnet.gateway,
        mtu=mtu,
        mac=mac_for(job_id, name),
        routed=not (net and net.internal),
    )
