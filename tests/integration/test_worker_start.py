"""A worker owns its network namespace's joblet objects, its state_dir and its jobs' cgroup root; a
second one there is refused."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from joblet.api.tasks import send_run
from joblet.errors import ValidationError
from tests.conftest import BIN, Host, need
from tests.integration.helpers import eventually


def test_a_second_worker_in_one_network_namespace_is_refused(redis_sock):
    """Another installation (its own key prefix, state_dir, run_dir) started beside a worker
    swept that worker's bridges and replaced its nft table under its running jobs."""
    need(os.geteuid() == 0, "needs root (namespaces, links, nftables)")
    first, other = Host(redis_sock, "first"), Host(redis_sock, "second")
    try:
        first.start_worker()
        assert first.worker is not None
        # its own /run too (a docker-compose worker with network_mode: host beside one on the
        # host): the lock is the namespace's, not a file
        own_run = "mount --make-rprivate / && mount -t tmpfs tmpfs /run && exec " + str(BIN / "joblet-worker")
        beside = subprocess.run(
            ["nsenter", f"--net=/run/netns/{first.netns}", "unshare", "-m", "sh", "-c", f"{own_run} --node second"],
            env={**os.environ, **other.env},
            capture_output=True,
            timeout=60,
        )
        last = beside.stderr.decode().strip().splitlines()[-1]
        assert beside.returncode == 1, beside.stderr
        assert last.startswith("joblet-worker: another joblet worker runs in this network namespace")
        assert f"(pid {first.worker.pid}: " in last and "joblet-worker --node first" in last, last
        assert b"jobs here:" not in beside.stderr, beside.stderr  # refused before its start-up lines
        other.start_worker()  # the control: the same worker starts in a namespace of its own
        for host in (first, other):  # and both serve
            client = Client(host.cfg)
            job = client.run("true", network="none")
            assert client.wait(job.id, timeout=60).status == JobStatus.COMPLETED
    finally:
        other.close()
        first.close()


def test_a_worker_of_another_key_prefix_is_refused_a_state_dir_in_use(redis_sock):
    """A second installation (another key prefix) on the same state_dir read the first one's
    volumes, and its `volume delete` removed their data."""
    need(os.geteuid() == 0, "needs root (namespaces, links, nftables)")
    first, other = Host(redis_sock, "owner"), Host(redis_sock, "stranger")
    try:
        first.start_worker()  # the state_dir is the first one's now
        first.stop_worker()
        other.env["JOBLET_STATE_DIR"] = first.env["JOBLET_STATE_DIR"]
        refused = subprocess.run(
            ["nsenter", f"--net=/run/netns/{other.netns}", str(BIN / "joblet-worker"), "--node", "stranger"],
            env={**os.environ, **other.env},
            capture_output=True,
            timeout=60,
        )
        last = refused.stderr.decode().strip().splitlines()[-1]
        assert refused.returncode == 1 and "belongs to the installation with key prefix" in last, refused.stderr
        first.start_worker()  # the control: its own installation starts there again
    finally:
        other.close()
        first.close()


