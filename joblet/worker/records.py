"""A job's final record, written by whoever ends it (its run, a refusal, reconciliation):
the state transition, the expiry, the workflow's next step, and the Celery task result."""

from __future__ import annotations

import base64
import logging
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.store import Store
from joblet.config import Settings
from joblet.errors import BackendRefused, BackendUnavailable
from joblet.worker.claims import Claims

log = logging.getLogger(__name__)
T = TypeVar("T")
WAITING = (JobStatus.PENDING,)
LOST = "its record was lost by Redis (restarted without its data) and written again at its end"


@dataclass
class Outcome:
    status: JobStatus
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    finished: float = field(default_factory=time.time)  # when it ended, not when Redis took it


class Records:
    """Final records of this worker's jobs."""

    def __init__(self, store: Store, cfg: Settings, claims: Claims | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.claims = claims or Claims(store)  # a job's claim and final record, a round trip each
        self.finals = Finals()  # what Redis missed: the heartbeat writes it (Finals.retry)

    def finish(
        self,
        job_id: str,
        outcome: Outcome,
        stdout: bytes = b"",
        truncated: bool = False,
        spec: JobSpec | None = None,
        patience: float | None = None,
        started: float | None = None,
    ) -> dict[str, Any]:
        """Record the final state, waiting out a Redis outage of up to `patience` seconds
        (record_patience unless given: past it a job's run leaves the record to the heartbeat;
        a refusal has no such fallback: its task fails, the record stays as it was);
        returns the task result, with `spec` if given (the one the worker checked and ran),
        else the stored one. `started`: when it went RUNNING, for a record Redis lost."""
        fields = {
            "status": outcome.status,
            "exit_code": outcome.exit_code,
            "signal": outcome.signal,
            "error": outcome.error,
            "finished": outcome.finished,
            "node": self.cfg.node,
        }
        allowed = (*WAITING, JobStatus.RUNNING)
        recorded, record = retrying(
            lambda: self.claims.finish(job_id, spec, allowed, self.cfg.log_ttl, **fields),
            self.cfg.record_patience if patience is None else patience,
        )
        if not recorded and record is None and spec is not None:  # Redis lost it (restarted empty)
            record = JobRecord(
                id=job_id,
                status=outcome.status,
                spec=spec,
                name=spec.name,
                node=self.cfg.node,
                exit_code=outcome.exit_code,
                signal=outcome.signal,
                error=outcome.error or LOST,
                created=started or outcome.finished,  # its submission's time went with Redis
                started=started,
                finished=outcome.finished,
            )
            self.store.create_job(record, ttl=self.cfg.log_ttl)  # in one step: never kept for good
            if spec.name:  # `rnx status NAME` finds it again (it said no such job)
                self.store.name_unless_held(spec.name, job_id, self.cfg.log_ttl)
            log.warning("job %s: Redis had lost its record; wrote it with its end", job_id[:12])
        elif not recorded:  # already final
            log.warning("job %s: record already final; %s not recorded over it", job_id[:12], outcome.status.value)
        if record is None:
            return {
                "id": job_id,
                "status": outcome.status.value,
                "exit_code": outcome.exit_code,
                "error": outcome.error,
                "output": stdout.decode(errors="replace"),
                "output_truncated": truncated,
            }
        if record.workflow:
            self.advance_workflow(record.workflow)
        out = result(record, stdout)
        out["output_truncated"] = truncated
        return out

    def settle(self, job_id: str, kept: dict[str, Any]) -> bool:
        """The outcome a stopped worker kept for a job Redis missed (the journal's): its final
        record, and its stream's end unless the fleet recorded it LOST meanwhile. False if
        the kept outcome cannot be read (another version's): nothing is recorded."""
        try:
            status, finished = JobStatus(kept["status"]), float(kept["finished"])
            outcome = Outcome(status, kept.get("exit_code"), kept.get("signal"), kept.get("error"), finished)
        except (KeyError, TypeError, ValueError):
            return False
        before = self.store.find_job(job_id)
        if before is not None and before.status.final:  # its own end went in before the worker died
            # (kept before its teardown), its marker perhaps not: the pump writes it after the
            # record, and a worker killed between the two left readers waiting (review); one
            # more marker is harmless (readers end at the first)
            self.store.end_output(job_id, {"status": before.status.value}, self.cfg.log_max_entries, self.cfg.log_ttl)
            return True
        got = self.finish(job_id, outcome, patience=0)
        if got.get("status") == outcome.status.value:
            self.store.end_output(job_id, {"status": outcome.status.value}, self.cfg.log_max_entries, self.cfg.log_ttl)
        return True

    def mark_lost(self, job_id: str, reason: str) -> bool:
        """A job this host ran but can no longer finish: LOST, its keys expiring, its stream
        ended, its workflow advanced. False if it had ended already. The final record's script,
        not a bare transition: that one left every key of a LOST job without its TTL."""
        fields = {"status": JobStatus.LOST, "finished": time.time(), "error": reason}
        lost, record = self.claims.finish(job_id, None, (*WAITING, JobStatus.RUNNING), self.cfg.log_ttl, **fields)
        if not lost:
            return False
        self.store.end_output(job_id, {"status": "LOST"}, self.cfg.log_max_entries, self.cfg.log_ttl)
        if record is not None and record.workflow:
            self.advance_workflow(record.workflow)
        return True

    def workflow_job_started(self, wf_id: str, name: str) -> None:
        """A workflow's job started: advance the workflow where a job requires it RUNNING."""
        from joblet.api.workflow_store import required_running

        try:
            if not required_running(self.store, wf_id, name):
                return
        except Exception:  # noqa: BLE001 - undecided: advance (its retry waits for Redis)
            pass
        self.advance_workflow(wf_id)

    def advance_workflow(self, wf_id: str) -> None:
        """A workflow job started or ended: queue the jobs that may start now, cancel those that
        cannot, stop its services once its other jobs have ended."""
        from joblet.api.workflow_store import advance

        token = secrets.token_hex(8)  # its retry sends what this one marked and left PENDING
        try:
            advance(self.store, self.cfg, wf_id, token=token)
        except BackendUnavailable as exc:  # nothing else would take it (its jobs wait for it)
            log.error("workflow %s: its next step waits for Redis: %s", wf_id[:12], exc)
            self.finals.add(
                f"workflow {wf_id} {token}",
                f"workflow {wf_id[:12]}'s next step",
                lambda: advance(self.store, self.cfg, wf_id, token=token),
            )
        except Exception as exc:  # noqa: BLE001 - the job's own end is recorded regardless
            log.error("workflow %s: %s", wf_id[:12], exc)


def result(record: JobRecord, stdout: bytes = b"") -> dict[str, Any]:
    """The Celery task result of an ended job."""
    out = record.public()
    out["output"] = stdout.decode(errors="replace")
    if not stdout.isascii():
        out["output_base64"] = base64.b64encode(stdout).decode()
    return out


class Finals:
    """Writes Redis missed (gone longer than the patience): a job's final record, with each
    job's own outcome, or a workflow's next step; the heartbeat tries them once Redis is back.
    (A job waited for the worker's restart, RUNNING until then, and was then recorded LOST; a
    workflow whose step failed waited for good.)"""

    REFUSALS = 20  # beats an entry Redis answers with an error reply is tried (an OOM may pass)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[str, Callable[[], object]]] = {}
        self._refused: dict[str, int] = {}  # key: the error replies its tries had, in a row

    def add(self, key: str, what: str, write: Callable[[], object]) -> None:
        """`write` does it (once, without waiting out an outage), or raises; `what` names it
        in the log ("job 0123456789ab's final record")."""
        with self._lock:
            self._pending[key] = (what, write)
            self._refused.pop(key, None)

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._pending)

    def retry(self) -> None:
        """Write what is pending; while Redis is still gone, the rest waits for the next beat.
        An error reply (a key of another type at a job's record: WRONGTYPE) is the entry's
        own, not an outage: it held every entry behind it for good (review); it is given up
        after REFUSALS beats."""
        with self._lock:
            todo = list(self._pending.items())
        for key, entry in todo:
            what, write = entry
            try:
                write()
            except BackendRefused as exc:
                self._was_refused(key, entry, what, exc)
                continue
            except BackendUnavailable as exc:
                log.warning("%s still waits for Redis: %s", what, exc)
                return
            except Exception as exc:  # noqa: BLE001 - this one's: the others are tried
                log.warning("%s still not written: %s: %s", what, type(exc).__name__, exc)
                continue
            self._drop(key, entry)
            log.info("%s written now that Redis is back", what)

    def _was_refused(self, key: str, entry: tuple[str, Callable[[], object]], what: str, exc: Exception) -> None:
        with self._lock:
            count = self._refused[key] = self._refused.get(key, 0) + 1
        if count < self.REFUSALS:
            log.warning("%s refused by Redis (try %d of %d): %s", what, count, self.REFUSALS, exc)
            return
        log.error("%s given up: Redis refused it %d times: %s", what, count, exc)
        self._drop(key, entry)

    def _drop(self, key: str, entry: tuple[str, Callable[[], object]]) -> None:
        with self._lock:
            if self._pending.get(key) is entry:  # not one added again meanwhile (a later step)
                del self._pending[key]
                self._refused.pop(key, None)


