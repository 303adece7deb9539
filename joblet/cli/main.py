"""`rnx`: the joblet command line. Thin: parse, call the Client, render, map errors to exits."""

from __future__ import annotations

import sys
from typing import Any

import click

from joblet.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    JobletError,
    NotFound,
    PermissionDenied,
    ValidationError,
)

EXIT_CODES: list[tuple[type[JobletError], int]] = [
    (ValidationError, 2), (ConfigError, 2), (NotFound, 1), (Conflict, 1), (BackendUnavailable, 1),
    (PermissionDenied, 1),
]


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


class RnxGroup(click.Group):
    """Turns joblet errors into one line on stderr and an exit code (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JobletError as exc:
            code = next((c for t, c in EXIT_CODES if isinstance(exc, t)), 1)
            click.echo(f"rnx: {exc}", err=True)
            sys.exit(code)


@click.group(cls=RnxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="joblet", prog_name="rnx")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run commands as isolated jobs on joblet workers."""
    ctx.obj = Ctx()


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_jobs(obj: Ctx, as_json: bool) -> None:
    """List jobs, oldest first."""
    from joblet.cli.render import jobs_table, print_json

    records = obj.client.list()
    if as_json:
        print_json([r.public() for r in records])
    else:
        jobs_table(records)


@cli.command()
@click.argument("job_id")
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


@cli.command()
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.pass_obj
def log(obj: Ctx, job_id: str, follow: bool) -> None:
    """Print a job's output (stdout to stdout, stderr to stderr)."""
    from joblet.cli.stream import write_chunk

    try:
        for stream, data in obj.client.logs(job_id, follow=follow):
            write_chunk(stream, data)
    except KeyboardInterrupt:
        sys.exit(130)


@cli.command()
@click.argument("job_id")
@click.option("--no-wait", is_flag=True, help="Return without waiting for the job to end.")
@click.pass_obj
def stop(obj: Ctx, job_id: str, no_wait: bool) -> None:
    """Stop a job: SIGTERM, then SIGKILL after the grace period, to its whole process tree."""
    record = obj.client.stop(job_id)
    if not no_wait and not record.status.final:
        try:
            record = obj.client.wait(record.id, timeout=obj.client.settings.stop_grace + 30)
        except TimeoutError:
            pass
    click.echo(f"{record.id} {record.status.value}")


def main() -> None:
    cli(prog_name="rnx")


def _register() -> None:
    from joblet.cli.network import network
    from joblet.cli.run import run
    from joblet.cli.volume import runtime, volume
    from joblet.cli.workflow import workflow

    cli.add_command(run)
    cli.add_command(network)
    cli.add_command(volume)
    cli.add_command(runtime)
    cli.add_command(workflow)


_register()


if __name__ == "__main__":
    main()
