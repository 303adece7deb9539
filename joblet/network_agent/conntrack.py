"""An ended job's flows leave the host's connection tracking table with it.

The table is the host's, one for all namespaces: a flow a job opened through the host (NAT
to the world, a connection to another network) stays there after the job's namespace is
gone, until it times out, and an established TCP connection whose peer stays silent times
out after five days. Jobs stopped while connected left such entries by the thousand; they
count against the jobs' connection caps (`ip joblet`, firewall.render_caps) and would hold
an address given to a later job at its predecessor's count. So each ended job's addresses
are handed to one thread that deletes every entry whose original tuple starts or ends at
them (a dump the kernel filters by address, Linux 5.8+; older ones send all of it, filtered
here), once the job's veths are gone and before its addresses are freed for others. Only
while the table holds `busy` entries or more (its count is one read of a file), or for an
address the network may soon give again: the two dumps and their deletes cost a bridge job
~4 ms of CPU (its throughput 62 -> 52 jobs/s), and while the table is that empty no job's
leftovers can weigh on another's cap. But a network of fewer than REUSED_SOON addresses
(a /24 user network) hands an ended job's address to another within minutes under load,
and the flows its predecessor left (a UDP reply stream through NAT) were delivered to the
new job, another tenant's data (review): those are always deleted, all of them, however
long it takes (a job that left 28,000 NATed UDP flows on a /29 had 24,000 of them delivered to
its address's next job, kept alive by an outside sender: red-team run), the address freed
only then.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time

log = logging.getLogger(__name__)
FORGET_MOST = 4096  # entries of an address, each way, deleted at a job's end (the rest expire)
FORGET_ALL_FOR = 120.0  # seconds an address soon given again is cleared for (~2,500 entries a second)
# a network of fewer addresses gives one again within UDP's conntrack timeouts (30-120 s) at
# ~34 jobs/s, its round-robin cursor having gone round; the default bridge's /16 takes 30 min
REUSED_SOON = 4096


class Janitor:
    """Deletes the conntrack entries of ended jobs' addresses, in a thread of its own, made
    on first need (a job's release waits for its own, up to agent.FORGET_WAIT)."""

    def __init__(self, busy: int = 0) -> None:
        self.busy = busy  # the table's count below which nothing is deleted
        # (addresses, all of them, done, until when): an address cleared in rounds goes back to
        # the end of the queue after each, so the jobs that end meanwhile wait one round, not
        # its whole clearing (a job's 28,000 flows held every other job's release ~2 min)
        self._queue: queue.SimpleQueue[tuple[list[str], bool, threading.Event, float]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self.deleted = 0  # entries deleted so far (tests)

    def forget(self, addresses: list[str], always: bool = False) -> threading.Event:
        """Delete the entries of `addresses` (IPv4), while the table is busy or `always` (an
        address soon given again); the event is set when done."""
        done = threading.Event()
        if not addresses or (not always and self.busy and (setting("count") or 0) < self.busy):
            done.set()
            return done
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="joblet-conntrack", daemon=True)
                self._thread.start()
        self._queue.put((addresses, always, done, time.monotonic() + FORGET_ALL_FOR))
        return done

    def _loop(self) -> None:
        while True:  # a daemon thread: it ends with the worker
            addresses, always, done, until = self._queue.get()
            left: list[str] = []
            try:
                for address in addresses:
                    count = _forget(address)
                    self.deleted += count
                    if always and count >= FORGET_MOST and time.monotonic() < until:  # some may be left
                        left.append(address)
            except Exception as exc:  # noqa: BLE001 - the table is the kernel's: the next job's try again
                log.warning("could not delete the conntrack entries of %s: %s", ", ".join(addresses), exc)
                left = []
            if left:
                self._queue.put((left, always, done, until))
            else:
                done.set()


def _forget(address: str) -> int:
    """Delete the entries whose original tuple has `address` as source or destination, at
    most FORGET_MOST of each (the rest expire): pyroute2 parses and deletes ~2,500 a second,
    and a job that left 32,000 held this thread, and a core, for 24 s (red-team run). Each
    dump on a socket of its own, closed when it is cut short; the deletes on another."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    count = 0
    deleter = Conntrack()
    try:
        for match in (NFCTAttrTuple(saddr=address), NFCTAttrTuple(daddr=address)):
            dumper = Conntrack()
            try:
                entries = list(itertools.islice(dumper.dump_entries(tuple_orig=match), FORGET_MOST))
            finally:
                dumper.close()
            for entry in entries:
                try:
                    deleter.delete(entry)
                    count += 1
                except (OSError, NetlinkError):  # gone meanwhile (it ended, or timed out): the rest go on
                    continue
    finally:
        deleter.close()
    return count


def setting(name: str) -> int | None:
    """This namespace's nf_conntrack_NAME (count: the entries it holds, max: the table's
    size); None where conntrack is not loaded."""
    try:
        with open(f"/proc/sys/net/netfilter/nf_conntrack_{name}") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None
