"""Every kernel object name and prefix joblet uses, in one place (pure; clients and workers).

Names derive from job ids and network names, so a restarted worker finds what a crashed one
made. Interface names are at most 15 bytes: prefixes are two letters and a short hash.
"""

from __future__ import annotations

import hashlib
import re

TABLE = "joblet"  # nftables: tables inet, arp and bridge joblet
ALONE = ("none", "host", "isolated")  # networks a job cannot combine with any other
DEFAULT_BRIDGE = "joblet0"  # the built-in "bridge" network (setting bridge_name)
NETWORK_BRIDGE_PREFIX = "jb"  # a user network's bridge: jb + 10 hex digits
BRIDGED_VETH_PREFIX = "jv"  # host end of a job's veth on a bridge
ISOLATED_VETH_PREFIX = "ji"  # host end of an isolated job's routed veth
VXLAN_PREFIX = "jx"  # a user network's overlay port: jx + 10 hex digits
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
VNI_MIN, VNI_MAX = 4096, (1 << 24) - 1  # VNIs joblet hands out (below 4096: left to others)
HOLD_VNI = VNI_MAX  # the worker's own, never a network's (network_agent/port_hold.py)
JOB_VETH_PREFIXES = (BRIDGED_VETH_PREFIX, ISOLATED_VETH_PREFIX)
JOB_LINK = re.compile(r"^j[vi][0-9a-f]{10}\Z")  # exactly what joblet names a job's link
# exactly what joblet names a network's bridge or overlay port: a sweep deletes no other
# (an operator's own bridge `jbackup` went at every heartbeat: review)
NETWORK_LINK = re.compile(r"^j[bx][0-9a-f]{10}\Z")


def name_key(name: str) -> str:
    """The form a job's name is unique and found in: lower case, as lookups in /etc/hosts
    ignore case (`WEB` listed before `web` took its lookups)."""
    return name.lower()


def short_hash(*parts: str, length: int = 10) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:length]


def host_veth_name(job_id: str, network: str) -> str:
    """The host end of a job's veth: 'jv' (bridged) or 'ji' (isolated) + 10 hex digits."""
    prefix = ISOLATED_VETH_PREFIX if network == "isolated" else BRIDGED_VETH_PREFIX
    return prefix + short_hash(job_id, network)


def bridge_name(network: str, default_bridge: str = DEFAULT_BRIDGE) -> str:
    """Kernel bridge of a network: the default bridge, or 'jb' + a short hash."""
    if network == "bridge":
        return default_bridge
    return NETWORK_BRIDGE_PREFIX + hashlib.sha1(network.encode()).hexdigest()[:10]


def vxlan_name(network: str) -> str:
    """The overlay (vxlan) port of a user network's bridge: 'jx' + a short hash."""
    return VXLAN_PREFIX + hashlib.sha1(network.encode()).hexdigest()[:10]


def default_vni(network: str) -> int:
    """A network's VNI unless its definition holds one: stable, from its name."""
    span = VNI_MAX - VNI_MIN + 1
    return VNI_MIN + int(hashlib.sha1(f"{network}/vni".encode()).hexdigest(), 16) % span


def is_joblet_link(name: str, default_bridge: str = DEFAULT_BRIDGE) -> bool:
    """Any link joblet may have made: a bridge, a job's veth or an overlay port."""
    return name == default_bridge or name.startswith((NETWORK_BRIDGE_PREFIX, VXLAN_PREFIX, *JOB_VETH_PREFIXES))
