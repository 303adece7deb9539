"""`rnx run`: queue a job, then (unless detached) stream its output and exit with its code."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from joblet.api.keys import END_FIELD, STDERR_FIELD, STDOUT_FIELD
from joblet.cli import complete
from joblet.cli.flags import LIMIT_FLAGS
from joblet.cli.node_watch import NODE_LOOK, warn_if_node_down
from joblet.cli.once import OnceCommand
from joblet.cli.patience import Patience
from joblet.errors import JobletError, ValidationError
from joblet.text import printable, sized

T = TypeVar("T")

if TYPE_CHECKING:
    from joblet.api.client import Client
    from joblet.api.models import JobRecord, JobStatus

STREAMS = {STDOUT_FIELD: "stdout", STDERR_FIELD: "stderr"}
NO_WORKER_AFTER = 3.0  # seconds a job may wait before rnx says nobody is taking it
SETUP_FAILED = 125  # like `docker run`: the job could not be started at all


def parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:  # `--env NAME` passes the caller's value on; unset, the job has none (as Docker)
            from joblet.api.models import ENV_KEY_RE

            if not ENV_KEY_RE.fullmatch(key):  # `-e ''`, `-e 'A B'` were passed over (usability run)
                raise ValidationError(f"invalid --env: invalid environment variable name '{printable(key)}'")
            if key not in os.environ:
                continue
            value = os.environ[key]
        env[key] = value
    return env


def read_uploads(
    files: tuple[str, ...], directories: tuple[str, ...], limit: int | None = None
) -> list[dict[str, Any]]:
    """Files (by base name) and directory trees (relative paths: several merge, a path two
    of them hold is refused as given twice) with their modes; refused as soon as their sizes
    pass `limit` (upload_max_bytes), before more is read: a tree of 1.2 GB was read whole,
    4.5 GB of memory, before the limit refused it (usability review)."""
    found: list[tuple[Path, str, str]] = []  # (file, its path in the job, the option that named it)
    for name in files:
        path = Path(name)
        if not name or not path.is_file():  # "" is the current directory to pathlib
            if name and path.is_dir():
                why = "is a directory (--upload-dir uploads one)"
            elif name and path.exists():  # /dev/zero, a FIFO: readable, not a file (usability run)
                why = "is not a regular file (a device, FIFO or socket: copy what it gives to a file)"
            else:
                why = "does not exist" if name and not path.is_symlink() else "is not a readable file"
            raise ValidationError(f"invalid --upload: '{printable(name)}' {why}")
        found.append((path, path.name, "--upload"))
    for directory in directories:
        found += [(path, rel, "--upload-dir") for path, rel in _tree(directory, limit)]
    uploads, total = [], 0
    for path, rel, flag in found:
        try:
            info = path.stat()  # one stat: its size before the read, its mode
            total += info.st_size
            if limit is not None and total > limit:  # named --upload for a directory's file (usability run)
                raise ValidationError(
                    f"invalid {flag}: the files exceed the limit of {sized(limit)} (upload_max_bytes) "
                    f"at {printable(str(path))}"
                )
            data = path.read_bytes()
            mode = info.st_mode & 0o7777
        except OSError as exc:
            raise ValidationError(f"invalid {flag}: {printable(str(path))}: {exc.strerror}") from None
        uploads.append({"path": rel, "mode": mode, "content": base64.b64encode(data).decode()})
    return uploads


def _tree(directory: str, limit: int | None = None) -> list[tuple[Path, str]]:
    """The files of an upload directory, by path relative to it. Said on stderr and not sent:
    FIFOs, sockets, devices, broken links, links to directories (their files are, where the
    tree holds them), and what cannot be read (directories were left out without a word; a
    link whose stat was refused raised a traceback, usability run); a link out of the tree is
    refused. Refused as soon as its files' sizes pass `limit` (`--upload-dir=/` walked all of
    /proc before the limit was looked at)."""
    root = Path(directory)
    if not directory or not root.is_dir():  # "" is the current directory to pathlib
        raise ValidationError(f"invalid --upload-dir: '{printable(directory)}' is not a directory")
    inside = root.resolve()

    def unreadable(exc: OSError) -> None:
        sys.stderr.write(f"rnx: --upload-dir: {exc.filename}: {exc.strerror}: not sent\n")

    from joblet.api.uploads import MAX_DEPTH

    found: list[tuple[Path, str]] = []
    total = 0
    for top, dirs, files in os.walk(root, onerror=unreadable):
        if (dirs or files) and len(Path(top).relative_to(root).parts) >= MAX_DEPTH:
            # what is under would be refused as too deep; walked further, Python 3.11's
            # recursive os.walk failed with RecursionError past ~1,000 folders
            raise ValidationError(f"invalid --upload-dir: {top} holds files more than {MAX_DEPTH} names deep")
        for name in sorted([*dirs, *files]):
            path = Path(top, name)
            try:
                size = _tree_entry(path, inside, directory)
            except OSError as exc:
                unreadable(exc)
                continue
            except RuntimeError:  # Python 3.11's resolve() in a loop of links
                sys.stderr.write(f"rnx: --upload-dir: {printable(str(path))} is a loop of links: not sent\n")
                continue
            if size is None:
                continue
            total += size
            if limit is not None and total > limit:
                raise ValidationError(
                    f"invalid --upload-dir: the files exceed the limit of {sized(limit)} (upload_max_bytes) "
                    f"at {printable(str(path))}"
                )
            found.append((path, path.relative_to(root).as_posix()))
    return sorted(found, key=lambda item: item[1])


def _tree_entry(path: Path, inside: Path, directory: str) -> int | None:
    """A file's size, to be sent; None for what is said on stderr and not sent."""
    if path.is_file():
        if not path.resolve().is_relative_to(inside):  # a link out of the tree: not sent
            raise ValidationError(f"invalid --upload-dir: {path} is a link out of {directory}")
        return path.stat().st_size
    if path.is_symlink() and path.is_dir():  # not walked into: said, and refused leading out
        if not path.resolve().is_relative_to(inside):
            raise ValidationError(f"invalid --upload-dir: {path} is a link out of {directory}")
        sys.stderr.write(f"rnx: --upload-dir: {path} is a link to a directory: not sent (its files are)\n")
    elif not path.is_dir():  # a FIFO, a socket, a device, a broken link: said, not sent
        sys.stderr.write(f"rnx: --upload-dir: {path} is not a file or a directory: not sent\n")
    return None


