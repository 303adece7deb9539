"""Netlink work (pyroute2), the only place joblet touches links, addresses and routes.

A fresh IPRoute socket per call: a long-lived one shared by hundreds of jobs hung under load
(its buffer filled with link events nobody read). A job's own veth requests, on its start's
critical path, are sent several at once on a plain socket instead (rtnl.py). The worker never
switches namespaces in its own long-lived threads (STYLE.md 7): a job's end of a veth is
created straight inside the job's namespace (`net_ns_fd`), which is cheaper than moving it;
it is configured from the job's own thread, which lives in that namespace
(`configure_inside`, worker/nsthread.py).
"""

from __future__ import annotations

import errno
import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from joblet.errors import NetworkError
from joblet.network_agent import rtnl

T = TypeVar("T")
log = logging.getLogger(__name__)
IPV6_CONF = Path("/proc/sys/net/ipv6/conf")
IPV4_CONF = Path("/proc/sys/net/ipv4/conf")
NEIGH_CONF = Path("/proc/sys/net/ipv4/neigh")


@contextmanager
def _netlink() -> Iterator[IPRoute]:
    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _call(what: str, fn: Callable[[IPRoute], T]) -> T:
    try:
        with _netlink() as ipr:
            return fn(ipr)
    except NetlinkError as exc:
        raise NetworkError(f"failed to {what}: {exc.args[1] if len(exc.args) > 1 else exc}") from None


def index_of(ifname: str) -> int | None:
    """A link's index in this thread's namespace, None when there is none: one ioctl
    (if_nametoindex), where a netlink socket's set-up alone costs ~1 ms."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


def link_kind(index: int) -> str | None:
    def kind(ipr: IPRoute) -> str | None:
        info = ipr.get_links(index)[0].get_attr("IFLA_LINKINFO")
        return info.get_attr("IFLA_INFO_KIND") if info else None

    return _call("read a link", kind)


def names_with_prefix(prefixes: str | tuple[str, ...], kind: str | None = None) -> list[str]:
    """Names of this host's links that start with one of `prefixes` (and are of `kind`).
    The names come from libc's if_nameindex (one netlink dump, parsed in C); only those that
    match are looked at more closely: with hundreds of jobs, decoding every link with pyroute2
    on each heartbeat took a fifth of the worker's Python time."""
    found = [name for _, name in socket.if_nameindex() if name.startswith(prefixes)]
    return found if kind is None else [name for name in found if _kind_of(name) == kind]


def _kind_of(name: str) -> str | None:
    """A link's kind (bridge, veth, vxlan...); None if it has none or is gone meanwhile."""
    index = index_of(name)
    try:
        return None if index is None else link_kind(index)
    except NetworkError:
        return None


def bridges_with_prefix(prefix: str) -> list[str]:
    return names_with_prefix(prefix, "bridge")


def ensure_bridge(
    name: str, address: str, prefixlen: int, mtu: int, mac: str | None = None, only_gateway: bool = False
) -> tuple[int, bool]:
    """Create the bridge if absent, give it its gateway address, bring it up; returns its
    index and whether this call created it. A bridge this call created is removed again
    when a later step fails: a failed setup leaves no bridge and no address behind.
    `only_gateway` (a user network's bridge): other IPv4 addresses on it go, logged."""
    index = index_of(name)
    created = False
    if index is None:
        try:
            extra = {"address": mac} if mac else {}
            with _netlink() as ipr:
                ipr.link("add", ifname=name, kind="bridge", mtu=mtu, **extra)
            created = True
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise NetworkError(f"failed to create bridge {name}: {exc}") from None
        index = index_of(name)
    if index is None or link_kind(index) != "bridge":
        raise NetworkError(f"{name} already exists but is not a bridge")
    try:
        bridge_options(name)
        disable_ipv6(name)  # the gateway speaks IPv4 only: no link-local, no RA accepted
        answer_arp_for_own_address(name)
        _ensure_addr(index, name, address, prefixlen, only_gateway)
        _call(f"bring up {name}", lambda ipr: ipr.link("set", index=index, state="up"))
    except Exception:
        if created:
            delete_link(name)
        raise
    return index, created


