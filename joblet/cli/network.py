"""`rnx network create|list|inspect|delete`."""

from __future__ import annotations

import sys
from typing import Any

import click

from joblet.cli import complete
from joblet.cli.once import OnceGroup
from joblet.cli.render import public, say_done


@click.group(cls=OnceGroup)
def network() -> None:
    """Manage networks (bridge, isolated, none, host are built in)."""


@network.command()
@click.argument("name")
@click.option("--cidr", required=True, help="Address range, e.g. 10.10.0.0/24 (/8 to /29).")
@click.option("--internal", is_flag=True, help="No route out: jobs reach only each other.")
@click.option("--dns", "dns", multiple=True, help="DNS servers for its jobs, comma-separated or repeated.")
@click.option("--mtu", type=int, help="MTU (default: the uplink's MTU less 50, the VXLAN header).")
@click.pass_obj
def create(obj: Any, name: str, cidr: str, internal: bool, dns: tuple[str, ...], mtu: int | None) -> None:
    """Create network NAME."""
    # repeated, each counts (the last alone did, as click keeps for a single-valued option)
    entries = [s.strip() for given in dns for s in given.split(",")]
    if "" in entries:  # `--dns=` or `--dns=1.1.1.1,`: a server left out, not none asked for
        raise click.BadParameter("an empty entry: give IPv4 addresses, comma-separated or repeated", param_hint="--dns")
    servers = tuple(dict.fromkeys(entries))
    net = obj.client.networks.create(name, cidr, internal=internal, dns=servers, mtu=mtu)
    agreed = f", MTU {net.mtu}: its nodes' smallest" if mtu is None and net.mtu is not None else ""
    line = f"created network {net.name} ({net.cidr}{agreed})"
    if not say_done(line + "\n", line):
        sys.exit(1)


@network.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_networks(obj: Any, as_json: bool) -> None:
    """List networks with their CIDR, bridge and live job count."""
    from joblet.cli.render import print_json, table

    rows = obj.client.networks.list()
    if as_json:
        print_json([public(r) for r in rows])
        return
    table(
        ["NAME", "CIDR", "BRIDGE", "JOBS"],
        [[r["name"], r["cidr"] or "-", r["bridge"] or "-", str(r["jobs"])] for r in rows],
    )


@network.command()
@click.argument("name", shell_complete=complete.networks)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def inspect(obj: Any, name: str, as_json: bool) -> None:
    """Show a network's settings and its jobs."""
    from joblet.api.models import iso
    from joblet.cli.render import inspected, local_time, print_json

    info = obj.client.networks.inspect(name)
    if as_json:
        print_json(public(info))
        return
    labels = {
        "name": "Name",
        "cidr": "CIDR",
        "bridge": "Bridge",
        "internal": "Internal",
        "dns": "DNS",
        "mtu": "MTU",
        "builtin": "Built in",
        "created": "Created",
        "jobs": "Jobs",
    }
    uplinks = "uplink's less 50" if info.get("mtu") is None and not info.get("builtin") else info.get("mtu")
    shown = {**info, "mtu": uplinks, "created": local_time(iso(info.get("created")))}
    fields = [(label, shown[key]) for key, label in labels.items() if key in info]
    fields = [f for f in fields if f[0] != "Created" or not info.get("builtin")]  # the worker's, none made
    inspected(fields, info["job_list"], ip=True)


@network.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...", shell_complete=complete.user_networks)
@click.pass_obj
def delete(obj: Any, names: tuple[str, ...]) -> None:
    """Delete networks (refused while jobs use one)."""
    from joblet.cli.render import delete_each

    delete_each(names, obj.client.networks.delete, "network")


network.add_command(delete, "remove")