def job_spec(params: dict[str, Any], upload_limit: int | None = None) -> Any:
    """The JobSpec of `rnx run`'s parsed options and command (a ValidationError names the
    option, or the field where no option sets it)."""
    from joblet.api.models import make_spec
    from joblet.fields import FieldError

    fields: dict[str, Any] = {
        "env": parse_env(params["envs"]),
        "name": params["name"],
        "node": params["node"],
        "timeout": params["timeout"],
        "uploads": read_uploads(params["uploads"], params["upload_dir"], upload_limit),
        "volumes": params["volumes"],
        "runtime": params["runtime"],
        "user": params["user"],
        "limits": {k: v for k, v in params.items() if k.startswith("max_") and v is not None},
    }
    if params["networks"]:
        fields["network"] = params["networks"]
    try:
        return make_spec(params["command"], params["args"], **fields)
    except FieldError as exc:
        raise as_option(exc) from None


def as_option(exc: Any) -> Exception:
    """A FieldError as rnx run's option names it: `invalid --max-disk: must be at most 1048576
    MB`, `invalid --network: no such network 'x'`, not the Python API's field name; the error
    itself where no option sets the field."""
    flag, unit = FLAGS.get(".".join(exc.loc), (None, ""))
    if flag is not None:
        return ValidationError(f"invalid {flag}: {exc.msg}{unit if exc.msg[-1:].isdigit() else ''}")
    option = OPTIONS.get(exc.loc[0] if exc.loc else "")
    if option is None:
        return exc  # type: ignore[no-any-return]
    within = f" ({'.'.join(exc.loc[1:])})" if exc.loc[1:] else ""  # which value of a repeated one
    return ValidationError(f"invalid {option}{within}: {exc.msg}")


