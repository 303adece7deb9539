"""A job's network namespace, made and configured by the worker before the job's sandbox
starts, so the command never runs on a half-built network.

A namespace switch applies to one OS thread. The steps here run in the job's own thread
(worker/nsthread.py), which does nothing else and lives until the job is reaped (STYLE.md 7
forbids switching in the worker's long-lived threads, whose later sockets and children would
land in the job's namespace). It unshares a new network namespace, keeps a descriptor of it
and brings `lo` up; later it configures the job's end of its veths from inside
(links.configure_inside), and mounts a sysfs of it in the job's mount namespace
(worker/mounts.py), so the job's /sys/class/net shows its own interfaces. The namespace
lives while the job's processes, the descriptor or that sysfs hold it: teardown closes the
descriptor, and once the job's processes and its mount namespace are gone the kernel removes
the namespace with its veths, both ends, in its own cleanup work, batched with other
namespaces that died meanwhile (one job's veths go in ~1 ms that way, 300 jobs' in ~0.1 s;
deleting a veth ourselves waits out RCU grace periods: ~20 ms each, serialized by the
kernel).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import struct
from collections.abc import Callable
from typing import Protocol, TypeVar

from joblet.errors import NetworkError
from joblet.libc import libc as _libc

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _check(result: int, what: str) -> None:
    if result != 0:
        raise NetworkError(f"failed to {what}: {os.strerror(ctypes.get_errno())}")


class Runner(Protocol):
    """Runs a function in some thread and returns what it returns (or raises what it raises)."""

    def __call__(self, fn: Callable[[], T]) -> T: ...


class JobNetns:
    """One job's network namespace, held by a descriptor."""

    def __init__(self, fd: int, call: Runner) -> None:
        self.fd = fd
        self._call = call

    @classmethod
    def create(cls, call: Runner) -> JobNetns:
        """A new namespace with `lo` up, made by `call`: a thread that does nothing else and
        stays in it (the job's thread, worker/nsthread.py)."""

        def make() -> int:
            _check(_libc.unshare(CLONE_NEWNET), "create a network namespace")
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipv6_off_by_default()
                _ping_for_every_group()
                _lo_up()
            except BaseException:
                os.close(fd)
                raise
            return fd

        return cls(call(make), call)

    @property
    def path(self) -> str:
        """A path naming the namespace, for `nsenter --net=`."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def run(self, fn: Callable[[], T]) -> T:
        """`fn` inside the namespace: in the thread that made it, which is still in it."""
        return self._call(fn)

    def close(self) -> None:
        """Drop our descriptor. Once the job's processes and its mount namespace (which holds
        a sysfs of this namespace) are gone too, the kernel removes it (and the job's veths).
        Twice is harmless."""
        if self.fd < 0:
            return
        os.close(self.fd)
        self.fd = -1


def ipv6_off_by_default() -> None:
    """IPv6 off on every link made in this namespace from now on (its `default`): the job's
    veth ends are born with it off, so they never get a link-local address or take a router
    advertisement. Writing a link's own `disable_ipv6` instead needs the RTNL lock (the
    kernel restarts the write until a trylock gets it), which namespaces being cleaned up
    hold; the default is written without it on kernels since 6.9 (older ones take it for
    this write too, once per job instead of once per link). `lo`, made with the namespace, keeps ::1. A kernel
    without IPv6 has nothing to turn off."""
    try:
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as fh:
            fh.write("1\n")
    except FileNotFoundError:
        if os.path.exists("/proc/sys/net/ipv6"):
            raise NetworkError("failed to turn IPv6 off in the job's namespace: no conf/default") from None
    except OSError as exc:
        raise NetworkError(f"failed to turn IPv6 off in the job's namespace: {exc.strerror}") from None


def _ping_for_every_group() -> None:
    """ICMP echo sockets for every group in the job's namespace, as Docker sets it: `ping`
    from a `--user` job needs no CAP_NET_RAW (the kernel's default range is empty). Only
    echo requests and their replies; they pass the job's firewall as its other packets do."""
    try:
        with open("/proc/sys/net/ipv4/ping_group_range", "w") as fh:
            fh.write("0 2147483647\n")
    except OSError as exc:
        raise NetworkError(f"failed to allow ping in the job's namespace: {exc.strerror}") from None


def _lo_up() -> None:
    """`lo` up with two ioctls on a socket of the new namespace: a pyroute2 socket's set-up
    took ~0.5 ms of the namespace's ~1.2 ms."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("16sH", b"lo", 0)
            flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
    except OSError as exc:
        raise NetworkError(f"failed to bring up lo: {exc.strerror}") from None
