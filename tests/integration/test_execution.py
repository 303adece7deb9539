"""Jobs run in fresh namespaces; output and exit status arrive exactly."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time

from joblet.api.models import JobStatus
from tests.integration.helpers import eventually, output, run


def test_none_network_has_only_loopback_up(client):
    rec, out, _ = run(client, "ip", "-o", "link", network="none")
    assert rec.status == JobStatus.COMPLETED
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].split(":")[1].strip() == "lo"
    assert "UP" in lines[0]


def test_hostname_env_and_workdir(client):
    rec, out, _ = run(
        client,
        "sh",
        "-c",
        'echo "$(hostname) $GREETING $(pwd)"',
        network="none",
        name="named-job",
        env={"GREETING": "hi"},
    )
    assert out == b"named-job hi /work\n"
    assert rec.exit_code == 0


def test_job_sees_only_its_own_processes(client):
    _, out, _ = run(client, "sh", "-c", "ls /proc | grep -c '^[0-9]'", network="none")
    assert int(out) <= 5  # init, its reaper sleep, sh, ls, grep


def test_stdout_and_stderr_in_order(client):
    script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done"
    _, out, err = run(client, "sh", "-c", script, network="none")
    assert out == b"".join(b"out%d\n" % i for i in range(1, 6))
    assert err == b"".join(b"err%d\n" % i for i in range(1, 6))


def test_twenty_megabytes_arrive_byte_exact(client):
    script = "head -c 20971520 /dev/urandom | tee /work/blob | sha256sum >&2; cat /work/blob"
    rec, out, err = run(client, "sh", "-c", script, network="none")
    assert rec.status == JobStatus.COMPLETED
    assert len(out) == 20 * 1024 * 1024
    assert hashlib.sha256(out).hexdigest() == err.split()[0].decode()


def test_exit_codes(client):
    for code in (0, 1, 3):
        rec, _, _ = run(client, "sh", "-c", f"exit {code}", network="none")
        assert rec.exit_code == code
        assert rec.status == (JobStatus.COMPLETED if code == 0 else JobStatus.FAILED)


def test_command_not_found_is_127_with_message(client):
    rec, _, err = run(client, "no-such-command-xyz", network="none")
    assert rec.exit_code == 127 and rec.status == JobStatus.FAILED
    assert b"no-such-command-xyz: command not found" in err


def test_a_command_that_cannot_run_is_126_with_the_shells_words(client):
    """An upload with a missing #! interpreter was bwrap's `execvp: No such file or
    directory`, exit 1 (the command's own exit 1, for all one could tell); a file that is not
    executable and a directory were "command not found", 127."""
    import base64

    from joblet.api.models import Upload

    def upload(path: str, text: str, mode: int) -> Upload:
        return Upload(path=path, content=base64.b64encode(text.encode()).decode(), mode=mode)

    ups = [upload("bad.sh", "#!/nonexistent/interp\necho hi\n", 0o755), upload("noexec.sh", "echo hi\n", 0o644)]
    ups.append(upload("good.sh", "#!/bin/sh\necho hi\n", 0o755))
    ups.append(upload("esc.sh", "#!/no/\x1b]0;pwned\x07\necho hi\n", 0o755))  # its #! line escaped too
    cases = {
        "./bad.sh": (126, b"joblet: ./bad.sh: /nonexistent/interp: bad interpreter: No such file or directory\n"),
        "./esc.sh": (126, b"joblet: ./esc.sh: /no/\\x1b]0;pwned\\x07: bad interpreter: No such file or directory\n"),
        "noexec.sh": (126, b"joblet: noexec.sh: Permission denied\n"),
        "/etc": (126, b"joblet: /etc: Is a directory\n"),
        "/tmp": (126, b"joblet: /tmp: Is a directory\n"),  # the sandbox's own, no view on the host
        "/work": (126, b"joblet: /work: Is a directory\n"),
        "/dev/null": (126, b"joblet: /dev/null: Permission denied\n"),
        "./good.sh": (0, b""),  # the control: a script whose interpreter the job has
    }
    for command, (code, said) in cases.items():
        rec, out, err = run(client, command, network="none", uploads=ups)
        assert (rec.exit_code, err) == (code, said), (command, out, err)


def test_signal_killed_job(client):
    rec, _, _ = run(client, "sh", "-c", "kill -KILL $$", network="none")
    # bwrap (like a shell and Docker) reports a death by signal N as 128+N
    assert rec.exit_code == 128 + signal.SIGKILL
    assert rec.status == JobStatus.FAILED and "SIGKILL" in (rec.error or "")


def test_uploads_land_in_work_with_modes(client, tmp_path):
    import base64

    up = [{"path": "a/b.sh", "mode": 0o755, "content": base64.b64encode(b"echo hi").decode()}]
    _, out, _ = run(client, "sh", "-c", "stat -c %a a/b.sh; ./a/b.sh", network="none", uploads=up)
    assert out == b"755\nhi\n"


def test_stop_ends_whole_tree(client, host):
    tag = f"{300 + os.getpid() % 1000}.{time.time_ns() % 10**6:06d}"  # unique among concurrent test runs
    rec = client.run("sh", ("-c", f"sleep {tag} & sleep {tag}1 & echo started; wait"), network="none")
    eventually(lambda: b"started" in output(client, rec.id), "the job never started its tree")
    client.stop(rec.id)
    final = client.wait(rec.id, timeout=30)
    assert final.status == JobStatus.STOPPED
    procs = subprocess.run(["pgrep", "-f", f"sleep {tag}"], capture_output=True, text=True)
    assert procs.stdout.strip() == ""
    assert not (host.cfg.cgroup_root / rec.id).exists()


def test_sigint_to_attached_rnx_stops_the_job(host, client):
    proc = subprocess.Popen(
        [str(host_bin("rnx")), "run", "--network=none", "--name", "ctrlc", "sleep", "299"],
        env={**os.environ, **host.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while True:
        running = [r for r in client.list() if r.name == "ctrlc" and r.status == JobStatus.RUNNING]
        if running:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert client.get(running[0].id).status == JobStatus.STOPPED


def test_a_signal_ignored_when_rnx_started_passes_the_job_by(host, client):
    """`rnx run ... &` in a script starts with SIGINT ignored (and `nohup rnx run` with
    SIGHUP): rnx took the signal all the same and stopped the job at a Ctrl-C meant for the
    script (fleet run). It leaves those as they were; the others still stop the job. Once rnx
    shows the job's first line it follows it, its handlers set: the kernel's mask says which."""
    proc = subprocess.Popen(
        [str(host_bin("rnx")), "run", "--network=none", "--name", "ignoring", "sh", "-c", "echo up; exec sleep 299"],
        env={**os.environ, **host.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509 - the test's own child
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"

    def mask(field: str) -> int:
        line = next(x for x in open(f"/proc/{proc.pid}/status").read().splitlines() if x.startswith(field))
        return int(line.split()[1], 16)

    bit = 1 << (signal.SIGINT - 1)
    assert mask("SigIgn") & bit and not mask("SigCgt") & bit  # the kernel drops a SIGINT: rnx never sees one
    assert mask("SigCgt") & (1 << (signal.SIGTERM - 1))  # the control: the signals it proxies are caught
    running = [r for r in client.list() if r.name == "ignoring" and r.status == JobStatus.RUNNING]
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)  # one it was not told to ignore stops the job
    assert proc.wait(timeout=30) == 143
    assert client.get(running[0].id).status == JobStatus.STOPPED


def host_bin(name: str):
    from tests.conftest import BIN

    return BIN / name


def test_python_api_run_job_signature(host, client):
    """run_job.delay()'s AsyncResult holds the final record; joblet's own sends (rnx, Client.run,
    workflows) store no Celery result, which held the record and up to 1 MiB of stdout a job
    for log_ttl, read by nobody."""
    from joblet.api.tasks import run_job_signature

    result = run_job_signature(host.cfg).delay(command="echo", args=["hi"], network="none")
    final = result.get(timeout=60)
    assert final["status"] == "COMPLETED" and final["exit_code"] == 0
    assert final["output"] == "hi\n" and final["id"] == result.id
    assert client.get(result.id).status == JobStatus.COMPLETED
    meta = f"celery-task-meta-{result.id}"
    assert client.store.redis.exists(meta)  # Celery's result: run_job.delay() reads it
    mine = client.run("echo", ("hi",), network="none")  # joblet's own send: its record, no result
    assert client.wait(mine.id, timeout=60).status == JobStatus.COMPLETED
    assert not client.store.redis.exists(f"celery-task-meta-{mine.id}")


def test_upload_dir_through_rnx(host, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "run.sh").write_text("echo from-upload\n")
    (tmp_path / "sub" / "run.sh").chmod(0o750)
    out = host.rnx("run", "--network=none", f"--upload-dir={tmp_path}", "sub/run.sh")
    assert out.returncode == 0 and out.stdout == b"from-upload\n"


def test_a_jobs_output_is_not_in_the_worker_log(client, host):
    """Celery logged each job's result at INFO, its output's first KiB with it (a job's
    secrets, in a log kept for days): no longer, unless the worker runs at debug level."""
    token = f"SECRET_TOKEN={os.urandom(8).hex()}"
    rec, out, _ = run(client, "echo", token, network="none")
    assert rec.exit_code == 0 and out == f"{token}\n".encode()  # the control: it was printed
    host.stop_worker()  # every line of the job's end written (it logged after the client saw it)
    try:
        whole = (host.tmp / "worker.log").read_text(errors="replace")  # host.log() is its last 4 KiB
        assert token not in whole and "succeeded in" not in whole
        # nor Celery's alarm at every start of a root worker (this one must be root; usability run)
        assert "superuser privileges" not in whole and "joblet@" in whole  # the control: Celery's banner
    finally:
        host.start_worker()