if TYPE_CHECKING:  # generic in recent click (8.5), plain in older ones (8.1): subscripted for mypy only
    _ParamType = click.ParamType[bool]
else:
    _ParamType = click.ParamType


class TrueFalse(_ParamType):
    """true or false (also 1/0, yes/no, on/off): click.BOOL's error listed its values with an
    empty one first (`Recognized values: , 0, 1, f, ...`)."""

    name = "true|false"
    WORDS = {
        **dict.fromkeys(("true", "t", "1", "yes", "y", "on"), True),
        **dict.fromkeys(("false", "f", "0", "no", "n", "off"), False),
    }

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> bool:
        if isinstance(value, bool):
            return value
        found = self.WORDS.get(str(value).strip().lower())
        if found is None:
            self.fail(f"{value!r} is not true or false", param, ctx)
        return found


class Amount(_ParamType):  # type: ignore[valid-type,misc]
    """A limit's option in its own unit, or with a unit of its kind (`--max-memory=1G`,
    `--max-cpu=50%`): read by limits.Amount, as a workflow's `resources` are, so both take
    the same spellings and say the same of a bad one. `unit`: its key in limits.UNITS."""

    def __init__(self, unit: str) -> None:
        self.name = unit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from joblet.api.limits import UNITS  # when a value is read: `rnx --help` loads this module

        try:
            return UNITS[self.name].parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Duration(_ParamType):  # type: ignore[valid-type,misc]
    """Seconds, or a duration with units (`--timeout=90s`, `5m`, `1h30m`): limits.parse_duration."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from joblet.api.limits import parse_duration

        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


PERCENT, MEGABYTES, BYTES = Amount("percent"), Amount("MB"), Amount("bytes")


# a spec field's option in rnx run, and its unit after a bound in the field's error
FLAGS = {
    **{f"limits.{field}": (flag, unit) for field, (flag, unit, _) in LIMIT_FLAGS.items()},
    "timeout": ("--timeout", " s"),
}
# the other options' fields: `invalid --name: ...`, not `invalid job field 'name': ...`
OPTIONS = {
    "command": "COMMAND",
    "args": "ARGS",
    "env": "--env",
    "name": "--name",
    "node": "--node",
    "network": "--network",
    "volumes": "--volume",
    "runtime": "--runtime",
    "user": "--user",
    "uploads": "--upload or --upload-dir",  # either gives the path: `is given twice` came from two --upload-dir
}


# Options come before COMMAND; everything from COMMAND on is the job's, untouched
# (`rnx run ls -la`). A mistyped option before it is an error with a suggestion, not a command.
@click.command(
    cls=OnceCommand,
    context_settings={"allow_interspersed_args": False},
    short_help="Run a command as a job (attached; -d: detached).",
)
@click.option(
    "--network",
    "networks",
    multiple=True,
    metavar="NAME",
    shell_complete=complete.networks,
    help="Network: bridge (default), isolated (its own link, reaches no other job), none, "
    "host, or one made with `rnx network create`. Repeat to join several (one "
    "interface each; isolated, none and host stand alone).",
)
@click.option(
    "--env",
    "-e",
    "envs",
    multiple=True,
    metavar="K=V",
    help="Environment variable; K alone passes yours on (repeatable).",
)
@click.option(
    "--upload", "uploads", multiple=True, type=click.Path(), metavar="FILE", help="File to place in /work (repeatable)."
)
@click.option(
    "--upload-dir",
    multiple=True,
    type=click.Path(),
    metavar="DIR",
    help="Directory tree to place in /work (repeatable: the trees merge).",
)
@click.option("--name", help="Job name (also its hostname); unique among jobs that have not ended.")
@click.option("--node", shell_complete=complete.nodes, help="Run on this node only.")
@click.option(
    "--timeout", type=Duration(), help="Stop the job after this long (FAILED): seconds, or 90s, 5m, 1h30m, 2d."
)
@click.option(
    "--volume",
    "volumes",
    multiple=True,
    metavar="NAME",
    shell_complete=complete.volumes,
    help="Mount volume NAME read-write at /volumes/NAME (repeatable).",
)
@click.option(
    "--runtime",
    metavar="NAME",
    shell_complete=complete.runtimes,
    help="Runtime installed on the worker (rnx runtime list).",
)
@click.option("--user", metavar="UID[:GID]", help="Run as this user (default: root, Docker's capabilities).")
@click.option("--max-cpu", type=PERCENT, metavar="PERCENT", help="CPU limit, percent of one core (200 = two).")
@click.option("--max-memory", type=MEGABYTES, metavar="MB", help="Memory limit in MB, or 1G (then killed: FAILED).")
@click.option("--max-iobps", type=BYTES, metavar="BYTES", help="Disk bytes/s (also network, without --max-bandwidth).")
@click.option("--max-bandwidth", metavar="RATE", help="Network rate each way: 10mbit (bits), 10mbps (bytes/s).")
@click.option("--max-bandwidth-in", metavar="RATE", help="Network rate into the job.")
@click.option("--max-bandwidth-out", metavar="RATE", help="Network rate out of the job.")
@click.option(
    "--max-output",
    metavar="SIZE",
    help="Output kept (stdout+stderr), e.g. 8M, 512K, 1G; "
    "then truncated, the job keeps running (default and ceiling: the worker's).",
)
@click.option("--max-pids", type=int, metavar="N", help="Processes and threads (default 4096).")
@click.option("--max-disk", type=MEGABYTES, metavar="MB", help="Size of /work and of /tmp, in MB or 2G (default 1024).")
@click.option(
    "--workflow",
    "workflow_file",
    type=click.Path(dir_okay=False),
    metavar="FILE.yaml",
    help="Run a workflow file instead of one command (see rnx workflow).",
)
@click.option("-d", "--detach", is_flag=True, help="Print the id and return at once.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--sig-proxy",
    type=TrueFalse(),
    default=True,
    metavar="true|false",
    help="Attached: Ctrl-C, SIGTERM or SIGHUP to rnx stops the job (default true); with "
    "false rnx leaves and the job keeps running.",
)
@click.argument("command", required=False, shell_complete=complete.local_files)
@click.argument("args", nargs=-1, type=click.UNPROCESSED, shell_complete=complete.local_files)
@click.pass_obj
def run(
    obj: Any,
    /,
    networks: tuple[str, ...],
    envs: tuple[str, ...],
    uploads: tuple[str, ...],
    upload_dir: tuple[str, ...],
    name: str | None,
    node: str | None,
    timeout: float | None,
    volumes: tuple[str, ...],
    runtime: str | None,
    user: str | None,
    workflow_file: str | None,
    detach: bool,
    as_json: bool,
    sig_proxy: bool,
    command: str | None,
    args: tuple[str, ...],
    **limits: Any,
) -> None:
    """Run COMMAND [ARGS]... as a job; attached, exit with the job's exit code."""
    from joblet.cli.render import if_unused

    if workflow_file is not None:
        if command is not None:
            raise click.UsageError("give either --workflow or a command, not both")
        if not workflow_file:
            raise click.UsageError("--workflow needs a file: --workflow=FILE.yaml")
        ctx = click.get_current_context()
        own = ("workflow_file", "detach", "as_json", "sig_proxy")
        given = [
            p.opts[-1]
            for p in ctx.command.params
            if isinstance(p, click.Option)
            and p.name not in own
            and ctx.get_parameter_source(p.name or "") == click.core.ParameterSource.COMMANDLINE
        ]
        if given:  # they were ignored: each job's options are in the file
            raise click.UsageError(f"--workflow takes each job's options from its file, not {', '.join(given)}")
        from joblet.cli.workflow import run_workflow

        sys.exit(run_workflow(obj.client, workflow_file, detach, as_json))
    if command is None:
        raise click.UsageError("missing COMMAND (or --workflow=FILE)")

    client: Client = obj.client
    spec = job_spec(click.get_current_context().params, client.settings.upload_max_bytes)
    from joblet.fields import FieldError

    try:
        with submitting():
            record = client.submit(spec)
    except FieldError as exc:  # checked against the fleet: no such network, a name in use, ...
        raise as_option(exc) from None
    if detach:
        from joblet.cli.render import say_done

        done = f"queued job {record.id}"
        text = json.dumps({"id": record.id, "status": record.status.value}, indent=2) if as_json else record.id
        said = say_done(text + "\n", done)
        if record.node is None:  # placed on no node: none was up or draining (nodes.place)
            click.echo(
                f"rnx: job {record.short_id} waits in the queue: no worker is running (start one with `joblet-worker`)"
                + if_unused(client),
                err=True,
            )
        if not said:
            sys.exit(1)
        return
    sys.exit(Attached(client, record, as_json, sig_proxy).follow())


