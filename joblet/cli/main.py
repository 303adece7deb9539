"""`rnx`: the joblet command line. Thin: parse, call the Client, render, map errors to exits."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from joblet import wakeup
from joblet.cli import complete
from joblet.cli.live import Interval
from joblet.cli.once import OnceGroup
from joblet.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    JobletError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from joblet.text import shown as quoted

EXIT_CODES: list[tuple[type[JobletError], int]] = [
    (ValidationError, 2),
    (ConfigError, 2),
    (NotFound, 1),
    (Conflict, 1),
    (BackendUnavailable, 1),
    (PermissionDenied, 1),
]


LIST_LIMIT = 20


class Ctx:
    """Lazily built settings and client, shared by every subcommand."""

    def __init__(self) -> None:
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from joblet.api.client import Client

            self._client = Client()
        return self._client


# Subcommands in modules of their own, imported when named (`rnx run` loads run.py only;
# `rnx --help` and completion load them all)
LAZY = {
    "run": ("joblet.cli.run", "run"),
    "batch": ("joblet.cli.batch", "batch"),
    "stats": ("joblet.cli.stats", "stats"),
    "stop": ("joblet.cli.stop", "stop"),
    "completion": ("joblet.cli.complete", "completion"),
    "network": ("joblet.cli.network", "network"),
    "nodes": ("joblet.cli.nodes", "nodes"),
    "node": ("joblet.cli.nodes", "node"),
    "volume": ("joblet.cli.volume", "volume"),
    "runtime": ("joblet.cli.volume", "runtime"),
    "workflow": ("joblet.cli.workflow", "workflow"),
}


# click 8.2+ raises it for a group named without a command (8.1 printed the help itself)
NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


class RnxGroup(OnceGroup):
    """Turns joblet errors into one line on stderr and an exit code (no traceback); loads the
    LAZY subcommands when they are named. An option given twice is refused (once.py)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY and name not in self.commands:
            import importlib

            module, attr = LAZY[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """rnx's own options: a mistyped one is one line too (click printed three), and one of
        a command given before it (`rnx --json list`) says where it goes."""
        words = list(args)  # what follows rnx's own options: the command's path is in it
        try:
            rest = super().parse_args(ctx, args)
        except NO_ARGS_IS_HELP:
            raise
        except click.UsageError as exc:
            if (moved := misplaced(self, ctx, exc, words)) is not None:
                exc = click.UsageError(moved, ctx)
            usage_exit(exc, ctx.command_path)
        ctx.meta[WORDS] = words
        return rest

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NO_ARGS_IS_HELP as exc:  # `rnx workflow`: its help, as `rnx` alone
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:  # one line, with the help command to read next
            usage_exit(exc, command_named(ctx))
        except JobletError as exc:
            code = next((c for t, c in EXIT_CODES if isinstance(exc, t)), 1)
            click.echo(f"rnx: {error_text(exc)}", err=True)
            sys.exit(code)
        except KeyboardInterrupt:  # Ctrl-C: quiet, 130, as a shell's command (click said "Aborted!", 1)
            sys.exit(130)
        except BrokenPipeError:  # the reader left (`rnx log ID | head -1`): quiet, as SIGPIPE ends a
            sys.exit(PIPE_CLOSED)  # program; click said nothing and exited 1, a small output 0 (usability run)


WORDS = "rnx.words"  # ctx.meta: the words rnx was given


# what podman's, docker's and nomad's users type, and what rnx calls it (click suggests only
# names that look alike: `rnx ps` had no hint, usability run)
SPELLED = {  # by the group's path below rnx
    "": {"ps": "list", "kill": "stop", "logs": "log", "inspect": "status", "top": "stats"},
    "network": {"rm": "delete", "ls": "list"},
    "volume": {"rm": "delete", "ls": "list"},
    "node": {"list": "rnx nodes", "ls": "rnx nodes", "status": "rnx nodes"},
    "workflow": {"ls": "list", "ps": "list", "kill": "stop"},
}


# podman's and docker's commands rnx has no twin for, and what does the same here (click
# guessed 'status' for restart and start, nothing for the rest: usability run)
ELSEWHERE = {  # by the group's path below rnx
    "": {
        "rm": "job records and their output expire by themselves (JOBLET_LOG_TTL)",
        "wait": "`rnx log -f ID` ends when the job does, with its exit code",
        "attach": "`rnx log -f ID` follows a job's output",
        "exec": "a job takes no second command: run another on its network (rnx run --network=NAME)",
        "restart": "an ended job does not start again: rnx run it again",
        "start": "an ended job does not start again: rnx run it again",
        "version": "rnx --version",
        "help": "rnx --help, or rnx COMMAND --help",
    },
    "network": {
        "connect": "a job's networks are fixed at its start: rnx run --network=A --network=B",
        "disconnect": "a job's networks are fixed at its start: rnx run --network=A --network=B",
        "prune": "rnx network delete NAME (one that jobs hold is refused)",
    },
    "volume": {"prune": "rnx volume delete NAME (one that jobs use is refused)"},
}

# `rnx log`'s: docker's and podman's options it has no twin for
NO_TWIN_LOG = {
    "--tail": "`rnx log ID | tail -n N`",
    "-n": "`rnx log ID | tail -n N`",
    "--since": "a job's output has no timestamps: rnx log ID",
    "-t": "a job's output has no timestamps: rnx log ID",
    "--timestamps": "a job's output has no timestamps: rnx log ID",
}

# podman's and docker's options rnx run has no twin for, and what does the same here
# (click guessed '--network' for --workdir: usability run)
NO_TWIN = {
    "--workdir": "a job starts in /work: `sh -c 'cd DIR && CMD'`",
    "-w": "a job starts in /work: `sh -c 'cd DIR && CMD'`",
    "--rm": "records and output expire by themselves (JOBLET_LOG_TTL)",
    "-i": "a job reads no stdin: --upload its input",
    "-t": "a job has no terminal",
    "--cpus": "--max-cpu=PERCENT (100 is one core)",
    "--interactive": "a job reads no stdin: --upload its input",
    "--tty": "a job has no terminal",
    "-v": "--volume=NAME (a joblet volume, at /volumes/NAME; host paths are not bound)",
    "--mount": "--volume=NAME (a joblet volume, at /volumes/NAME; host paths are not bound)",
    "-m": "--max-memory=SIZE",
    "--pids-limit": "--max-pids=N",
    "-p": "a job is reached at its address on its network (rnx status ID), no port is published",
    "--publish": "a job is reached at its address on its network (rnx status ID), no port is published",
}


def misplaced(group: click.Group, ctx: click.Context, exc: click.UsageError, words: list[str]) -> str | None:
    """`rnx --json list`: "No such option '--json'. Did you mean '--version'?" where the
    option is the command's, given before it (usability run): where it goes, or None."""
    message = exc.format_message()
    if not message.startswith("No such option '"):
        return None
    option = message.split("'")[1]
    named = next((w for w in words if not w.startswith("-")), None)
    command = group.get_command(ctx, named) if named else None
    if command is None or not any(option in getattr(p, "opts", ()) for p in command.params):
        return None
    return f"No such option '{option}' for rnx itself: give it after the command (rnx {named} {option} ...)"


def usage_exit(exc: click.UsageError, where: str) -> NoReturn:
    """A usage error as one line, with the help command to read next; `where`: the command
    when the error names none (an option's missing value)."""
    where = exc.ctx.command_path if exc.ctx else where
    message = " ".join(exc.format_message().split())  # click lists choices one per line
    command = message.split("'")[1] if message.startswith("No such command '") else ""
    option = message.split("'")[1] if message.startswith("No such option '") else ""
    twins = {"run": NO_TWIN, "log": NO_TWIN_LOG}.get(" ".join(where.split(" ")[1:]), {})  # not workflow run's
    if option in twins:
        message = f"No such option '{option}': {twins[option]}."
    group = where.partition(" ")[2]
    if command and (hint := SPELLED.get(group, {}).get(command)):  # before click's own guess
        message = f"No such command '{command}'. Did you mean '{hint}'?"
    elif command and (elsewhere := ELSEWHERE.get(group, {}).get(command)):
        message = f"No such command '{command}': {elsewhere}."
    click.echo(f"{where}: {message} (see '{where} --help')", err=True)
    sys.exit(exc.exit_code)


def command_named(ctx: click.Context) -> str:
    """The path of the deepest command a group's remaining words name (`rnx network create`):
    click's error for an option without its value (`--cidr` last) carries no context, and the
    help it pointed to was rnx's own."""
    words = ctx.meta.get(WORDS, [])
    command: click.Command | None = ctx.command
    path = [ctx.command_path]
    for word in words:
        found = command.get_command(ctx, word) if isinstance(command, click.Group) else None
        if found is None:
            break
        command = found
        path.append(word)
    return " ".join(path)


@click.group(cls=RnxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="joblet", prog_name="rnx")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run commands as isolated jobs on joblet workers."""
    ctx.obj = Ctx()


@cli.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    shell_complete=complete.statuses,
    help="Only jobs in this state (repeatable, or comma-separated): pending, running, "
    "completed, failed, stopped, lost, canceled.",
)
@click.option("--node", shell_complete=complete.nodes, help="Only jobs placed on this node.")
@click.option("--network", shell_complete=complete.networks, help="Only jobs on this network.")
@click.option("--name", shell_complete=complete.job_names, help="Only jobs with this name.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    help=f"Show the N most recent matching jobs (default {LIST_LIMIT}, or all with --json; 0: all).",
)
@click.option("--watch", "-w", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option(
    "--interval",
    type=Interval(),
    metavar="SECONDS",
    default=2.0,
    show_default=True,
    help="Seconds between redraws with --watch.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_jobs(
    obj: Ctx,
    statuses: tuple[str, ...],
    node: str | None,
    network: str | None,
    name: str | None,
    limit: int | None,
    watch: bool,
    interval: float,
    as_json: bool,
) -> None:
    """List jobs, oldest first: by default the most recent 20."""
    from joblet.cli.live import refresh
    from joblet.cli.render import jobs_table, print_json, unused_redis

    wanted = check_statuses(statuses)
    for option, given in (("--node", node), ("--network", network), ("--name", name)):
        if given is not None and not given.strip():  # `--node=$HOST` with HOST unset: no filter, silently
            raise click.BadParameter("needs a value", param_hint=option)
    source = click.get_current_context().get_parameter_source("interval")
    if not watch and source is not None and source.name == "COMMANDLINE":  # it was ignored, silently
        raise click.BadParameter("redraws with --watch only (add -w)", param_hint="--interval")
    if limit is None:
        limit = 0 if as_json else LIST_LIMIT

    def draw() -> None:
        if limit and not (wanted or node or network or name):  # the newest alone: not every record read
            shown, older = obj.client.recent(limit)
        else:
            records = obj.client.list(status=wanted, node=node, network=network, name=name)
            shown = records[-limit:] if limit else records
            older = len(records) - len(shown)
        if as_json:  # listed by a network: `.network` and `.ip` are that one's (the guide's jq)
            print_json(
                [{**r.public(), **({"network": network, "ip": r.ips.get(network)} if network else {})} for r in shown]
            )
            return
        jobs_table(shown, network)
        if older:
            click.echo(f"({older} older job{'s' if older > 1 else ''} not shown; --limit=0 shows all)", err=True)
        elif not shown and not watch and (node or network):
            for note in unknown_filters(obj.client, node, network):
                click.echo(note, err=True)
        elif not shown and not watch and (note := unused_redis(obj.client)):  # a new shell without the export
            click.echo(note, err=True)

    refresh(draw, interval if watch else None, clear=not as_json)


def unknown_filters(client: Any, node: str | None, network: str | None) -> list[str]:
    """Why a filtered list is empty where a filter names no node or network at all (`--node=UX1`
    listed nothing without a word, where `rnx run --node=UX1` says `did you mean 'ux1'?`)."""
    from joblet.api.networks import BUILTINS
    from joblet.text import did_you_mean

    notes = []
    for given, kind, names, hint in (
        (node, "node", lambda: [n["name"] for n in client.nodes()], "rnx nodes"),
        (network, "network", lambda: [*BUILTINS, *client.networks.store.names()], "rnx network list"),
    ):
        if given is not None and given not in (known := names()):
            guess = did_you_mean(given, known)
            notes.append(f"(no {kind} '{quoted(given)}': {guess + ' ' if guess else ''}{hint})")
    return notes


def check_statuses(given: tuple[str, ...]) -> list[str]:
    from joblet.api.models import JobStatus

    wanted = [s.strip().upper() for item in given for s in item.split(",") if s.strip()]
    if given and not wanted:  # `--status=` with nothing: not the same as no filter
        raise click.BadParameter("needs a status, e.g. running", param_hint="--status")
    for value in wanted:
        if value not in JobStatus.__members__:
            names = ", ".join(s.value.lower() for s in JobStatus)
            raise click.BadParameter(f"unknown status {value.lower()!r} (one of {names})", param_hint="--status")
    return wanted


@cli.command()
@click.argument("job_id", shell_complete=complete.jobs)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def status(obj: Ctx, job_id: str, as_json: bool) -> None:
    """Show one job (any unique id prefix, or its name)."""
    from joblet.cli.render import job_details, print_json

    record = obj.client.get(job_id)
    if as_json:
        print_json(record.public())
    else:
        job_details(record)


@cli.command(short_help="Print a job's output; -f follows it to the end.")
@click.argument("job_id", shell_complete=complete.jobs)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.pass_obj
def log(obj: Ctx, job_id: str, follow: bool) -> None:
    """Print a job's output (stdout to stdout, stderr to stderr); a job that ended LOST (its
    node stopped heartbeating) adds the reason on stderr; one that never started (canceled,
    stopped or refused before it) says so on stderr. With -f, rnx ends as an attached
    `rnx run` would: the job's exit code (128+N for signal N, 125 for one never started or
    lost, 1 for a FAILED exit 0), with why on stderr (timed out, out of memory, stopped)."""
    from joblet.cli.patience import Patience
    from joblet.cli.stream import write_chunk

    idle = None
    if follow:  # its node down: said once, as an attached rnx run does
        from joblet.cli.node_watch import NodeDownNote

        idle = NodeDownNote(obj.client)
    waiting = obj.client.get(job_id)
    if waiting.status.value == "PENDING":  # no output yet, and maybe no worker to give it any
        from joblet.cli.run import no_worker_note

        note = no_worker_note(obj.client, waiting)
        if note is None and not follow:
            note = f"rnx: job {waiting.short_id} has not started yet (PENDING): no output so far"
        if note is not None:
            click.echo(note, err=True)
    try:
        chunks = obj.client.logs(job_id, follow=follow, outage=Patience(job_id) if follow else None, idle=idle)
        for stream, data in chunks:
            write_chunk(stream, data)
    except KeyboardInterrupt:
        sys.exit(130)
    record = obj.client.get(job_id)
    from joblet.cli.render import printable
    from joblet.cli.run import ending

    said, code = ending(record) if record.status.final else (None, 0)
    if record.status.value == "LOST":  # its output ends where its node was lost: said (fleet run)
        said = f"rnx: job {record.short_id} lost: {printable(record.error or '')}"
    elif record.status.final and record.started is None:  # no output, not a word why (usability run)
        why = f": {printable(record.error)}" if record.error else ""
        said = f"rnx: job {record.short_id} never started ({record.status.value}{why})"
    elif not follow:  # its output is all it asked for (a finished job's why: rnx status)
        said = None
    if said:
        click.echo(said, err=True)
    if follow and code:  # a script's `rnx run -d` then `rnx log -f` told a failure from a success
        sys.exit(code)


def error_text(exc: Exception) -> str:
    """An error's message as one line of text: it may quote what the user typed (`rnx status
    $'x\\n\\e]0;T\\a'` split the line and set the terminal's title)."""
    from joblet.cli.render import printable

    return printable(str(exc))


PLUGIN_LOADER = "pydantic.plugin._loader"


def skip_plugin_discovery() -> None:
    """With PYDANTIC_DISABLE_PLUGINS=__all__ pydantic loads no plugin, yet the module that would
    look for them imports importlib.metadata at its top: ~14 ms of every `rnx run`. Stand in for
    it with the one function pydantic calls there, which answers as pydantic's would: no plugins
    (tests/unit/test_rnx_startup.py checks that pydantic still asks that module for nothing else)."""
    if os.environ.get("PYDANTIC_DISABLE_PLUGINS") != "__all__" or PLUGIN_LOADER in sys.modules:
        return
    import types

    loader = types.ModuleType(PLUGIN_LOADER, "pydantic's plugin loader, plugins disabled (rnx)")
    loader.get_plugins = lambda: ()  # type: ignore[attr-defined]
    sys.modules[PLUGIN_LOADER] = loader


def main() -> None:
    """Run rnx, then leave without the interpreter's shutdown: its final garbage collection of
    every imported module took ~85 ms (PITFALLS 29); rnx holds nothing that needs finalizing,
    so it flushes its two streams and calls os._exit."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # rnx uses none; skips ~14 ms
    skip_plugin_discovery()
    from joblet.api.redis_conn import prefer_lite

    prefer_lite()  # a few commands per process: not worth redis-py's ~45 ms import
    if closed_streams():
        os._exit(2)
    wakeup.install()  # a Ctrl-C ends its waits on Redis without fail
    try:
        cli(prog_name="rnx")
        code = 0
    except SystemExit as exc:
        code = exit_status(exc.code)
    except OSError as exc:
        if exc.filename is not None:  # a file's: not the output
            raise
        sys.stderr.write(f"rnx: cannot write its output: {exc.strerror}\n")  # /dev/full, a dead terminal
        code = 1
    os._exit(flushed(code))


def closed_streams() -> bool:
    """A closed stdin reads as empty (/dev/null) and a closed stderr discards what rnx says
    there (`rnx run -d ... 2>&-`: every command exited 1, the job's own code lost, on the
    AttributeError of its last flush); a closed stdout is refused in one line (Python leaves
    all three None, and the first print raised AttributeError)."""
    if sys.stdin is None:
        sys.stdin = open(os.devnull)  # noqa: SIM115 - for the process's life
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
    if sys.stdout is not None:
        return False
    if sys.stderr is not None:
        sys.stderr.write("rnx: standard output is closed (redirect it to /dev/null to discard it)\n")
        sys.stderr.flush()
    return True


def exit_status(code: object) -> int:
    """sys.exit's argument as a status: None is 0, a message is printed and is 1."""
    if code is None or isinstance(code, int):
        return code or 0
    sys.stderr.write(f"{code}\n")
    return 1


PIPE_CLOSED = 128 + 13  # a program SIGPIPE ended, as a shell reports it


def flushed(code: int) -> int:
    """Flush stdout and stderr; a closed pipe (`rnx list | head`) gives PIPE_CLOSED, as the
    same reader leaving during the command does; another failure 120, as Python's own exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            code = code or PIPE_CLOSED
        except (OSError, ValueError):
            code = code or 120
    return code


if __name__ == "__main__":
    main()
