"""The Python API: `Client().run(...)`, `.list()`, `.get()`, `.logs()`, `.stop()`, `.wait()`."""

from __future__ import annotations

import builtins
import functools
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from joblet.api.keys import END_FIELD, STDERR_FIELD, STDOUT_FIELD
from joblet.api.message import new_job_id
from joblet.api.models import JobRecord, JobSpec, JobStatus, make_spec
from joblet.api.networks import NetworkStore
from joblet.api.preflight import Preflight, runtimes
from joblet.api.store import LIVE_STATUSES, Store
from joblet.api.volumes import VolumeStore
from joblet.config import Settings, settings
from joblet.errors import BackendUnavailable, Conflict, JobletError, NotFound
from joblet.fields import FieldError
from joblet.names import name_key
from joblet.text import listed

if TYPE_CHECKING:
    from joblet.api.batch import Batch
    from joblet.api.client_networks import Networks
    from joblet.api.client_volumes import Volumes
    from joblet.api.client_workflows import Workflows

__all__ = ["Client", "make_spec"]


class Client:
    """Talks to one joblet installation through Redis."""

    def __init__(self, cfg: Settings | None = None) -> None:
        self.settings = cfg = cfg or settings()
        self.store = Store(cfg.redis_url, cfg.key_prefix)
        net_store = NetworkStore(cfg.redis_url, cfg.key_prefix, self.store.redis)
        vol_store = VolumeStore(cfg.redis_url, cfg.key_prefix, self.store.redis)
        self.preflight = Preflight(cfg, self.store, net_store, vol_store)
        self._net_store, self._vol_store = net_store, vol_store

    # the sub-APIs are made (and their modules imported) on first use: `rnx run` needs none
    @functools.cached_property
    def networks(self) -> Networks:
        """Create, list, inspect and delete networks."""
        from joblet.api.client_networks import Networks

        return Networks(self.settings, self.store, self._net_store)

    @functools.cached_property
    def volumes(self) -> Volumes:
        """Create, list and delete volumes."""
        from joblet.api.client_volumes import Volumes

        return Volumes(self.store, self._vol_store)

    @functools.cached_property
    def workflows(self) -> Workflows:
        """Check, submit, list and stop workflows."""
        from joblet.api.client_workflows import Workflows

        return Workflows(self.settings, self.store, self.preflight, self.networks, self._vol_store)

    def runtimes(self) -> list[dict[str, Any]]:
        """Runtimes the live workers offer: [{"name", "nodes"}]."""
        return runtimes(self.live_nodes())

    def run(self, command: str, args: Any = (), **fields: Any) -> JobRecord:
        """Queue a job and return its PENDING record at once."""
        return self.submit(make_spec(command, args, **fields))

    def submit(self, spec: JobSpec) -> JobRecord:
        """Check the spec (preflight), record the job PENDING and queue it. A job on user
        networks holds them meanwhile (store_homes.py), unless this client's last placement
        saw a fleet of one node (nothing reads where such a job went)."""
        held = spec.network if self.preflight.many_nodes else ()
        with self.store.holding_networks(held):
            spec, node = self.preflight.check_and_place(spec)
            return self.queue_new(JobRecord.pending(new_job_id(), spec, node=node))

    def enqueue(self, record: JobRecord) -> JobRecord:
        """Record a checked, placed job PENDING and queue it (FAILED if it could not be queued).
        An id this installation keeps a record of is refused (Conflict): its record was
        written over, a running job read PENDING with no address until it ended (red-team run)."""
        if self.store.job_exists(record.id):
            raise Conflict(f"job {record.id[:12]} exists: a new job needs a new id (new_job_id)")
        return self.queue_new(record)

    def queue_new(self, record: JobRecord) -> JobRecord:
        """`enqueue` of a record whose id was just made (new_job_id: 128 random bits). A
        failure once the record may be written (a named job's placement, the second round
        trip; a reply lost) fails it too: it stayed PENDING for good, holding its name (review)."""
        from joblet.api.tasks import send_run

        try:
            self._create(record)  # a name in use writes nothing: failing it is a no-op
            send_run(self.settings, record.id, record.spec.to_dict(), record.node, self.store.prefix_stamp())
        except BaseException as exc:  # Ctrl-C too: a record no message follows stays PENDING for good
            error = "interrupted before it was queued" if isinstance(exc, KeyboardInterrupt) else "could not be queued"
            self.fail_unqueued([record.id], error)
            raise
        return record

    def fail_unqueued(self, job_ids: list[str], error: str) -> None:
        """Jobs recorded and never queued: FAILED, as Store.fail_waiting ends them."""
        cfg = self.settings
        for job_id in job_ids:
            self.store.fail_waiting(job_id, error, cfg.unstarted_ttl, cfg.log_max_entries)  # its send may have gone

    def batch(self, flush_every: int = 256) -> Batch:
        """Submit many jobs with few round trips: `b = c.batch(); b.add(spec)...; b.flush()`."""
        from joblet.api.batch import Batch

        return Batch(self, flush_every)

    def _create(self, record: JobRecord) -> None:
        placed = self.preflight.many_nodes
        if record.name is None:
            self.store.create_job(record, placed)
            return
        holder = self.store.create_named_job(record, placed)
        if holder is not None:
            raise FieldError(
                "name",
                f"{record.name!r} is in use by job {holder[:12]}, which has not ended "
                "(rnx stop it, or pick another --name)",
            )

    def stats(self, job_ids: Any = ()) -> list[dict[str, Any]]:
        """The latest resource sample of each running job (or of these jobs), with its id,
        name and node: cpu_percent, memory, pids, disk and network bytes (see `rnx stats`)."""
        from joblet.api.stats import collect

        return collect(self, list(dict.fromkeys(self.store.resolve(j) for j in job_ids)))  # each job once

    def list(
        self, status: Any = (), node: str | None = None, network: str | None = None, name: str | None = None
    ) -> list[JobRecord]:
        """Jobs, oldest first; each filter given must match (`status`: one, or any of several;
        a name that is no status is refused, ValidationError)."""
        wanted = statuses(status)
        live_only = wanted and LIVE_STATUSES.issuperset(wanted)  # `rnx list --status=running`
        return select(self.store.live_jobs() if live_only else self.store.list_jobs(), wanted, node, network, name)

    def recent(self, count: int) -> tuple[list[JobRecord], int]:
        """The newest `count` jobs, oldest first, and how many older ones are kept (`rnx
        list`: without reading the older ones' records)."""
        return self.store.recent_jobs(count)

    def get(self, job_id: str) -> JobRecord:
        """The job whose id, id prefix or name is `job_id`."""
        return self.store.get_job(self.store.resolve(job_id))

    def logs(
        self,
        job_id: str,
        follow: bool = False,
        outage: Callable[[BackendUnavailable | None], None] | None = None,
        idle: Callable[[str], None] | None = None,
    ) -> Iterator[tuple[str, bytes]]:
        """("stdout" | "stderr", bytes) chunks in order; with follow, until the job ends.
        `outage`: what a failed read while following does (store_output.follow_output);
        `idle`: called with the job's id after each second without output while following."""
        full = self.store.resolve(job_id)
        names = {STDOUT_FIELD: "stdout", STDERR_FIELD: "stderr"}
        for field, data in self.store.follow_output(full, follow, outage=outage):
            if field in names:
                yield names[field], data
            elif field == END_FIELD:
                return
            elif not field and idle is not None:
                idle(full)

    def stop(self, job_id: str) -> JobRecord:
        """Stop a job: durable flag, and a job still queued becomes STOPPED at once."""
        full, cfg = self.store.resolve(job_id), self.settings
        ended = self.store.stop_job(full, cfg.log_max_entries, cfg.unstarted_ttl)
        record = self.store.get_job(full)
        # no worker ends it, so none advances its workflow: this call, or a repeated stop of it
        # (an advance cut short by Redis was never made again: the workflow waited for good)
        unrun = ended or (record.status.final and record.started is None)
        if unrun and record.workflow:
            from joblet.api import workflow_store

            try:
                workflow_store.advance(self.store, cfg, record.workflow)
            except NotFound:  # saved by an older version, with a TTL from its submit: expired
                pass
        return record

    def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Block until the job is in a final state and return its record."""
        full = self.store.resolve(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        after = self.store.last_output_id(full)
        while True:
            record = self.store.get_job(full)
            if record.status.final:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {record.short_id} still {record.status.value}")
            # wake as soon as the job's stream grows (its end marker follows the final record)
            entries = self.store.read_output(full, after, block_ms=100)
            after = entries[-1][0] if entries else after

    def live_nodes(self) -> dict[str, dict[str, Any]]:
        return self.store.live_nodes()

    def stop_graces(self) -> dict[str, float]:
        """Each live node's stop grace, as its heartbeat publishes it (older workers do not);
        empty when Redis cannot say: a stop's wait then falls back on this client's setting."""
        from joblet.api.nodes import stop_graces

        try:
            return stop_graces(self.live_nodes())
        except JobletError:
            return {}

    def nodes(self) -> builtins.list[dict[str, Any]]:
        """Every node the fleet has seen: state (up, down, draining), last heartbeat, version,
        capacity and running jobs, capabilities and addresses (`rnx nodes --json`)."""
        from joblet.api.preflight import fleet_view

        return fleet_view(self.store, self.settings)

    def _node_row(self, node: str) -> dict[str, Any]:
        """The node's row of `nodes()`; NotFound (with a guess) where the fleet has none."""
        from joblet.api.nodes import no_node
        from joblet.errors import NotFound, ValidationError

        if not node.strip():
            raise ValidationError("no node name given")  # a usage error: exit 2
        rows = self.nodes()
        row = next((n for n in rows if n["name"] == node), None)
        if row is None:
            raise NotFound(no_node(node, rows))
        return row

    def drain(self, node: str, on: bool = True) -> dict[str, Any]:
        """Stop sending new jobs to a node (its running jobs go on); `on=False` undoes it and
        sends the workflow jobs pinned to the node that were kept while it drained. The
        node's row is returned with "held": the ids of the kept jobs that wait (drained),
        or "sent": those sent (undrained). A kept job is sent as `submit` sends: refused
        (ConfigError) where this client's signing does not match the node's, and kept then."""
        from joblet.api.store_nodes import NodeStore

        self._node_row(node)  # it exists
        store = NodeStore(self.settings.redis_url, self.settings.key_prefix, self.store.redis)
        store.set_drain(node, on)
        kept = store.held(node)
        if on:
            waiting = [r.id for r in self.store.find_jobs(kept) if r is not None and r.status == JobStatus.PENDING]
            extra = {"held": waiting}
        else:
            extra = {"sent": self._send_held(node, kept)}
            store.release_held(node, kept)  # sent, or ended meanwhile; a failed send keeps them all
        return {**next(n for n in self.nodes() if n["name"] == node), **extra}

    def _send_held(self, node: str, job_ids: list[str]) -> list[str]:
        """Queue the kept jobs still PENDING for `node` (one the fleet made LOST meanwhile, or
        stopped, is not)."""
        from joblet.api.tasks import send_runs

        records = [r for r in self.store.find_jobs(job_ids) if r is not None]
        ready = [r for r in records if r.status == JobStatus.PENDING and r.node == node]
        if ready:  # unsigned to a signing fleet, they were dropped unread: PENDING for good (review)
            self.preflight.check_fleet(node)
            send_runs(self.settings, [(r.id, r.spec.to_dict(), node) for r in ready], self.store.prefix_stamp())
        return [r.id for r in ready]

    def unfinished_on(self, node: str, record: dict[str, Any] | None = None) -> list[JobRecord]:
        """The jobs placed on, claimed by or running on `node` that have not ended, from
        their records (not its heartbeat's count, up to a beat old), oldest first. From the
        index of such jobs where the node's last heartbeat (`record`, else read) says it
        keeps it; else from every kept record (an older worker's claims are not there)."""
        if record is None:
            from joblet.api.store_nodes import NodeStore

            nodes = NodeStore(self.settings.redis_url, self.settings.key_prefix, self.store.redis)
            record = nodes.records().get(node, {})
        return self.store.unfinished_on(node, indexed=record.get("indexes_live") is True)

    def forget_node(self, node: str) -> None:
        """Drop a node gone for good from the fleet's listing (`rnx nodes`, placement's
        refusals): only a down one with no unfinished job, or whose jobs the fleet has made
        LOST. Its worker, started again, is listed again at its first heartbeat."""
        from joblet.api.store_nodes import NodeStore
        from joblet.errors import NotFound

        store = NodeStore(self.settings.redis_url, self.settings.key_prefix, self.store.redis)
        try:
            row = self._node_row(node)
        except NotFound:
            if store.forget_unreadable(node):  # listed nowhere: this was the only way to it
                return
            raise
        record, swept = store.records().get(node, {}), store.swept().get(node)
        # read only while a sweep is still to come, from every kept record (a job the index lacks must hold it)
        waiting = row["state"] == "down" and swept != float(record.get("beat", 0))
        unfinished = [r.short_id for r in self.store.unfinished_on(node, indexed=False)] if waiting else []
        live = bool(unfinished and self.store.live_nodes())
        why = forget_checked(node, row, record, swept, unfinished, live, self.settings.node_down_after)
        if why is not None:
            raise Conflict(why)
        if not store.forget(node, record):
            raise Conflict(f"node {node!r} sent a heartbeat meanwhile: its worker is back")