def no_worker_note(client: Any, record: JobRecord) -> str | None:
    """What a PENDING job waits for when no live worker can take it (its node silent, or no
    worker at all), as one line; None when one can (`rnx run`, `rnx log -f`: it waited
    without a word, usability run)."""
    nodes = client.live_nodes()
    wanted = record.spec.node or record.node  # pinned, or placed on that node's queue
    if nodes and (wanted is None or wanted in nodes):
        return None
    if wanted is not None and any(row["name"] == wanted for row in client.nodes()):  # silent, not absent
        # not pinned there: the fleet's sweep of the silence places it on another node (fleet.py)
        then = "ends LOST" if record.spec.node else "goes to another node once the fleet gives that node up"
        return (
            f"rnx: job {record.short_id} is queued for node {wanted!r}, whose heartbeat has "
            f"stopped (its worker down or paused?): it starts when that worker is back, or {then}"
        )
    from joblet.cli.render import if_unused

    where = f"worker on node {wanted!r}" if wanted else "worker"
    return (
        f"rnx: job {record.short_id} is waiting for a {where}: none is "
        f"running (start one with `joblet-worker`){if_unused(client) if not nodes else ''}"
    )


class Leave(Exception):
    """rnx stops following the job (a second signal, or any with --sig-proxy=false)."""


