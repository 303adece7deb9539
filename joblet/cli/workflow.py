"""`rnx workflow run|list|status|stop` (and `rnx run --workflow=FILE`)."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import click

from joblet import wakeup
from joblet.cli import complete
from joblet.cli.once import OnceGroup

ENDED = ("COMPLETED", "FAILED", "STOPPED")  # a workflow's overall status once it ended (workflow_store.overall)


@click.group(cls=OnceGroup)
def workflow() -> None:
    """Run jobs with dependencies from a YAML file."""


def run_workflow(client: Any, path: str, detach: bool, as_json: bool) -> int:
    """Validate (printing the guide's lines), submit, then follow unless detached."""
    from joblet.api.workflows import Limits, load
    from joblet.config import settings

    wf = load(Path(path), Limits.of(settings()))  # rnx's settings (its client's), before it is made
    out = sys.stderr if as_json or detach else sys.stdout  # stdout: only what a script reads
    print("🔍 Validating workflow prerequisites...", file=out)
    checks = client.workflows.check(wf)
    for ok, line in checks:
        print(f"{'✅' if ok else '❌'} {line}", file=out)
    if not all(ok for ok, _ in checks):
        print(f"rnx: workflow {wf.name} not started: fix the lines marked ❌", file=sys.stderr)
        return 2
    record = client.workflows.submit(wf, checked=True)
    if detach:
        import json

        from joblet.cli.render import say_done

        # `> /dev/full` said only "cannot write its output", the workflow started and its id
        # lost (usability run): said as `rnx run -d` says it
        text = (
            json.dumps({"id": record.id, "name": record.name, "jobs": record.jobs}, indent=2) if as_json else record.id
        )
        said = say_done(text + "\n", f"started workflow {record.name} {record.id}")
        say_if_no_worker(client, record)
        return 0 if said else 1
    say_if_no_worker(client, record)
    try:
        return follow(client, record, out, as_json)
    except OSError as exc:  # `| head`: rnx ended 141 without a word, the workflow going on (usability run)
        if exc.filename is not None:
            raise
        short = record.id[:12]
        how = "goes on"
        with contextlib.suppress(Exception):  # its last line failed: it may have ended
            status = client.workflows.status(record.id)["status"]
            if status in ENDED:
                how = f"ended {status}"
        sys.stderr.write(
            f"rnx: cannot write its output ({exc.strerror}): workflow {record.name} {short} {how} "
            f"(rnx workflow status {short})\n"
        )
        from joblet.cli.render import drop_stdout

        drop_stdout()
        return 1


def follow(client: Any, record: Any, out: Any, as_json: bool) -> int:
    """Print the submitted workflow's jobs' changes to `out` until it ends; its exit status."""
    from joblet.cli.render import print_json

    count = len(record.jobs)
    print(f"workflow {record.name} {record.id[:12]}: {count} job{'s' if count != 1 else ''}", file=out)
    seen: dict[str, str] = {}
    from joblet.cli.patience import Patience
    from joblet.errors import BackendUnavailable

    # Redis gone a moment: the workflow goes on (its workers keep their jobs' ends); leaving
    # at the first failed look said it had not completed (exit 1) while it went on to complete
    patience = Patience(record.id[:12], "workflow", "rnx workflow status")
    try:
        while True:
            try:
                info = client.workflows.status(record.id)
            except BackendUnavailable as exc:
                patience(exc)
                continue
            patience(None)
            for name, line in changes(info["jobs"], seen):
                print(f"  {name}: {line}", file=out)
            if info["status"] in ENDED:
                break
            wakeup.sleep(0.3)
    except KeyboardInterrupt:
        print(f"\nrnx: the workflow goes on; `rnx workflow stop {record.id[:12]}` stops it", file=sys.stderr)
        return 130
    if as_json:
        print_json(public(info))
    else:
        click.echo(f"workflow {record.name}: {info['status']}")
    failed = [j for j in info["jobs"] if j["status"] in ("FAILED", "LOST")]
    for job in failed[:3]:  # a job's line said FAILED (exit code 3), never where its output is (usability run)
        print(f"  {job['name']}'s output: rnx log {job['id'][:12]}", file=sys.stderr)
    from joblet.api.models import JobStatus

    return 0 if info["status"] == JobStatus.COMPLETED.value else 1


def public(info: dict[str, Any]) -> dict[str, Any]:
    """A workflow as --json prints it: its times (`created`, each job's `started` and
    `finished`) as ISO 8601 in UTC, as every other --json's; it printed epoch seconds
    (usability run). The API's dict keeps its numbers: `changes` orders by them."""
    from joblet.api.models import iso

    jobs = [{**job, "started": iso(job.get("started")), "finished": iso(job.get("finished"))} for job in info["jobs"]]
    return {**info, "created": iso(info.get("created")), "jobs": jobs}


def say_if_no_worker(client: Any, record: Any) -> None:
    """After the submit (and its id): its jobs waited PENDING in silence with no worker up, as
    `rnx run -d` says (usability run). A Redis that fails this look says nothing more: the
    workflow was submitted."""
    from joblet.cli.render import if_unused
    from joblet.errors import JobletError

    try:
        if client.live_nodes():
            return
        unused = if_unused(client)
    except JobletError:
        return
    print(
        f"rnx: workflow {record.name} {record.id[:12]} waits in the queue: no worker is running "
        f"(start one with `joblet-worker`){unused}",
        file=sys.stderr,
    )


def changes(jobs: list[dict[str, Any]], seen: dict[str, str]) -> list[tuple[str, str]]:
    """The jobs' status changes since `seen` (updated), in the order they happened: a poll's
    changes were printed in the file's order, so a job that required another's end showed
    COMPLETED before it, and one that ran between two polls never showed RUNNING (usability
    run). (name, "STATUS[ (how it ended)]") pairs, by the time of each change."""
    from joblet.cli.render import printable

    events: list[tuple[float, int, str, str]] = []
    for order, job in enumerate(jobs):
        name, status, before = job["name"], job["status"], seen.get(job["name"])
        if before == status:
            continue
        seen[name] = status
        started, finished = job.get("started"), job.get("finished")
        if status not in ("PENDING", "RUNNING") and started is not None and before != "RUNNING":
            events.append((started, order, name, "RUNNING"))  # it ran between two looks
        when = finished if status not in ("PENDING", "RUNNING") else started
        events.append((when or 0.0, order, name, f"{status}{ended_how(job, printable)}"))
    return [(name, line) for _, _, name, line in sorted(events)]


def some(items: list[str], shown: int = 20) -> str:
    """Items for one line, the first `shown` of them: 2,000 jobs' names made a line of tens of
    kilobytes (red-team run)."""
    more = f", … ({len(items) - shown} more)" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def ended_how(job: dict[str, Any], printable: Any) -> str:
    """Why a job ended as it did, for its line: its error, else a failed command's exit code
    (`database: FAILED` said nothing of why: usability review)."""
    if job.get("error"):
        return f" ({printable(job['error'])})"
    code = job.get("exit_code")
    return f" (exit code {code})" if job["status"] == "FAILED" and code not in (None, 0) else ""


@workflow.command("run")
@click.argument("file", type=click.Path())
@click.option("-d", "--detach", is_flag=True, help="Print the workflow id and return at once.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def run_cmd(obj: Any, file: str, detach: bool, as_json: bool) -> None:
    """Validate and start the workflow in FILE."""
    sys.exit(run_workflow(obj.client, file, detach, as_json))


@workflow.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_cmd(obj: Any, as_json: bool) -> None:
    """List workflows with their overall status."""
    from joblet.cli.render import print_json, table

    rows = obj.client.workflows.list()
    if as_json:
        print_json([public(r) for r in rows])
        return
    table(["ID", "NAME", "STATUS", "JOBS"], [[r["id"][:12], r["name"], r["status"], str(len(r["jobs"]))] for r in rows])


@workflow.command("status", short_help="Show each job of a workflow: status, node, address.")
@click.argument("workflow_id", metavar="WORKFLOW", shell_complete=complete.workflows)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def status_cmd(obj: Any, workflow_id: str, as_json: bool) -> None:
    """Show each job of a WORKFLOW (id, id prefix, or name: its newest run): status,
    requirements, node, address."""
    from joblet.cli.render import print_json, table

    info = obj.client.workflows.status(workflow_id)
    if as_json:
        print_json(public(info))
        return
    click.echo(f"workflow {info['name']} {info['id'][:12]}: {info['status']}")
    table(
        ["JOB", "ID", "STATUS", "EXIT", "REQUIRES", "NODE", "IP"],
        [
            [
                j["name"],
                j["id"][:12],
                j["status"],
                "-" if j.get("exit_code") is None else str(j["exit_code"]),
                ", ".join(f"{d}={s}" for d, s in j["requires"].items()) or "-",
                j["node"] or "-",
                j["ip"] or "-",
            ]
            for j in info["jobs"]
        ],
    )


@workflow.command("stop", short_help="Stop workflows' running jobs.")
@click.argument("workflow_ids", metavar="WORKFLOW...", nargs=-1, required=True, shell_complete=complete.workflows)
@click.option("--no-wait", is_flag=True, help="Return without waiting for the jobs to end.")
@click.pass_obj
def stop_cmd(obj: Any, workflow_ids: tuple[str, ...], no_wait: bool) -> None:
    """Stop WORKFLOWs' running jobs (id, id prefix, or name: its newest run) and cancel those
    still waiting; then wait for them to end (as `rnx stop`) and print each one's status.
    Several are asked to stop at once, then waited for; one that cannot be found is
    reported, the others still stop (exit 1, as `rnx stop`)."""
    from joblet.cli.render import printable
    from joblet.errors import JobletError

    client, failed = obj.client, 0
    asked: list[tuple[str, list[str]]] = []  # (workflow id, the names of the jobs it stopped)
    for workflow_id in dict.fromkeys(workflow_ids):
        try:
            wf_id = client.workflows.status(workflow_id)["id"]  # one run, though another takes its name
            if wf_id in (a for a, _ in asked):
                continue
            touched = client.workflows.stop(wf_id)
            if not touched:  # it had ended: "stopping 0 job(s): -" before the same status line
                info = client.workflows.status(wf_id)
                click.echo(f"workflow {info['name']} {wf_id[:12]}: {info['status']} (nothing to stop)")
                continue
        except JobletError as exc:
            if len(workflow_ids) == 1:
                raise  # one workflow: its own exit code, as before
            click.echo(f"rnx: {printable(str(exc))}", err=True)
            failed += 1
            continue
        click.echo(f"stopping {len(touched)} job(s): {some(touched)}")
        asked.append((wf_id, touched))
    if asked and not no_wait:
        graces = client.stop_graces()
        grace = max([client.settings.stop_grace, *graces.values()]) if graces else client.settings.stop_grace
        deadline = time.monotonic() + grace + 30
        for wf_id, touched in asked:  # one's error (Redis gone a moment) leaves the others' said
            try:
                failed += _await_stopped(client, wf_id, touched, deadline)
            except JobletError as exc:
                if len(workflow_ids) == 1:
                    raise
                click.echo(f"rnx: {printable(str(exc))}", err=True)
                failed += 1
    if failed:  # as rnx stop: it exited 0, as if the workflow had stopped
        sys.exit(1)


def _await_stopped(client: Any, wf_id: str, touched: list[str], deadline: float) -> int:
    """Wait for the stopped jobs of one workflow to end, and print its status; how many had
    not ended by `deadline`."""
    info = client.workflows.status(wf_id)
    unended = 0
    for job in info["jobs"]:
        if job["name"] in touched:
            try:
                client.wait(job["id"], timeout=max(1.0, deadline - time.monotonic()))
            except TimeoutError:
                click.echo(f"job {job['name']} has not ended yet: is its worker alive? (rnx status)", err=True)
                unended += 1
    info = client.workflows.status(wf_id)
    ended = some([f"{j['name']} {j['status'].lower()}" for j in info["jobs"] if j["name"] in touched])
    click.echo(f"workflow {info['name']} {wf_id[:12]}: {info['status']} ({ended or 'nothing to stop'})")
    return unended
