"""Everything one worker process shares between its jobs.

It claims jobs (at most once), keeps the table of running ones, listens for stops, beats a
heartbeat, and on start reconciles what a crashed predecessor left behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.networks import NetworkStore
from joblet.api.store import Store
from joblet.api.store_ipam import IpamStore
from joblet.api.volumes import VolumeStore
from joblet.config import Settings
from joblet.errors import BackendUnavailable, ExecutionError, JobletError, NotFound
from joblet.network_agent.agent import NetworkAgent
from joblet.network_agent.plan import NetPlan
from joblet.worker import cgroups, faults, stats
from joblet.worker.cgroups import JobCgroup
from joblet.worker.execution import Sandbox
from joblet.worker.journal import Journal
from joblet.worker.mounts import remove_dirs, unmount_all
from joblet.worker.output import OutputPump
from joblet.worker.resilient import resilient
from joblet.worker.runner import WAITING, JobRun, Outcome
from joblet.worker.sandbox import Host, make_cover, survey
from joblet.worker.volumes import RUNTIME_POINT, HostVolumes, runtime_root, runtimes

log = logging.getLogger(__name__)


JOB_LINK = re.compile(r"^j[vi][0-9a-f]{10}$")
NO_DISCOVERY = ("bridge", "none", "isolated", "host")  # Docker's rule: names in user networks only


class Duplicate(Exception):
    """This job was claimed before: the message is a redelivery."""


class Supervisor:
    """The worker's shared state and background threads."""

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        self.store = Store(cfg.redis_url, cfg.key_prefix)
        shared = self.store.redis  # one connection pool for the worker's state
        self.agent = NetworkAgent(cfg, IpamStore(cfg.redis_url, cfg.key_prefix, shared),
                                  NetworkStore(cfg.redis_url, cfg.key_prefix, shared))
        self.volume_store = VolumeStore(cfg.redis_url, cfg.key_prefix, shared)
        self.volumes = HostVolumes(cfg.state_dir)
        self.cgroup_v2 = False  # limits in the job's own v2 group, else in v1 twins
        self.journal = Journal(cfg.state_dir)
        self.cgroup_root = (cfg.cgroup_root or cgroups.detect_root() / "joblet")
        self.pump = OutputPump(self.store, cfg.log_max_entries)
        self.running: dict[str, JobRun] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.started = time.time()
        self.cover = cfg.run_dir / "cover"

    def sandbox_host(self) -> Host:
        """What a job's root binds and covers on this host now (secrets include joblet's own
        key and config file wherever an operator put them)."""
        import os

        cfg = self.cfg
        own = [str(p) for p in (cfg.signing_key,) if p is not None]
        own += [os.environ[v] for v in ("JOBLET_CONFIG",) if os.environ.get(v)]
        return survey(self.cover, cfg.sandbox_ro_paths, (*cfg.sandbox_masked_paths, *own))

    def start(self) -> None:
        self.cgroup_root.mkdir(parents=True, exist_ok=True)
        self.cgroup_v2 = cgroups.enable_controllers(self.cgroup_root.parent, self.cgroup_root)
        self.cover = make_cover(self.cfg.run_dir)
        self.reconcile()
        try:  # reported at start, and again before every bridged or isolated setup
            self.agent.check_forward()
        except JobletError as exc:
            log.error("cannot inspect the host's forward chains: %s", exc)
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._listen_loop, "events")):
            threading.Thread(target=target, name=f"joblet-{name}", daemon=True).start()

    # -- running a job ----------------------------------------------------------------------
    def run(self, job_id: str, spec: JobSpec) -> dict[str, Any]:
        """Run a queued job here unless it was claimed, stopped or finished already."""
        record = JobRecord(id=job_id, status=JobStatus.PENDING, spec=spec, name=spec.name,
                           created=time.time())
        self.store.create_job_if_absent(record)
        if not self.store.claim(job_id, self.cfg.node):
            raise Duplicate(job_id)
        current = self.store.get_job(job_id)
        if current.status.final:
            return self.result(current)
        if self.store.stop_requested(job_id):
            out = self.finish(job_id, Outcome(JobStatus.STOPPED, error="stopped before it started"))
            self.store.end_output(job_id, {"status": "STOPPED"}, self.cfg.log_max_entries)
            return out
        run = JobRun(self, job_id, spec)
        with self._lock:
            self.running[job_id] = run
        try:
            return run.execute()
        finally:
            with self._lock:
                self.running.pop(job_id, None)

    def finish(self, job_id: str, outcome: Outcome, stdout: bytes = b"",
               truncated: bool = False) -> dict[str, Any]:
        """Record the final state (waiting out a Redis outage); returns the task result."""
        fields = {"status": outcome.status, "exit_code": outcome.exit_code, "signal": outcome.signal,
                  "error": outcome.error, "finished": time.time(), "node": self.cfg.node}
        recorded = self._retrying(lambda: self.store.transition(
            job_id, (*WAITING, JobStatus.RUNNING), **fields))
        if not recorded:  # already final, or Redis lost its data (no persistence)
            log.warning("job %s: record missing or already final; %s not recorded over it",
                        job_id[:12], outcome.status.value)
        self._retrying(lambda: self.store.expire_job(job_id, self.cfg.log_ttl))
        record = self._retrying(lambda: self.store.find_job(job_id))
        if record is None:
            return {"id": job_id, "status": outcome.status.value, "exit_code": outcome.exit_code,
                    "error": outcome.error, "output": stdout.decode(errors="replace"),
                    "output_truncated": truncated}
        if record.workflow:
            self.advance_workflow(record.workflow)
        result = self.result(record, stdout)
        result["output_truncated"] = truncated
        return result

    def _retrying(self, step: Any, patience: float = 600.0) -> Any:
        """Run a Redis step, retrying while Redis is unreachable (up to `patience` seconds)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return step()
            except BackendUnavailable as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("redis unreachable (%s); retrying", exc)
                time.sleep(1)

    def advance_workflow(self, wf_id: str) -> None:
        """A workflow job ended: queue the jobs that may start now, cancel those that cannot."""
        from joblet.api.workflow_store import advance

        try:
            advance(self.store, self.cfg, wf_id)
        except Exception as exc:  # noqa: BLE001 - the job's own end is recorded regardless
            log.error("workflow %s: %s", wf_id[:12], exc)

    @staticmethod
    def result(record: JobRecord, stdout: bytes = b"") -> dict[str, Any]:
        out = record.public()
        out["output"] = stdout.decode(errors="replace")
        if not stdout.isascii():
            out["output_base64"] = base64.b64encode(stdout).decode()
        return out

    def release(self, job_id: str, cgroup: JobCgroup, sandbox: Sandbox | None,
                plan: NetPlan | None, dirs: list[Any]) -> str | None:
        """Kill, unmount, unwire and free everything of a job; returns collected errors."""
        errors = []
        steps: list[tuple[str, Any]] = [("kill processes", cgroup.kill),
                                        ("fault point", lambda: faults.point("teardown", job_id))]
        if sandbox is not None:
            steps.append(("reap init", sandbox.close))
        steps.append(("remove cgroup", cgroup.remove))
        if plan is not None:
            steps.append(("leave networks", lambda: self.store.leave_networks(job_id, list(plan.ips))))
            steps.append(("release network", lambda: self.agent.release(plan)))
        steps.append(("remove files", lambda: remove_dirs(dirs)))
        steps.append(("forget journal", lambda: self.journal.forget(job_id)))
        for what, step in steps:
            try:
                step()
            except (JobletError, OSError) as exc:
                errors.append(f"{what}: {exc}")
        return "; ".join(errors) or None

    def mounts_for(self, spec: JobSpec) -> tuple[list[tuple[str, str, bool]], str | None]:
        """The binds (host path, job path, read-only) of the job's volumes and runtime, and
        its PATH prefix."""
        binds: list[tuple[str, str, bool]] = []
        for name in spec.volumes:
            try:
                data = self.volumes.ensure(self.volume_store.get(name))
            except NotFound:
                raise ExecutionError(f"volume {name!r} does not exist (any more)") from None
            binds.append((str(data), f"/volumes/{name}", False))
        if spec.runtime is None:
            return binds, None
        root = runtime_root(self.cfg.runtimes_dir, spec.runtime)
        return [*binds, (str(root), str(RUNTIME_POINT), True)], f"{RUNTIME_POINT}/bin"

    def sweep_volumes(self) -> None:
        """Remove the data of deleted volumes that no local job uses."""
        existing = {v.name for v in self.volume_store.all()}
        with self._lock:
            in_use = {v for r in self.running.values() for v in r.spec.volumes}
        for name in self.volumes.local():
            if name not in existing and name not in in_use:
                self.volumes.remove(name)
                log.info("removed volume %s from this host: it was deleted", name)

    # -- discovery by name -------------------------------------------------------------------
    def peers(self, networks: list[str]) -> dict[str, str]:
        """name -> address of the running jobs in these user networks, fleet-wide."""
        wanted = [n for n in networks if n not in NO_DISCOVERY]
        return self.store.members(wanted) if wanted else {}

    def join(self, job_id: str, plan: NetPlan, names: list[str]) -> None:
        ips = {n: ip for n, ip in plan.ips.items() if n not in NO_DISCOVERY}
        if ips:
            self.store.join_networks(job_id, ips, names)

    def refresh_hosts(self, networks: list[str], tell_fleet: bool = True) -> None:
        """Rewrite /etc/hosts of this host's jobs in these user networks (in place: bind
        mounts), then tell the other workers to do the same for theirs."""
        wanted = [n for n in networks if n not in NO_DISCOVERY]
        if not wanted:
            return
        with self._lock:
            runs = [r for r in self.running.values() if r.plan and set(wanted) & set(r.plan.ips)]
        for run in runs:
            run.write_hosts()
        if tell_fleet:
            try:
                self.store.publish_event("hosts", networks=wanted, node=self.cfg.node)
            except BackendUnavailable as exc:
                log.warning("could not tell other workers about %s: %s", wanted, exc)

    def networks_in_use(self) -> set[str]:
        with self._lock:
            return {n for r in self.running.values() if r.plan for n in r.plan.ips}

    def sweep_networks(self) -> None:
        """Drop the bridges and rules of deleted networks that no local job uses."""
        existing = [n.name for n in self.agent.networks.all()]
        for name in self.agent.sweep_networks(existing, self.networks_in_use()):
            log.info("removed network %s from this host: it was deleted", name)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "hosts" and event.get("node") != self.cfg.node:
            self.refresh_hosts(list(event.get("networks", [])), tell_fleet=False)
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
        """Stop every job here (worker shutdown)."""
        self._closing.set()
        with self._lock:
            runs = list(self.running.values())
        for run in runs:
            run.stop()

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

    def _heartbeat_loop(self) -> None:
        if not self._closing.wait(self.cfg.heartbeat_interval):
            resilient("heartbeat", self.beat, self._closing, every=self.cfg.heartbeat_interval)

    def beat(self) -> None:
        """Presence, missed stops, host upkeep, job samples: a failure of one does not skip the others."""
        failures = []
        for part in (self._beat_presence, self._beat_upkeep, lambda: stats.sample(self)):
            try:
                part()
            except Exception as exc:  # noqa: BLE001 - raised again below, after every part ran
                failures.append(exc)
        for exc in failures[1:]:
            log.warning("heartbeat: %s: %s", type(exc).__name__, exc)
        if failures:
            raise failures[0]  # resilient() logs it and backs off

    def _beat_presence(self) -> None:
        faults.fail("beat")
        with self._lock:
            ids = list(self.running)
        info = {"node": self.cfg.node, "jobs": len(ids), "since": self.started,
                "runtimes": runtimes(self.cfg.runtimes_dir)}
        try:
            self.store.heartbeat(self.cfg.node, info, ttl=int(self.cfg.heartbeat_interval * 3) + 1)
            for job_id in self.store.stops_among(ids):  # stops missed by the listener
                self.stop_local(job_id)
        except BackendUnavailable as exc:
            log.warning("heartbeat: %s", exc)

    def _beat_upkeep(self) -> None:
        faults.fail("upkeep")
        try:
            if self.agent.ensure_firewall():
                log.warning("joblet's nftables table was gone: restored it")
            self.agent.check_forward()
            self.sweep_networks()
            self.sweep_volumes()
        except JobletError as exc:
            log.error("host network upkeep: %s", exc)

    # -- after a crash ----------------------------------------------------------------------
    def reconcile(self) -> None:
        """Tear down what the journal lists and no live job here owns; mark such jobs LOST."""
        for entry in self.journal.entries():
            with self._lock:
                if entry.job_id in self.running:
                    continue
            problems = self.release(entry.job_id, JobCgroup(Path(entry.cgroup)), None, entry.plan,
                                    [Path(entry.work_dir), Path(entry.run_dir)])
            with contextlib.suppress(JobletError):
                if self.store.transition(entry.job_id, (*WAITING, JobStatus.RUNNING),
                                         status=JobStatus.LOST, finished=time.time(),
                                         error="the worker running it stopped unexpectedly"):
                    self.store.end_output(entry.job_id, {"status": "LOST"}, self.cfg.log_max_entries)
                    lost = self.store.find_job(entry.job_id)
                    if lost is not None and lost.workflow:
                        self.advance_workflow(lost.workflow)
            log.warning("reconciled job %s%s", entry.job_id[:12], f": {problems}" if problems else "")
        self.scan_leftovers()

    def scan_leftovers(self) -> None:
        """At start nothing of ours runs here: remove what the kernel and disk still hold
        (job cgroups, job veths, job dirs) and free addresses whose owner has ended."""
        from joblet.network_agent import links

        if self.cgroup_root.is_dir():
            for group in [d for d in self.cgroup_root.iterdir() if d.is_dir()]:
                try:
                    JobCgroup(group).remove()
                    log.warning("removed leftover cgroup %s", group.name[:12])
                except JobletError as exc:
                    log.error("leftover cgroup %s: %s", group, exc)
        for name in links.names_with_prefix(("jv", "ji")):
            if not JOB_LINK.match(name):
                continue  # not one of ours: job links are jv/ji + 10 hex digits
            links.delete_link(name)
            log.warning("removed leftover interface %s", name)
        for base in (self.cfg.run_dir / "jobs", self.cfg.state_dir / "jobs"):
            unmount_all(base)  # job /work tmpfs mounts of a crashed worker
            remove_dirs([d for d in base.iterdir()] if base.is_dir() else [])
        try:
            self.free_orphan_addresses()
        except JobletError as exc:
            log.error("freeing addresses of ended jobs: %s", exc)

    def free_orphan_addresses(self) -> None:
        """Release every address (fleet-wide) whose owner job has ended or is gone."""
        ipam = self.agent.ipam
        for network in ["bridge", "isolated", *(n.name for n in self.agent.networks.all())]:
            for address, owner in ipam.allocations(network).items():
                rec = self.store.find_job(owner)
                if rec is None or rec.status.final:
                    ipam.release(network, address, owner)
                    log.warning("freed %s address slot %d of ended job %s", network, address, owner[:12])
