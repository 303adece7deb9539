"""`rnx nodes` and `rnx node drain|undrain`: the fleet's hosts."""

from __future__ import annotations

from typing import Any

import click

from joblet.cli import complete
from joblet.cli.once import OnceGroup


@click.command("nodes", short_help="List every node: state, heartbeat, capacity, jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (one object per node).")
@click.pass_obj
def nodes(obj: Any, as_json: bool) -> None:
    """List every node: state (up, down, draining), last heartbeat, version, jobs, capabilities."""
    from joblet.cli.render import print_json, table, unused_redis

    rows = obj.client.nodes()
    if as_json:
        print_json(rows)
        return
    table(
        [
            "NODE",
            "STATE",
            "LAST HEARTBEAT",
            "VERSION",
            "JOBS",
            "HOST NET",
            "RUNTIMES",
            "CGROUP",
            "SANDBOX",
            "ADDRESSES",
        ],
        [_cells(r) for r in rows],
    )
    if not rows and (note := unused_redis(obj.client)):  # a header alone (a new shell without the export)
        click.echo(note, err=True)


def _cells(row: dict[str, Any]) -> list[str]:
    from joblet.cli.render import human, local_time

    caps = row["capabilities"]
    sandbox = [k for k, v in sorted(caps["sandbox"].items()) if v is True]
    count = row["jobs"] if row["jobs"] is not None else "-"  # down: its last count is not its jobs now
    jobs = f"{count}/{row['concurrency'] if row['concurrency'] is not None else '?'}"
    # a worker that stopped cleanly beside one that went silent (a crash, a partition): both
    # `down`, told apart only by --json's `left` (fleet run)
    # and a drain outlives its worker's stop: it read `down (stopped)` alone (fleet run)
    notes = [n for n, on in (("stopped", row.get("left")), ("drained", row.get("draining"))) if on]
    state = f"down ({', '.join(notes)})" if row["state"] == "down" and notes else row["state"]
    if row["state"] == "up" and row["capabilities"].get("disk_full"):
        state = "up (disk full)"
    return [
        row["name"],
        state,
        f"{local_time(row['last_heartbeat'])} ({row['heartbeat_age']:g} s ago)",
        human(row["version"]),
        jobs,
        human(caps["host_network"]),
        human(caps["runtimes"]),
        human(caps["cgroup"]),
        human(sandbox),
        human([a.split()[0] for a in row["addresses"]]),
    ]


@click.group("node", cls=OnceGroup)
def node() -> None:
    """Drain, undrain or forget one node."""


@node.command(short_help="Send no new jobs to NAME; its running jobs go on.")
@click.argument("name", shell_complete=complete.nodes)
@click.pass_obj
def drain(obj: Any, name: str) -> None:
    """Send no new jobs to NAME; its running jobs go on (a job queued there and not taken yet
    is refused when its worker takes it; a workflow's job pinned to NAME waits for the undrain)."""
    row = obj.client.drain(name, True)
    # counted from the records: its heartbeat's count was up to a beat old (0 while 2 ran, just started)
    left = obj.client.unfinished_on(name)
    # one queued there and not taken yet is refused when its worker takes it: FAILED (fleet run:
    # "go on" was said of those too)
    held = set(row["held"])  # a workflow's jobs pinned there wait for the undrain (a drain said again)
    queued = [r for r in left if r.status.value == "PENDING" and r.id not in held]
    # taken from the queue, one not pinned there goes to another node, a workflow's pinned
    # there is kept, a plain one pinned there refused (worker/tasks.keep_for_drain)
    pinned = [r for r in queued if r.spec.node == name]
    refused = sum(1 for r in pinned if r.workflow is None)
    waiting = len(held) + len(pinned) - refused
    going = len(left) - len(queued) - len(held & {r.id for r in left})
    parts = [f"{going} job(s) go on"] if going else []
    parts += [f"{len(queued) - len(pinned)} queued there go to other nodes"] if len(queued) > len(pinned) else []
    parts += [f"{refused} pinned there will be refused"] if refused else []
    parts += [f"{waiting} workflow job(s) pinned there wait for the undrain"] if waiting else []
    going_on = f"; {', '.join(parts)} (rnx list --node={name} --status=running,pending)" if parts else ""
    down = f" (it is {row['state']})" if row["state"] == "down" else ""
    click.echo(f"node {name} draining: no new jobs go there{going_on}{down}")


@node.command(short_help="Let NAME take new jobs again.")
@click.argument("name", shell_complete=complete.nodes)
@click.pass_obj
def undrain(obj: Any, name: str) -> None:
    """Let NAME take new jobs again (and the workflow jobs pinned to it kept meanwhile)."""
    row = obj.client.drain(name, False)
    sent = f"; sent the {len(row['sent'])} workflow job(s) pinned to it that waited" if row["sent"] else ""
    if row["state"] == "down":  # `node x down: takes new jobs` (fleet run)
        click.echo(f"node {name} undrained: takes new jobs once it is up again (it is down){sent}")
    else:
        click.echo(f"node {name} {row['state']}: takes new jobs{sent}")


@node.command(short_help="Drop NAME, down for good, from the listing.")
@click.argument("name", shell_complete=complete.down_nodes)
@click.pass_obj
def forget(obj: Any, name: str) -> None:
    """Drop NAME, down for good, from the fleet's listing (once none of its jobs is unfinished)."""
    obj.client.forget_node(name)
    click.echo(f"forgot node {name} (listed again if its worker comes back)")