PROXIED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP while a job was submitted: a Ctrl-C to the submit (its record is
    failed, not left PENDING), then rnx ends as that signal would have ended it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def submitting() -> Iterator[None]:
    """SIGTERM and SIGHUP (`timeout`, a closed terminal) during a submit killed rnx between
    the job's record and its queue message: PENDING for good, holding its name (review).
    They interrupt it as Ctrl-C does; one ignored when rnx started stays ignored."""

    def interrupt(signum: int, _frame: Any) -> None:
        raise Signalled(signum)

    caught = [sig for sig in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(sig) is signal.SIG_DFL]
    previous = {sig: signal.signal(sig, interrupt) for sig in caught}
    try:
        yield
    except Signalled as exc:
        sys.exit(128 + exc.signum)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


POLL_MS = 250  # a signal is acted on within this long (the handler only records it)
MASHED_WAIT = 2.0  # seconds a third signal waits for the stop the first had not asked for yet
LEFT_WAIT = 0.5  # seconds rnx waits for a job's end after its output could not be written


class Attached:
    """Follows one job's output to the terminal. Ctrl-C, SIGTERM and SIGHUP stop the job
    (like `docker run`'s signal proxy); at a second one rnx exits and the stop goes on."""

    def __init__(self, client: Client, record: JobRecord, as_json: bool, sig_proxy: bool = True) -> None:
        self.client = client
        self.record = record
        self.as_json = as_json
        self.sig_proxy = sig_proxy
        self.stdout = bytearray()
        self.warned = False  # said that no worker takes it (or it started: nothing to say)
        self.said_down: str | None = None  # the node whose missing heartbeat rnx has told of
        self.after = "0-0"  # the last stream entry shown: nothing is ever shown twice
        self.caught: int | None = None  # the first signal (or the one rnx left on)
        self.signals = 0  # how many came
        self.stopping: int | None = None  # the signal that stopped the job, once asked for
        self.stop_sent = False  # its stop request reached Redis: a signal now leaves at once
        self.leaving = False  # rnx is on its way out: a signal now changes nothing
        self.grace: float | None = None  # the job's worker's stop grace (_grace), once read
        self.grace_read = False
        self.patience = Patience(record.short_id)  # for Redis gone while it follows
        self.no_record = Patience(record.short_id)  # for a Redis back without its data, until restored

    def follow(self) -> int:
        # one ignored when rnx started stays so: `rnx run ... &` in a script (SIGINT ignored),
        # `nohup rnx run` (SIGHUP); rnx stopped the job at a signal meant to pass it by
        caught = [sig for sig in PROXIED if signal.getsignal(sig) is not signal.SIG_IGN]
        previous = {sig: signal.signal(sig, self._on_signal) for sig in caught}
        try:
            if self.record.node is None:  # placed on a live node a moment ago: nothing to say yet
                self._warn_if_no_worker(initial=True)
            self._stream()
        except Leave:
            self.leaving = True  # a third Ctrl-C while this is said escaped as a traceback (review)
            sig, short = self.caught or signal.SIGINT, self.record.short_id
            if self.stop_sent:  # its stop was asked for and goes on: SIGKILL after the grace period
                sys.stderr.write(f"rnx: stopped waiting; job {short} is still being stopped (rnx status {short})\n")
            elif self.stopping is not None:  # left while the request was on its way (Redis hangs)
                sys.stderr.write(f"rnx: left job {short}; its stop may not have been asked for (rnx stop {short})\n")
            elif self.sig_proxy and self._stop_briefly():  # three signals before the loop acted on one
                sys.stderr.write(f"rnx: stopped waiting; job {short} is being stopped: SIGTERM (rnx status {short})\n")
            else:
                sys.stderr.write(f"rnx: left job {short} running (rnx stop {short})\n")
            if self.as_json:  # a script reads the job's id (nothing was printed: usability run)
                from joblet.cli.render import print_json

                print_json({"id": self.record.id, "status": "RUNNING"})
            return 128 + sig
        except OSError as exc:  # its output's: a closed pipe (`| head -1`), a full disk
            if exc.filename is not None:
                raise
            try:  # a signal still leaves while rnx asks Redis how the job is (Redis may hang)
                left = self._left()
            except Leave:
                self.leaving = True
                return 128 + (self.caught or signal.SIGINT)
            self.leaving = True
            sys.stderr.write(f"rnx: cannot write the job's output ({exc.strerror}): {left}\n")
            return 1
        finally:
            self.leaving = True
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        final = self._final()
        code = self._report(final)
        from joblet.api.models import JobStatus

        if self.stopping is not None and final.status == JobStatus.STOPPED:
            return 128 + self.stopping
        return code

    def _final(self) -> JobRecord:
        """The job's record once its stream has ended; Redis gone a moment is waited out (a
        blip there exited 1 whatever the job's end, review)."""
        return self._patiently(lambda: self.client.store.get_job(self.record.id), leave=False)

    def _left(self) -> str:
        """What rnx leaves behind when it cannot write: a job that has ended says so. The
        write that failed is often the job's last (`rnx run echo hi > /dev/full`): its end,
        a moment later, is waited for (at most LEFT_WAIT s) before calling it left running."""
        short = self.record.short_id
        try:
            try:
                status = self.client.wait(self.record.id, timeout=LEFT_WAIT).status
            except TimeoutError:
                status = self.client.store.get_job(self.record.id).status
        except Exception:  # noqa: BLE001 - Redis gone too: say what is certain
            return f"left job {short} (rnx status {short})"
        if status.final:
            return f"job {short} ended {status.value} (rnx log {short})"
        return f"left job {short} {status.value.lower()} (rnx stop {short})"

    def _stop_briefly(self) -> bool:
        """Ask for the job's stop, waiting at most MASHED_WAIT for Redis; whether it was asked.
        Ctrl-C pressed three times within the loop's 250 ms left the job running, its stop
        never asked for (usability run); a third signal still leaves soon where Redis hangs."""
        import threading

        asked = threading.Event()

        def ask() -> None:
            with contextlib.suppress(Exception):  # Redis gone: the line says to stop it by hand
                self.client.stop(self.record.id)
                asked.set()

        threading.Thread(target=ask, name="rnx-stop", daemon=True).start()
        return asked.wait(MASHED_WAIT)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        """The first signal is acted on by the loop (no Redis call inside a signal handler): it
        asks for the stop. The second leaves once that request has reached Redis, however far
        the loop had got (not inside the request: it must arrive); a third leaves at once
        (Redis hangs). Without the proxy, or once the stop was asked for, any leaves; once
        rnx is leaving, none does anything more."""
        self.signals += 1
        if self.leaving:
            return
        if self.caught is None:
            self.caught = signum
        if not self.sig_proxy or self.stop_sent or self.signals > 2:
            self.caught = signum
            raise Leave

    def _begin_stop(self) -> None:
        sig = self.caught
        assert sig is not None
        self.stopping = sig
        what = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
        # when SIGKILL comes, as rnx stop says: a job that ignores SIGTERM was waited for in
        # silence, ~11 s (usability run)
        grace = self._grace()
        kill = "SIGKILL after its grace" if grace is None else f"SIGKILL after {grace:g} s"
        short = self.record.short_id
        sys.stderr.write(f"rnx: {what}: stopping job {short}: SIGTERM, {kill} ({what} again to stop waiting)\n")
        try:
            self.client.stop(self.record.id)
        except JobletError as exc:  # Redis gone: it raised out of the loop, exit 1, no word of the job (review)
            sys.stderr.write(f"rnx: {printable(str(exc))}\n")
            raise Leave from None  # "its stop may not have been asked for (rnx stop ID)"
        self.stop_sent = True
        if self.signals > 1:
            raise Leave

    def _grace(self) -> float | None:
        """The job's worker's stop grace, by its heartbeat (read once; None where it does not
        say, or Redis does not answer: the stop is asked for all the same)."""
        if not self.grace_read:
            self.grace_read = True
            try:
                self.grace = self.client.stop_graces().get(self.record.node or "")
            except JobletError:
                pass
        return self.grace

    def _stream(self) -> None:
        from joblet.api.store_output import EndWatch
        from joblet.cli.stream import write_chunk

        check_at = time.monotonic() + NO_WORKER_AFTER
        ended = EndWatch(self.client.store, self.record.id)
        while True:
            if self.caught is not None and self.stopping is None:
                self._begin_stop()
            entries = self._read()
            if entries:
                ended.heard()
            elif time.monotonic() > check_at:
                # at most once a second while nothing arrives, every 5 s once it runs: one
                # read of its status for the note, the node's heartbeat and the end's watch
                check_at = time.monotonic() + (NODE_LOOK if self.warned else 1.0)
                if (where := self._look()) is not None:
                    if self.warned:
                        self._warn_if_node_down(where)
                    else:
                        self._warn_if_no_worker(initial=False, where=where)
                    if ended.saw(where[0]):  # final long since, no marker: none is coming
                        return
            elif ended.over():
                return
            for entry_id, field, data in entries:
                self.after = entry_id
                if field == END_FIELD:
                    return
                stream = STREAMS.get(field)
                if stream is None:
                    continue
                if self.as_json and stream == "stdout":
                    self.stdout += data  # in the JSON's output; its stderr goes to rnx's, live
                else:
                    write_chunk(stream, data)

    def _read(self) -> list[tuple[str, bytes, bytes]]:
        """The next entries of the job's output."""
        return self._patiently(lambda: self.client.store.read_output(self.record.id, self.after, block_ms=POLL_MS))

    def _patiently(self, read: Callable[[], T], leave: bool = True) -> T:
        """`read` (of Redis), Redis gone waited out (patience.py). With `leave`, a signal while
        it waits leaves the job running (or, once its stop was asked for, waits on: a second
        signal leaves); without, the job has ended and rnx waits to tell how."""
        from joblet.errors import BackendUnavailable

        while True:
            try:
                value = read()
            except BackendUnavailable as exc:
                if leave and self.caught is not None and not self.stop_sent:  # its stop cannot be asked for now
                    raise Leave from None
                self.patience(exc)
                continue
            self.patience(None)
            return value

    def _look(self) -> tuple[JobStatus, str | None] | None:
        """The job's status and node, or None. Redis came back without its data: the job's worker
        writes its record again on its next heartbeat (or whole at its end); "no such job"
        left it running unseen. That wait is no_record's: it gives up after its patience
        (looked at also once rnx has said its note, or a record that nothing wrote again, its
        message gone with Redis and its worker down, held rnx for good: fleet run). Its status
        alone (where_is): the whole record, a spec with its uploads, is megabytes, read
        every 5 s while a quiet job runs."""
        from joblet.errors import BackendUnavailable

        try:
            status, node = self.client.store.where_is(self.record.id)
        except (BackendUnavailable, ValueError):  # the output's reads wait it out and say so (it raised here: review)
            return None
        if status is None:
            gone = BackendUnavailable(
                f"Redis has no record of job {self.record.short_id} (restarted without its data?)"
            )
            self.no_record(gone)
            return None
        self.no_record(None)
        return status, node

    def _warn_if_no_worker(self, initial: bool, where: tuple[JobStatus, str | None] | None = None) -> None:
        """Say once that no live worker takes the job (no_worker_note); `where`: its status
        and node, read by the caller already (else read here)."""
        where = self._look() if where is None else where
        if where is None:
            return
        status = where[0]
        if status.value != "PENDING":
            self.warned = not initial or self.warned
            return
        note = no_worker_note(self.client, self.record)
        if note is not None:
            self.warned = True
            sys.stderr.write(note + "\n")

    def _warn_if_node_down(self, where: tuple[JobStatus, str | None] | None = None) -> None:
        self.said_down = warn_if_node_down(self.client, self.record.id, self.said_down, where)

    def _report(self, final: JobRecord) -> int:
        from joblet.cli.render import print_json

        said, code = ending(final, stopped_here=self.stopping is not None)
        if self.as_json:
            out = final.public()
            out["output"] = self.stdout.decode(errors="replace")
            print_json(out)
        elif said:
            sys.stderr.write(said + "\n")
        return code