def test_fleet_settings_that_would_fail_silently_are_refused_at_start(redis_sock):
    """A heartbeat slower than half of node_down_after showed the node down between beats and
    its healthy jobs were made LOST; an underlay address no interface holds got the overlay's
    traffic nowhere. Both started without a word (fleet run); so did a runtimes_dir in the
    state_dir, whose every runtime was then refused, said in its log alone (usability run)."""
    need(os.geteuid() == 0, "needs root (namespaces, links, nftables)")
    host = Host(redis_sock, "fleetset")
    try:
        host.in_ns("ip", "addr", "add", "198.18.250.1/32", "dev", "lo")  # its own namespace's
        inside = f"{host.env['JOBLET_STATE_DIR']}/runtimes"  # its every runtime refused, said in the log alone
        for setting, says in (
            ({"JOBLET_HEARTBEAT_INTERVAL": "15"}, "heartbeat_interval 15 s is more than half of node_down_after"),
            ({"JOBLET_UNDERLAY_ADDRESS": "198.18.250.2"}, "underlay_address 198.18.250.2 (JOBLET_UNDERLAY_"),
            ({"JOBLET_RUNTIMES_DIR": inside}, f"runtimes_dir {inside}: it is {inside}, which is in"),
        ):
            refused = subprocess.run(
                ["nsenter", f"--net=/run/netns/{host.netns}", str(BIN / "joblet-worker"), "--node", "fleetset"],
                env={**os.environ, **host.env, **setting},
                capture_output=True,
                timeout=60,
            )
            last = refused.stderr.decode().strip().splitlines()[-1]
            assert refused.returncode == 1 and last.startswith(f"joblet-worker: {says}"), refused.stderr
        # the control: the same worker with an underlay address its namespace holds, beating at 10 s
        host.env.update({"JOBLET_UNDERLAY_ADDRESS": "198.18.250.1", "JOBLET_HEARTBEAT_INTERVAL": "10"})
        host.start_worker()
        client = Client(host.cfg)
        job = client.run("true", network="none")
        assert client.wait(job.id, timeout=60).status == JobStatus.COMPLETED
    finally:
        host.close()


def refused_start(host: Host, **env: str) -> str:
    """Start a worker for `host` (with `env` over its settings) that must be refused: its
    last line."""
    refused = subprocess.run(
        ["nsenter", f"--net=/run/netns/{host.netns}", str(BIN / "joblet-worker"), "--node", host.name],
        env={**os.environ, **host.env, **env},
        capture_output=True,
        timeout=60,
    )
    assert refused.returncode == 1, refused.stderr
    return refused.stderr.decode().strip().splitlines()[-1]


def test_a_second_worker_of_one_state_dir_is_refused_and_the_first_ones_jobs_run_on(redis_sock):
    """The same node name and state_dir in another namespace passed for the first worker
    restarted: its reconcile made the first one's running job LOST and emptied its cgroup
    (operator's run)."""
    need(os.geteuid() == 0, "needs root (namespaces, links, nftables)")
    first, other = Host(redis_sock, "twin"), Host(redis_sock, "twin", fleet=None)
    try:
        first.start_worker()
        assert first.worker is not None
        client = Client(first.cfg)
        job = client.run("sh", ("-c", "echo up; sleep 2"), network="none")
        eventually(lambda: client.get(job.id).status == JobStatus.RUNNING, "the first worker's job running")
        same = {k: first.env[k] for k in ("JOBLET_STATE_DIR", "JOBLET_KEY_PREFIX", "JOBLET_QUEUE")}
        last = refused_start(other, **same)
        assert last.startswith(f"joblet-worker: another joblet worker uses state_dir {first.env['JOBLET_STATE_DIR']}")
        assert f"(pid {first.worker.pid}: " in last, last
        assert client.wait(job.id, timeout=60).status == JobStatus.COMPLETED  # it ran on to its end
        other.start_worker()  # the control: the same worker with a state_dir of its own starts
    finally:
        other.close()
        first.close()


def test_a_cgroup_root_holding_groups_not_joblets_is_refused_and_left_alone(redis_sock):
    """Given a shared cgroup root, a worker killed and removed every group in it at its start
    (other workers' roots; on a v2 host /sys/fs/cgroup is system.slice and user.slice)."""
    need(os.geteuid() == 0, "needs root (namespaces, cgroups)")
    host = Host(redis_sock, "sharedcg")
    root = Path(host.env["JOBLET_CGROUP_ROOT"])
    service, leftover = root / "some.service", root / ("ab" * 16)  # another's group; a killed job's
    sleepers: list[subprocess.Popen[bytes]] = []
    try:
        for group in (service, leftover):
            group.mkdir(parents=True)
            sleepers.append(subprocess.Popen(["sleep", "300"]))
            (group / "cgroup.procs").write_text(str(sleepers[-1].pid))
        last = refused_start(host)
        assert last == (
            f"joblet-worker: cgroup_root {root} holds cgroups that are not joblet's jobs (some.service): "
            f"give a directory of joblet's own, e.g. {root / 'joblet'} (JOBLET_CGROUP_ROOT)"
        ), last
        assert all(s.poll() is None for s in sleepers) and leftover.is_dir()  # nothing was touched
        sleepers[0].kill()
        sleepers[0].wait()
        service.rmdir()
        host.start_worker()  # the control: a root of jobs' groups alone; the killed job's goes
        assert sleepers[1].wait(timeout=30) == -9 and not leftover.exists()
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
        if service.exists():
            service.rmdir()
        host.close()


