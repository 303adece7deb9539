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
while the table holds `busy` entries or more (its count is one read of a file): the two
dumps and their deletes cost a bridge job ~4 ms of CPU (its throughput 62 -> 52 jobs/s),
and while the table is that empty no job's leftovers can weigh on another's cap.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

log = logging.getLogger(__name__)


class Janitor:
    """Deletes the conntrack entries of ended jobs' addresses, in a thread of its own (a
    netlink socket made once; a job's end does not wait for it)."""

    def __init__(self, busy: int = 0) -> None:
        self.busy = busy  # the table's count below which nothing is deleted
        self._queue: queue.SimpleQueue[tuple[list[str], threading.Event] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self.deleted = 0  # entries deleted so far (logs, tests)

    def forget(self, addresses: list[str]) -> threading.Event:
        """Delete the entries of `addresses` (IPv4); the event is set when done."""
        done = threading.Event()
        if not addresses or (self.busy and (tracked() or 0) < self.busy):
            done.set()
            return done
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="joblet-conntrack", daemon=True)
                self._thread.start()
        self._queue.put((addresses, done))
        return done

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    def _loop(self) -> None:
        from pyroute2 import Conntrack

        ct: Any = None
        while (work := self._queue.get()) is not None:
            addresses, done = work
            try:
                ct = ct or Conntrack()
                self.deleted += sum(_forget(ct, address) for address in addresses)
            except Exception as exc:  # noqa: BLE001 - the table is the kernel's: the next job's try again
                log.warning("could not delete the conntrack entries of %s: %s", ", ".join(addresses), exc)
                if ct is not None:
                    ct.close()
                ct = None
            finally:
                done.set()
        if ct is not None:
            ct.close()


def _forget(ct: Any, address: str) -> int:
    """Delete the entries whose original tuple has `address` as source or destination."""
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    count = 0
    for match in (NFCTAttrTuple(saddr=address), NFCTAttrTuple(daddr=address)):
        for entry in list(ct.dump_entries(tuple_orig=match)):
            try:
                ct.delete(entry)
                count += 1
            except OSError:  # gone meanwhile (timed out, or deleted by a match before)
                continue
    return count


def tracked(path: str = "/proc/sys/net/netfilter/nf_conntrack_count") -> int | None:
    """How many entries this namespace's table holds (None: conntrack not loaded)."""
    try:
        with open(path) as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None
