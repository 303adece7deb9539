"""`rnx batch [FILE]`: many detached jobs from one process, one job per line.

Each line is what would follow `rnx run -d` on a command line, split as a shell splits words
(quotes, backslashes, `#` comments where a word begins; no variables or globs): options, then
the command. Lines end with \n (or \r\n).
Blank lines and comment lines are skipped. A bad line gets one line on stderr naming its
number, and nothing of it is queued; the other lines are. Ids of queued jobs go to stdout,
one per line, in input order. Jobs are written to Redis in pipelines (`joblet.api.batch`),
flushed when 256 are waiting (or 64 MiB of uploads, or a network held a second), at the end,
and whenever stdin has nothing more to read yet.
"""

from __future__ import annotations

import os
import select
import shlex
import sys
from collections.abc import Iterator
from typing import IO, Any

import click

from joblet.errors import BackendUnavailable, JobletError, PermissionDenied

REFUSED = 2  # exit status when a line was refused (usage and validation errors are 2 in rnx)
NOT_IN_BATCH = {"workflow_file": "--workflow", "as_json": "--json"}


class LineError(Exception):
    """A line that is not a job; the text says why."""


def parse_line(text: str, parent: click.Context) -> dict[str, Any] | None:
    """`rnx run`'s parameters for one line, or None for a blank or comment line."""
    from joblet.cli.run import run

    text = text.removeprefix("\ufeff")  # a UTF-8 byte order mark (an editor's) was read as part of the first word
    if text.endswith("\r\n"):  # a Windows file's: its continuation's backslash escaped the \r (review)
        text = text[:-2] + "\n"
    if "\r" in text:  # a file of CR-only line ends was one line, its jobs one job's words (review)
        raise LineError("a carriage return inside the line: lines end with a newline (\\n)")
    try:
        words = shlex.split(sh_quoting(text))
    except ValueError as exc:
        raise LineError(f"cannot split the line: {exc}") from None
    if not words:
        return None
    if words[-1].endswith("\n"):  # a backslash before the newline: a shell joins the next line
        raise LineError("it ends with a backslash: a job is one line (no continuation lines)")
    if words[:2] == ["rnx", "run"]:  # a script's lines pasted whole: each job ran `rnx`, exit 127
        raise LineError("a line holds what follows `rnx run` (options and a command): drop the leading `rnx run`")
    try:  # no help option: click would print `rnx run`'s help to stdout, which holds only ids
        ctx = run.make_context("rnx run", words, parent=parent, help_option_names=[])
    except click.ClickException as exc:
        raise LineError(exc.format_message()) from None
    for param, flag in NOT_IN_BATCH.items():
        if ctx.params.get(param):
            raise LineError(f"{flag} cannot be used in a batch line")
    if ctx.params.get("command") is None:
        raise LineError("missing COMMAND")
    return ctx.params


def sh_quoting(text: str) -> str:
    r"""`text` with what a POSIX shell unescapes inside double quotes and shlex does not, `\$`
    and `` \` ``, unescaped: `sh -c "echo \$HOME"` as a batch line gave the job a literal
    backslash (usability run); and cut at a comment as a shell cuts it, at a `#` that begins a
    word only (shlex's comments begin at any `#`: `echo issue#12` ran `echo issue`, review).
    shlex does the rest (`\"` and `\\` there, any `\x` outside)."""
    out, quote, i, word_start = [], "", 0, True
    while i < len(text):
        c = text[i]
        if quote != "'" and c == "\\" and i + 1 < len(text):
            pair = text[i : i + 2]
            out.append(pair[1] if quote == '"' and pair[1] in "$`" else pair)
            i, word_start = i + 2, False
            continue
        if not quote and c == "#" and word_start:
            break
        if c in "'\"" and quote in ("", c):
            quote = "" if quote else c
        out.append(c)
        i, word_start = i + 1, not quote and c in " \t\r\n"
    return "".join(out)


def decoded(raw: bytes) -> str:
    """A line's text: UTF-8, or a line error (the lines around it are still queued)."""
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise LineError(f"not UTF-8 text (byte {exc.start + 1}: {raw[exc.start]:#04x})") from None


MAX_LINE = 1 << 20


def lines(stream: IO[bytes]) -> Iterator[bytes | None]:
    """Its lines, None for one longer than MAX_LINE (read past, never held whole: a batch
    from /dev/zero is one endless line)."""
    while True:
        raw = stream.readline(MAX_LINE + 1)
        if not raw:
            return
        if len(raw) <= MAX_LINE or raw.endswith(b"\n"):
            yield raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = stream.readline(MAX_LINE)
        yield None


def pending_input(stream: IO[bytes]) -> bool:
    """True when more input can be read at once (so a pipeline may wait to fill up)."""
    try:
        ready, _, _ = select.select([stream], [], [], 0)
    except (OSError, ValueError):  # not selectable (e.g. a test's in-memory stream)
        return True
    return bool(ready)


@click.command(short_help="Queue one detached job per line of a file or stdin.")
@click.argument("file", type=click.File("rb"), default="-")
@click.pass_context
def batch(ctx: click.Context, file: IO[bytes]) -> None:
    """Queue one detached job per line of FILE (default: stdin); print their ids.

    A line holds `rnx run` options and a command, e.g. `--network=none echo hi`
    (shell-like words). A bad line is reported with its number and skipped; rnx then
    exits 2 after queueing the others."""
    from joblet.cli.run import submitting

    jobs, limit = ctx.obj.client.batch(), ctx.obj.client.settings.upload_max_bytes
    try:
        with submitting():  # SIGTERM, SIGHUP: as Ctrl-C, the waiting jobs failed, not left PENDING
            refused = _queue_lines(ctx, jobs, file, limit)
    finally:  # queued before an error that ends the batch (Redis gone at a named line, Ctrl-C):
        show(jobs.take())  # they run, and their ids were never printed (review)
    if refused:
        sys.exit(REFUSED)


def _queue_lines(ctx: click.Context, jobs: Any, file: IO[bytes], limit: int | None) -> int:
    """Queue each line's job, printing ids as they are queued; the number of lines refused."""
    from joblet.cli.run import as_option, job_spec
    from joblet.fields import FieldError

    refused = 0
    for number, raw in enumerate(lines(file), start=1):
        show(jobs.due())  # what a hold placed goes before this line's uploads are read
        try:
            if raw is None:
                raise LineError(f"longer than {MAX_LINE >> 10} KiB")
            params = parse_line(decoded(raw), ctx)
            if params is not None and (params["uploads"] or params["upload_dir"]):
                show(jobs.due(uploads=True))  # its files' reading may outlast a network's hold
            queued = jobs.add(job_spec(params, limit)) if params is not None else []
        except (BackendUnavailable, PermissionDenied):
            raise
        except (LineError, JobletError) as exc:  # a field's error names rnx run's option, as rnx run does
            click.echo(f"rnx batch: line {number}: {as_option(exc) if isinstance(exc, FieldError) else exc}", err=True)
            refused += 1
            queued = []  # the lines before it still go once the input is idle (they waited for the next good one)
        show(queued)  # before a flush that may raise: these are queued already (review)
        if not pending_input(file):
            show(jobs.flush())
    show(jobs.flush())
    return refused


def show(records: list[Any]) -> None:
    if records:
        from joblet.cli.render import say_done

        # where stdout cannot take them, rnx stops: the lines after these are not read (review)
        done = f"queued {len(records)} job(s) ({records[0].id}...) and read no line after them"
        if not say_done("".join(f"{r.id}\n" for r in records), done):
            os._exit(1)  # at once: what follows would read the next lines
