"""How `rnx` prints records: tables for people, JSON for scripts."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import Any

from joblet.api.models import JobRecord
from joblet.text import printable as printable  # re-exported: the CLI's modules import it here


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=None if isinstance(value, list) else 2) + "\n")


def say_done(text: str, done: str) -> bool:
    """Print `text` (what a command that changed something reports on stdout); where stdout
    cannot take it (`> /dev/full`), say on stderr what was done all the same, rather than the
    bare "cannot write its output" that read as a failure (the job ran, the network existed;
    usability run), and return False: the caller says its notes, then exits 1. stdout then
    goes to /dev/null, so the text left in its buffer is dropped at exit, not said twice."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        if exc.filename is not None:
            raise
        sys.stderr.write(f"rnx: {printable(done)}, but cannot write its output: {exc.strerror}\n")
        sys.stderr.flush()
        drop_stdout()
        return False
    return True


def drop_stdout() -> None:
    """stdout to /dev/null, once it could not be written: the text left in its buffer is
    dropped at exit, not a second error (or a write at exit to what took none)."""
    nowhere = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(nowhere, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout closed or detached: nothing to drop
        pass
    finally:
        os.close(nowhere)


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A network or volume as --json prints it: its `created` as ISO 8601 in UTC, as every
    other --json's time (a volume's printed epoch seconds; usability run)."""
    from joblet.api.models import iso

    return {**row, "created": iso(row.get("created"))}


def local_time(iso_text: str | None) -> str:
    """A time of --json's (ISO, UTC) as the tables show it: local, to the second."""
    if not iso_text:
        return "-"
    return datetime.fromisoformat(iso_text).astimezone().strftime("%Y-%m-%d %H:%M:%S")


TABLE_WIDTH = 1000  # more than any row's cells: rich measures the table, nothing is cut or padded
TABLE_HEIGHT = 25  # with the width: rich takes 80x25 for a TERM=dumb terminal unless both are given (usability run)


def table(headers: list[str], rows: list[list[str]]) -> None:
    """A plain aligned table (rich), as wide as its cells, in a terminal or piped; cells are
    text, never markup. Never cut to the terminal's width: at 80 columns every column was
    (`rnx nodes` showed its node as `…`); a long line wraps, as `docker ps`'s do."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # NO_COLOR (no-color.org): no styling at all, bold headers included (usability run)
    plain = bool(os.environ.get("NO_COLOR"))
    out = Table(box=None, pad_edge=False, show_edge=False, header_style="" if plain else "bold")
    for header in headers:
        out.add_column(header, no_wrap=True)
    for row in rows:
        out.add_row(*(Text(printable(cell)) for cell in row))
    console = Console(width=TABLE_WIDTH, height=TABLE_HEIGHT, highlight=False)
    with console.capture() as drawn:
        console.print(out)
    # rich pads the last column too: each line ended in spaces (`cat -A`, usability run)
    sys.stdout.write("".join(line.rstrip(" ") + "\n" for line in drawn.get().splitlines()))


def inspected(fields: list[tuple[str, Any]], jobs: list[dict[str, Any]], ip: bool = False) -> None:
    """`rnx network|volume inspect`: its fields, a label a line, then a table of its jobs
    (with their address on it where `ip`)."""
    for label, value in fields:
        sys.stdout.write(f"{label + ':':<10}{printable(human(value))}\n")
    if jobs:
        headers = ["ID", "NAME", "STATUS", *(["IP"] if ip else []), "NODE"]
        rows = [
            [j["id"][:12], j["name"] or "-", j["status"], *([j["ip"] or "-"] if ip else []), j["node"] or "-"]
            for j in jobs
        ]
        table(headers, rows)


def human(value: Any) -> str:
    """A value as people read it: `-` for nothing, yes/no, lists joined (never a Python literal)."""
    if value is None or value == [] or value == () or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(human(v) for v in value)
    return str(value)


def command_line(record: JobRecord, width: int = 40) -> str:
    """The job's command and arguments, shortened to `width` characters."""
    import shlex

    text = printable(shlex.join([record.spec.command, *record.spec.args]))
    return text if len(text) <= width else text[: width - 1] + "…"


