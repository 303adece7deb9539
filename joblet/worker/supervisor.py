"""The worker's supervisor: claims jobs (at most once), keeps the table of running ones,
stops them, and beats the heartbeat that also repairs the host (firewall, deleted networks
and volumes). A job's own life is joblet.worker.job; discovery and crash reconciliation are
modules of their own; what they share is joblet.worker.services.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from joblet.api.message import JOB_ID_RE
from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.networks import NetworkStore, host_prefixes
from joblet.api.store import Store
from joblet.api.store_ipam import IpamStore
from joblet.api.store_nodes import NodeStore
from joblet.api.volumes import VolumeStore
from joblet.config import Settings
from joblet.errors import BackendUnavailable, ExecutionError, JobletError
from joblet.network_agent import host
from joblet.network_agent.agent import NetworkAgent
from joblet.network_agent.overlay import Overlay
from joblet.network_agent.repair import BridgeWatch
from joblet.worker import cgroups, faults, fleet, landlock, ns_lock, stats
from joblet.worker.discovery import Discovery
from joblet.worker.disks import full_dirs, full_disks
from joblet.worker.etc_view import EtcView, Secrets
from joblet.worker.execution import oom_floor
from joblet.worker.job import JobRun
from joblet.worker.journal import Journal
from joblet.worker.kernel import LinuxKernel
from joblet.worker.mount_template import MountTemplate
from joblet.worker.output import OutputPump
from joblet.worker.reconcile import reconcile
from joblet.worker.records import Outcome, Records, result, retrying
from joblet.worker.resilient import resilient
from joblet.worker.restore import restore_forgotten
from joblet.worker.services import Services, host_survey, secret_patterns, template_keep, template_sealed
from joblet.worker.volumes import HostVolumes, JobMounts, runtimes

log = logging.getLogger(__name__)


class Duplicate(Exception):
    """This job was claimed before: the message is a redelivery."""


def build_services(cfg: Settings) -> Services:
    """The worker's shared parts, on one Redis connection pool."""
    store = Store(cfg.redis_url, cfg.key_prefix)
    shared = store.redis
    agent = NetworkAgent(
        cfg, IpamStore(cfg.redis_url, cfg.key_prefix, shared), NetworkStore(cfg.redis_url, cfg.key_prefix, shared)
    )
    mounts = JobMounts(
        HostVolumes(cfg.state_dir, cfg.volume_keep_free),
        VolumeStore(cfg.redis_url, cfg.key_prefix, shared),
        cfg.runtimes_dir,
        (cfg.state_dir, cfg.run_dir),  # as the heartbeat's list of runtimes guards them
    )
    discovery = Discovery(store, cfg.node)
    cgroup_root = host.jobs_cgroup_root(cfg)
    etc = EtcView(str(cfg.run_dir / "etc"), Secrets(secret_patterns(cfg)))
    if cfg.overlay:
        agent.overlay = Overlay(cfg, store)
        agent.overlay.on_macs = agent.overlay_changed
        discovery.listeners.append(agent.overlay.sync)
    return Services(
        cfg=cfg,
        store=store,
        agent=agent,
        journal=Journal(cfg.state_dir),
        pump=OutputPump(store, cfg.log_max_entries, cfg.output_max_bytes, cfg.log_ttl),  # not settings() again
        mounts=mounts,
        discovery=discovery,
        records=Records(store, cfg),
        host=host_survey(cfg, cfg.run_dir / "job" / "cover", etc),  # in each job's files (mounts.py)
        cgroup_root=cgroup_root,
        etc=etc,
        kernel=LinuxKernel(MountTemplate(template_keep(cfg), template_sealed())),
    )


def started_plans(runs: list[Any]) -> list[Any]:
    """The network plans of the jobs whose command started (the bridge repair's): a job still
    in its setup makes its bridges, or removes them when the setup fails; repaired under it, a
    failed setup's bridge was made again by a heartbeat and left behind (CI run)."""
    started = (r for r in runs if r.sandbox is not None and r.sandbox.released)
    return [r.plan for r in started if r.plan is not None and r.netns is not None]