def bridge_options(bridge: str) -> None:
    """The bridge learns no MAC from frames to the link-local group addresses
    (01:80:c2:00:00:0X): those skip the bridge's prerouting hook, where port security holds
    each job to its own MAC, and a job sending LLDP with another job's MAC as its source
    took that job's traffic. No multicast snooping: a job joining more groups than the
    bridge's table holds (4096) turned snooping off on its bridge for good, and until then
    held that many entries of kernel memory no cgroup counts (red-team run); multicast goes
    to every port, as broadcast does. pyroute2 has no IFLA_BR_MULTI_BOOLOPT; sysfs would show
    the worker's mount's namespace, not its own: iproute2, once per bridge and worker."""
    argv = ["ip", "link", "set", "dev", bridge, "type", "bridge", "no_linklocal_learn", "1", "mcast_snooping", "0"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        raise NetworkError(f"ip did not answer in 10 s setting no_linklocal_learn on bridge {bridge}") from None
    if proc.returncode != 0:
        raise NetworkError(
            f"failed to stop bridge {bridge} learning from link-local frames (needs Linux 5.4 and "
            f"iproute2 5.4): {proc.stderr.strip()}"
        )


def answer_arp_for_own_address(ifname: str, proc: Path = IPV4_CONF) -> None:
    """The host answers ARP on a job's bridge or routed link only for that link's own
    address (its gateway), not for every address it holds: a job listed the host's
    addresses, other networks' gateways among them, by asking (red-team run); and only from
    a sender in the link's subnet (arp_ignore 2): an isolated job with CAP_NET_RAW asking
    for its gateway with a new forged sender address each time made a neighbour entry for
    each, which filled the host's table for every namespace (review). A bridge's jobs are
    held to their own addresses by port security already."""
    try:
        (proc / ifname / "arp_ignore").write_text("2\n")
    except OSError as exc:
        raise NetworkError(f"failed to set arp_ignore on {ifname}: {exc.strerror}") from None


def disable_ipv6(ifname: str, proc: Path = IPV6_CONF) -> None:
    """IPv6 off on a host-side link (before it is up, so it never gets a link-local
    address); a kernel without IPv6 has nothing to turn off."""
    path = proc / ifname / "disable_ipv6"
    try:
        path.write_text("1\n")
    except FileNotFoundError:
        if proc.exists() and not _below_ipv6_mtu(ifname):  # below 1280 the link has no IPv6
            raise NetworkError(f"failed to turn IPv6 off on {ifname}: it has no {path}") from None
    except OSError as exc:
        raise NetworkError(f"failed to turn IPv6 off on {ifname}: {exc.strerror}") from None


def _below_ipv6_mtu(ifname: str) -> bool:
    """Whether the link's MTU is below IPv6's minimum (1280): the kernel gives such a link no
    IPv6 at all, nor its conf directory (a network over a 1300-byte underlay has 1250)."""
    index = index_of(ifname)
    if index is None:
        return False

    return _call(f"read {ifname}'s MTU", lambda ipr: _link_mtu(ipr, index)) < 1280


def _link_mtu(ipr: IPRoute, index: int) -> int:
    value: Any = ipr.get_links(index)[0].get_attr("IFLA_MTU")
    return int(value)


def _ensure_addr(index: int, name: str, address: str, prefixlen: int, only_gateway: bool) -> None:
    """The bridge's gateway address; with `only_gateway`, no other IPv4 address: a user
    network's bridge kept from a network of the same name and another CIDR (deleted and made
    again while the worker was down) would otherwise route the old CIDR here too. joblet0's
    other addresses are left alone (an operator's)."""
    with _netlink() as ipr:
        try:
            found = ipr.get_addr(family=socket.AF_INET, index=index) if only_gateway else []
        except NetlinkError as exc:
            raise NetworkError(f"failed to read the addresses of {name}: {exc}") from None
        for old in found:
            here = (str(old.get_attr("IFA_ADDRESS")), int(old["prefixlen"]))
            if here == (address, prefixlen):
                continue
            try:
                ipr.addr("del", index=index, address=here[0], prefixlen=here[1])
            except NetlinkError as exc:
                if exc.code != errno.EADDRNOTAVAIL:  # gone with the primary it was secondary to
                    raise NetworkError(f"failed to remove {here[0]}/{here[1]} from {name}: {exc}") from None
            log.warning("removed %s/%d from bridge %s: not its network's gateway", *here, name)
        try:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise NetworkError(f"failed to add {address}/{prefixlen} to {name}: {exc}") from None


def add_veth_into(
    host_ifname: str,
    peer_ifname: str,
    netns_fd: int,
    mtu: int,
    bridge: int | None = None,
    host_address: tuple[str, int] | None = None,
    mac: str | None = None,
) -> None:
    """A veth whose peer (MAC `mac`, if given) is born inside the namespace `netns_fd`; the
    host end, IPv6 off, is enslaved to `bridge`, or (point-to-point) gets `host_address`
    (address, prefixlen); then it is up. Two sends (rtnl.py)."""
    rtnl.send(f"create veth {host_ifname}", [rtnl.veth(host_ifname, peer_ifname, netns_fd, mtu, mac)])
    index = socket.if_nametoindex(host_ifname)
    disable_ipv6(host_ifname)  # before it is up: it never gets a link-local address
    if bridge is not None:
        requests = [rtnl.up(index, master=bridge)]
    elif host_address is not None:
        answer_arp_for_own_address(host_ifname)  # a routed link: as a bridge, its own address only
        requests = [rtnl.address(index, *host_address), rtnl.up(index)]
    else:
        requests = [rtnl.up(index)]
    rtnl.send(f"bring up veth {host_ifname}", requests)


def delete_link(ifname: str) -> None:
    """Delete a link; one that is already gone is success."""
    try:
        with _netlink() as ipr:
            ipr.link("del", ifname=ifname)
    except NetlinkError as exc:
        if exc.code not in (errno.ENODEV, errno.ENOENT):
            raise NetworkError(f"failed to delete {ifname}: {exc}") from None


def await_gone(ifnames: list[str], timeout: float = 2.0) -> None:
    """Until the kernel has removed these links (their namespace's cleanup, which runs in
    the background within milliseconds); what is still there after `timeout` is deleted.
    A lookup is one ioctl: the check costs microseconds, the waits back off."""
    deadline, pause = time.monotonic() + timeout, 0.0002
    left = list(ifnames)
    while left:
        left = [name for name in left if index_of(name) is not None]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.005)
    for name in left:
        delete_link(name)


