"""One job's life on this host, top to bottom: set up (each step pushing its undo), run,
watch, record, and always undo everything that was done, newest first.

Setup, in order (what is undone, and how):
  journal entry            -> forgotten last, once recorded (else the next start reconciles it)
  addresses (IPAM)         -> freed after the final record (below); then the network plan is
                              made (pure) and journaled
  cgroup + its limits      -> every process killed, the cgroup removed
  the job's thread         -> ended, last (worker/nsthread.py: it makes the namespaces below
                              and spawns the process from inside them, so it outlives it)
  network namespace, setup -> the namespace let go (the kernel drops it with its veths),
                              also after a partial setup; without one (host mode): torn down
  mount namespace          -> let go (the kernel drops it, its /work and its sysfs, with the
                              job's last process); uploads are written into /work from inside
  its process              -> killed with the cgroup, reaped; spawned before the network is
                              wired (its undo above): it joins the cgroups and bwrap builds
                              the job's root meanwhile, then waits for the go
  listed in its networks   -> unlisted (peers' /etc/hosts forget it)
  the go                   -> bwrap loads the seccomp filter and starts the command

After the final record and the output's end marker (`release`, newest first, even when those
failed): the kernel's removal of the job's veths awaited (in the background, 0.5-30 ms here),
then its port rules removed (what its sockets still send meanwhile leaves under them), then
the addresses freed. When Redis stays away past record_patience, the release runs first and
the heartbeat writes the record later (`_record_later`: record, the networks' and addresses'
undo again, the stream's end)."""

from __future__ import annotations

import errno
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from joblet.api.keys import STDERR_FIELD
from joblet.api.models import JobSpec, JobStatus
from joblet.api.store_homes import user_networks
from joblet.errors import BackendUnavailable, JobletError, ValidationError
from joblet.network_agent.netns import JobNetns
from joblet.network_agent.plan import NetPlan, make_plan
from joblet.text import printable
from joblet.worker import faults
from joblet.worker.cgroups import block_device
from joblet.worker.disks import full_disks
from joblet.worker.execution import Launch, Sandbox, await_exit
from joblet.worker.journal import Entry
from joblet.worker.lookup import Unrunnable, resolve
from joblet.worker.mounts import JobMounts, write_uploads
from joblet.worker.nsthread import JobThread
from joblet.worker.output import Capture
from joblet.worker.records import WAITING, Outcome, outcome_of
from joblet.worker.sandbox import Host, Layout, bwrap_args, command_argv, loader_env, sys_covers, views_of
from joblet.worker.services import JobStore, NetAgent, Services
from joblet.worker.undo import UndoStack

log = logging.getLogger(__name__)
SETTLE_WAIT = 5.0  # seconds a final record waits for its job's output to be written (OutputPump.settle)