class Supervisor:
    """Claims, the running table, stops and the heartbeat of one worker."""

    def __init__(self, cfg: Settings, svc: Services | None = None) -> None:
        self.cfg = cfg
        self.svc = svc or build_services(cfg)
        self.store = self.svc.store
        self.nodes = NodeStore(cfg.redis_url, cfg.key_prefix, self.store.redis)
        self.running: dict[str, JobRun] = {}
        self.claiming: set[str] = set()  # jobs a delivery here claims or runs: one at a time
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._leaving = threading.Lock()  # a presence beat's write, or the node's leave
        self.started = time.time()
        self.present_since: float | None = None  # since its heartbeats reach Redis without a gap
        self._sampler = stats.Sampler()  # each job's previous CPU reading, for a rate
        self._bridges = BridgeWatch()  # its jobs' bridges, made again if deleted under them
        self.place = ""  # where it runs (fleet.place), set by start
        self._other_places: set[str] = set()  # of other workers seen beating under its name
        self._beats = self.store  # the presence beat's: a connection of its own from start()
        self._facts: dict[str, dict[str, Any]] = {}  # the heartbeat's host facts, as last read

    def _jobs_cgroups(self) -> None:
        """The jobs' parent group (and its v1 twins on hybrid hosts), with the memory and pids
        budgets of all jobs together."""
        svc, root = self.svc, self.svc.cgroup_root
        # one worker's alone: its reconcile removes every group there (after the node's name
        # was found free: a worker refused for it makes nothing for jobs)
        ns_lock.hold_dir(cgroups.make_root(root), "cgroup_root")
        for twin in cgroups.make_v1_parents(root):  # hybrid hosts: named by the root's name alone
            ns_lock.hold_dir(twin, "cgroup_root", f"{twin}, the v1 twin of every cgroup_root named {root.name!r},")
        svc.cgroup_v2 = cgroups.enable_controllers(root.parent, root)
        memory = cgroups.jobs_memory_budget(self.cfg.jobs_max_memory, cgroups.host_memory_mb())
        try:
            where = cgroups.limit_jobs_memory(svc.cgroup_root, memory)
            svc.jobs_memory_mb = memory
            log.info("jobs here: at most %d MB of memory together (%s)", memory, where)
        except ExecutionError as exc:  # a limit below what they hold now: said, the worker runs
            log.warning("jobs here: %s (JOBLET_JOBS_MAX_MEMORY)", exc)
        budget = cgroups.jobs_pids_budget(self.cfg.jobs_max_pids, cgroups.host_pid_limit())
        where = cgroups.limit_jobs_pids(svc.cgroup_root, budget)
        log.info("jobs here: at most %d processes and threads together (%s)", budget, where)
        if budget < self.cfg.default_pids:
            log.warning(
                "all jobs here together may have %d processes, fewer than one job's default (%d): "
                "raise kernel.threads-max or kernel.pid_max, or set JOBLET_JOBS_MAX_PIDS",
                budget,
                self.cfg.default_pids,
            )

    def start(self) -> None:
        svc = self.svc
        self.place = fleet.place(self.cfg.state_dir)
        fleet.refuse_taken_node(self.store, self.cfg.node, self.place)  # before anything is made
        self.store.node_info["place"] = self.place
        self._jobs_cgroups()
        if full := full_disks(self.cfg):
            log.warning("%s", full)
        warning = oom_floor(self.cfg.job_oom_score_adj)
        if warning:
            log.warning("%s", warning)
        if cgroups.block_device(self.cfg.state_dir) is None:
            log.warning(
                "state_dir %s is on a filesystem with no block device of its own (btrfs, ZFS, overlayfs, tmpfs): "
                "--max-iobps throttles jobs' sized volumes and network here, not that disk",
                self.cfg.state_dir,
            )
        if self.cfg.allow_host_network and not landlock.can_scope():
            log.warning(
                "this kernel has no Landlock scopes (Linux 6.12+, landlock in lsm=): host-mode jobs "
                "can connect to the abstract unix sockets of the host's services"
            )
        if svc.etc is not None:
            try:
                svc.etc.start()
            except OSError as exc:
                raise ExecutionError(f"failed to copy /etc for jobs into {svc.etc.path}: {exc}") from None
        with self._lock:
            running = set(self.running)
        reconcile(svc, running)  # before the huge pages' limit: a job a killed worker left may hold some
        if not cgroups.refuse_huge_pages(svc.cgroup_root.parent, svc.cgroup_root) and cgroups.host_huge_pages():
            log.warning(
                "jobs here can map all of this host's huge pages (vm.nr_hugepages), which "
                "--max-memory does not count: no hugetlb limit is set on %s (its controller is "
                "in cgroup v1, or not enabled for it)",
                svc.cgroup_root,
            )
        if svc.agent.overlay is not None:
            svc.agent.overlay.hold_port()
            try:  # the ports a previous worker left, in step now (the heartbeat's sync tries again)
                if taken := svc.agent.overlay.adopt(svc.agent.networks.all()):
                    log.info("overlay ports taken back and brought in step: %s", ", ".join(taken))
            except Exception as exc:  # noqa: BLE001 - each network's next job remakes its port
                log.warning("taking back this host's overlay ports: %s: %s", type(exc).__name__, exc)
        try:  # reported at start, and again before every bridged or isolated setup
            svc.agent.check_forward()
        except JobletError as exc:
            log.error("cannot inspect the host's forward chains: %s", exc)
        # the presence beat writes through its own connection, not the pool the job threads
        # share, which a workflow's fan-out once kept busy for minutes: the node was taken for
        # down, and its live jobs for LOST (red-team run)
        self._beats = Store(self.cfg.redis_url, self.cfg.key_prefix)
        self._beats.node_info = self.store.node_info  # the same fields (signed, place)
        loops = ((self._presence_loop, "presence"), (self._heartbeat_loop, "heartbeat"), (self._listen_loop, "events"))
        for target, name in loops:
            threading.Thread(target=target, name=f"joblet-{name}", daemon=True).start()

    # -- running a job ----------------------------------------------------------------------
    def run(self, job_id: str, spec: JobSpec, keep_stdout: bool = True) -> dict[str, Any]:
        """Run a queued job here unless it was claimed, stopped or finished already;
        `keep_stdout`: its result carries its stdout's beginning (result_output_limit)."""
        with self._lock:
            if job_id in self.claiming:
                raise Duplicate(job_id)
            self.claiming.add(job_id)
        try:
            return self._claim_and_run(job_id, spec, keep_stdout)
        finally:
            with self._lock:
                self.claiming.discard(job_id)

    def handles(self, job_id: str) -> bool:
        """Whether a delivery here claims or runs the job now."""
        with self._lock:
            return job_id in self.claiming

    def _claim_and_run(self, job_id: str, spec: JobSpec, keep_stdout: bool) -> dict[str, Any]:
        # The record is written if absent, then claimed: one claim (one token) through a Redis
        # outage, retried as long as a final record would be. A claim whose reply was lost
        # left the job claimed and PENDING for good (its redelivery refused as a replay), and
        # that delivery's task failed. A claim of this node's that no delivery here runs (its
        # reply lost for longer, a worker dead before the start) is taken over (`retake`).
        token = f"{self.place}:{uuid.uuid4().hex}"  # its place first: claims.py's retake
        pending = JobRecord.pending(job_id, spec)
        claims = self.svc.records.claims
        claimed = retrying(lambda: claims.claim(pending, self.cfg.node, token, retake=True), self.cfg.record_patience)
        if claimed is None:
            raise Duplicate(job_id)
        if claimed.record.status.final:
            return result(claimed.record)
        if claimed.stop_requested:
            return self._end_unrun(job_id, spec, Outcome(JobStatus.STOPPED, error="stopped before it started"))
        try:
            run = JobRun(self.svc, job_id, spec, claimed.record.workflow, keep_stdout)
        except Exception as exc:  # the host's limits (EMFILE): claimed, so it must still end
            log.exception("job %s: its run could not be made", job_id[:12])
            failed = Outcome(JobStatus.FAILED, error=f"internal error: {type(exc).__name__}: {exc}")
            return self._end_unrun(job_id, spec, failed)
        with self._lock:
            self.running[job_id] = run
        if self._closing.is_set():  # claimed while stop_all went through the jobs: it ran unstopped
            run.stop(self._shutdown_why())
        try:
            return run.execute()
        finally:
            with self._lock:
                self.running.pop(job_id, None)

    def _end_unrun(self, job_id: str, spec: JobSpec, outcome: Outcome) -> dict[str, Any]:
        """The final record and stream end of a claimed job that never started."""
        out = self.svc.records.finish(job_id, outcome, spec=spec)
        self.store.end_output(job_id, {"status": outcome.status.value}, self.cfg.log_max_entries, self.cfg.log_ttl)
        return out

    # -- host upkeep --------------------------------------------------------------------------
    def sweep_volumes(self) -> None:
        """Remove the data of deleted volumes that no local job uses."""
        with self._lock:
            in_use = {v for r in self.running.values() for v in r.spec.volumes}
        for name in self.svc.mounts.sweep(in_use):
            log.info("removed volume %s from this host: it was deleted", name)

    def sweep_cgroups(self) -> None:
        """Remove the cgroups of jobs that ended here but whose teardown could not remove them
        (a fork bomb's last processes still exiting after 5 s, on a loaded host: they stayed
        until the worker's restart, red-team run). Listed before the running jobs are read: a
        job's group is made after its claim here and removed before the claim's end."""
        root = self.svc.cgroup_root
        listed = [d for d in root.iterdir() if d.is_dir() and JOB_ID_RE.match(d.name)] if root.is_dir() else []
        with self._lock:
            live = set(self.claiming)
        for group in listed:
            if group.name not in live:
                try:
                    self.svc.kernel.cgroup(group).remove(timeout=0)
                    log.info("removed the cgroup left by job %s", group.name[:12])
                except JobletError as exc:  # its last processes still exiting: the next beat
                    log.debug("cgroup of ended job %s: %s", group.name[:12], exc)

    def sweep_networks(self) -> None:
        """Drop the bridges and rules of deleted networks that no local job uses."""
        agent = self.svc.agent
        with self._lock:
            in_use = {n for r in self.running.values() if r.plan for n in r.plan.ips}
        attached = agent.overlay.attached_networks() if agent.overlay is not None else set()  # before the definitions
        for name in agent.sweep_networks([n.name for n in agent.networks.all()], in_use, attached):
            log.info("removed network %s from this host: it is defined no more (deleted, or Redis lost it)", name)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "hosts" and event.get("node") != self.cfg.node:
            self.svc.discovery.refresh(list(event.get("networks", [])), tell_fleet=False)
        elif kind == "network-deleted":
            self.sweep_networks()
        elif kind == "volume-deleted":
            self.sweep_volumes()

    # -- stops ------------------------------------------------------------------------------
    def stop_local(self, job_id: str) -> bool:
        with self._lock:
            run = self.running.get(job_id)
        if run is not None:
            run.stop()
        return run is not None

    def stop_all(self) -> None:
        """Stop every job here (worker shutdown), and any claimed from now on (a delivery
        between its claim and its run's start: it ran to its end, unstopped, past the node's
        leave; review)."""
        self._closing.set()
        with self._lock:
            runs = list(self.running.values())
        for run in runs:
            run.stop(self._shutdown_why())

    @property
    def closing(self) -> bool:
        """The worker shuts down (stop_all): what reaches it now is not started here."""
        return self._closing.is_set()

    def _shutdown_why(self) -> str:
        return f"stopped by the shutdown of its worker (node {self.cfg.node})"

    def leave(self) -> None:
        """The node leaves the fleet (worker shutdown, after stop_all): its heartbeat key goes
        and its record says it left. A presence beat still under way then wrote the key again
        without `left`, and clients placed jobs on the node for up to three intervals (review):
        the beat and this take turns, and a beat after stop_all writes nothing."""
        with self._leaving:
            self.store.drop_node(self.cfg.node)
            self.nodes.mark_left(self.cfg.node)

    def _listen_loop(self) -> None:
        """Stops and fleet events as they are published; the heartbeat covers missed ones."""
        resilient("events", self._listen, self._closing)

    def _listen(self) -> None:
        """One subscription, until it fails; one bad message costs a log line, not the loop."""
        stops = self.store.keys.stop_channel.encode()
        pubsub = self.store.subscribe()
        try:
            for message in pubsub.listen():
                if self._closing.is_set():
                    return
                if message.get("type") == "message":
                    self._on_message(stops, message)
        finally:
            with contextlib.suppress(Exception):
                pubsub.close()

    def _on_message(self, stops: bytes, message: dict[str, Any]) -> None:
        try:
            faults.fail("listen")
            if message["channel"] == stops:
                self.stop_local(message["data"].decode())
            else:
                event = json.loads(message["data"])
                if not isinstance(event, dict):
                    raise ValueError("not a JSON object")
                self.on_event(event)
        except Exception as exc:  # noqa: BLE001 - logged; the listener serves the next one
            log.warning("event %r: %s: %s", message.get("data", b"")[:200], type(exc).__name__, exc)

    def ready(self) -> None:
        """Celery is ready: the node beats (it is live from now), then the first upkeep."""
        self._beat_presence()
        self.beat()

    def _presence_loop(self) -> None:
        """The presence beat, alone in its thread on its own connection: behind the upkeep's
        parts on the pool the jobs share, it was late by minutes under a workflow's fan-out,
        and the fleet took the node for down and its live jobs for LOST (red-team run)."""
        if not self._closing.wait(self.cfg.heartbeat_interval):
            resilient("presence", self._beat_presence, self._closing, every=self.cfg.heartbeat_interval)

    def _heartbeat_loop(self) -> None:
        if not self._closing.wait(self.cfg.heartbeat_interval):
            resilient("heartbeat", self.beat, self._closing, every=self.cfg.heartbeat_interval)

    def _beat_samples(self) -> None:
        """Sample every running job and publish the samples (one pipeline: `rnx stats`)."""
        with self._lock:
            runs = [r for r in self.running.values() if r.sandbox is not None]
        samples = self._sampler.take(runs)
        if samples:
            self.store.put_stats(samples, ttl=self.cfg.heartbeat_interval * 3 + 1)

    def beat(self) -> None:
        """Missed stops, final records left unwritten by a Redis outage, host upkeep, job
        samples, lost nodes (the presence beat has its own thread): a failure of one does not
        skip the others. Each is one line but the one raised, an unexpected error before
        Redis out of reach: resilient() gives that its traceback the first time."""
        failures: list[Exception] = []
        for part in (
            self._beat_stops,
            self.svc.records.finals.retry,
            self._beat_upkeep,
            self._beat_samples,
            lambda: fleet.sweep_lost(self),
            self._sweep_jobs_index,
        ):
            try:
                part()
            except Exception as exc:  # noqa: BLE001 - raised again below, after every part ran
                failures.append(exc)
        raise_first(failures, "heartbeat")  # resilient() logs it and backs off

    def _sweep_jobs_index(self) -> None:
        """One slice of the jobs index's sweep (store_index.py), while this node's heartbeat
        goes through (a Redis outage is said once a beat, not once more for this)."""
        if self.present_since is not None:
            self.store.sweep_jobs_index(time.time())

    def _beat_presence(self) -> None:
        faults.fail("beat")
        with self._lock:
            ids = list(self.running)
        info = {"node": self.cfg.node, "jobs": len(ids), "since": self.started, **self._host_facts()}
        try:
            with self._leaving:
                if self._closing.is_set():  # after leave(): a beat then made the node live again
                    return
                replaced = self._beats.heartbeat(self.cfg.node, info, ttl=int(self.cfg.heartbeat_interval * 3) + 1)
            fleet.other_worker(self.cfg.node, replaced, self.place, self._other_places)
            if self.present_since is None:
                self.present_since = time.time()
        except BackendUnavailable as exc:
            self.present_since = None
            log.warning("heartbeat: %s", exc)

    def _host_facts(self) -> dict[str, Any]:
        """What the heartbeat tells of this host, each part read on its own: one that raises
        (EMFILE under load, a netlink error) keeps its last value. It was read before the
        beat's try, and its error skipped the beat itself: 80 s of that and another node's
        sweep made this node's running jobs LOST, freed their addresses and stopped them
        (review), what the presence beat's own thread is there to prevent."""
        parts: dict[str, Callable[[], dict[str, Any]]] = {
            "runtimes": lambda: {"runtimes": runtimes(self.cfg.runtimes_dir, (self.cfg.state_dir, self.cfg.run_dir))},
            "capabilities": lambda: fleet.capabilities(self.svc),
            "network facts": self._network_facts,
            # placement passes a node with a full disk by (its jobs would fail)
            "disks": lambda: {"disk_full": full_dirs(self.cfg), "volume_room_mb": self.svc.mounts.volumes.room_mb()},
        }
        facts: dict[str, Any] = {}
        for name, read in parts.items():
            try:
                faults.fail("beat-facts")
                self._facts[name] = read()
            except Exception as exc:  # noqa: BLE001 - the beat goes out with the last value
                log.warning("heartbeat: %s not read, the last published again: %s: %s", name, type(exc).__name__, exc)
            facts.update(self._facts.get(name, {}))
        return facts

    def _beat_stops(self) -> None:
        """Stops the listener missed, and jobs the fleet gave up on while this node was silent."""
        with self._lock:
            ids = list(self.running)
        for job_id in self.store.stops_among(ids):
            self.stop_local(job_id)
        fleet.stop_lost_here(self, ids)

    def _network_facts(self) -> dict[str, Any]:
        """What clients check new networks against, and what peers send overlay traffic to."""
        agent = self.svc.agent
        mtu = agent.overlay_mtu() if agent.overlay is not None else agent.uplink_mtu()  # network create --mtu's
        facts: dict[str, Any] = {"prefixes": host_prefixes(), "mtu": mtu, "dns": self._job_dns()}
        facts["resolvers"] = host.host_resolvers()  # the host's own: no network may hold one
        if agent.overlay is not None:
            facts["underlay"] = agent.overlay.underlay()
        return facts

    def _job_dns(self) -> list[str]:
        """The DNS servers jobs here are given (a network's own --dns aside): what `network
        create` checks a new range against; none where they cannot be read (a job says why)."""
        try:
            return list(host.job_nameservers(self.cfg.dns_servers, self.cfg.resolv_conf))
        except JobletError:
            return []

    def _beat_upkeep(self) -> None:
        """The host's side of the networks, one step after another: one that fails does not
        skip the rest (an overlay port whose bridge was gone failed every beat, and no bridge
        was repaired nor record restored after it: fleet run). Redis out of reach ends it."""
        faults.fail("upkeep")
        failures: list[Exception] = []  # raised after every step ran: the beat says the first
        for step in (
            self._upkeep_firewall,
            self.sweep_networks,
            self._upkeep_overlay,
            self.sweep_volumes,
            self._upkeep_jobs,
            self.sweep_cgroups,
        ):
            try:
                step()
            except BackendUnavailable as exc:  # a bridge is repaired during an outage all the same
                failures.append(exc)
            except JobletError as exc:
                log.error("host network upkeep: %s", exc)
            except Exception as exc:  # noqa: BLE001 - raised below (the beat logs it), after the other steps
                failures.append(exc)
        raise_first(failures, "host network upkeep", outage_said=True)  # the beat says an outage

    def _upkeep_firewall(self) -> None:
        if self.svc.agent.refresh_control_plane():
            log.info("the broker's or state store's addresses changed: jobs are kept from the new ones")
        if self.svc.agent.refresh_guests():
            log.info("the networks of this host's containers and VMs changed: jobs are kept from them")
        if self.svc.agent.ensure_firewall():
            log.warning("joblet's nftables tables were gone or changed: loaded them again")
        self.svc.agent.check_forward()

    def _upkeep_overlay(self) -> None:
        if self.svc.agent.overlay is not None:
            self.svc.agent.overlay.hold_port()  # if it could not at the start
            self.svc.agent.overlay.sync()  # nodes that came or went

    def _upkeep_jobs(self) -> None:
        """The running jobs' bridges, and their records if Redis restarted without its data."""
        with self._lock:
            runs = list(self.running.values())
        try:
            self._bridges.repair(self.svc.agent, started_plans(runs))
        finally:
            restore_forgotten(self.svc, runs)


def raise_first(failures: list[Exception], what: str, outage_said: bool = False) -> None:
    """Raise the first of these failures, an unexpected one before Redis out of reach; each
    other is one line here, but Redis out of reach where the caller says that once or the one
    raised says it already (an outage was six lines a beat, operator's run)."""
    failures.sort(key=lambda exc: isinstance(exc, BackendUnavailable))
    outage_said = outage_said or bool(failures) and isinstance(failures[0], BackendUnavailable)
    for failure in failures[1:]:
        if not (outage_said and isinstance(failure, BackendUnavailable)):
            log.warning("%s: %s: %s", what, type(failure).__name__, failure)
    if failures:
        raise failures[0]