def default_route_mtu(fallback: int = 1500) -> int:
    """MTU of the interface that carries the default route (the uplink)."""

    def mtu(ipr: IPRoute) -> int:
        for route in ipr.get_default_routes(family=2):
            oif = route.get_attr("RTA_OIF")
            if oif:
                return _link_mtu(ipr, oif)
        return fallback

    return _call("read the default route", mtu)


def mtu_holding(address: str) -> int | None:
    """MTU of the interface that holds `address` in this namespace; None when none does."""

    def mtu(ipr: IPRoute) -> int | None:
        return next((_link_mtu(ipr, a["index"]) for a in ipr.get_addr(family=2, address=address)), None)

    return _call("read the underlay address's interface", mtu)


def configure_inside(attachments: list[Any]) -> None:
    """Inside a job's namespace (this thread is in it): its interfaces (born with IPv6 off,
    the namespace's default: netns.py) up with their addresses, in one send; the first one
    not of an internal network carries the default route (to its gateway). A job only on
    internal networks has none: a connection out fails at once (ENETUNREACH), where through
    a gateway that drops it, it waited out its timeout."""
    requests = []
    routed = next((att for att in attachments if att.routed), None)
    for att in attachments:
        index = socket.if_nametoindex(att.ifname)
        requests += [rtnl.up(index), rtnl.address(index, att.address, att.prefixlen)]
        if att is routed:
            requests.append(rtnl.default_route(att.gateway, index))
        quick_arp_retries(att.ifname)
    rtnl.send("configure the job's network", requests)


# A job's ARP request is sent again after 200 ms, not the kernel's 1 s, and 15 times before the
# address is unreachable (3 s, as the kernel's 3 at 1 s). A job on another node of its network
# is reached through that node's worker, which learns of a job's start a few ms after it (a
# Redis event, then its bridge's forwarding entries and firewall set): a job that spoke at once
# lost its first request there and waited a whole second (overlay run: 1 in 6 first
# connections took 1,022 ms, the others 3-5 ms). A new namespace has no defaults of its own
# (its links copy the host's), so each link is set; the write takes no RTNL lock.
ARP_RETRIES = (("retrans_time_ms", 200), ("mcast_solicit", 15))


def quick_arp_retries(ifname: str, proc: Path = NEIGH_CONF) -> None:
    for name, value in ARP_RETRIES:
        try:
            (proc / ifname / name).write_text(f"{value}\n")
        except OSError as exc:
            raise NetworkError(f"failed to set {ifname}'s ARP retries in the job's namespace: {exc.strerror}") from None
