"""`rnx stop`: ask jobs to stop, then wait for each one's end and say how it ended."""

from __future__ import annotations

import sys
from typing import Any

import click

from joblet.cli import complete
from joblet.cli.node_watch import silent_for
from joblet.cli.render import printable
from joblet.errors import JobletError


@click.command(short_help="Stop jobs: SIGTERM, then SIGKILL after the grace.")
@click.argument("job_ids", metavar="JOB...", nargs=-1, required=True, shell_complete=complete.live_jobs)
@click.option("--no-wait", is_flag=True, help="Return without waiting for the jobs to end.")
@click.pass_obj
def stop(obj: Any, job_ids: tuple[str, ...], no_wait: bool) -> None:
    """Stop jobs: SIGTERM, then SIGKILL after the grace period, to each one's whole process
    tree. Several are asked to stop at once, then waited for; one that cannot be found is
    reported, the others still stop (exit 1, as `docker stop`), and so is one that has not
    ended when rnx stops waiting (its worker gone)."""
    client, began, failed = obj.client, now(), 0
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
    waited: set[str] = set()
    try:
        for record in asked:
            node = record.node or ""
            if not await_stop(client, record, began, no_wait, graces.get(node), down.get(node)):
                failed += 1
            waited.add(record.id)
    except KeyboardInterrupt:  # its stop goes on: rnx only stops waiting (it left silently: usability run)
        going = [r.short_id for r in asked if r.id not in waited]
        see = f"rnx status {going[0]}" if len(going) == 1 else "rnx list --status=running"
        click.echo(f"rnx: stopped waiting; the stop goes on ({see})", err=True)
        sys.exit(130)
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
    if not record.status.final and not no_wait:
        ended = wait_for_end(client, record, began, grace, down_for)
        if ended is None:
            click.echo(f"{record.id} {record.status.value}")
            return False
        record = ended
    if record.status.final and record.started is None:  # `stopped after 0.2 s` of a job that never ran
        click.echo(f"job {record.short_id} {record.status.value.lower()} before it started", err=True)
    elif record.status.final:
        took = f"{ended_after(record, began):.1f} s{exit_text(record)}"
        click.echo(f"job {record.short_id} {record.status.value.lower()} after {took}", err=True)
    elif no_wait:  # `ID RUNNING` alone did not say the stop was asked for
        short = record.short_id
        sent = "sent SIGTERM" if down_for is None else f"the stop is recorded (its node {record.node!r} is down)"
        click.echo(f"stopping job {short}… {sent}, not waiting (rnx status {short})", err=True)
    click.echo(f"{record.id} {record.status.value}")
    return True


def wait_for_end(client: Any, record: Any, began: float, grace: float | None, down_for: float | None) -> Any:
    """The job's record once it ended, or None (said why) when rnx stops waiting. Its node's
    heartbeat is looked at every NODE_LOOK seconds: a worker killed a moment before the stop
    left rnx waiting the grace period and 30 s more, then asking whether it was alive (fleet
    run). Once the heartbeat has stopped the wait is for the fleet to make the job LOST; with
    no other live worker to do that, rnx says so and stops waiting."""
    from joblet.cli.node_watch import NODE_LOOK

    short = record.short_id
    if down_for is None:
        said = STOP_WAIT if grace is None else f"waiting up to {grace:g} s (then SIGKILL)"
        click.echo(f"stopping job {short}… sent SIGTERM, {said}", err=True)
        deadline: float | None = began + (client.settings.stop_grace if grace is None else grace) + 30
    else:
        deadline = lost_deadline(client, record, f"its node {record.node!r} is down", down_for)
    while deadline is not None:
        look = deadline if down_for is not None else min(deadline, now() + NODE_LOOK)
        try:
            return client.wait(record.id, timeout=max(0.1, look - now()))
        except TimeoutError:
            pass
        if now() >= deadline:
            why = "is its worker alive?"
            if down_for is not None:
                why = f"its node {record.node!r} is still down and no live worker has made it LOST"
            click.echo(f"job {short} has not ended yet: {why} (rnx status)", err=True)
            return None
        if down_for is None and record.node:
            down_for = silent_for(client, record.node)
            if down_for is not None:
                deadline = lost_deadline(client, record, f"its node {record.node!r} stopped heartbeating", down_for)
    return None


def lost_deadline(client: Any, record: Any, what: str, down_for: float) -> float | None:
    """When to stop waiting for a job whose node is silent (said on stderr), or None when no
    other live worker will make it LOST: only its own worker's return ends it."""
    cfg, short = client.settings, record.short_id
    try:
        others = set(client.live_nodes()) - {record.node}
    except JobletError:
        others = {"?"}  # Redis cannot say: wait as for a fleet
    lead = f"stopping job {short}… {what} (no heartbeat for {down_for:.0f} s): the stop is recorded;"
    if not others:
        alone = "no other live worker can make the job LOST, so it ends when its worker returns"
        click.echo(f"{lead} {alone} (rnx status {short})", err=True)
        return None
    left = max(0.0, cfg.node_down_after + cfg.node_lost_grace - down_for)
    click.echo(f"{lead} the job ends LOST in about {left:.0f} s, or when its worker returns", err=True)
    return now() + left + 15


def ended_after(record: Any, began: float) -> float:
    """Seconds from the stop to the job's end: by its record's end where it has one (jobs are
    waited for one after another: one that ended at once, waited for after a slow one, read
    `stopped after 5.0 s`; red-team run), else until rnx saw it end."""
    import time

    seen = now() - began
    if not isinstance(record.finished, int | float):
        return seen
    return min(seen, max(0.0, record.finished - (time.time() - seen)))


def now() -> float:
    """The clock of the waits (a test's fake client moves its own)."""
    import time

    return time.monotonic()


# No number: the SIGKILL comes after the worker's stop_grace, which neither the job's record
# nor its node's heartbeat carries; rnx printed its own ("up to 10 s"), whatever the worker's
STOP_WAIT = "waiting for it to end (SIGKILL after the worker's grace period)"


def exit_text(record: Any) -> str:
    if record.signal:
        return f" (exit code {record.exit_code}, signal {record.signal})"
    return f" (exit code {record.exit_code})" if record.exit_code is not None else ""
