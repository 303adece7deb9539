"""Facts and settings of the host's own network: ip_forward and DNS upstreams."""

from __future__ import annotations

import ipaddress
from pathlib import Path

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
