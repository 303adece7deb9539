"""The worker's hold on the overlay's UDP port, from its start to its end.

A network's VXLAN port (overlay.py) opens the kernel's UDP socket on `vxlan_port` (4789)
when it comes up, and every VXLAN device on that port shares that one socket. Before the
first such port existed, anything else on the host could bind the UDP port first (a host-mode
job shares the host's ports): every user network's job on this node then failed with
`Address already in use`. So the worker brings up a VXLAN device of its own on that port when
it starts, and the kernel holds the socket from then on: a later `bind` to the port is
refused, and the networks' ports share the socket.

The holder carries `HOLD_VNI` (networks never get it: api/networks.py) and lives in a network
namespace of its own that holds nothing else and has no name: created from the host's
namespace, a VXLAN device keeps its socket there wherever the device itself is, and a frame
sent to the holder's VNI lands in that empty namespace, not in the host's stack. The namespace
is held by a descriptor: when the worker ends, however it ends, the kernel removes the
namespace with the device and lets the socket go (once no network's port uses it).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from joblet.errors import NetworkError
from joblet.libc import libc
from joblet.names import HOLD_VNI
from joblet.network_agent.netns import CLONE_NEWNET, ipv6_off_by_default

DEVICE = "jxhold"


def hold(port: int) -> int:
    """A descriptor of the holder's namespace, whose VXLAN device is up on UDP `port`; raises
    NetworkError (nothing left behind) when the port cannot be held."""
    result: list[int] = []
    errors: list[BaseException] = []

    def make() -> None:  # a thread of its own: it leaves the host's namespace, then ends
        try:
            result.append(_make(port))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            errors.append(exc)

    thread = threading.Thread(target=make, name="joblet-port-hold", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _make(port: int) -> int:
    try:
        host = IPRoute()  # opened before the switch: the device's socket is the host's
    except OSError as exc:
        raise NetworkError(f"failed to hold UDP port {port} for the overlay: {exc.strerror}") from None
    fd = -1
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        ipv6_off_by_default()
        host.link(
            "add", ifname=DEVICE, kind="vxlan", vxlan_id=HOLD_VNI, vxlan_port=port, vxlan_learning=0, net_ns_fd=fd
        )
        with IPRoute() as inside:  # the holder's own namespace: this thread is in it now
            inside.link("set", index=inside.link_lookup(ifname=DEVICE)[0], state="up")  # the socket opens
        return fd
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)  # the namespace goes, and the device with it
        if isinstance(exc, NetlinkError | OSError | IndexError):
            raise NetworkError(f"failed to hold UDP port {port} for the overlay: {_why(exc)}") from None
        raise
    finally:
        host.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError) and exc.code == errno.EEXIST:  # a previous worker's holder, going
        return f"VNI {HOLD_VNI} is in use on it"
    if isinstance(exc, NetlinkError | OSError) and exc.args and isinstance(exc.args[0], int):
        return os.strerror(exc.args[0])
    if isinstance(exc, IndexError):
        return f"its device {DEVICE} did not appear in its namespace"
    return str(exc)