def forget_checked(
    name: str,
    row: dict[str, Any],
    record: dict[str, Any],
    swept: float | None,
    unfinished: list[str],
    any_live: bool = True,
    down_after: float = 20.0,
) -> str | None:
    """Why a node may not be forgotten yet, or None (pure): it is up, or down with unfinished
    jobs (`unfinished`: their short ids) the fleet's sweep of its last silence has not made
    LOST. A node down with none (a clean stop ends its jobs) goes at once: it waited for a
    sweep that, with no other worker alive, never came (usability run). With no live worker
    at all (`any_live`), only a worker's start ends them: `rnx stop` alone did not (fleet run)."""
    if row["state"] != "down":  # a worker killed a moment ago is still up (draining): "stop it" read wrong
        return (
            f"node {name!r} is {row['state']}: stop its worker first (rnx node drain sends it no new jobs); "
            f"a worker stopped cleanly leaves its node down at once ({down_after:g} s after its last "
            "heartbeat if it was killed: JOBLET_NODE_DOWN_AFTER)"
        )
    if swept != float(record.get("beat", 0)) and unfinished:
        jobs = f"node {name!r} is down with {len(unfinished)} unfinished job(s) ({listed(unfinished)})"
        if not any_live:
            return f"{jobs}, and no worker is live to make them LOST: start any worker (or this node's)"
        return (
            f"{jobs}: rnx stop them, "
            "or a live worker makes them LOST node_down_after + node_lost_grace after its last heartbeat"
        )
    return None


def statuses(given: Any) -> tuple[str, ...]:
    """`status=` as Client.list takes it: one (`"RUNNING"`, `JobStatus.RUNNING`, any case) or
    several; a string was read letter by letter and matched nothing (usability run)."""
    from joblet.api.models import JobStatus
    from joblet.errors import ValidationError

    many = (given,) if isinstance(given, str) else tuple(given)
    names = tuple(str(getattr(s, "value", s)).upper() for s in many)
    known = {s.value for s in JobStatus}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValidationError(f"unknown status {unknown[0]!r}: one of {', '.join(sorted(known))}")
    return names


def select(
    records: list[JobRecord],
    status: Any = (),
    node: str | None = None,
    network: str | None = None,
    name: str | None = None,
) -> list[JobRecord]:
    """The records that match every filter given (pure)."""
    wanted = {str(s).upper() for s in status}
    return [
        r
        for r in records
        if (not wanted or r.status.value in wanted)
        and (node is None or r.node == node)
        and (network is None or network in r.spec.network)
        and (name is None or name_key(r.name or "") == name_key(name))
    ]
