"""A job's end by `rnx stop` and by its --timeout, both served by the job's own thread (a stop
is one eventfd write; SIGTERM first, SIGKILL after the worker's grace period, 2 s here)."""

from __future__ import annotations

import os
import signal
import subprocess

from joblet.api.client import Client
from joblet.worker import cgroups
from joblet.worker.cgroups import JobCgroup
from tests.conftest import cgroup_base, need
from tests.integration.helpers import eventually, output

STUBBORN = "trap '' TERM; echo up; while :; do sleep 0.1; done"


def test_a_timeout_ends_the_job_failed_and_a_job_within_it_completes(client: Client) -> None:
    within = client.run("sh", ("-c", "echo fine"), network="none", timeout=30)  # positive control
    late = client.run("sleep", ("30",), network="none", timeout=1)
    done = client.wait(within.id, timeout=30)
    assert (done.status.value, done.exit_code) == ("COMPLETED", 0)
    final = client.wait(late.id, timeout=30)
    assert final.status.value == "FAILED"
    assert final.error == "timed out after 1s"
    assert final.exit_code == 128 + signal.SIGTERM


def test_a_timeout_kills_a_job_that_ignores_sigterm_after_the_grace(client: Client) -> None:
    rec = client.run("sh", ("-c", STUBBORN), network="none", timeout=1)
    final = client.wait(rec.id, timeout=30)
    assert final.status.value == "FAILED" and final.error == "timed out after 1s"
    assert final.exit_code == 128 + signal.SIGKILL


def test_stop_ends_running_jobs_and_kills_one_that_ignores_sigterm(client: Client) -> None:
    plain = client.run("sh", ("-c", "echo up; exec sleep 300"), network="none")
    stubborn = client.run("sh", ("-c", STUBBORN), network="none")
    for rec in (plain, stubborn):
        eventually(lambda r=rec: b"up" in output(client, r.id), f"job {rec.short_id} running")
        assert client.get(rec.id).status.value == "RUNNING"  # the positive control: it ran
        client.stop(rec.id)
    first = client.wait(plain.id, timeout=30)
    assert (first.status.value, first.exit_code) == ("STOPPED", 128 + signal.SIGTERM)
    second = client.wait(stubborn.id, timeout=30)
    assert (second.status.value, second.exit_code) == ("STOPPED", 128 + signal.SIGKILL)


def test_stopping_twice_is_harmless(client: Client) -> None:
    rec = client.run("sh", ("-c", "echo up; exec sleep 300"), network="none")
    eventually(lambda: b"up" in output(client, rec.id), "job running")
    client.stop(rec.id)
    client.stop(rec.id)
    final = client.wait(rec.id, timeout=30)
    assert final.status.value == "STOPPED"
    client.stop(rec.id)  # after its end: nothing to do, no error
    assert client.get(rec.id).status.value == "STOPPED"


def test_a_stop_signals_the_jobs_processes_and_not_a_pid_that_left_it(monkeypatch) -> None:
    """A pid read from cgroup.procs that ended and was taken by a host process before the
    SIGTERM reached it: that process is left alone (red-team run)."""
    need(os.geteuid() == 0, "needs root (cgroups)")
    group = JobCgroup(cgroup_base() / f"joblet-signal-{os.getpid()}")
    group.create()
    inside = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    outside = subprocess.Popen(["sleep", "60"])  # the host process holding the reused pid
    try:
        for proc in inside:
            group.procs_file.write_text(str(proc.pid))
        real = group.pids
        stale = iter([[inside[0].pid, outside.pid, inside[1].pid]])  # the first read, as if before the reuse
        monkeypatch.setattr(group, "pids", lambda: next(stale, None) or real())
        monkeypatch.setattr(cgroups, "SIGNAL_BATCH", 2)  # two batches: the second after another read
        group.signal(signal.SIGTERM)
        assert [proc.wait(timeout=10) for proc in inside] == [-signal.SIGTERM] * 2  # the job's own: signalled
        assert outside.poll() is None
    finally:
        for proc in (*inside, outside):
            proc.kill()
            proc.wait()
        group.remove()
