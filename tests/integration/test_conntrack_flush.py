"""conntrack._forget against the kernel: an address's entries go, both ways of their original
tuple, and no other's (in a throwaway namespace, whose table is its own)."""

from __future__ import annotations

import os
import sys
import uuid

from tests.conftest import sh

# in the namespace: UDP flows 10.70.0.5 -> .7 (20), .6 -> .5 (10), .6 -> .7 (15), tracked
# (an nft ct rule), each source port one entry; then _forget(10.70.0.5) and what is left
FLOWS = """
import socket
from collections import Counter
from pyroute2 import Conntrack
from joblet.network_agent import conntrack
for src, dst, n in (("10.70.0.5", "10.70.0.7", 20), ("10.70.0.6", "10.70.0.5", 10), ("10.70.0.6", "10.70.0.7", 15)):
    for _ in range(n):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((src, 0))
            s.sendto(b"x", (dst, 9))
def table():
    return sorted(Counter(f"{e.tuple_orig.saddr}>{e.tuple_orig.daddr}" for e in Conntrack().dump_entries()).items())
print(table())
conntrack._forget("10.70.0.5")
print(table(), conntrack._flushes)
"""


def test_an_addresss_flows_go_both_ways_and_no_others():
    """The kernel's delete by address (or, on a kernel without it, the dumps) takes every
    entry from and to the address; the others' (the control) stay."""
    netns = f"joblet-t-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", netns)
    try:
        ns = ("ip", "-n", netns)
        sh(*ns, "link", "set", "lo", "up")
        for last in (5, 6, 7):
            sh(*ns, "addr", "add", f"10.70.0.{last}/32", "dev", "lo")
        rule = "add table ip t; add chain ip t o { type filter hook output priority 0; ct state new counter; }"
        sh("ip", "netns", "exec", netns, "nft", rule)
        out = sh("ip", "netns", "exec", netns, sys.executable, "-c", FLOWS).stdout.splitlines()
        assert out[0] == "[('10.70.0.5>10.70.0.7', 20), ('10.70.0.6>10.70.0.5', 10), ('10.70.0.6>10.70.0.7', 15)]"
        left, flushed = out[1].rsplit(" ", 1)
        assert left == "[('10.70.0.6>10.70.0.7', 15)]", out  # the control stays
        # deleted in the kernel by address where it can (6.18 can, as seen; older ones get the dumps)
        assert flushed == "True" or _kernel() < (6, 18), out
    finally:
        sh("ip", "netns", "del", netns, check=False)


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
