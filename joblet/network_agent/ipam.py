"""IP address arithmetic (pure): which addresses of a network a job may get."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class Subnet:
    """A job network's CIDR with its gateway (.1) and the range jobs draw from."""

    cidr: str

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr, strict=True)

    @property
    def prefixlen(self) -> int:
        return self.net.prefixlen

    @property
    def gateway(self) -> str:
        return str(self.net.network_address + 1)

    @property
    def first(self) -> int:
        """First address a job may get: after the network address and the gateway."""
        return int(self.net.network_address) + 2

    @property
    def last(self) -> int:
        """Last address a job may get: before the broadcast address."""
        return int(self.net.broadcast_address) - 1


def to_str(address: int) -> str:
    return str(ipaddress.IPv4Address(address))


def to_int(address: str) -> int:
    return int(ipaddress.IPv4Address(address))


@dataclass(frozen=True)
class P2pPool:
    """The isolated mode's pool: slot i is the i-th /30; its .1 is the host end, .2 the job."""

    cidr: str

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr, strict=True)

    @property
    def slots(self) -> int:
        return self.net.num_addresses // 4

    def host_end(self, slot: int) -> str:
        return to_str(self._base(slot) + 1)

    def job_end(self, slot: int) -> str:
        return to_str(self._base(slot) + 2)

    def _base(self, slot: int) -> int:
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is outside {self.cidr}")
        return int(self.net.network_address) + 4 * slot
