"""`rnx volume create|list|delete` and `rnx runtime list`."""

from __future__ import annotations

from typing import Any

import click

from joblet.cli import complete


@click.group()
def volume() -> None:
    """Manage volumes (mounted at /volumes/NAME with --volume=NAME)."""


@volume.command()
@click.argument("name")
@click.option("--size", help="Fixed size, e.g. 100MB or 1GB (an ext4 image); default: a directory.")
@click.pass_obj
def create(obj: Any, name: str, size: str | None) -> None:
    """Create volume NAME."""
    vol = obj.client.volumes.create(name, size)
    click.echo(f"created volume {vol.name}" + (f" ({vol.size_mb} MB)" if vol.size_mb else ""))


@volume.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_volumes(obj: Any, as_json: bool) -> None:
    """List volumes with their size and live job count."""
    from joblet.cli.render import print_json, table

    rows = obj.client.volumes.list()
    if as_json:
        print_json(rows)
        return
    table(
        ["NAME", "SIZE", "JOBS"],
        [[r["name"], f"{r['size_mb']} MB" if r["size_mb"] else "-", str(r["jobs"])] for r in rows],
    )


@volume.command()
@click.argument("name", shell_complete=complete.volumes)
@click.pass_obj
def delete(obj: Any, name: str) -> None:
    """Delete volume NAME and its data on every host (refused while jobs use it)."""
    obj.client.volumes.delete(name)
    click.echo(f"deleted volume {name}")


volume.add_command(delete, "remove")


@click.group()
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
