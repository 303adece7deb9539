"""`rnx volume create|list|inspect|delete` and `rnx runtime list`."""

from __future__ import annotations

import sys
from typing import Any

import click

from joblet.cli import complete
from joblet.cli.once import OnceGroup
from joblet.cli.render import public, say_done


@click.group(cls=OnceGroup)
def volume() -> None:
    """Manage volumes (mounted at /volumes/NAME with --volume=NAME)."""


@volume.command()
@click.argument("name")
@click.option(
    "--size",
    metavar="SIZE",
    help="Fixed size, e.g. 100MB or 1GB (a bare number is MB; an ext4 image, rounded up to whole MB); "
    "default: a directory.",
)
@click.pass_obj
def create(obj: Any, name: str, size: str | None) -> None:
    """Create volume NAME."""
    vol = obj.client.volumes.create(name, size)
    line = f"created volume {vol.name}" + (f" ({size_text(vol.size_mb)})" if vol.size_mb else "")
    said = say_done(line + "\n", line)
    if vol.size_mb and (note := no_room_note(obj.client.live_nodes(), vol.size_mb)):
        click.echo(note, err=True)
    if not said:
        sys.exit(1)


def no_room_note(nodes: dict[str, dict[str, Any]], size_mb: int) -> str | None:
    """A warning when no live node has room for a sized volume now (each heartbeat's
    `volume_room_mb`: its state disk's free space less what it keeps free); None when one
    has, or none says. `--size=15TB` was taken, and its first job failed (usability run)."""
    rooms = {n: int(i["volume_room_mb"]) for n, i in nodes.items() if isinstance(i.get("volume_room_mb"), int)}
    if not rooms or max(rooms.values()) >= size_mb:
        return None
    node = max(rooms, key=lambda n: rooms[n])
    room = rooms[node]
    most = f"{room / 1024:.1f} GB" if room >= 1024 else f"{room} MB"
    return (
        f"rnx: warning: no live node has room for {size_text(size_mb)} now (the most: {most} on node "
        f"{node}, after what it keeps free): a job using the volume fails until one has"
    )


def size_text(size_mb: int | None) -> str:
    """A volume's size as --size takes it (1024-based): `16 TB`, `1.5 GB`, `8 MB`; `-` for a
    directory (`16777216 MB` was printed for 16TB)."""
    if not size_mb:
        return "-"
    for unit, mb in (("TB", 1 << 20), ("GB", 1 << 10)):
        tenths = size_mb * 10 / mb
        if size_mb >= mb and tenths == int(tenths):  # exactly in tenths of the unit
            return f"{size_mb / mb:g} {unit}"
    return f"{size_mb} MB"


@volume.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_volumes(obj: Any, as_json: bool) -> None:
    """List volumes with their size and live job count."""
    from joblet.cli.render import print_json, table

    rows = obj.client.volumes.list()
    if as_json:
        print_json([public(r) for r in rows])
        return
    table(["NAME", "SIZE", "JOBS"], [[r["name"], size_text(r["size_mb"]), str(r["jobs"])] for r in rows])


@volume.command()
@click.argument("name", shell_complete=complete.volumes)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def inspect(obj: Any, name: str, as_json: bool) -> None:
    """Show a volume's size and the jobs that use it."""
    from joblet.api.models import iso
    from joblet.cli.render import inspected, local_time, print_json

    info = obj.client.volumes.inspect(name)
    if as_json:
        print_json(public(info))
        return
    size = size_text(info["size_mb"]) if info["size_mb"] else "a directory (no size)"
    created = local_time(iso(info["created"]))
    fields = [("Name", info["name"]), ("Size", size), ("Created", created), ("Jobs", info["jobs"])]
    inspected(fields, info["job_list"])


@volume.command(short_help="Delete volumes and their data on every host.")
@click.argument("names", nargs=-1, required=True, metavar="NAME...", shell_complete=complete.volumes)
@click.pass_obj
def delete(obj: Any, names: tuple[str, ...]) -> None:
    """Delete volumes and their data on every host (refused while jobs use one)."""
    from joblet.cli.render import delete_each

    delete_each(names, obj.client.volumes.delete, "volume")


volume.add_command(delete, "remove")


@click.group(cls=OnceGroup)
def runtime() -> None:
    """Runtimes installed on the workers."""


@runtime.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_runtimes(obj: Any, as_json: bool) -> None:
    """List the runtimes live workers offer, with their nodes."""
    from joblet.cli.render import print_json, table

    rows = obj.client.runtimes()
    if as_json:
        print_json(rows)
        return
    table(["NAME", "NODES"], [[r["name"], ", ".join(r["nodes"])] for r in rows])
    if not rows:  # a header alone said nothing of where runtimes come from
        click.echo(
            "rnx: no live worker offers a runtime: each is a directory <runtimes_dir>/NAME/ on "
            "a worker (JOBLET_RUNTIMES_DIR, default /opt/joblet/runtimes)",
            err=True,
        )
