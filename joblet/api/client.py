"""The Python API: `Client().run(...)`, `.list()`, `.get()`, `.logs()`, `.stop()`, `.wait()`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pydantic

from joblet.api.keys import END_FIELD, STDERR_FIELD, STDOUT_FIELD
from joblet.api.message import new_job_id
from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.store import Store
from joblet.config import Settings, settings
from joblet.errors import ConfigError, ValidationError


def validation_message(exc: pydantic.ValidationError, what: str = "job") -> str:
    """One line naming the field and what is wrong with it."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or what
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"invalid {what} field {field!r}: {msg}"


def make_spec(command: str, args: Any = (), **fields: Any) -> JobSpec:
    try:
        args = tuple(args) if isinstance(args, list | tuple) else args  # else pydantic says why
        return JobSpec(command=command, args=args, **fields)
    except pydantic.ValidationError as exc:
        raise ValidationError(validation_message(exc)) from None


class Client:
    """Talks to one joblet installation through Redis."""

    def __init__(self, cfg: Settings | None = None) -> None:
        self.settings = cfg or settings()
        self.store = Store(self.settings.redis_url, self.settings.key_prefix)
        self._networks: Any = None
        self._volumes: Any = None

    @property
    def networks(self) -> Any:
        """Create, list, inspect and delete networks (`joblet.api.client_networks.Networks`)."""
        if self._networks is None:
            from joblet.api.client_networks import Networks

            self._networks = Networks(self)
        return self._networks

    @property
    def volumes(self) -> Any:
        """Create, list and delete volumes (`joblet.api.client_volumes.Volumes`)."""
        if self._volumes is None:
            from joblet.api.client_volumes import Volumes

            self._volumes = Volumes(self)
        return self._volumes

    @property
    def workflows(self) -> Any:
        """Check, submit, list and stop workflows (`joblet.api.client_workflows.Workflows`)."""
        from joblet.api.client_workflows import Workflows

        return Workflows(self)

    def runtimes(self) -> list[dict[str, Any]]:
        from joblet.api.client_volumes import runtimes

        return runtimes(self)

    def run(self, command: str, args: Any = (), **fields: Any) -> JobRecord:
        """Queue a job and return its PENDING record at once."""
        return self.submit(make_spec(command, args, **fields))

    def submit(self, spec: JobSpec) -> JobRecord:
        limit = self.settings.upload_max_bytes
        if spec.upload_bytes > limit:
            raise ValidationError(
                f"invalid job field 'uploads': {spec.upload_bytes} bytes exceed the limit of {limit}"
            )
        self._check_size(spec)
        self._check_networks(spec)
        spec = self._check_resources(spec)
        self.check_fleet(spec.node)
        record = JobRecord(id=new_job_id(), status=JobStatus.PENDING, spec=spec,
                           name=spec.name, created=time.time())
        self._create(record)
        from joblet.api.tasks import send_run

        try:
            send_run(self.settings, record.id, spec.model_dump(mode="json"), spec.node)
        except Exception:
            self.store.transition(record.id, [JobStatus.PENDING], status=JobStatus.FAILED,
                                  error="could not be queued", finished=time.time())
            raise
        return record

    def _create(self, record: JobRecord) -> None:
        if record.name is None:
            self.store.create_job(record)
            return
        holder = self.store.create_named_job(record)
        if holder is not None:
            raise ValidationError(f"invalid job field 'name': {record.name!r} is in use by job {holder[:12]}, "
                                  "which has not ended (rnx stop it, or pick another --name)")

    def _check_size(self, spec: JobSpec) -> None:
        """Refuse a spec too large to queue before anything is stored."""
        size = len(spec.model_dump_json())
        limit = self.settings.spec_max_bytes
        if size > limit:
            raise ValidationError(f"invalid job: its spec is {size} bytes, over the limit of {limit} "
                                  "(spec_max_bytes; uploads, arguments and environment count)")

    def check_fleet(self, node: str | None) -> None:
        """Refuse to queue what the live workers would refuse unread (signed vs unsigned)."""
        from joblet.api.tasks import signing_config, signing_mismatch

        why = signing_mismatch(bool(signing_config(self.settings, verify=False)), self.live_nodes(), node)
        if why:
            raise ConfigError(why)

    def _check_resources(self, spec: JobSpec) -> JobSpec:
        """Volumes must exist; a runtime must be offered by a live worker (the job is pinned
        to one that has it); bandwidth limits need a network of the job's own."""
        from joblet.errors import NotFound

        for name in spec.volumes:
            try:
                self.volumes.store.get(name)
            except NotFound:
                raise ValidationError(f"invalid job field 'volumes': no such volume {name!r} "
                                      "(rnx volume create)") from None
        lim = spec.limits
        if spec.network == ("host",) and (lim.max_bandwidth or lim.max_bandwidth_in or lim.max_bandwidth_out):
            raise ValidationError("invalid job field 'limits': bandwidth limits need a job network, "
                                  "not 'host'")
        if spec.runtime is None:
            return spec
        offered = next((r["nodes"] for r in self.runtimes() if r["name"] == spec.runtime), [])
        if not offered:
            raise ValidationError(f"invalid job field 'runtime': no live worker offers runtime "
                                  f"{spec.runtime!r} (rnx runtime list)")
        if spec.node is None:
            return spec.model_copy(update={"node": offered[0]})
        if spec.node not in offered:
            raise ValidationError(f"invalid job field 'runtime': node {spec.node!r} does not offer "
                                  f"runtime {spec.runtime!r} (it is on {', '.join(offered)})")
        return spec

    def _check_networks(self, spec: JobSpec) -> None:
        from joblet.errors import NotFound

        for name in spec.network:
            if name not in ("bridge", "none", "host", "isolated"):
                try:
                    self.networks.store.get(name)
                except NotFound:
                    raise ValidationError(f"invalid job field 'network': no such network {name!r} "
                                          "(rnx network list)") from None
        for alone in ("none", "host", "isolated"):
            if alone in spec.network and len(spec.network) > 1:
                raise ValidationError(f"invalid job field 'network': {alone!r} cannot be combined")

    def stats(self, job_ids: Any = ()) -> list[dict[str, Any]]:
        """The latest resource sample of each running job (or of these jobs), with its id,
        name and node: cpu_percent, memory, pids, disk and network bytes (see `rnx stats`)."""
        from joblet.api.stats import collect

        return collect(self, [self.store.resolve(j) for j in job_ids])

    def list(self, status: Any = (), node: str | None = None, network: str | None = None,
             name: str | None = None) -> list[JobRecord]:
        """Jobs, oldest first; each filter given must match (statuses: any of them)."""
        return select(self.store.list_jobs(), status, node, network, name)

    def get(self, job_id: str) -> JobRecord:
        """The job whose id, id prefix or name is `job_id`."""
        return self.store.get_job(self.store.resolve(job_id))

    def logs(self, job_id: str, follow: bool = False) -> Iterator[tuple[str, bytes]]:
        """("stdout" | "stderr", bytes) chunks in order; with follow, until the job ends."""
        full = self.store.resolve(job_id)
        names = {STDOUT_FIELD: "stdout", STDERR_FIELD: "stderr"}
        for field, data in self.store.follow_output(full, follow):
            if field in names:
                yield names[field], data
            elif field == END_FIELD:
                return

    def stop(self, job_id: str) -> JobRecord:
        """Stop a job: durable flag, and a job still queued becomes STOPPED at once."""
        full = self.store.resolve(job_id)
        self.store.request_stop(full)
        waiting = [JobStatus.PENDING, JobStatus.SCHEDULED]
        if self.store.transition(full, waiting, status=JobStatus.STOPPED, finished=time.time(),
                                 error="stopped before it started"):
            self.store.end_output(full, {"status": "STOPPED"}, self.settings.log_max_entries)
        return self.store.get_job(full)

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



def select(records: list[JobRecord], status: Any = (), node: str | None = None,
           network: str | None = None, name: str | None = None) -> list[JobRecord]:
    """The records that match every filter given (pure)."""
    wanted = {str(s).upper() for s in status}
    return [r for r in records
            if (not wanted or r.status.value in wanted) and (node is None or r.node == node)
            and (network is None or network in r.spec.network) and (name is None or r.name == name)]