def test_a_full_state_dir_fails_jobs_saying_which_disk_and_the_log_names_each_job(redis_sock, mount_dir):
    """A full state_dir failed every job with `internal error: OSError: [Errno 28] No space
    left on device`, naming no path, and the worker's log said nothing of any job at its
    default level (operator's run)."""
    host = Host(redis_sock, "fulldisk")
    state = mount_dir / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(state)], check=True)
    host.env["JOBLET_STATE_DIR"] = str(state)
    try:
        host.start_worker()
        client = Client(host.cfg)
        ran = client.wait(client.run("sh", ("-c", "exit 3"), network="none").id, timeout=60)
        assert (ran.status, ran.exit_code) == (JobStatus.FAILED, 3)  # the control, and its lines:
        eventually(lambda: f"job {ran.short_id} ended FAILED (exit 3, after " in host.log(), host.log())
        assert f"job {ran.short_id} running sh (network none)" in host.log()
        subprocess.run(["dd", "if=/dev/zero", f"of={state}/filler", "bs=64k"], capture_output=True)
        with open(state / "journal" / "log", "ab", buffering=0) as journal:  # its last page too:
            with contextlib.suppress(OSError):  # empty lines, which its reader skips
                while True:
                    journal.write(b"\n" * 256)
        # its heartbeat says so: `rnx nodes` shows it, placement passes it by
        eventually(lambda: client.live_nodes()[host.name].get("disk_full") == [f"state_dir {state}"], "disk_full")
        assert " up (disk full) " in host.rnx("nodes").stdout.decode()
        with pytest.raises(ValidationError, match=rf"fulldisk: its disk is full \(state_dir {state}\)"):
            client.run("true", network="none")
        job_id = uuid.uuid4().hex  # and a job queued there anyway (before a beat said so) fails saying why
        send_run(host.cfg, job_id, {"command": "true", "network": "none"}, host.name)
        eventually(lambda: (rec := client.store.find_job(job_id)) is not None and rec.status.final, "its end")
        failed = client.get(job_id)
        assert failed.status == JobStatus.FAILED and failed.error == (
            f"no space left on this node's disk (state_dir {state}): jobs cannot start here until space is freed"
        ), failed.error
        (state / "filler").unlink()
        eventually(lambda: not client.live_nodes()[host.name].get("disk_full"), "disk_full cleared")
        assert client.wait(client.run("true", network="none").id, timeout=60).status == JobStatus.COMPLETED
    finally:
        host.close()
        subprocess.run(["umount", str(state)], check=False)


def test_a_second_worker_of_one_cgroup_root_is_refused(redis_sock):
    """A worker of its own state_dir and namespace but another's cgroup root would remove that
    worker's jobs' groups at its start (its reconcile takes them for a killed worker's)."""
    need(os.geteuid() == 0, "needs root (namespaces, cgroups)")
    first, other = Host(redis_sock, "cgfirst"), Host(redis_sock, "cgsecond")
    try:
        first.start_worker()
        assert first.worker is not None
        root = first.env["JOBLET_CGROUP_ROOT"]
        last = refused_start(other, JOBLET_CGROUP_ROOT=root)
        holder = f"(pid {first.worker.pid}: "
        assert last.startswith(f"joblet-worker: another joblet worker uses cgroup_root {root} {holder}"), last
        other.start_worker()  # the control: its own cgroup root
    finally:
        other.close()
        first.close()


