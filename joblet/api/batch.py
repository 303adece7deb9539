"""Many jobs from one process, with few round trips (`rnx batch`, `Client().batch()`).

Each spec gets the checks `Client.submit` gives it (preflight) before anything of it is stored;
what is checked once per batch is what does not change between jobs: the live fleet's
signing (per node) and that a network or volume exists. Accepted jobs wait in memory and are
written `flush_every` at a time: their PENDING records in one pipeline, then their queue
entries in another (records first, as `submit` does: a worker never sees a message without
its record). A job that could not be queued is recorded FAILED, as with `submit`.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Protocol

from joblet.api.message import new_job_id
from joblet.api.models import JobRecord, JobSpec

if TYPE_CHECKING:
    from joblet.api.preflight import Preflight
    from joblet.api.store import Store
    from joblet.config import Settings

FLUSH_EVERY = 256
FLUSH_BYTES = 64 << 20  # uploads waiting: 256 lines of 16 MiB each were 5.5 GiB of specs in memory (review)
HELD_FOR = 1.0  # seconds a batch writes what it placed under held networks (they let go by themselves at 3 s)
VIEW_EVERY = 5.0  # seconds a batch places jobs by one read of the fleet


class Submitter(Protocol):
    """What a batch uses of its Client (which makes it: `Client().batch()`)."""

    store: Store
    settings: Settings
    preflight: Preflight

    def queue_new(self, record: JobRecord) -> JobRecord: ...

    def fail_unqueued(self, job_ids: list[str], error: str) -> None: ...


class Batch:
    """Collects checked jobs and queues them in pipelines; `flush()` returns the queued records."""

    def __init__(self, client: Submitter, flush_every: int = FLUSH_EVERY) -> None:
        self.client = client
        self.flush_every = flush_every
        self.waiting: list[JobRecord] = []  # checked, not yet written
        self.ready: list[JobRecord] = []  # queued, not yet returned to the caller
        self._fleet_ok: set[str | None] = set()
        self._known: set[tuple[str, str]] = set()  # ("network" | "volume", name) seen to exist
        self._view: Any = None  # the fleet as placement sees it, read again every VIEW_EVERY s
        self._view_at = 0.0  # when (monotonic)
        # each user network's nodes with jobs: read once per network, then where this batch
        # placed its jobs (without an overlay between nodes they must stay together)
        self._homes: dict[str, set[str]] = {}
        # the user networks whose homes were read since the last write, held until it (as
        # Client.submit holds them): another batch at the same instant placed elsewhere
        self._holds = contextlib.ExitStack()
        self._held_at: float | None = None  # when the first of them was held (monotonic)
        self._waiting_bytes = 0  # the waiting jobs' uploads

    def add(self, spec: JobSpec) -> list[JobRecord]:
        """Check one job (a JobletError says why it is refused; nothing of it is stored); returns
        the records queued since the last call, in order (a full pipeline, or a named job and
        those before it). Records queued before a refusal are returned by the next call."""
        spec = self._check(spec)
        try:  # a line refused at its placement lets go of what it held (`tail -f | rnx batch` ending on it)
            record = JobRecord.pending(new_job_id(), spec, node=self._place(spec))
            if record.name is not None:  # the name's holder is checked atomically, one job at a time
                self._write()
                self.ready.append(self.client.queue_new(record))
            else:
                self.waiting.append(record)
                self._waiting_bytes += spec.upload_bytes
                if len(self.waiting) >= self.flush_every or self._waiting_bytes >= FLUSH_BYTES or self._held_long():
                    self._write()
        finally:
            if not self.waiting:  # where each job placed goes is written: another submitter reads it
                self._let_go()
        return self.take()

    def due(self, uploads: bool = False) -> list[JobRecord]:
        """Before the next line is read: what was placed under networks held HELD_FOR is
        written and they are let go, and under any hold at all before a line's `uploads` are
        read (they may take longer than the hold lasts: review, twice); the records queued
        since the last call."""
        return self.flush() if self._held_long() or (uploads and self._held_at is not None) else self.take()

    def _held_long(self) -> bool:
        """Networks held for HELD_FOR: what was placed under them is written before the hold
        lets go by itself (slow lines, large uploads read between them): another submitter
        would then read no home and place elsewhere, the split the hold is for (review)."""
        return self._held_at is not None and time.monotonic() - self._held_at >= HELD_FOR

    def _let_go(self) -> None:
        """Release the networks held; what was read under them is read again next time:
        other submitters may place jobs meanwhile."""
        self._holds.close()
        self._homes.clear()
        self._held_at = None

    def flush(self) -> list[JobRecord]:
        """Queue every waiting job; returns the records queued since the last call."""
        try:
            self._write()
        finally:
            self._let_go()
        return self.take()

    def take(self) -> list[JobRecord]:
        """The records queued and not returned yet (also those an error cut off from their
        return: Redis gone at a named job's write, after the jobs before it went)."""
        ready, self.ready = self.ready, []
        return ready

    def _write(self) -> None:
        records, self.waiting, self._waiting_bytes = self.waiting, [], 0
        if not records:
            return
        from joblet.api.tasks import send_runs

        store, cfg = self.client.store, self.client.settings
        try:  # the records' pipeline too: cut short (Ctrl-C with uploads), some were written
            store.create_jobs(records, placed=len(self._view or ()) != 1)
            send_runs(cfg, [(r.id, r.spec.to_dict(), r.node) for r in records], store.prefix_stamp())
        except BaseException as exc:  # Ctrl-C too: 256 records stayed PENDING for good (usability run)
            error = "interrupted before it was queued" if isinstance(exc, KeyboardInterrupt) else "could not be queued"
            self.client.fail_unqueued([r.id for r in records], error)
            raise
        self.ready.extend(records)

    def _place(self, spec: JobSpec) -> str | None:
        """The node whose queue gets the job (as Client.submit places it), from one read of
        the fleet per batch."""
        from joblet.api import nodes
        from joblet.api.preflight import fleet_view
        from joblet.api.store_homes import user_networks

        # read again while nothing is held: a long batch (`tail -f | rnx batch`) kept placing
        # jobs on a node that died, long after its jobs were made LOST (review)
        if self._view is None or (not self.waiting and time.monotonic() - self._view_at > VIEW_EVERY):
            self._view, self._view_at = fleet_view(self.client.store, self.client.settings), time.monotonic()
            self._fleet_ok.clear()  # a node checked before may be gone
            self.client.preflight.many_nodes = len(self._view) > 1  # for its named jobs (Client.enqueue)
        user = user_networks(spec.network) if len(self._view) > 1 else []
        unseen = [n for n in user if n not in self._homes]
        if unseen:
            self._holds.enter_context(self.client.store.holding_networks(unseen))
            self._held_at = self._held_at or time.monotonic()
            self._homes.update(self.client.store.network_homes(unseen))
        target = nodes.place(spec, self._view, homes={n: self._homes[n] for n in user})
        if target is not None:
            for network in user:
                self._homes[network].add(target)
        if target not in self._fleet_ok:
            self.client.preflight.check_fleet(target)
            self._fleet_ok.add(target)
        return target

    def _check(self, spec: JobSpec) -> JobSpec:
        pre = self.client.preflight
        pre.check_size(spec)
        if any(("network", n) not in self._known for n in spec.network):
            pre.check_networks(spec)
            self._known.update(("network", n) for n in spec.network)
        volumes = {("volume", v) for v in spec.volumes}
        if spec.runtime is not None or not volumes <= self._known:
            spec = pre.check_resources(spec)
            self._known |= volumes
        else:  # known volumes are not looked up again; the rest of the checks still run
            pre.check_resources(spec.replace(volumes=()))
        if spec.node not in self._fleet_ok:
            pre.check_fleet(spec.node)
            self._fleet_ok.add(spec.node)
        return spec