def retrying(step: Callable[[], T], patience: float) -> T:
    """Run a Redis step, retrying while Redis is unreachable (up to `patience` seconds); an
    error reply is raised at once (a WRONGTYPE at a job's key held its thread that long)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return step()
        except BackendRefused:
            raise
        except BackendUnavailable as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("redis unreachable (%s); retrying", exc)
            time.sleep(1)


def outcome_of(returncode: int, stopped: bool, timed_out: float | None, why: str | None = None) -> Outcome:
    """Map the sandbox's return code to a final state. bwrap reports a command killed by
    signal N as 128+N (a shell's convention, and Docker's); negative: bwrap itself was
    killed by that signal (joblet's SIGKILL after the grace period)."""
    sig = -returncode if returncode < 0 else None
    code = 128 + sig if sig is not None else returncode
    if sig is None and (stopped or timed_out is not None) and _signal_name(code - 128):
        sig = code - 128  # joblet sent it: the code is that signal's, not the command's choice
    if stopped:  # `why`: who stopped it, when not a user (the worker's shutdown)
        return Outcome(JobStatus.STOPPED, code, sig, why)
    if timed_out is not None:
        return Outcome(JobStatus.FAILED, code, sig, f"timed out after {timed_out:g}s")
    if returncode == 0:
        return Outcome(JobStatus.COMPLETED, 0)
    if sig:
        return Outcome(JobStatus.FAILED, code, sig, f"killed by signal {signal.Signals(sig).name}")
    name = _signal_name(code - 128)
    return Outcome(JobStatus.FAILED, code, None, f"exit code {code} (128+{code - 128}: {name})" if name else None)


def _signal_name(number: int) -> str | None:
    try:
        return signal.Signals(number).name if number > 0 else None
    except ValueError:
        return None
