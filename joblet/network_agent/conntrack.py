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

Where the kernel takes it (6.18 does), an address's entries go in one request each way, a
delete filtered by the original tuple's address (`_flush`): the kernel walks only the
table's occupied buckets (~0.1 ms a way nearly empty, ~1.7 ms with 14,000 entries in all
namespaces) and deletes all of them, ~1 us an entry. Each of the two dumps instead locked
every bucket (262,144 here) in its request, ~10 ms of kernel CPU with an empty table, on
the released job's thread while the next job started: a custom network's job started ~20
ms slower than a bridge job's (PERFORMANCE_LOG 46). A kernel that refuses it (EINVAL: an
original tuple without its protocol) is sent the dumps, then and after.
"""

from __future__ import annotations

import errno
import itertools
import logging
import queue
import socket
import threading
import time

log = logging.getLogger(__name__)
FORGET_MOST = 4096  # entries of an address, each way, deleted at a job's end (the rest expire)
FORGET_ALL_FOR = 120.0  # seconds an address soon given again is cleared for (~2,500 entries a second)
# a network of fewer addresses gives one again within UDP's conntrack timeouts (30-120 s) at
# ~34 jobs/s, its round-robin cursor having gone round; the default bridge's /16 takes 30 min
REUSED_SOON = 4096
ERRORS = 3  # failed dumps of one job's addresses before its clearing is given up


class Request:
    """One ended job's addresses to clear: `wait` returns whether they were (or the janitor
    gave up at its deadline). A waiter that stops waiting on an address soon given again
    abandons it, after the round under way, and the janitor leaves it alone: its addresses
    may be another job's by then (review: late rounds deleted the flows of the address's
    next job). Another's is cleared late all the same (review: skipped, its flows counted
    against the shared cap for days)."""

    def __init__(self, addresses: list[str], always: bool) -> None:
        self.addresses, self.always = addresses, always
        self.until = time.monotonic() + FORGET_ALL_FOR  # the janitor's one clock: no round begins after it
        self.errors = 0
        self.abandoned = False
        self._done = threading.Event()
        self.lock = threading.Lock()  # held through each of its rounds

    def finish(self) -> None:
        self._done.set()

    def wait(self, timeout: float | None) -> bool:
        if not self._done.wait(timeout) and self.always:
            with self.lock:
                self.abandoned = not self._done.is_set()
        return self._done.is_set()


class Janitor:
    """Deletes the conntrack entries of ended jobs' addresses, in a thread of its own, made
    on first need (a job's release waits for its own: agent.forget_flows)."""

    def __init__(self, busy: int = 0) -> None:
        self.busy = busy  # the table's count below which nothing is deleted
        # an address cleared in rounds goes back to the end of the queue after each, so the
        # jobs that end meanwhile wait one round, not its whole clearing (a job's 28,000 flows
        # held every other job's release ~2 min)
        self._queue: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self.deleted = 0  # entries deleted so far (tests)

    def forget(self, addresses: list[str], always: bool = False) -> Request:
        """Delete the entries of `addresses` (IPv4), while the table is busy or `always` (an
        address soon given again: all of them, in rounds, until FORGET_ALL_FOR has passed)."""
        request = Request(addresses, always)
        if not addresses or (not always and self.busy and (setting("count") or 0) < self.busy):
            request.finish()
            return request
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="joblet-conntrack", daemon=True)
                self._thread.start()
        self._queue.put(request)
        return request

    def _loop(self) -> None:
        while True:  # a daemon thread: it ends with the worker
            request = self._queue.get()
            with request.lock:
                if not request.abandoned:
                    self._round(request)

    def _round(self, request: Request) -> None:
        """At most FORGET_MOST entries of each address each way; an address whose dump was
        cut (some may be left), or whose dump failed, goes again after the others' rounds."""
        left: list[str] = []
        for address in request.addresses:
            try:
                count, cut = _forget(address)
            except Exception as exc:  # noqa: BLE001 - the table is the kernel's: tried again, or left
                request.errors += 1
                log.warning("could not delete the conntrack entries of %s: %s", address, exc)
                cut = request.errors < ERRORS  # a netlink buffer overrun passes; a table never read does not
                count = 0
            self.deleted += count
            if request.always and cut:
                left.append(address)
        if left and time.monotonic() < request.until:
            request.addresses = left
            self._queue.put(request)
            return
        if left:
            log.warning(
                "conntrack entries of %s still there after %.0f s of deleting: the rest expire",
                ", ".join(left),
                FORGET_ALL_FOR,
            )
        request.finish()


