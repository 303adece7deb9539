"""`rnx stop`: ask jobs to stop, then wait for each one's end and say how it ended."""

from __future__ import annotations

import sys
from typing import Any

import click

from joblet.cli import complete
from joblet.cli.render import printable
from joblet.errors import JobletError


@click.command()
@click.argument("job_ids", metavar="JOB...", nargs=-1, required=True, shell_complete=complete.live_jobs)
@click.option("--no-wait", is_flag=True, help="Return without waiting for the jobs to end.")
@click.pass_obj
def stop(obj: Any, job_ids: tuple[str, ...], no_wait: bool) -> None:
    """Stop jobs: SIGTERM, then SIGKILL after the grace period, to each one's whole process
    tree. Several are asked to stop at once, then waited for; one that cannot be found is
    reported, the others still stop (exit 1, as `docker stop`), and so is one that has not
    ended when rnx stops waiting (its worker gone)."""
    import time

    client, began, failed = obj.client, time.monotonic(), 0
    asked: list[Any] = []
    seen: set[str] = set()  # named twice (an id and its name): asked and reported once
    for job_id in job_ids:
        try:
            before = client.get(job_id)
            if before.id in seen:  # an ended one too (it was reported once per naming)
                continue
            seen.add(before.id)
            if before.status.final:
                click.echo(f"job {before.short_id} had already ended: {before.status.value.lower()}", err=True)
                click.echo(f"{before.id} {before.status.value}")
                continue
            asked.append(client.stop(before.id))
        except JobletError as exc:
            if len(job_ids) == 1:
                raise  # one job: its own exit code, as before
            click.echo(f"rnx: {printable(str(exc))}", err=True)
            failed += 1
    graces = client.stop_graces() if asked and not no_wait else {}
    down = down_nodes(client) if asked else {}
    for record in asked:
        node = record.node or ""
        if not await_stop(client, record, began, no_wait, graces.get(node), down.get(node)):
            failed += 1
    if failed:
        sys.exit(1)


def down_nodes(client: Any) -> dict[str, float]:
    """{name: seconds since its last heartbeat} of the nodes that are down (empty when Redis
    cannot say)."""
    try:
        return {n["name"]: float(n["heartbeat_age"]) for n in client.nodes() if n["state"] == "down"}
    except (JobletError, KeyError, TypeError, ValueError):
        return {}


def await_stop(
    client: Any, record: Any, began: float, no_wait: bool, grace: float | None = None, down_for: float | None = None
) -> bool:
    """Wait for one asked job to end (unless `no_wait`) and report it; False if it had not
    ended when rnx stopped waiting (its worker dead?), which exits 1: it exited 0, as if the
    job had stopped, with `ID RUNNING` on stdout. `grace`: its worker's, when its heartbeat
    says (the client's own setting is no guide to it). `down_for`: how long its node has been
    silent, when it is down: no SIGTERM is sent there; the job ends LOST when the fleet gives
    the node up, unless its worker returns and stops it (fleet run: rnx said it sent SIGTERM,
    waited 40 s and asked whether the worker was alive)."""
    import time

    waiting = not record.status.final and not no_wait
    if waiting and down_for is not None:
        cfg = client.settings
        left = max(0.0, cfg.node_down_after + cfg.node_lost_grace - down_for)
        click.echo(
            f"stopping job {record.short_id}… its node {record.node!r} is down (no heartbeat for {down_for:.0f} s): "
            f"the stop is recorded; the job ends LOST in about {left:.0f} s, or when its worker returns",
            err=True,
        )
        patience = left + 15 + (time.monotonic() - began)
    elif waiting:
        said = STOP_WAIT if grace is None else f"waiting up to {grace:g} s (then SIGKILL)"
        click.echo(f"stopping job {record.short_id}… sent SIGTERM, {said}", err=True)
        patience = (client.settings.stop_grace if grace is None else grace) + 30
    if waiting:
        try:
            record = client.wait(record.id, timeout=max(1.0, patience - (time.monotonic() - began)))
        except TimeoutError:
            why = (
                f"its node {record.node!r} is still down and no live worker has made it LOST"
                if down_for is not None
                else "is its worker alive?"
            )
            click.echo(f"job {record.short_id} has not ended yet: {why} (rnx status)", err=True)
            click.echo(f"{record.id} {record.status.value}")
            return False
    if record.status.final and record.started is None:  # `stopped after 0.2 s` of a job that never ran
        click.echo(f"job {record.short_id} {record.status.value.lower()} before it started", err=True)
    elif record.status.final:
        took = f"{time.monotonic() - began:.1f} s{exit_text(record)}"
        click.echo(f"job {record.short_id} {record.status.value.lower()} after {took}", err=True)
    elif no_wait:  # `ID RUNNING` alone did not say the stop was asked for
        short = record.short_id
        sent = "sent SIGTERM" if down_for is None else f"the stop is recorded (its node {record.node!r} is down)"
        click.echo(f"stopping job {short}… {sent}, not waiting (rnx status {short})", err=True)
    click.echo(f"{record.id} {record.status.value}")
    return True


# No number: the SIGKILL comes after the worker's stop_grace, which neither the job's record
# nor its node's heartbeat carries; rnx printed its own ("up to 10 s"), whatever the worker's
STOP_WAIT = "waiting for it to end (SIGKILL after the worker's grace period)"


def exit_text(record: Any) -> str:
    if record.signal:
        return f" (exit code {record.exit_code}, signal {record.signal})"
    return f" (exit code {record.exit_code})" if record.exit_code is not None else ""
