"""Workflow files (pure): parse the YAML, build each job's spec, check the dependency graph.

jobs:
  NAME:
    command: str            args: [str]        network: str | [str]
    runtime: str            volumes: [str]     env: {K: V}
    uploads: {files: [paths relative to the workflow file]}
    requires: [{OTHER: STATUS}]                resources: {max_cpu, max_memory, ...}
"""

from __future__ import annotations

import base64
import datetime
import errno
import functools
import graphlib
import os
import re
import reprlib
import stat
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from joblet.api.limits import with_units
from joblet.api.models import JobSpec, JobStatus, make_spec
from joblet.errors import ValidationError
from joblet.fields import FieldError, checked
from joblet.limit_names import ERROR_UNITS
from joblet.names import name_key
from joblet.text import did_you_mean

WORKFLOW_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

JOB_KEYS = {
    "command",
    "args",
    "network",
    "runtime",
    "volumes",
    "env",
    "uploads",
    "requires",
    "resources",
    "node",
    "timeout",
    "user",
    "service",
}


class WorkflowJob(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    spec: JobSpec
    requires: dict[str, JobStatus] = {}
    service: bool = False  # runs until the workflow's other jobs have ended, then is stopped


class Workflow(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    jobs: dict[str, WorkflowJob]
    # upload files not found, by job ("DIR: job 'a': 'x.py'; ..."): a ❌ line of the check, with
    # the others (a missing upload was refused alone, before them: one more run to find each)
    missing_uploads: str = ""

    def networks(self) -> set[str]:
        return {n for j in self.jobs.values() for n in j.spec.network}

    def volumes(self) -> set[str]:
        return {v for j in self.jobs.values() for v in j.spec.volumes}

    def runtimes(self) -> set[str]:
        return {j.spec.runtime for j in self.jobs.values() if j.spec.runtime}

    def nodes(self) -> set[str]:
        return {j.spec.node for j in self.jobs.values() if j.spec.node}


MAX_FILE = 4 << 20  # a workflow's file; its uploads are read from their own files


@dataclass(frozen=True)
class Limits:
    """What a deployment allows a workflow (its settings), checked as the file is read."""

    max_jobs: int | None = None  # workflow_max_jobs
    upload_bytes: int | None = None  # upload_max_bytes, each job's uploads together

    @classmethod
    def of(cls, settings: Any) -> Limits:
        return cls(settings.workflow_max_jobs, settings.upload_max_bytes)


def _not_text(name: Any) -> str:
    """Why a job name YAML did not read as text, and what to write."""
    if isinstance(name, bool):  # `yes:` read as True: quoting 'True' is not what was meant
        return "a job name YAML reads as a boolean (yes, no, on, off, true...): quote it"
    written = "null" if name is None else _cut(name)  # YAML's None was written null (or ~)
    return f"job name {_shown(name)} is not text (quote it: '{written}')"


def _check_path(path: Path) -> None:
    """A file whose name can name the workflow."""
    if path.is_dir():  # `rnx workflow run .` was refused for its name, '' (usability run)
        raise ValidationError(f"workflow {_shown(str(path))} is a directory: give the workflow's YAML file")
    if not WORKFLOW_NAME_RE.fullmatch(path.stem):  # `long wf` broke completion, ESC the terminal
        raise ValidationError(
            f"workflow {_shown(path.name)}: its name is its file's, {_shown(path.stem)}: letters, digits, '.', "
            "'_' and '-', starting with a letter or digit, at most 64 (rename the file)"
        )


def load(path: Path, limits: Limits | None = None) -> Workflow:
    """Read and check a workflow file; errors name the file, the job and the field. `limits`:
    the deployment's (Limits.of(settings)); none by default."""
    limits = limits or Limits()
    import yaml

    _check_path(path)

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE + 1)  # not all of /dev/zero, or a file made by mistake
        if len(raw) > MAX_FILE:
            raise ValidationError(f"workflow {path} is larger than {MAX_FILE >> 20} MiB")
        doc = yaml.load(raw.decode(), Loader=_strict_loader())  # noqa: S506 - a SafeLoader
    except OSError as exc:
        raise ValidationError(f"cannot read workflow {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ValidationError(f"workflow {path} is not UTF-8 text (byte {exc.start + 1})") from None
    except RecursionError:  # PyYAML nests by recursion: `args: [[[...]]]` 500 deep was a 3,000-line traceback
        raise ValidationError(f"workflow {path} is nested too deeply (lists or mappings inside each other)") from None
    except yaml.YAMLError as exc:  # its text spans lines, with a caret under the spot
        where = getattr(exc, "problem_mark", None)
        why = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ValidationError(f"workflow {path} is not valid YAML{at}: {_cut(why)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), dict) or not doc["jobs"]:
        raise ValidationError(f"workflow {path}: needs a 'jobs' mapping with at least one job")
    others = sorted(str(k) for k in doc if k != "jobs" and not str(k).startswith("x-"))
    if others:  # as a job's unknown fields: a typo must not pass unseen (x-: anchors, as in Compose)
        raise ValidationError(
            f"workflow {path.name}: unknown top-level field(s) {_listed(others)} (only 'jobs', and x-* for anchors)"
        )
    seen: dict[str, str] = {}
    for name in doc["jobs"]:
        if not isinstance(name, str):
            raise ValidationError(f"workflow {path.name}: {_not_text(name)}")
        other = seen.setdefault(name_key(name), name)
        if other != name:  # its peers' lookups ignore case: one would shadow the other
            raise ValidationError(f"workflow {path.name}: jobs {_shown(other)} and {_shown(name)} differ only in case")
    if limits.max_jobs is not None and len(doc["jobs"]) > limits.max_jobs:
        raise ValidationError(f"workflow {path.name}: {too_many(len(doc['jobs']), limits.max_jobs)}")
    jobs, missing = _jobs(path, doc["jobs"], limits.upload_bytes)
    return Workflow(name=path.stem, jobs=jobs, missing_uploads=missing)


def _jobs(path: Path, bodies: dict[str, Any], upload_limit: int | None) -> tuple[dict[str, WorkflowJob], str]:
    """Each job, read, and the upload files missing from every job, said at once (one a run,
    a workflow of a few services took as many runs to put right); a job missing some is read
    without its uploads, for the other checks."""
    jobs, missing = {}, []
    for name, body in bodies.items():
        try:
            jobs[name] = _job(path, name, body, upload_limit)
        except MissingUploads as exc:
            missing.append(f"job {_shown(name)}: {', '.join(exc.files)}")
            jobs[name] = _job(path, name, {**body, "uploads": None}, upload_limit)
    if not missing:
        return jobs, ""
    shown = "; ".join(missing[:MISSING_SHOWN]) + (
        f"; and {len(missing) - MISSING_SHOWN} more job(s)" if len(missing) > MISSING_SHOWN else ""
    )
    return jobs, f"{path.parent.resolve()}: {shown}"


MISSING_SHOWN = 10  # jobs whose missing uploads an error names


class MissingUploads(ValidationError):
    """A job's upload files that do not exist (all of them, not the first alone)."""

    def __init__(self, where: str, files: list[str]) -> None:
        super().__init__(f"{where}: upload(s) {', '.join(files)}: No such file or directory")
        self.files = files


@functools.cache
def _strict_loader() -> Any:
    """PyYAML's safe loader, refusing a key given twice in one mapping (it kept the last:
    a second job of the same name replaced the first, unseen)."""
    import yaml

    class Strict(yaml.SafeLoader):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<` may repeat
                key = self.construct_object(key_node, deep=deep)  # cached: not built twice
                if not isinstance(key, Hashable):
                    continue  # refused by the constructor below
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark, f"duplicate key {_shown(key)}", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

        def construct_yaml_int(self, node: Any) -> Any:
            text = self.construct_scalar(node)
            return int(text) if DECIMAL_INT.fullmatch(text) else text

        def construct_yaml_float(self, node: Any) -> Any:
            text = self.construct_scalar(node)
            return float(text) if DECIMAL_FLOAT.fullmatch(text) else text

    # YAML 1.1 reads 012 as 10, 0x1F as 31, 1:30 as 90, 1_000 as 1000, .inf as infinity: an
    # env value, an argument or a zip code changed unseen. Such forms stay the text written;
    # a field that needs a number then refuses it.
    Strict.add_constructor("tag:yaml.org,2002:int", Strict.construct_yaml_int)
    Strict.add_constructor("tag:yaml.org,2002:float", Strict.construct_yaml_float)
    return Strict


DECIMAL_INT = re.compile(r"[-+]?(0|[1-9][0-9]{0,99})")  # longer: the text (int() refuses > 4300 digits)
DECIMAL_FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
SHOWN_CHARS = 80


def _repr() -> reprlib.Repr:
    """repr that reads only the start of a value: a few items, two levels deep."""
    short = reprlib.Repr()  # 3.11 takes no keywords
    short.maxlevel, short.maxlist, short.maxdict, short.maxset = 2, 4, 4, 4
    short.maxstring = short.maxother = short.maxlong = SHOWN_CHARS
    return short


_SHORT = _repr()


def _shown(value: Any) -> str:
    """A value from the file as an error quotes it: its repr, cut to SHOWN_CHARS. Nine levels of
    YAML aliases make a list of a billion items that share one list: its whole repr was 300 MB."""
    return _cut(_SHORT.repr(value))


def _cut(value: Any) -> str:
    """A name or a number as an error shows it, unquoted: at most SHOWN_CHARS characters."""
    text = str(value) if isinstance(value, str | int | float | datetime.date | None) else _SHORT.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _listed(names: Any) -> str:
    """Field names for an error, each cut short, sorted as text (a key may be a number)."""
    return _cut(", ".join(sorted(_cut(n) for n in names)))


def too_many(count: int, limit: int) -> str:
    """Each job's end reads every job's status: a workflow's size is capped (3,000 jobs were
    accepted, and each end read them all: red-team run)."""
    return f"{count} jobs, over the limit of {limit} (workflow_max_jobs; split it in two)"


def in_file(where: str, exc: ValidationError) -> ValidationError:
    """A job's error as its workflow file names it: where, and the file's field (`resources`
    for the spec's `limits`)."""
    if isinstance(exc, FieldError):
        limit = exc.loc[:1] == ("limits",)
        loc = ("resources", *exc.loc[1:]) if limit else exc.loc
        unit = ERROR_UNITS.get(str(exc.loc[-1]), "") if limit and exc.msg[-1:].isdigit() else ""
        exc = FieldError(loc, exc.msg + unit, exc.what)
    return ValidationError(f"{where}: {exc}")


def job_where(workflow: str, name: str) -> str:
    """How an error names a workflow's job."""
    return f"workflow {workflow}: job {_shown(name)}"


def _hint(key: str) -> str | None:
    """A guess for a job's unknown field: `limits` (as --json and the Python API name them)
    and a limit's own name are under `resources` here; they had none (usability run)."""
    from joblet.limit_names import SHOWN_UNITS  # each of Limits' fields

    if key == "limits":
        return "did you mean 'resources'? a job's limits go under it"
    if key in SHOWN_UNITS:
        return f"did you mean 'resources: {{{key}: ...}}'?"
    return did_you_mean(key, JOB_KEYS)


def _job(path: Path, name: str, body: Any, upload_limit: int | None = None) -> WorkflowJob:
    where = job_where(path.name, name)
    if not isinstance(body, dict):
        raise ValidationError(f"{where}: must be a mapping")
    unknown = set(body) - JOB_KEYS
    if unknown:
        hints = "; ".join(h for h in (_hint(str(k)) for k in sorted(unknown, key=str)) if h)
        raise ValidationError(f"{where}: unknown field(s) {_listed(unknown)}" + (f" ({hints})" if hints else ""))
    if "command" not in body:
        raise ValidationError(f"{where}: 'command' is required")
    fields: dict[str, Any] = {
        k: body[k] for k in ("network", "runtime", "volumes", "node", "timeout", "user") if k in body
    }
    if "env" in body:
        fields["env"] = _env(where, body["env"])
    fields["name"] = name
    fields["limits"] = body.get("resources") or {}
    fields["uploads"] = _uploads(path, where, body.get("uploads"), upload_limit)
    command = _command(where, body["command"])
    args = _args(where, body.get("args"))
    words = command.split()
    if not args and len(words) > 1:  # ran, then 127: a program named "echo hi"
        first, *rest = words
        raise ValidationError(
            f"{where}: 'command' is one program; its arguments go in 'args': "
            f"command: {_cut(first)}, args: {_shown(rest)}"
        )
    if isinstance(body.get("user"), int) and not isinstance(body["user"], bool):
        raise ValidationError(f"{where}: 'user' is text, as --user: quote it ('{_cut(body['user'])}')")
    try:
        fields["limits"] = checked("limits", with_units, fields["limits"])  # `max_memory: 1G`, as --max-memory
        spec = make_spec(command, args, **fields)
    except ValidationError as exc:
        raise in_file(where, exc) from None
    service = body.get("service", False)
    if not isinstance(service, bool):
        raise ValidationError(f"{where}: 'service' must be true or false")
    return WorkflowJob(name=name, spec=spec, requires=_requires(where, body.get("requires")), service=service)


BOOLEAN = "YAML reads the value as a boolean (yes, no, on, off, true...): quote it"  # command, args, env


def _command(where: str, value: Any) -> str:
    """The job's one program, as text. `command: true` (or `yes`, a program too) was "must be
    text" with no hint that YAML had read a boolean (usability run), as `env` values say."""
    if isinstance(value, bool):
        raise ValidationError(f"{where}: 'command': {BOOLEAN}")
    if value == "" or (isinstance(value, str) and not value.strip()):
        raise ValidationError(f"{where}: 'command' is empty (one program; its arguments go in 'args')")
    if not isinstance(value, str):
        raise ValidationError(f"{where}: 'command' must be text (one program; its arguments go in 'args')")
    return value


def _args(where: str, value: Any) -> tuple[str, ...]:
    """A list of arguments; numbers are written as YAML reads them (`[-n, 3]`), anything else
    but text is refused (a string is not split: `args: -c echo` would be ambiguous)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValidationError(f"{where}: 'args' must be a list, e.g. [-c, 'echo hi']")
    for n, arg in enumerate(value, 1):  # a date (2024-01-01) reads as one: its text, as before
        if isinstance(arg, bool):  # `[yes, no]` said "argument True": not what was written
            raise ValidationError(f"{where}: argument {n} in 'args': {BOOLEAN}")
        if not _scalar(arg):
            raise ValidationError(f"{where}: argument {_shown(arg)} in 'args' is not text or a number (quote it)")
    return tuple(str(a) for a in value)


def _scalar(value: Any) -> bool:
    """Text, a number or a date: what is written as its text (a bool is refused: which text?)."""
    return not isinstance(value, bool) and isinstance(value, str | int | float | datetime.date)


def _env(where: str, value: Any) -> Any:
    """Values that are numbers are written as YAML reads them (`PORT: 8080`, as Compose takes
    them; 012 or 0x1F stay as written: `_strict_loader`); `true`, `no` and the like are refused
    (Compose refuses them too: is it "true", "True" or "1"?); the rest is the spec's to check."""
    if not isinstance(value, dict):
        return value
    for key, val in value.items():
        if isinstance(val, bool):
            raise ValidationError(f"{where}: env {_cut(key)}: {BOOLEAN}")
    # a date (2024-01-01) as its text, as in 'args': "must be a string, not date" gave no hint
    return {k: str(v) if isinstance(v, int | float | datetime.date) else v for k, v in value.items()}


def _regular_file(src: Path, room: int | None) -> tuple[bytes, int] | None:
    """A regular file's bytes and mode; a FIFO or a device is refused, not waited on or read
    forever. None when it holds more than `room` bytes: not read past them (a workflow's
    upload of 1 GB was read whole before the job's spec was refused by its size)."""
    if not stat.S_ISREG(os.stat(src).st_mode):  # before opening: opening a device can act (a tape rewinds)
        raise OSError(errno.EINVAL, "not a regular file")
    fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if room is not None and info.st_size > room:
            return None
        data = fh.read() if room is None else fh.read(room + 1)  # it may grow as it is read
        return None if room is not None and len(data) > room else (data, info.st_mode & 0o7777)


def _uploads(path: Path, where: str, uploads: Any, limit: int | None) -> list[dict[str, Any]]:
    if uploads is None:
        return []
    files = uploads.get("files") if isinstance(uploads, dict) else None
    if not isinstance(files, list):
        raise ValidationError(f"{where}: 'uploads' must be {{files: [paths]}}")
    out, total, missing = [], 0, []
    base = path.parent.resolve()
    for rel in files:
        if not _scalar(rel):  # before str(): a list of a billion items is not a name
            raise ValidationError(f"{where}: upload {_shown(rel)} is not a file name (text)")
        src = (path.parent / str(rel)).resolve()  # read where it was checked: a link swapped in between is not followed
        if not src.is_relative_to(base):  # a workflow file from elsewhere ships no ~/.ssh
            raise ValidationError(f"{where}: upload {_shown(rel)} is outside the workflow's directory {base}")
        try:
            read = _regular_file(src, None if limit is None else limit - total)
        except FileNotFoundError:
            missing.append(_shown(rel))
            continue
        except OSError as exc:
            raise ValidationError(f"{where}: upload {_shown(rel)}: {exc.strerror}") from None
        if read is None:
            raise ValidationError(
                f"{where}: upload {_shown(rel)}: the job's uploads exceed the limit of {limit} bytes (upload_max_bytes)"
            )
        data, mode = read
        total += len(data)
        out.append({"path": Path(str(rel)).name, "mode": mode, "content": base64.b64encode(data).decode()})
    if missing:
        raise MissingUploads(where, missing)
    return out


def _requires(where: str, requires: Any) -> dict[str, JobStatus]:
    if requires is None:
        return {}
    items = requires if isinstance(requires, list) else [requires]
    found: dict[str, JobStatus] = {}
    for item in items:
        if not isinstance(item, dict) or not item:  # {} required nothing, silently
            raise ValidationError(f"{where}: 'requires' entries are {{JOB: STATUS}}")
        for dep, status in item.items():
            try:  # not str() of any value: a list of a billion items is no status
                wanted = JobStatus(status.upper() if isinstance(status, str) else "")
            except ValueError:
                allowed = ", ".join(st.value for st in JobStatus if st.final or st == JobStatus.RUNNING)
                raise ValidationError(
                    f"{where}: unknown status {_shown(status)} for {_shown(dep)} (one of {allowed})"
                ) from None
            if not wanted.final and wanted != JobStatus.RUNNING:
                raise ValidationError(
                    f"{where}: {_shown(dep)} must be required to end (COMPLETED, FAILED, ...) or to have "
                    f"started (RUNNING), not {wanted.value}"
                )
            if str(dep) in found:  # the last one was kept, silently (usability run)
                raise ValidationError(f"{where}: 'requires' names {_shown(dep)} twice")
            found[str(dep)] = wanted
    return found


def graph_problems(wf: Workflow) -> list[str]:
    """Unknown dependencies and cycles, as lines for the user."""
    problems = [
        f"job {_shown(name)} requires unknown job {_shown(dep)}"
        for name, job in wf.jobs.items()
        for dep in job.requires
        if dep not in wf.jobs
    ]
    # a service ends when the others have (STOPPED): a job waiting for it to end waits for good
    problems += [
        f"job {_shown(name)} requires service {_shown(dep)} to end {wanted.value}: a service is stopped "
        "when the workflow's other jobs have ended (require RUNNING)"
        for name, job in wf.jobs.items()
        for dep, wanted in job.requires.items()
        if dep in wf.jobs and wf.jobs[dep].service and wanted != JobStatus.RUNNING
    ]
    if all(job.service for job in wf.jobs.values()):
        problems.append("every job is a service: a workflow ends when its jobs that are not services have ended")
    graph = {name: [d for d in job.requires if d in wf.jobs] for name, job in wf.jobs.items()}
    try:  # no recursion: a chain of thousands of jobs is a graph like any other
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = (_cut(n) for n in reversed(exc.args[1]))  # "requires", as written
        problems.append("dependency cycle: " + " -> ".join(cycle))
    return problems
