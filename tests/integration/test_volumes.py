"""Volumes, runtimes and upload limits."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from joblet.api.client import Client
from joblet.api.client_volumes import Volumes
from joblet.api.models import JobRecord, JobSpec, JobStatus
from joblet.api.store import Store
from joblet.api.volumes import VolumeStore
from joblet.config import load
from joblet.errors import Conflict, NotFound, ValidationError
from joblet.worker.mounts import mount_tmpfs
from tests.conftest import mounts_under, private_redis
from tests.integration.helpers import eventually, run, wait_running


def test_volume_data_persists_across_jobs(client, host):
    client.volumes.create("notes")
    rec, _, err = run(client, "sh", "-c", "echo hello > /volumes/notes/a.txt", network="none", volumes=["notes"])
    assert rec.status == JobStatus.COMPLETED, err
    rec, out, _ = run(client, "cat", "/volumes/notes/a.txt", network="none", volumes=["notes"])
    assert out == b"hello\n"
    assert (host.tmp / "state" / "volumes" / "notes" / "data" / "a.txt").read_text() == "hello\n"
    rec, out, _ = run(client, "sh", "-c", "ls /volumes", network="none", volumes=["notes"])
    assert out.split() == [b"notes"]  # only the job's own volumes


def test_volumes_on_the_host_are_roots_alone(client, host):
    """A job (root) may leave a setuid-root file in a volume; on the host only root may reach
    it (the volumes directory is 0700), while a job of another user still uses the volume."""
    client.volumes.create("suid")
    client.volumes.create("suid-sized", "16MB")
    planted = "cp /bin/true /volumes/suid/t && chmod 4755 /volumes/suid/t && chmod 1777 /volumes/suid"
    rec, _, err = run(client, "sh", "-c", planted, network="none", volumes=["suid", "suid-sized"])
    assert rec.status == JobStatus.COMPLETED, err
    root = host.tmp / "state" / "volumes"
    assert (root / "suid" / "data" / "t").stat().st_mode & 0o4000  # what the mode below keeps away
    assert root.stat().st_mode & 0o777 == 0o700
    assert (root / "suid-sized" / "image").stat().st_mode & 0o777 == 0o600
    rec, out, err = run(
        client,
        "sh",
        "-c",
        "echo ok > /volumes/suid/mine && cat /volumes/suid/mine",
        network="none",
        volumes=["suid"],
        user="1000",
    )
    assert rec.status == JobStatus.COMPLETED and out == b"ok\n", err
    client.volumes.delete("suid")
    client.volumes.delete("suid-sized")


def test_delete_refused_while_mounted_then_data_goes(client, host):
    client.volumes.create("busy")
    job = client.run("sleep", ("300",), volumes=["busy"])
    wait_running(client, job.id)
    with pytest.raises(Conflict, match="1 job"):
        client.volumes.delete("busy")
    client.stop(job.id)
    client.wait(job.id, timeout=30)
    client.volumes.delete("busy")
    data = host.tmp / "state" / "volumes" / "busy"
    eventually(lambda: not data.exists(), "volume data left on the host", timeout=10)


def test_a_delete_that_read_no_user_is_refused_by_a_job_that_started_meanwhile(client, host):
    """The delete read every kept record (1.2 s), found no user, and deleted: a job started
    meanwhile ran on the deleted volume, its writes swept after (red-team run: 25 of 30).
    The delete itself refuses while a job that started with the volume has not ended; a job
    that starts after the delete is refused (its definition is gone)."""
    store = VolumeStore(host.cfg.redis_url, host.cfg.key_prefix)
    client.volumes.create("raced")
    job = client.run("sleep", ("300",), volumes=["raced"], network="none")
    eventually(lambda: client.get(job.id).status == JobStatus.RUNNING, "the volume's job running")
    assert store.delete("raced") == [job.id]  # as if the records had been read before its start
    assert store.get("raced").name == "raced"  # kept
    client.stop(job.id)
    client.wait(job.id, timeout=30)
    assert store.delete("raced") == []  # the control: once it ended
    with pytest.raises(NotFound):
        store.delete("raced")
    assert store.redis.exists(store.keys.volume_users("raced")) == 0
    late = JobRecord.pending("e" * 32, JobSpec(command="true", volumes=("raced",), network=("none",)))
    client.enqueue(late)  # queued past the checks, as one accepted just before the delete
    ended = client.wait(late.id, timeout=30)
    assert ended.status == JobStatus.FAILED and "volume 'raced' does not exist (any more)" in (ended.error or "")


def test_a_volume_redis_forgot_keeps_its_data(client, host):
    """Each worker swept away every volume Redis did not know: a Redis restarted without its
    data (the quickstart's) or another key prefix on this state_dir took every volume's data.
    Only what `volume delete` named goes now."""
    client.volumes.create("precious")
    client.volumes.create("scratch")
    rec, _, err = run(client, "sh", "-c", "echo keep > /volumes/precious/db", network="none", volumes=["precious"])
    assert rec.status == JobStatus.COMPLETED, err
    run(client, "true", network="none", volumes=["scratch"])
    root = host.tmp / "state" / "volumes"
    client.store.redis.hdel(client.store.keys.volumes, "precious")  # as a Redis that lost its data
    client.volumes.delete("scratch")  # the control: a sweep runs, and takes what was deleted
    eventually(lambda: not (root / "scratch").exists(), "the deleted volume's data gone", timeout=10)
    assert (root / "precious" / "data" / "db").read_text() == "keep\n"
    client.volumes.create("precious")  # defined again: its data is there
    rec, out, _ = run(client, "cat", "/volumes/precious/db", network="none", volumes=["precious"])
    assert out == b"keep\n"
    client.volumes.delete("precious")
    eventually(lambda: not (root / "precious").exists(), "the deleted volume's data gone", timeout=10)


def test_a_volume_defined_again_otherwise_after_redis_forgot_it(client, host):
    """Defined again after Redis lost its definition, a volume takes over this host's data
    only as what that data is: another size than its image's (which it silently kept), no
    size over an image or a size over a directory of files (which hid the data under an empty
    mount point or image) fail the job saying how to define it; as it was, the data is there."""

    def forget(name: str) -> None:
        client.store.redis.hdel(client.store.keys.volumes, name)  # as a Redis that lost its data

    def reads(name: str, size: str | None) -> tuple[JobRecord, bytes]:
        forget(name)
        client.volumes.create(name, size)
        rec, out, _ = run(
            client,
            "sh",
            "-c",
            f"cat /volumes/{name}/f && df -k /volumes/{name} | tail -1",
            network="none",
            volumes=[name],
        )
        return rec, out

    client.volumes.create("sized", "16MB")
    client.volumes.create("plain")
    for name in ("sized", "plain"):
        rec, _, err = run(client, "sh", "-c", f"echo kept > /volumes/{name}/f", network="none", volumes=[name])
        assert rec.status == JobStatus.COMPLETED, err
    for name, size, why in (
        ("sized", "48MB", "as a 16 MB image and its definition asks 48 MB: define it again with --size=16MB"),
        ("sized", None, "as a 16 MB image and its definition has no size: define it again with --size=16MB"),
        ("plain", "16MB", "as a directory and its definition has a size: define it again without --size"),
    ):
        rec, out = reads(name, size)
        assert rec.status == JobStatus.FAILED and why in (rec.error or ""), (name, size, rec.error)
    rec, out = reads("sized", "16MB")  # the controls: as it was, the data is there
    assert out.startswith(b"kept\n") and 10_000 < int(out.split()[2]) < 17_000, (rec.error, out)
    rec, out = reads("plain", None)
    assert out.startswith(b"kept\n"), (rec.error, out)
    for name in ("sized", "plain"):
        client.volumes.delete(name)
        data = host.tmp / "state" / "volumes" / name
        eventually(lambda d=data: not d.exists(), f"{name}'s data left", timeout=10)


def test_a_deep_tree_in_a_volume_goes_with_it(client, host):
    """A job chooses its tree's depth: deeper than Python recurses (1,000) and than a path
    can name (4,096 bytes), it is still deleted, and a new volume of that name starts empty."""
    client.volumes.create("deep")
    plant = "cd /volumes/deep && i=0; while [ $i -lt 2000 ]; do mkdir d && cd d || exit 1; i=$((i+1)); done; echo s > f"
    rec, _, err = run(client, "sh", "-c", plant, network="none", volumes=["deep"])
    assert rec.status == JobStatus.COMPLETED, err
    data = host.tmp / "state" / "volumes" / "deep"
    found = subprocess.run(["find", str(data / "data"), "-name", "d"], capture_output=True, check=True).stdout
    assert found.count(b"\n") == 2000  # the control: the tree is there
    client.volumes.delete("deep")
    eventually(lambda: not data.exists(), "a deep volume's data left on the host", timeout=15)
    client.volumes.create("deep")
    rec, out, err = run(client, "ls", "-A", "/volumes/deep", network="none", volumes=["deep"])
    assert rec.status == JobStatus.COMPLETED and out == b"", (out, err)
    client.volumes.delete("deep")


@pytest.fixture
def quiet_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis of this test's alone: its command counts are its own (a module's worker,
    beating on the shared one, added its own reads to them: a CI run failed 46 == 41)."""
    redis = private_redis(tmp_path)
    try:
        yield f"unix://{tmp_path / 'redis.sock'}"
    finally:
        redis.terminate()
        redis.wait(timeout=10)


def test_volume_list_reads_each_job_record_once(quiet_redis: str):
    """`rnx volume list` read every job record once per volume (32 volumes, 2,356 jobs: 75,000
    HGETALLs and 6 s): it reads them once, and still counts each volume's unfinished jobs."""
    store = Store(quiet_redis, f"vlist{time.time_ns()}:")
    volumes = Volumes(store, VolumeStore(store.url, store.keys.prefix, store.redis))
    names = [f"v{i}" for i in range(8)]
    for name in names:
        volumes.create(name)
    records = [
        JobRecord(
            id=f"{i:032x}",
            status=JobStatus.RUNNING if i % 2 else JobStatus.COMPLETED,
            spec=JobSpec(command="true", volumes=(names[i % 3], names[3]) if i < 12 else ()),
        )
        for i in range(40)
    ]
    store.create_jobs(records)
    before = _calls(store, "hgetall")
    listed = {v["name"]: v["jobs"] for v in volumes.list()}
    assert _calls(store, "hgetall") - before == len(records) + 1  # each record, and the definitions
    before = _calls(store, "hgetall")  # once the index of jobs that have not ended is made:
    assert {v["name"]: v["jobs"] for v in volumes.list()} == listed
    assert _calls(store, "hgetall") - before == 20 + 1  # the running ones alone
    assert listed == {"v0": 2, "v1": 2, "v2": 2, "v3": 6, **dict.fromkeys(names[4:], 0)}  # running ones only
    assert volumes.users("v1") == [r.short_id for r in records[:12] if r.id.endswith(("1", "7"))]  # delete's check
    assert volumes.users("v4") == []


def _calls(store: Store, command: str) -> int:
    return int(store.redis.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_volume_inspect_names_its_jobs_and_sizes_read_as_given(client, host):
    """There was no `rnx volume inspect`: which jobs use a volume showed only in delete's
    refusal; sizes read `16777216 MB` for --size=16TB (usability run)."""
    assert host.rnx("volume", "create", "insp", "--size=1.5GB").stdout == b"created volume insp (1.5 GB)\n"
    job = client.run("sleep", ("300",), volumes=["insp"], network="none", name="insp-user")
    try:
        eventually(lambda: client.get(job.id).status.value == "RUNNING", "the job running")
        info = json.loads(host.rnx("volume", "inspect", "insp", "--json").stdout)
        assert info["size_mb"] == 1536 and [j["id"] for j in info["job_list"]] == [job.id] and info["jobs"] == 1
        assert info["created"].endswith("+00:00")  # ISO in UTC, as every --json (it was epoch seconds)
        listed = json.loads(host.rnx("volume", "list", "--json").stdout)
        assert next(v for v in listed if v["name"] == "insp")["created"] == info["created"]
        shown = host.rnx("volume", "inspect", "insp").stdout.decode()
        assert "Size:     1.5 GB" in shown and job.id[:12] in shown and "insp-user" in shown, shown
        assert "1.5 GB" in host.rnx("volume", "list").stdout.decode()
    finally:
        client.stop(job.id)
        client.wait(job.id, timeout=30)
    assert json.loads(host.rnx("volume", "inspect", "insp", "--json").stdout)["job_list"] == []  # ended: none
    missing = host.rnx("volume", "inspect", "inps")
    assert missing.returncode == 1 and b"no such volume: inps (did you mean 'insp'?)" in missing.stderr, missing
    client.volumes.delete("insp")


def test_missing_volume_refused_before_queueing(client):
    before = len(client.list())
    with pytest.raises(ValidationError, match="no such volume 'ghost'"):
        client.run("true", volumes=["ghost"])
    assert len(client.list()) == before


def test_sized_volume_is_its_own_filesystem(client, host):
    client.volumes.create("small", "32MB")
    rec, out, err = run(
        client,
        "sh",
        "-c",
        "df -k /volumes/small | tail -1; dd if=/dev/zero of=/volumes/small/big bs=1M count=64 2>&1; echo rc=$?",
        network="none",
        volumes=["small"],
    )
    total_kb = int(out.split()[1])
    assert 20_000 < total_kb < 34_000, out
    assert b"No space left on device" in out and b"rc=1" in out
    assert any("volumes/small/data" in m for m in mounts_under(host.tmp))
    # its blocks were reserved when it was made, all of them (mkfs did not punch them out):
    # two sized volumes cannot promise the same free space twice; nor does ext4's background
    # inode table init after its mount (it zeroes through the loop device, which punches
    # holes: 61,488 of 65,536 blocks left 6 s after a mount without noinit_itable)
    with open("/proc/self/mountinfo") as fh:
        line = next(x for x in fh if x.split()[4].endswith("/volumes/small/data"))
    assert "noinit_itable" in line.split(" - ")[1], line
    image = (host.tmp / "state" / "volumes" / "small" / "image").stat()
    assert image.st_size == 32 << 20 and image.st_blocks * 512 >= image.st_size, image
    client.volumes.delete("small")
    eventually(
        lambda: not any("volumes/small" in m for m in mounts_under(host.tmp)), "sized volume still mounted", timeout=10
    )


def test_a_sized_volume_the_disk_lacks_fails_its_job_and_leaves_nothing(client, host):
    """Its first job failed after the volume's `created` and `data` were written on the host,
    which stayed as if the volume were made there."""
    client.volumes.create("toobig", "16TB")  # the largest size: more than a test host's disk
    rec, _, _ = run(client, "true", network="none", volumes=["toobig"])
    assert rec.status == JobStatus.FAILED and "is more than this host's state disk can give" in (rec.error or "")
    assert not (host.tmp / "state" / "volumes" / "toobig").exists()
    client.volumes.delete("toobig")


def test_runtime_is_read_only_and_first_on_path(client, host):
    bindir = host.tmp / "runtimes" / "python:3.11-ml" / "bin"
    bindir.mkdir(parents=True)
    tool = bindir / "hello-rt"
    tool.write_text("#!/bin/sh\necho from the runtime\n")
    tool.chmod(0o755)
    eventually(
        lambda: any(r["name"] == "python:3.11-ml" for r in client.runtimes()),
        "the worker did not report the runtime",
        timeout=10,
    )
    rec, out, _ = run(
        client,
        "sh",
        "-c",
        "hello-rt; echo $PATH; touch /runtime/bin/x || echo ro",
        network="none",
        runtime="python:3.11-ml",
    )
    lines = out.decode().splitlines()
    assert lines[0] == "from the runtime" and lines[1].startswith("/runtime/bin:")
    assert lines[-1] == "ro" and rec.node == host.name
    listed = host.rnx("runtime", "list", "--json")
    assert {"name": "python:3.11-ml", "nodes": [host.name]} in json.loads(listed.stdout)
    with pytest.raises(ValidationError, match="no live worker offers runtime 'java:17'"):
        client.run("java", runtime="java:17")


def test_a_runtime_linked_elsewhere_after_the_worker_started_runs(client, host, mount_dir: Path):
    """A runtime installed onto another filesystem (a link in the runtimes directory) after
    the worker started: its jobs failed in bwrap (`Can't find source path`) until a restart."""
    # a filesystem of its own under a private mount (as a host's /mnt/disk would be at the
    # worker's start): not in the jobs' mount template, where nothing propagates it to
    mount_tmpfs(mount_dir / "fs", 1 << 20)
    subprocess.run(["mount", "--make-private", str(mount_dir / "fs")], check=True)
    mount_tmpfs(mount_dir / "fs" / "rt", 1 << 20)
    bindir = mount_dir / "fs" / "rt" / "bin"
    bindir.mkdir()
    (bindir / "hello-late").write_text("#!/bin/sh\necho late runtime\n")
    (bindir / "hello-late").chmod(0o755)
    (host.tmp / "runtimes").mkdir(exist_ok=True)
    (host.tmp / "runtimes" / "late:1").symlink_to(mount_dir / "fs" / "rt")
    try:
        eventually(lambda: any(r["name"] == "late:1" for r in client.runtimes()), "runtime not reported", timeout=10)
        rec, out, err = run(client, "hello-late", network="none", runtime="late:1")
        assert (rec.exit_code, out) == (0, b"late runtime\n"), (rec, err)
    finally:
        (host.tmp / "runtimes" / "late:1").unlink()


def test_upload_limits_and_escapes(host, tmp_path: Path):
    small = Client(load(**{k[7:].lower(): v for k, v in host.env.items()}, upload_max_bytes=1000))
    with pytest.raises(ValidationError, match="exceed the limit of 1000"):
        small.run("true", uploads=[{"path": "big", "content": "QUFB" * 400}])
    for path in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(ValidationError, match="escapes /work"):
            small.run("true", uploads=[{"path": path, "content": ""}])
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2000)
    proc = host.rnx("run", f"--upload={big}", "true", env_extra={"JOBLET_UPLOAD_MAX_BYTES": "1000"})
    assert proc.returncode == 2 and b"exceed the limit of 1000" in proc.stderr