def test_two_cgroup_roots_of_one_name_are_refused_on_a_hybrid_host(redis_sock):
    """v1 twins are named by the root's last component alone: two roots of one name shared
    the pids budget of all jobs and their jobs' cpu and memory groups (red-team run)."""
    need(os.geteuid() == 0, "needs root (namespaces, cgroups)")
    if not (Path("/sys/fs/cgroup/pids") / "cgroup.procs").exists():
        pytest.skip("a cgroup v2 host: no v1 twins")
    first, other = Host(redis_sock, "twinfirst"), Host(redis_sock, "twinother")
    root = Path(first.env["JOBLET_CGROUP_ROOT"])
    elsewhere = root.parent / f"elsewhere-{other.tag}" / root.name
    try:
        first.start_worker()
        last = refused_start(other, JOBLET_CGROUP_ROOT=str(elsewhere))
        assert f"the v1 twin of every cgroup_root named {root.name!r}" in last, last
        other.start_worker()  # the control: a root of its own name
    finally:
        other.close()
        first.close()
        for group in (elsewhere, elsewhere.parent):
            if group.is_dir():
                group.rmdir()


def test_check_says_what_a_start_would_refuse_and_makes_nothing(redis_sock):
    """`joblet-worker --check` runs a start's checks without starting: for a deployment, also
    while a worker runs. It makes no state_dir, cgroup root or heartbeat."""
    need(os.geteuid() == 0, "needs root (the worker's checks)")
    host = Host(redis_sock, "checked")
    elsewhere = Host(redis_sock, "checked", fleet=host)  # its node's name, from another place

    def check(h: Host, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{h.netns}", str(BIN / "joblet-worker"), "--node", h.name, "--check"],
            env={**os.environ, **h.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        fine = check(host)
        assert fine.returncode == 0, fine.stderr
        assert fine.stdout.startswith("joblet-worker: the settings hold\n"), fine.stdout
        assert f"Redis {redis_sock} reached (also the broker)" in fine.stdout, fine.stdout
        assert "no worker runs here now" in fine.stdout, fine.stdout
        made = [Path(host.env[k]) for k in ("JOBLET_STATE_DIR", "JOBLET_RUN_DIR", "JOBLET_CGROUP_ROOT")]
        assert not any(p.exists() for p in made), made
        assert Client(host.cfg).live_nodes() == {}  # no heartbeat
        refused = {  # each one line, exit 1, as a start would refuse it
            "JOBLET_HEARTBEAT_INTERVAL": "heartbeat_interval 20 s is more than half of node_down_after",
            "JOBLET_REDIS_URL": "cannot reach Redis at unix:///nonexistent.sock",
            "JOBLET_CGROUP_ROOT": "is the top of a cgroup hierarchy",
            "JOBLET_LOG_TTL": "log_ttl 3600 s is less than message_ttl (86400 s)",
        }
        values = {"JOBLET_HEARTBEAT_INTERVAL": "20", "JOBLET_REDIS_URL": "unix:///nonexistent.sock"}
        values["JOBLET_LOG_TTL"] = "3600"
        values["JOBLET_CGROUP_ROOT"] = str(Path(host.env["JOBLET_CGROUP_ROOT"]).parent)
        for key, said in refused.items():
            bad = check(host, **{key: values[key]})
            assert bad.returncode == 1 and bad.stdout == "", (key, bad)
            assert bad.stderr.count("\n") == 1 and said in bad.stderr, (key, bad.stderr)
        host.start_worker()
        assert host.worker is not None
        running = check(host)  # beside its worker: fine, and says so
        assert running.returncode == 0, running.stderr
        assert f"a worker uses this state_dir now (pid {host.worker.pid})" in running.stdout, running.stdout
        taken = check(elsewhere)  # refused, as at a start
        assert taken.returncode == 1 and "node 'checked' is up on another worker" in taken.stderr, taken
        assert not Path(elsewhere.env["JOBLET_STATE_DIR"]).exists()
    finally:
        elsewhere.close()
        host.close()