_flushes: bool | None = None  # whether the kernel deletes by address (`_flush`); None: not tried yet


def _forget(address: str) -> tuple[int, bool]:
    """Delete the entries whose original tuple has `address` as source or destination: all of
    them in the kernel where it can (0 counted: it does not say how many, none left), else
    by the dumps (`_dumped`); how many, and whether some may be left."""
    global _flushes
    if _flushes is not False:
        flushed = _flush(address)
        if _flushes is None:
            _flushes = flushed
            if not flushed:
                log.info("this kernel does not delete conntrack entries by address: they are dumped")
        if flushed:
            return 0, False
    return _dumped(address)


def _flush(address: str) -> bool:
    """Delete in the kernel every entry whose original tuple starts, then ends, at `address`:
    a delete request with an original tuple of the address alone and CTA_FILTER's flags
    saying it is all to compare (pyroute2 builds them). Never one without the tuple: that
    empties the table. False where the kernel refuses the first (no filtered delete)."""
    from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink.nfctsocket import (
        IPCTNL_MSG_CT_DELETE,
        NFCTAttrTuple,
        NFCTSocket,
        nfct_msg,
        terminate_error_msg,
    )

    sock = NFCTSocket(nfgen_family=socket.AF_INET)  # the family the filter's addresses are read in
    try:
        for first, match in enumerate((NFCTAttrTuple(saddr=address), NFCTAttrTuple(daddr=address))):
            match.attrs()  # its filter flags: the fields given
            msg = nfct_msg.create_from(tuple_orig=match, cta_filter={"attrs": [["CTA_FILTER_ORIG_FLAGS", match.flags]]})
            if msg.get_attr("CTA_TUPLE_ORIG") is None:  # without it, the whole table goes
                raise ValueError(f"no original tuple for {address!r}: nothing deleted")
            try:
                sock.request(
                    msg, IPCTNL_MSG_CT_DELETE, msg_flags=NLM_F_REQUEST | NLM_F_ACK, terminate=terminate_error_msg
                )
            except NetlinkError as exc:
                if first == 0 and exc.code in (errno.EINVAL, errno.EOPNOTSUPP):
                    return False
                raise
    finally:
        sock.close()
    return True


def _dumped(address: str) -> tuple[int, bool]:
    """The dumps' way: the entries of `address` each way, at
    most FORGET_MOST of each (the rest expire); how many, and whether a dump was cut there
    (the count does not tell: an entry that ended before its delete is not counted (review)).
    pyroute2 parses and deletes ~2,500 a second, and a job that left 32,000 held this thread,
    and a core, for 24 s (red-team run). Each dump on a socket of its own, closed when it is
    cut short; the deletes on another."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    count, cut = 0, False
    deleter = Conntrack()
    try:
        for match in (NFCTAttrTuple(saddr=address), NFCTAttrTuple(daddr=address)):
            dumper = Conntrack()
            try:
                entries = list(itertools.islice(dumper.dump_entries(tuple_orig=match), FORGET_MOST))
            finally:
                dumper.close()
            cut = cut or len(entries) == FORGET_MOST
            for entry in entries:
                try:
                    deleter.delete(entry)
                    count += 1
                except (OSError, NetlinkError):  # gone meanwhile (it ended, or timed out): the rest go on
                    continue
    finally:
        deleter.close()
    return count, cut


def setting(name: str) -> int | None:
    """This namespace's nf_conntrack_NAME (count: the entries it holds, max: the table's
    size); None where conntrack is not loaded."""
    try:
        with open(f"/proc/sys/net/netfilter/nf_conntrack_{name}") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None
