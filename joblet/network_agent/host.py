"""Facts and settings of the host's own network: ip_forward and DNS upstreams."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from joblet.config import Settings
from joblet.errors import NetworkError

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
RESOLV_CANDIDATES = (
    Path("/run/systemd/resolve/resolv.conf"),  # systemd-resolved's real upstreams, not its stub
    Path("/etc/resolv.conf"),
)


def ensure_ip_forward(path: Path = IP_FORWARD) -> None:
    """Turn IPv4 forwarding on if something turned it off; fail loudly if it cannot be."""
    if path.read_text().strip() == "1":
        return
    try:
        path.write_text("1\n")
    except OSError as exc:
        raise NetworkError(f"net.ipv4.ip_forward is 0 and cannot be set: {exc.strerror}") from None
    if path.read_text().strip() != "1":
        raise NetworkError("net.ipv4.ip_forward is 0 and does not stay 1")


def parse_nameservers(text: str) -> list[str]:
    """IPv4/IPv6 nameservers of a resolv.conf, without loopback stubs a job cannot reach."""
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1].split("%")[0])
            except ValueError:
                continue
            if not addr.is_loopback and not addr.is_unspecified:
                found.append(str(addr))
    return found


def upstream_nameservers(candidates: tuple[Path, ...] = RESOLV_CANDIDATES) -> list[str]:
    """The host's real upstream DNS servers (empty when it has none a job could use)."""
    for path in candidates:
        try:
            servers = parse_nameservers(path.read_text())
        except OSError:
            continue
        if servers:
            return servers
    return []


def resolver_ranges(where: str, candidates: tuple[Path, ...] = RESOLV_CANDIDATES) -> dict[str, str]:
    """{label: address/32} of the DNS servers the host itself asks, which no network may hold:
    the route to its bridge took the host's lookups to the network's jobs, and one answered
    them (red-team run: a private range over the host's resolver, then its Redis password)."""
    return {
        f"the DNS server {where} uses ({ns})": f"{ns}/32"
        for ns in host_resolvers(candidates)
        if ipaddress.ip_address(ns).version == 4  # (an IPv4-mapped IPv6 one has dots too)
    }


def host_resolvers(candidates: tuple[Path, ...] = RESOLV_CANDIDATES) -> list[str]:
    """Every DNS server the host may ask: each candidate file's, not only the first that
    lists any (a static /etc/resolv.conf beside systemd-resolved's upstreams is glibc's)."""
    found: list[str] = []
    for path in candidates:
        try:
            found += [ns for ns in parse_nameservers(path.read_text()) if ns not in found]
        except OSError:
            continue
    return found


def job_nameservers(configured: tuple[str, ...], resolv_conf: Path | None) -> tuple[str, ...]:
    """The worker's dns_servers, else the host's upstreams (a network's --dns, when it has
    one, is taken before this is asked)."""
    if configured:
        return configured
    paths = (resolv_conf,) if resolv_conf else RESOLV_CANDIDATES
    found = tuple(upstream_nameservers(paths))
    if not found:
        names = ", ".join(str(p) for p in paths)
        raise NetworkError(
            f"no usable upstream DNS server for jobs: {names} list none but loopback stubs; set "
            "dns_servers in the worker's config or --dns on the network"
        )
    return found


def dns_inside(servers: tuple[str, ...], ranges: dict[str, str]) -> str | None:
    """Why a job may not be given these DNS servers on networks of these {name: CIDR}, or
    None (pure): a server inside a network's range got the lookups of its jobs on-link, and a
    job at that address answered every peer's (usability run: a network over 203.0.113.0/24,
    the worker's server 203.0.113.2). A network's own --dns is its owner's choice: not asked."""
    for name, cidr in ranges.items():
        inside = [ns for ns in servers if ipaddress.ip_address(ns) in ipaddress.ip_network(cidr)]
        if inside:
            fix = "set JOBLET_BRIDGE_CIDR" if name == "bridge" else "give the network --dns, or another CIDR"
            return (
                f"network {name!r} ({cidr}) holds the DNS server jobs here are given ({inside[0]}): their "
                f"lookups would go to an address inside the network, not to it; {fix} (or JOBLET_DNS_SERVERS)"
            )
    return None


CGROUP_BASE = Path("/sys/fs/cgroup")  # where nft looks up `socket cgroupv2` paths


def cgroup2_mount(mountinfo: str) -> Path | None:
    """The cgroup v2 mount point in a /proc/self/mountinfo text."""
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if rest.split()[:1] == ["cgroup2"] and len(parts) > 4:
            return Path(parts[4])
    return None


def match_for(root: Path, mount: Path) -> tuple[str, int] | None:
    """(path relative to /sys/fs/cgroup, level) with which nft's `socket cgroupv2` matches
    every process in `root` and below; None when nft cannot name it."""
    try:
        path = root.relative_to(CGROUP_BASE)
        level = len(root.relative_to(mount).parts)
    except ValueError:
        return None
    return (str(path), level) if level > 0 else None


def cgroup_match(root: Path) -> tuple[str, int, int] | None:
    """match_for() of an existing cgroup root, with its inode (its cgroup id: nft resolves
    the path when the rule is loaded, so a re-created directory needs the rule again)."""
    try:
        mount = cgroup2_mount(Path("/proc/self/mountinfo").read_text())
        ino = root.stat().st_ino
    except OSError:
        return None
    found = match_for(root, mount) if mount is not None else None
    return (*found, ino) if found is not None else None


def jobs_cgroup_root(cfg: Settings) -> Path:
    """Where the worker keeps its jobs' cgroups: the setting, else its own default."""
    if cfg.cgroup_root is not None:
        return cfg.cgroup_root
    from joblet.worker.cgroups import detect_root

    return detect_root() / "joblet"