def jobs_table(records: list[JobRecord], network: str | None = None) -> None:
    """`network`: the one they were listed by; a job on several shows that one and its IP, and
    unfiltered its first and how many more (`myapp+1`: it showed `myapp` alone, and its other
    network read as unused: usability run)."""
    rows = []
    for r in records:
        p = r.public()
        code = "-" if r.exit_code is None else str(r.exit_code)
        rows.append(
            [
                r.short_id,
                r.name or "-",
                r.status.value,
                command_line(r),
                network or (f"{r.network}+{len(r.spec.network) - 1}" if len(r.spec.network) > 1 else r.network),
                (r.ips.get(network) if network else r.ip) or "-",
                r.node or "-",
                code,
                local_time(p["created"]),
            ]
        )
    table(["ID", "NAME", "STATUS", "COMMAND", "NETWORK", "IP", "NODE", "EXIT", "CREATED"], rows)


def limits_text(limits: dict[str, int]) -> str:
    """The limits a job was given, e.g. `--max-cpu=50% --max-memory=64 MB`; `-`: the worker's defaults."""
    from joblet.cli.flags import LIMIT_FLAGS

    parts = [f"{LIMIT_FLAGS[k][0]}={v}{LIMIT_FLAGS[k][2]}" for k, v in limits.items() if k in LIMIT_FLAGS]
    return ", ".join(parts) or "- (the worker's defaults)"


def job_details(record: JobRecord) -> None:
    p = record.public()
    import shlex

    command = shlex.join([p["command"], *p["args"]])
    lines = [
        ("ID", p["id"]),
        ("Name", p["name"] or "-"),
        ("Status", p["status"]),
        ("Command", command),
        ("Network", human(p["networks"])),
        ("IP", ", ".join(f"{k}={v}" for k, v in p["ips"].items()) or "-"),
        ("Node", p["node"] or "-"),
        ("Exit code", "-" if p["exit_code"] is None else str(p["exit_code"])),
        ("Signal", "-" if p["signal"] is None else str(p["signal"])),
        ("Error", human(p["error"])),
        ("Workflow", human(p["workflow"])),
        ("Limits", limits_text(p["limits"])),
        ("Timeout", "-" if p["timeout"] is None else f"{p['timeout']:g} s"),
        ("Volumes", human(p["volumes"])),
        ("Runtime", human(p["runtime"])),
        ("User", human(p["user"])),
        ("Created", local_time(p["created"])),
        ("Started", local_time(p["started"])),
        ("Finished", local_time(p["finished"])),
    ]
    if p["output_truncated"]:
        lines.append(("Output", "truncated at its max-output cap"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        sys.stdout.write(f"{key + ':':<{width + 2}}{printable(value)}\n")


def if_unused(client: Any) -> str:
    """To end the `no worker is running` line (one line, as before): where no worker ever used
    this Redis, the likelier cause (a new shell without the quickstart's export)."""
    note = unused_redis(client)
    return f" {note}" if note else ""


def unused_redis(client: Any) -> str | None:
    """A note for an empty answer where this Redis knows no worker under this key prefix:
    most often a new shell without the quickstart's `export JOBLET_REDIS_URL=...`; or every
    node was forgotten (it said no worker had used a Redis holding 164 jobs: usability run)."""
    if client.nodes():
        return None
    from joblet.api.redis_conn import safe_url

    where, prefix = safe_url(client.settings.redis_url), client.settings.key_prefix
    return (
        f"(this Redis, {where}, knows no worker under key prefix {prefix!r}: none has started "
        "there, or each was forgotten; are JOBLET_REDIS_URL and JOBLET_KEY_PREFIX set as the workers' are?)"
    )


def delete_each(names: tuple[str, ...], delete: Any, what: str) -> None:
    """`rnx volume|network delete A B ...`: each in turn; one that cannot be deleted is said and
    the others still go, exit 1 at the end (as `rnx stop` of several, `docker volume rm`). One
    name: its own error and exit code, as before. `volume delete s1 s2` was refused as an
    unexpected extra argument (usability run)."""
    from joblet.errors import JobletError

    failed = 0
    for name in names:
        try:
            delete(name)
        except JobletError as exc:
            if len(names) == 1:
                raise
            sys.stderr.write(f"rnx: {printable(str(exc))}\n")
            failed += 1
            continue
        print(f"deleted {what} {printable(name)}")
    if failed:
        sys.exit(1)