class JobRun:
    """Runs one claimed job to its end."""

    def __init__(
        self, svc: Services, job_id: str, spec: JobSpec, workflow: str | None = None, keep_stdout: bool = True
    ) -> None:
        self.svc = svc
        # stdout's beginning for a result that is stored (run_job.delay()): up to 1 MiB a job
        # held in the worker's memory for a result nobody stored (joblet's own sends)
        self.keep = svc.cfg.result_output_limit if keep_stdout else 0
        self.store: JobStore = svc.store  # all a job's run asks of the store and the agent
        self.agent: NetAgent = svc.agent
        self.job_id = job_id
        self.spec = spec
        self.hostname = spec.name or job_id[:12]
        self.scope = workflow or ""  # its name resolves for its workflow's jobs only
        self.run_dir = svc.cfg.run_dir / "job"  # its files' tmpfs, the same in every job's (mounts.py)
        self.work_dir = self.run_dir / "work"  # the mount point of its /work tmpfs
        self.net_files: list[str] = []  # of hosts, resolv.conf: those it has
        self.cgroup = svc.kernel.cgroup(svc.cgroup_root / job_id)
        self.undo = UndoStack()
        self.release = UndoStack()  # after the final record
        self.left_later = False  # its networks' leave waits for Redis (_leave_networks)
        self.sandbox: Sandbox | None = None
        self.netns: JobNetns | None = None
        self.mounts: JobMounts | None = None
        self.inside: JobThread | None = None
        self.host: Host | None = None
        self.plan: NetPlan | None = None
        self.stopped = threading.Event()
        self.started_at: float | None = None  # when it went RUNNING (a restored record keeps it)
        self.stop_why: str | None = None  # said in its record: who stopped it, if not a user
        self.capture: Capture | None = None
        self._stop_lock = threading.Lock()
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)  # wakes `await_exit`

    # -- control from other threads ---------------------------------------------------------
    def stop(self, why: str | None = None) -> None:
        """Ask the job to stop, from any thread: one write. The job's own thread sends SIGTERM
        to its processes and SIGKILL after the grace period (`await_exit`), so a stop of
        hundreds of jobs at once is not served one after another by the thread that asks."""
        with self._stop_lock:
            if self.stopped.is_set():
                return
            self.stop_why = why
            self.stopped.set()
            if self._stop_fd >= 0:
                os.eventfd_write(self._stop_fd, 1)

    def write_hosts(self, peers: dict[str, str] | None = None) -> None:
        """(Re)write this job's /etc/hosts with its peers (looked up when not given);
        truncating keeps the inode that the job's bind mount shows."""
        if self.plan is None:
            return
        if peers is None:
            peers = self.svc.discovery.peers(list(self.plan.ips), self.scope)
        if self.mounts is not None:  # else not mounted yet (written then) or torn down
            self.mounts.write("hosts", self.plan.hosts_file(peers))

    # -- the life -------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        outcome, stdout, truncated = Outcome(JobStatus.FAILED), b"", False
        try:
            outcome, stdout, truncated = self._run()
        except JobletError as exc:
            outcome = Outcome(JobStatus.FAILED, error=str(exc))
        except Exception as exc:  # a bug or the host's limits: the job still gets a final state
            full = full_disks(self.svc.cfg) if isinstance(exc, OSError) and exc.errno == errno.ENOSPC else ""
            if full:  # the host's, not the job's: "internal error: OSError: [Errno 28]" named no path
                log.error("job %s: %s", self.job_id[:12], full)
                outcome = Outcome(JobStatus.FAILED, error=full)
            else:
                log.exception("job %s: unexpected error", self.job_id[:12])
                outcome = Outcome(JobStatus.FAILED, error=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._keep_outcome(outcome)
            teardown_error = self.teardown()
        if teardown_error and outcome.error is None:
            outcome.error = f"teardown: {teardown_error}"
        log.info("job %s ended %s%s", self.job_id[:12], outcome.status.value, ended_how(outcome, self.started_at))
        if self.capture is not None and not self.svc.pump.settle(self.capture, SETTLE_WAIT):
            log.warning("job %s: its final record goes before its last output (Redis slow)", self.job_id[:12])
        result, late = None, None
        try:
            result = self._record(outcome, stdout, truncated)
        except BackendUnavailable as exc:
            log.error("job %s: final record not written (%s); the heartbeat writes it", self.job_id[:12], exc)
            late = functools.partial(self._record_later, outcome, stdout, truncated, set())
            self.svc.journal.keep_outcome(self.job_id, dict(vars(outcome)))  # for a restart
            raise
        finally:  # its addresses and port rules go, whatever failed after its processes did
            for problem in self.release.unwind():
                log.warning("job %s: %s", self.job_id[:12], problem)
            if result is not None:  # recorded; else the next start reconciles it (LOST)
                self.svc.journal.forget(self.job_id)
            elif late is not None:  # once Redis is back, after this release: its steps follow it
                self.svc.records.finals.add(f"job {self.job_id}", f"job {self.job_id[:12]}'s final record", late)
        return result

    def _keep_outcome(self, outcome: Outcome) -> None:
        """Its end, known before its teardown, kept with its journal entry: a worker killed
        meanwhile left a job that had exited 0 LOST, and what required it COMPLETED canceled
        (fleet run); the restart records this end instead, saying its output may lack what
        was not sent yet. One line appended to the journal."""
        note = "its worker stopped before the job's end was recorded: its output may lack its last lines"
        try:
            self.svc.journal.keep_outcome(self.job_id, {**vars(outcome), "error": outcome.error or note})
        except Exception as exc:  # noqa: BLE001 - its teardown must follow; a restart records it LOST
            log.warning("job %s: its end not kept in the journal: %s: %s", self.job_id[:12], type(exc).__name__, exc)

    def _record(self, outcome: Outcome, stdout: bytes, truncated: bool) -> dict[str, Any]:
        """The final record (waiting out an outage of up to record_patience) and what follows it."""
        result = self.svc.records.finish(self.job_id, outcome, stdout, truncated, self.spec, started=self.started_at)
        self._after(outcome)
        return result

    def _record_later(self, outcome: Outcome, stdout: bytes, truncated: bool, done: set[str]) -> None:
        """From the heartbeat, one try per beat, each step once (`done`): the record; what the
        outage failed with it (leaving its networks, freeing its addresses: the undo the
        journal's entry was kept for); its stream's end (not waited for); the entry's forget."""
        if "record" not in done:
            got = self.svc.records.finish(
                self.job_id, outcome, stdout, truncated, self.spec, patience=0, started=self.started_at
            )
            done.add("record")
            if got.get("status") != outcome.status.value:  # the fleet recorded it LOST meanwhile, and its end
                log.warning("job %s: recorded %s meanwhile, not %s", self.job_id[:12], got["status"], outcome.status)
                done.add("stream")
        if self.plan is not None and "released" not in done:
            self.svc.discovery.leave(self.job_id, list(self.plan.ips))
            self.left_later = False
            self.agent.free(self.job_id, self.plan.reserved())
            done.add("released")
        if "stream" not in done:
            self._after(outcome, wait=False)
            done.add("stream")
        self.svc.journal.forget(self.job_id)

    def _after(self, outcome: Outcome, wait: bool = True) -> None:
        """Its peers forget it, and its stream ends; the one does not wait on the other. A
        job that ended before its network was planned (an unknown network, a link name or
        MAC held, no address) leaves where it was queued (store_homes.py): its leave, which
        does that, comes with a plan (red-team run: a network's entry outlived it)."""
        try:
            if self.plan is None and user_networks(self.spec.network):
                self.svc.store.unplace(self.job_id, self.spec.network)
            if self.plan is not None:
                if self.left_later:  # its teardown met Redis away; the final record waited it out
                    self._leave_again(self.plan)
                self.svc.discovery.refresh(list(self.plan.ips))
        except Exception as exc:  # noqa: BLE001 - Redis or a peer's file: the end marker still goes
            log.warning("job %s: its peers' hosts files: %s: %s", self.job_id[:12], type(exc).__name__, exc)
        self._end(outcome, wait)

    def _leave_networks(self, plan: NetPlan) -> None:
        """Its entries in its networks' members go. Redis away at its end: left once its final
        record is written (which waits the outage out), not kept for good (its name stayed in
        its peers' /etc/hosts at an address freed for the next job, with the error
        `teardown: leave networks: cannot reach Redis` on a job that had COMPLETED)."""
        try:
            self.svc.discovery.leave(self.job_id, list(plan.ips))
        except BackendUnavailable as exc:
            log.warning("job %s: leaves its networks once Redis is back (%s)", self.job_id[:12], exc)
            self.left_later = True

    def _leave_again(self, plan: NetPlan) -> None:
        """The leave its teardown put off; failing again (Redis gone once more), the heartbeat
        tries it each beat (records.Finals): nothing else takes its entry out of its networks'
        members, and its peers' hosts files are refreshed all the same (review)."""
        self.left_later = False
        leave = functools.partial(self.svc.discovery.leave, self.job_id, list(plan.ips))
        try:
            leave()
        except Exception as exc:  # noqa: BLE001 - Redis again: the heartbeat's to do
            short = self.job_id[:12]
            log.warning("job %s: leaves its networks at a later beat: %s: %s", short, type(exc).__name__, exc)
            self.svc.records.finals.add(f"leave {self.job_id}", f"job {short}'s leave of its networks", leave)

    def _run(self) -> tuple[Outcome, bytes, bool]:
        self._setup_host()
        layout, env, path = self._setup_job()
        if isinstance(path, str):
            self._start(layout, env, path)  # its root is built while its network is wired
        assert self.plan is not None
        self.agent.setup(self.plan, self.netns)
        faults.point("attached", self.job_id)
        if self.stopped.is_set():  # and who stopped it, where not a user: its worker's shutdown
            why = f"{self.stop_why}, before it started" if self.stop_why else "stopped before it started"
            return Outcome(JobStatus.STOPPED, error=why), b"", False
        if (moved := self._list_in_networks()) is not None:
            return Outcome(moved, error=f"its record became {moved.value} during its setup: not started"), b"", False
        faults.point("running", self.job_id)
        if isinstance(path, Unrunnable):
            return self._cannot_run(path)
        assert self.sandbox is not None
        self.sandbox.go()
        return self._watch()

    def _setup_host(self) -> None:
        """Files, addresses and cgroup; each pushes its undo before anything can fail."""
        svc, undo = self.svc, self.undo
        self._journal()  # forgotten once the final record is written (execute)
        faults.point("claimed", self.job_id)
        self._check_uploads()
        facts = self.agent.facts(self.spec)  # every network checked before anything is reserved
        reserved = self.agent.reserve(self.job_id, self.spec, facts)
        self.release.push("free addresses", lambda: self.agent.free(self.job_id, reserved))
        limits = self.spec.limits
        self.plan = make_plan(
            self.job_id, self.hostname, self.spec.network, facts, reserved, limits.rate_in(), limits.rate_out()
        )
        self._journal()
        faults.point("planned", self.job_id)
        undo.push("remove cgroup", self.cgroup.remove)
        self.cgroup.create()
        self.cgroup.limit_pids(limits.max_pids or svc.cfg.default_pids)
        if limits.max_cpu or limits.max_memory or limits.max_iobps:
            self.cgroup.limit(limits, svc.cgroup_v2, block_device(svc.cfg.state_dir))

    def _setup_job(self) -> tuple[Layout, dict[str, str], str | Unrunnable]:
        """Its network namespace (not wired yet), its mounts, its root's layout, its command's path."""
        assert self.plan is not None
        svc = self.svc
        if self.spec.volumes:  # before: a volume it was counted a user of, the next one refused
            self.undo.push("leave volumes", lambda: svc.mounts.leave(self.spec.volumes, self.job_id))
        binds, path_prefix = svc.mounts.binds_for(self.spec.volumes, self.spec.runtime, self.job_id)
        self._throttle_volumes(binds)
        env = self._env(path_prefix)
        inside = self.inside = svc.kernel.thread(self.job_id[:12])
        self.undo.push("end the job's thread", inside.close)
        if self.plan.isolated_netns:
            self.netns = svc.kernel.netns(inside)
        plan = self.plan
        if self.netns is None:
            self.undo.push("tear down network", lambda: self.agent.teardown(plan))  # a partial setup too
        else:  # the veths go with the namespace; the rest follows the final record
            self.release.push("network released", lambda: self.agent.released(plan))
            self.undo.push("let the network namespace go", self.netns.close)
        self.host = svc.host()  # looked at once per job: the lookup, the mounts and the root agree
        self.mounts = self._mount(self.host, tuple(source for source, _, _ in binds))
        self.undo.push("let the mount namespace go", self.mounts.close)
        self._write_net_files(plan)
        layout = self._layout(binds)
        views = views_of(self.host, layout, self.mounts.work, self.mounts.covers)
        return layout, env, resolve(self.spec.command, env["PATH"], views, self.spec.ids)

    def _throttle_volumes(self, binds: list[tuple[str, str, bool]]) -> None:
        """--max-iobps on the job's sized volumes too: each is a loop device of its own."""
        bps = self.spec.limits.max_iobps
        if bps is None or not self.spec.volumes:
            return
        state = block_device(self.svc.cfg.state_dir)
        disks = {block_device(Path(source)) for source, target, _ in binds if target.startswith("/volumes/")}
        others = sorted(d for d in disks - {state} if d is not None)
        if others:
            self.cgroup.throttle_io(bps, self.svc.cgroup_v2, others)

    def _mount(self, host: Host, sources: tuple[str, ...]) -> JobMounts:
        """The job's mount namespace: /work with its uploads, and its sysfs with its covers;
        where its binds' `sources` are (a runtime linked elsewhere since the worker started)."""
        user = self.spec.ids

        def fill(work: Path) -> None:  # runs inside the job's mount namespace
            write_uploads(work, self.spec.uploads)
            if user is not None:  # its own /work, writable
                os.chown(work, *user)
                for sub in work.rglob("*"):
                    os.chown(sub, *user, follow_symlinks=False)

        assert self.inside is not None
        return self.svc.kernel.mounts(self.run_dir, self.disk_bytes, fill, self.inside, sys_covers(host), sources)

    @property
    def disk_bytes(self) -> int:
        """The size of the job's /work (and /tmp)."""
        return (self.spec.limits.max_disk or self.svc.cfg.default_disk_mb) << 20

    def _list_in_networks(self) -> JobStatus | None:
        """RUNNING, and known to its peers before its command starts; or, where its record
        left PENDING meanwhile, its status now, and it does not start: a stop that reached
        Redis while the worker built the job (before its run was in the worker's table, or
        while the events' listener reconnected) made it STOPPED, its followers gone, and the
        command ran to the next heartbeat's stops with its output after its end (review);
        a job its node was taken for lost may have had its addresses freed for others."""
        assert self.plan is not None
        plan, svc = self.plan, self.svc
        self.started_at = time.time()
        if not self.store.transition(
            self.job_id, WAITING, status=JobStatus.RUNNING, started=self.started_at, node=svc.cfg.node, ips=plan.ips
        ):
            now = self.store.statuses([self.job_id])[0]
            return now if now is not None and now.final else JobStatus.STOPPED
        self.undo.push("leave networks", functools.partial(self._leave_networks, plan))
        names = [self.job_id[:12], *([self.spec.name] if self.spec.name else [])]
        svc.discovery.join(self.job_id, plan.ips, names, self.write_hosts, self.scope)
        svc.discovery.refresh(list(plan.ips))
        # the program alone, not its arguments (a password on a command line): an operator's
        # log named no job at its default level (operator's run)
        where = ", ".join(f"{n} {ip}" if ip else n for n, ip in plan.ips.items()) if plan.ips else "none"
        log.info("job %s running %s (network %s)", self.job_id[:12], printable(self.spec.command)[:200], where)
        return None

    def _start(self, layout: Layout, env: dict[str, str], path: str) -> None:
        """Spawn the job's process, which joins its cgroups, builds its root and waits for the go."""
        assert self.host is not None and self.inside is not None, "_setup_job looked at the host"
        env, later = loader_env(env, layout.user)
        sandbox = self.sandbox = self.svc.kernel.sandbox(
            Launch(
                self.job_id,
                self.cgroup,
                bwrap_args(self.host, layout),
                command_argv(path, self.spec.args, layout.user, later),
                env,
                self.inside,
                self.svc.cfg.job_oom_score_adj,
                layout.user[0] if layout.user else 0,
            )
        )
        self.undo.push("stop processes", lambda: self._stop_processes(sandbox))
        sandbox.start()

    def _stop_processes(self, sandbox: Sandbox) -> None:
        try:
            self.cgroup.kill()
            faults.point("teardown", self.job_id)
        finally:  # a kill that failed left the go pipe and unread output pipes open (review)
            sandbox.close()

    def _cannot_run(self, how: Unrunnable) -> tuple[Outcome, bytes, bool]:
        # controls escaped, as a shell quotes them (an ESC in the command coloured the terminal;
        # a script's #! line, in a bad interpreter's name, is the submitter's text too)
        message = f"joblet: {printable(self.spec.command)}: {printable(how.why)}\n".encode()
        self.store.append_output(self.job_id, STDERR_FIELD, message, self.svc.cfg.log_max_entries)
        return Outcome(JobStatus.FAILED, how.code, error=how.why), b"", False

    def _watch(self) -> tuple[Outcome, bytes, bool]:
        assert self.sandbox is not None and self.sandbox.main is not None
        main = self.sandbox.main
        out, err = self.sandbox.output_fds()
        self.capture = capture = self.svc.pump.watch(
            self.job_id,
            out,
            err,
            self.keep,
            max_output=self.spec.limits.max_output or self.svc.pump.max_bytes,
        )
        began = time.monotonic()
        if self.scope and self.spec.name:  # a workflow's job: those that require it RUNNING may start now,
            # its output watched meanwhile (before, its pipes went unread past 64 KiB while a
            # large fan-out advanced, or a hung Redis answered: review); before its end's advance
            self.svc.records.workflow_job_started(self.scope, self.spec.name)
        timeout = self.spec.timeout  # counted from its start, the advance's time included
        left = None if timeout is None else max(0.001, timeout - (time.monotonic() - began))
        timed_out, stopped = await_exit(self.sandbox, self._stop_fd, self.stopped, left, self.svc.cfg.stop_grace)
        timed_out = timeout if timed_out is not None else None
        main.wait()
        self.cgroup.kill()  # the command is done: so is everything it left behind
        self.svc.pump.ended(capture)
        capture.closed.wait(timeout=10)
        outcome = outcome_of(main.returncode, stopped, timed_out, self.stop_why)
        if outcome.status == JobStatus.FAILED and timed_out is None:
            said = oom_said(self.cgroup.oom_killed(), self.spec.limits.max_memory, self.svc.jobs_memory_mb)
            outcome.error = said or outcome.error
            if said and outcome.exit_code == 128 + 9 and outcome.signal is None:  # the OOM killer's SIGKILL,
                outcome.signal = 9  # recorded as a stop's and a timeout's signal are (usability run: Signal: -)
        # pipes not read to their end (held behind a Redis that stalls): the result's stdout
        # may lack its end, and says so
        return outcome, bytes(capture.stdout), capture.truncated or not capture.closed.is_set()

    # -- the end --------------------------------------------------------------------------
    def teardown(self) -> str | None:
        """Undo everything that was done, newest first; errors are returned together."""
        try:
            return "; ".join(self.undo.unwind()) or None
        finally:
            with self._stop_lock:
                os.close(self._stop_fd)
                self._stop_fd = -1

    def _end(self, outcome: Outcome, wait: bool) -> None:
        """The stream's end marker, after the job's last byte and its final record."""
        summary = {"status": outcome.status.value, "exit_code": outcome.exit_code}
        if self.capture is None:
            self.store.end_output(self.job_id, summary, self.svc.cfg.log_max_entries, self.svc.cfg.log_ttl)
            return
        self.svc.pump.finish(self.capture, summary)
        if wait:
            self.capture.flushed.wait(timeout=30)

    # -- its files -------------------------------------------------------------------------
    def _journal(self) -> None:
        """What this job has on the host, before it has it (a restarted worker frees it)."""
        self.svc.journal.record(
            Entry(
                job_id=self.job_id,
                cgroup=str(self.cgroup.path),
                # nothing of it is on the host's filesystem, but older workers remove this path
                # when they reconcile (after a rollback): a path of its own, never "" (their cwd)
                work_dir=str(self.svc.cfg.run_dir / "jobs" / self.job_id),
                run_dir=str(self.svc.cfg.run_dir / "jobs" / self.job_id),
                plan=self.plan,
            )
        )

    def _layout(self, binds: list[tuple[str, str, bool]]) -> Layout:
        cfg = self.svc.cfg
        return Layout(
            hostname=self.hostname,
            work_dir=str(self.work_dir),
            run_dir=str(self.run_dir),
            sys_dir=str(self.run_dir / "sys"),  # a new sysfs of its network namespace (mounts.py)
            sys_masked=True,  # with its covers
            tmp_bytes=self.disk_bytes,
            shm_bytes=cfg.job_shm << 20,
            binds=tuple(binds),
            net_files=tuple(self.net_files),
            user=self.spec.ids,
            host_network=self.plan is None or not self.plan.isolated_netns,
            net_raw=cfg.job_net_raw,
        )

    def _env(self, path_prefix: str | None) -> dict[str, str]:
        cfg = self.svc.cfg
        env = {
            "PATH": cfg.default_path,
            "HOME": "/work",
            "HOSTNAME": self.hostname,
            **self.spec.env,
            "JOBLET_JOB_ID": self.job_id,  # its own, whatever --env says (`-e JOBLET_JOB_ID=x` took its place)
        }
        if path_prefix:
            env["PATH"] = f"{path_prefix}:{env['PATH']}"
        return env

    def _check_uploads(self) -> None:
        """They fit its /work (their total is checked against the limit with the message)."""
        size, disk = self.spec.upload_bytes, self.disk_bytes
        if size > disk:
            raise ValidationError(f"uploads of {size} bytes do not fit /work ({disk} bytes)")

    def _write_net_files(self, plan: NetPlan) -> None:
        """Its hostname, hosts and resolv.conf, in its files' tmpfs."""
        assert self.mounts is not None
        self.mounts.write("hostname", f"{self.hostname}\n")
        if not plan.isolated_netns:
            return  # host mode: the host's interfaces, hosts and resolv.conf
        self.write_hosts()
        self.net_files.append("hosts")
        resolv = plan.resolv_file()
        if resolv is not None:
            self.mounts.write("resolv.conf", resolv)
            self.net_files.append("resolv.conf")


def ended_how(outcome: Outcome, started: float | None) -> str:
    """`(exit 3 after 1.2 s: why)` for its log line."""
    parts = []
    if outcome.exit_code is not None:
        parts.append(f"exit {outcome.exit_code}")
    if started is not None:
        parts.append(f"after {max(0.0, time.time() - started):.1f} s")
    said = f" ({', '.join(parts)})" if parts else ""
    return f"{said}: {printable(outcome.error)[:300]}" if outcome.error else said


def oom_said(whose: str | None, limit: int | None, jobs_mb: int) -> str | None:
    """Why a job killed by the OOM killer ended, by whose limit struck (cgroups' oom_killed):
    its own, or a parent's (all jobs' together, or the host's memory: a kill there named the
    job's own limit, or none, review)."""
    if whose is None:
        return None
    if whose == "own" and limit:
        return f"out of memory: killed at its limit of {limit} MB"
    if whose == "own" or not jobs_mb:
        return "out of memory"
    shared = f"out of memory: the jobs here together reached their {jobs_mb} MB (JOBLET_JOBS_MAX_MEMORY)"
    shared += " or the host its memory"
    return f"{shared}, before its own limit of {limit} MB" if limit else shared
