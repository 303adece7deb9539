"""The network plan of one job (pure): names, addresses, routes and the files it gets.

The same plan drives setup and teardown and is kept in the host journal, so teardown never
guesses (STYLE.md 6). Kernel names derive from the job id: a restarted worker finds them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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


class NetPlan(BaseModel):
    """Everything joblet builds for one job's network, and so everything it must remove."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    hostname: str
    mode: str
    attachments: tuple[Attachment, ...] = ()
    nameservers: tuple[str, ...] = ()

    @property
    def isolated_netns(self) -> bool:
        return self.mode != "host"

    @property
    def ips(self) -> dict[str, str]:
        return {a.network: a.address for a in self.attachments}

    def batch(self) -> str:
        """`ip -batch` lines run inside the job's namespace before its command starts."""
        lines = ["link set lo up"]
        for i, att in enumerate(self.attachments):
            lines.append(f"link set {att.ifname} up")
            lines.append(f"addr add {att.address}/{att.prefixlen} dev {att.ifname}")
            if i == 0:
                lines.append(f"route add default via {att.gateway} dev {att.ifname}")
        return "\n".join(lines) + "\n"

    def hosts_file(self, peers: dict[str, str] | None = None) -> str:
        """/etc/hosts: localhost, the job itself, then its peers (name -> address)."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        own = self.attachments[0].address if self.attachments else "127.0.1.1"
        lines.append(f"{own}\t{self.hostname}")
        for name, address in sorted((peers or {}).items()):
            if name != self.hostname:
                lines.append(f"{address}\t{name}")
        return "\n".join(lines) + "\n"

    def resolv_file(self) -> str | None:
        if not self.attachments or not self.nameservers:
            return None
        return "".join(f"nameserver {ns}\n" for ns in self.nameservers)

