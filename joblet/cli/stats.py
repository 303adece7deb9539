"""`rnx stats [ID...]`: live CPU, memory, pids, /work and network use of running jobs, as
their workers publish them each heartbeat (like `docker stats`)."""

from __future__ import annotations

from typing import Any

import click

from joblet.cli import complete
from joblet.cli.live import Interval

HEADERS = ["ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "PIDS", "DISK (/work)", "NET IN / OUT", "NODE"]


def size(value: int | None) -> str:
    """Bytes in binary units, like docker stats (1.5MiB)."""
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f}{unit}" if unit == "B" else f"{amount:.1f}{unit}"
        amount /= 1024
    raise AssertionError


def pair(used: int | None, limit: int | None) -> str:
    if used is None:
        return "-"
    return f"{size(used)} / {size(limit) if limit else 'no limit'}"


def stats_row(row: dict[str, Any]) -> list[str]:
    cpu = "-" if row["cpu_percent"] is None else f"{row['cpu_percent']:.1f}%"
    pids = "-" if row["pids"] is None else str(row["pids"])
    net = "-" if row["net_in"] is None else f"{size(row['net_in'])} / {size(row['net_out'])}"
    name = row["name"] or "-"
    if row["status"] != "RUNNING":
        name += f" ({row['status'].lower()})"
    return [
        row["id"][:12],
        name,
        cpu,
        pair(row["memory"], row["memory_limit"]),
        pids,
        pair(row["disk_used"], row["disk_size"]),
        net,
        row["node"] or "-",
    ]


@click.command()
@click.argument("job_ids", nargs=-1, metavar="[ID]...", shell_complete=complete.live_jobs)
@click.option("--no-stream", is_flag=True, help="Print the current figures once and exit.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array (one per refresh when streaming).")
@click.option(
    "--interval",
    type=Interval(),
    metavar="SECONDS",
    default=2.0,
    show_default=True,
    help="Seconds between refreshes (workers sample every heartbeat, 5 s by default).",
)
@click.pass_obj
def stats(obj: Any, job_ids: tuple[str, ...], no_stream: bool, as_json: bool, interval: float) -> None:
    """Live CPU, memory, pids, disk and network use of running jobs.

    Every running job, or the jobs ID...: CPU in % of one core, memory, processes and threads,
    /work used of its size, network bytes in and out of its links. Refreshed until Ctrl-C, or
    until every job ID... has ended."""
    from joblet.api.models import JobStatus
    from joblet.cli.live import refresh
    from joblet.cli.render import print_json, table, unused_redis

    source = click.get_current_context().get_parameter_source("interval")
    if no_stream and source is not None and source.name == "COMMANDLINE":  # it was ignored, silently
        raise click.BadParameter("refreshes only without --no-stream", param_hint="--interval")
    looked = False  # whether a worker ever used this Redis: asked once, not at each refresh

    def draw() -> bool:
        nonlocal looked
        rows = obj.client.stats(job_ids)
        if as_json:
            print_json(rows)
        else:
            table(HEADERS, [stats_row(r) for r in rows])
        if not rows and not looked:
            looked = True
            if note := unused_redis(obj.client):
                click.echo(note, err=True)
        # the jobs named have all ended: their figures will not change (they were redrawn until Ctrl-C)
        return not (job_ids and all(JobStatus(r["status"]).final for r in rows))

    refresh(draw, None if no_stream else interval, clear=not as_json)
