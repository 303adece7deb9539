"""`rnx batch`: hundreds of detached jobs from one process, bad lines named and skipped."""

from __future__ import annotations

import json

from joblet.api.models import JobStatus
from tests.integration.helpers import output

GOOD = 300


def lines(bad: dict[int, str]) -> str:
    """GOOD job lines, with the bad ones put in at their (1-based) line numbers."""
    out, good = [], iter(range(GOOD))
    while len(out) < GOOD + len(bad):
        n = len(out) + 1
        out.append(bad[n] if n in bad else f"--network=none sh -c 'echo job {next(good)}'")
    return "\n".join(out) + "\n"


def test_batch_queues_every_good_line_once(host, client):
    bad = {
        7: "--network=nosuch echo BAD1",
        8: "echo \udcff BAD4",  # the byte 0xff: not UTF-8
        9: "--help",  # no help text on stdout, which holds only ids
        150: "--netwrok=none echo BAD2",
        151: "echo 'BAD3",
    }
    before = {r.id for r in client.list()}
    done = host.rnx("batch", input=lines(bad).encode(errors="surrogateescape"))
    err = done.stderr.decode().splitlines()
    assert done.returncode == 2, done.stderr
    assert err == [
        "rnx batch: line 7: invalid --network: no such network 'nosuch' (rnx network list)",
        "rnx batch: line 8: not UTF-8 text (byte 6: 0xff)",
        "rnx batch: line 9: No such option '--help'.",
        "rnx batch: line 150: No such option '--netwrok'. Did you mean '--network'?",
        "rnx batch: line 151: cannot split the line: No closing quotation",
    ]
    ids = done.stdout.decode().splitlines()
    assert len(ids) == len(set(ids)) == GOOD and all(len(i) == 32 for i in ids)
    new = [r for r in client.list() if r.id not in before]
    assert {r.id for r in new} == set(ids)  # nothing recorded for a bad line
    assert not any("BAD" in " ".join(r.spec.args) for r in new)
    finals = [client.wait(i, timeout=180) for i in ids]
    failed = [
        (r.id[:12], r.status.value, r.exit_code, r.error)
        for r in finals
        if r.status != JobStatus.COMPLETED or r.exit_code != 0
    ]
    assert failed == [], f"{len(failed)} jobs did not complete\n{host.log()[-2000:]}"
    got = [output(client, i, whole=True) for i in ids[:3] + ids[-1:]]
    assert got == [b"job 0\n", b"job 1\n", b"job 2\n", b"job 299\n"]
    assert client.store.redis.llen(host.cfg.queue) == 0


def test_batch_from_a_file_without_errors(host, client, tmp_path):
    path = tmp_path / "jobs.txt"
    path.write_text("# two jobs\n\n--network=none --env X=1 sh -c 'echo $X'\n--network=none true\n")
    done = host.rnx("batch", str(path))
    assert done.returncode == 0 and done.stderr == b""
    first, second = done.stdout.decode().split()
    assert client.wait(first, timeout=60).status == JobStatus.COMPLETED and output(client, first, whole=True) == b"1\n"
    assert client.wait(second, timeout=60).exit_code == 0
    assert json.loads(host.rnx("status", "--json", second).stdout)["status"] == "COMPLETED"


def test_a_refused_named_job_keeps_the_ids_before_it(host, client):
    holder = client.run("sleep", ("30",), network="none", name="batch-dup")
    try:
        done = host.rnx(
            "batch",
            input=b"--network=none true\n--network=none --name=batch-dup true\n--network=none --name=batch-free true\n",
        )
        assert done.returncode == 2
        assert done.stderr.decode().startswith("rnx batch: line 2: invalid --name: 'batch-dup' is in use")
        first, free = done.stdout.decode().split()  # line 1's id is printed although line 2 failed
        assert client.wait(first, timeout=60).exit_code == 0 and client.wait(free, timeout=60).name == "batch-free"
    finally:
        client.stop(holder.id)


def test_a_line_before_a_refused_one_goes_once_the_input_is_idle(host, client):
    """`tail -f jobs | rnx batch`: a good line followed by a bad one waited, unqueued, for
    the next good line (the idle flush was skipped after a refusal)."""
    import os
    import select
    import subprocess

    from tests.conftest import BIN

    proc = subprocess.Popen(
        [str(BIN / "rnx"), "batch"],
        env={**os.environ, **host.env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # the good line fills rnx's read buffer (8 KiB) exactly: the bad one is still in the
        # pipe as the good one is looked at, so rnx waits for it before it flushes
        good = b"--network=none echo waited "
        good += b"x" * (8191 - len(good)) + b"\n"
        proc.stdin.write(good + b"--network=nosuch true\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 30)  # the input stays open: no EOF flush
        assert ready, "the good line was not queued while the input was idle"
        job_id = proc.stdout.readline().decode().strip()
        assert client.wait(job_id, timeout=30).status == JobStatus.COMPLETED
        assert output(client, job_id) == good[len(b"--network=none echo ") :]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    err = proc.stderr.read() if proc.stderr else b""
    assert proc.returncode == 2 and b"rnx batch: line 2: invalid --network" in err, err


def test_networks_seen_before_are_still_refused_together_where_one_stands_alone(host, client):
    """rnx batch looks a network up once per batch, and the rule that isolated, host and none
    stand alone lived in that lookup: a third line joining two networks seen before was
    queued, then FAILED by its worker (review). Refused at its line now."""
    lines = b"--network=isolated true\n--network=bridge true\n--network=isolated --network=bridge true\n"
    done = host.rnx("batch", input=lines)
    assert done.returncode == 2, done
    said = "rnx batch: line 3: invalid --network: 'isolated' cannot be combined with other networks\n"
    assert done.stderr.decode() == said
    first, second = done.stdout.decode().split()  # the control: each alone is queued and runs
    assert client.wait(first, timeout=60).exit_code == 0 and client.wait(second, timeout=60).exit_code == 0