def ending(final: JobRecord, stopped_here: bool = False) -> tuple[str | None, int]:
    """What rnx says on stderr when a job it followed has ended (None: its output said all),
    and rnx's exit code: an attached `rnx run`'s and `rnx log -f`'s. `stopped_here`: this rnx
    asked for the stop (Ctrl-C): a stop from elsewhere says who asked (the worker's shutdown)."""
    from joblet.api.models import JobStatus
    from joblet.cli.render import printable

    said = None
    if (
        final.error
        and final.exit_code not in (126, 127)  # the job's own stderr said why
        and (
            final.status in (JobStatus.FAILED, JobStatus.LOST)
            or (final.status == JobStatus.STOPPED and not stopped_here)
        )
    ):
        said = f"rnx: job {final.short_id} {final.status.value.lower()}: {printable(final.error)}"
    elif final.status == JobStatus.STOPPED and not stopped_here:  # exit 143 and no word (usability)
        said = f"rnx: job {final.short_id} stopped by a stop request from elsewhere"
    if final.exit_code == 0 and final.status == JobStatus.FAILED:
        return said, 1  # its timeout came as it ended, or it exited 0 on the SIGTERM: not a success
    if final.exit_code is not None:
        return said, final.exit_code
    return said, 130 if final.status == JobStatus.STOPPED else SETUP_FAILED
