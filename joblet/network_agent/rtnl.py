"""A job's link requests, several in one send on a plain netlink socket.

A job's veth pair is two sends on the host (create; then enslave or address, and up) and one
inside its namespace (up, address, default route). pyroute2's message classes encode the
requests; what IPRoute adds around them (an asyncio core per socket, a reply parser per
request) cost ~1.2 ms per socket and ~0.3-0.4 ms per request here: ~4 ms of a bridge job's
~8 ms network setup, on its critical path. The kernel handles every message of one send in
turn and acknowledges each (NLM_F_ACK); the first error is raised. A fresh socket per send
joins no multicast group, so only the acknowledgements come back. Links, bridges and
everything off a job's path stay with IPRoute (links.py).
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from joblet.errors import NetworkError

RTM_NEWLINK, RTM_SETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 19, 20, 24
NLMSG_ERROR = 2
IFF_UP = 0x1
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
CHANGE = NLM_F_REQUEST | NLM_F_ACK
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port


def veth(host_ifname: str, peer_ifname: str, netns_fd: int, mtu: int, mac: str | None) -> Any:
    """A veth pair whose peer is born inside the namespace `netns_fd`."""
    peer: list[tuple[str, Any]] = [("IFLA_IFNAME", peer_ifname), ("IFLA_NET_NS_FD", netns_fd), ("IFLA_MTU", mtu)]
    if mac is not None:
        peer.append(("IFLA_ADDRESS", mac))
    info = {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer})]})]}
    return _link(RTM_NEWLINK, CREATE, 0, [("IFLA_IFNAME", host_ifname), ("IFLA_MTU", mtu), ("IFLA_LINKINFO", info)])


def up(index: int, master: int | None = None) -> Any:
    """Link `index` up (and enslaved to the bridge `master`)."""
    return _link(RTM_SETLINK, CHANGE, index, [("IFLA_MASTER", master)] if master is not None else [], IFF_UP)


def address(index: int, addr: str, prefixlen: int) -> Any:
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, prefixlen, index
    msg["attrs"] = [("IFA_LOCAL", addr), ("IFA_ADDRESS", addr)]
    return _headed(msg, RTM_NEWADDR, CREATE)


def default_route(gateway: str, oif: int) -> Any:
    msg = rtmsg()
    msg["family"], msg["table"], msg["proto"] = socket.AF_INET, RT_TABLE_MAIN, RTPROT_BOOT
    msg["scope"], msg["type"] = RT_SCOPE_UNIVERSE, RTN_UNICAST
    msg["attrs"] = [("RTA_GATEWAY", gateway), ("RTA_OIF", oif)]
    return _headed(msg, RTM_NEWROUTE, CREATE)


def _link(kind: int, flags: int, index: int, attrs: list[tuple[str, Any]], up_flags: int = 0) -> Any:
    msg = ifinfmsg()
    msg["family"], msg["index"], msg["flags"], msg["change"] = socket.AF_UNSPEC, index, up_flags, up_flags
    msg["attrs"] = attrs
    return _headed(msg, kind, flags)


def _headed(msg: Any, kind: int, flags: int) -> Any:
    msg["header"]["type"], msg["header"]["flags"] = kind, flags
    return msg


def send(what: str, messages: list[Any]) -> None:
    """Send `messages` at once on a new socket of this thread's namespace and wait for every
    acknowledgement; the first error raises NetworkError ("failed to `what`: ...")."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(10)
        sock.bind((0, 0))
        data = bytearray()
        for seq, msg in enumerate(messages, 1):
            msg["header"]["sequence_number"] = seq
            msg.encode()
            data += msg.data
        try:
            sock.send(data)
            errors = _acks(sock, len(messages))
        except OSError as exc:
            raise NetworkError(f"failed to {what}: {exc}") from None
    failed = [e for _, e in sorted(errors.items()) if e]
    if failed:
        raise NetworkError(f"failed to {what}: {os.strerror(-failed[0])}")


def _acks(sock: socket.socket, count: int) -> dict[int, int]:
    """Sequence number -> error (0: done) for each of `count` requests."""
    errors: dict[int, int] = {}
    while len(errors) < count:
        buf = sock.recv(65536)
        offset = 0
        while offset + _HEADER.size <= len(buf):
            length, kind, _, seq, _ = _HEADER.unpack_from(buf, offset)
            if kind == NLMSG_ERROR:
                errors[seq] = struct.unpack_from("=i", buf, offset + _HEADER.size)[0]
            offset += max(length + 3 & ~3, _HEADER.size)
    return errors
