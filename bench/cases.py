"""The cases bench/run_all.py adds to bench_start's: throughput, output streaming, scale.

Each returns a dict of figures; run_all puts them beside their same-run baselines.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_start import VENV_BIN, Env, machine_busy_s, wait_for

STREAM_BYTES = 200_000_000
STREAM_JOB = f"yes 0123456789abcdef | head -c {STREAM_BYTES}"
TRUE_QUEUE = "bench-true"


def wait_all(client: Any, ids: list[str], timeout: float = 600) -> list[Any]:
    """Every job's final record (each wait blocks on the job's stream, no polling interval)."""
    deadline = time.monotonic() + timeout
    return [client.wait(i, timeout=max(1.0, deadline - time.monotonic())) for i in ids]


def check_done(records: list[Any], what: str) -> None:
    bad = [r for r in records if r.exit_code != 0]
    if bad:
        raise RuntimeError(f"{what}: {len(bad)} jobs failed, e.g. {bad[0].status.value} {bad[0].error}")


def api_throughput(client: Any, network: str, n: int) -> dict[str, float]:
    """n `true` jobs through Client.run, from the first submit to the last job's end."""
    t0, busy0 = time.perf_counter(), machine_busy_s()
    ids = [client.run("true", network=network).id for _ in range(n)]
    submitted = time.perf_counter() - t0
    check_done(wait_all(client, ids), f"api {network}")
    total, busy = time.perf_counter() - t0, machine_busy_s() - busy0
    return {
        "jobs": n,
        "submit_s": submitted,
        "total_s": total,
        "jobs_per_s": n / total,
        "machine_cpu_ms_per_job": busy / n * 1000,  # the client's, Redis's and the kernel's included
    }


def cli_batch(env: Env, client: Any, n: int) -> dict[str, float]:
    """n detached `true` jobs through one `rnx batch` process; then until all have ended."""
    lines = "".join("--network=none true\n" for _ in range(n)).encode()
    t0 = time.perf_counter()
    out = subprocess.run(
        [str(VENV_BIN / "rnx"), "batch"], input=lines, env=env.joblet_env(), capture_output=True, check=True
    )
    submitted = time.perf_counter() - t0
    ids = out.stdout.decode().split()
    if len(ids) != n:
        raise RuntimeError(f"rnx batch printed {len(ids)} ids for {n} lines: {out.stderr[-500:]!r}")
    check_done(wait_all(client, ids), "rnx batch")
    total = time.perf_counter() - t0
    return {
        "jobs": n,
        "submit_s": submitted,
        "submissions_per_s": n / submitted,
        "total_s": total,
        "jobs_per_s": n / total,
    }


def true_app(sock: str) -> Any:
    from celery import Celery

    url = f"redis+socket://{sock}"
    app = Celery("bench-true", broker=url, backend=url, set_as_current=False)
    app.conf.update(task_default_queue=TRUE_QUEUE, broker_connection_retry_on_startup=True)
    app.task(name="run_true")(run_true)
    return app


def run_true() -> int:
    """The Celery baseline's task: run /bin/true and return its status."""
    return subprocess.run(["/bin/true"], check=False).returncode


def start_true_worker(env: Env, concurrency: int) -> Any:
    env.spawn([sys.executable, __file__, "true-worker", str(env.sock), str(concurrency)], "true-worker.log")
    app = true_app(str(env.sock))
    wait_for(lambda: bool(app.control.ping(timeout=0.5)), "celery /bin/true worker", 60)
    return app


def run_true_worker(sock: str, concurrency: str) -> None:
    true_app(sock).worker_main(
        [
            "worker",
            "-P",
            "threads",
            "-c",
            concurrency,
            "-Q",
            TRUE_QUEUE,
            "-l",
            "WARNING",
            "-n",
            "true@bench",
            "--without-mingle",
            "--without-heartbeat",
            "--without-gossip",
        ]
    )


def celery_true(app: Any, n: int) -> dict[str, float]:
    """Baseline: n Celery tasks that each run /bin/true, sent by name, results awaited."""
    t0, busy0 = time.perf_counter(), machine_busy_s()
    results = [app.send_task("run_true", queue=TRUE_QUEUE) for _ in range(n)]
    codes = [r.get(timeout=600) for r in results]
    total, busy = time.perf_counter() - t0, machine_busy_s() - busy0
    if any(codes):
        raise RuntimeError("celery /bin/true baseline: a task failed")
    return {"jobs": n, "total_s": total, "jobs_per_s": n / total, "machine_cpu_ms_per_job": busy / n * 1000}


def hash_stream(argv: list[str], env: dict[str, str] | None) -> tuple[float, int, str]:
    """Run argv, hashing its stdout as it comes: (seconds, bytes, sha256)."""
    digest, size = hashlib.sha256(), 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    while chunk := proc.stdout.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    if proc.wait() != 0:
        raise RuntimeError(f"{argv[:3]}... exited {proc.returncode}")
    return time.perf_counter() - t0, size, digest.hexdigest()


def streaming(env: Env, client: Any) -> dict[str, Any]:
    """200 MB from a job through an attached `rnx run` and through `rnx log -f` of a live job,
    byte-exact against the same command run locally (the baseline)."""
    rnx, jenv = str(VENV_BIN / "rnx"), env.joblet_env()
    local = hash_stream(["sh", "-c", STREAM_JOB], None)
    attached = hash_stream([rnx, "run", "--network=none", "--max-output=256M", "sh", "-c", STREAM_JOB], jenv)
    job = client.run("sh", ("-c", STREAM_JOB), network="none", limits={"max_output": 256 << 20})
    followed = hash_stream([rnx, "log", "-f", job.id], jenv)
    out: dict[str, Any] = {"bytes": STREAM_BYTES}
    for name, (secs, size, digest) in (("local_pipe", local), ("rnx_run", attached), ("rnx_log_f", followed)):
        out[name] = {
            "s": secs,
            "mb_per_s": size / secs / 1e6,
            "byte_exact": size == STREAM_BYTES and digest == local[2],
        }
    return out


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and Threads of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"rss_mib": int(fields["VmRSS"].split()[0]) // 1024, "threads": int(fields["Threads"])}


def scale(client: Any, worker_pid: int, n: int) -> dict[str, Any]:
    """n bridge jobs running at once: time until all run, teardown of all, worker RSS/threads."""
    idle = proc_status(worker_pid)
    t0, wall0 = time.perf_counter(), time.time()
    ids = [client.run("sleep", ("600",), network="bridge").id for _ in range(n)]
    submitted = time.perf_counter() - t0
    poll_until(lambda: statuses(client, ids).count("RUNNING") == n, f"{n} bridge jobs running", 600)
    # when the last one became RUNNING, as its worker recorded it (same host, same clock):
    # the poll's 0.2 s tick would add ~0.1 s on average, 0.3 ms per job of 300
    all_running = max(fields(client, ids, "started")) - wall0
    busy = proc_status(worker_pid)
    t1 = time.perf_counter()
    for i in ids:
        client.store.request_stop(i)
    finals = wait_all(client, ids)
    teardown = time.perf_counter() - t1
    stopped = sum(r.status.value == "STOPPED" for r in finals)
    return {
        "jobs": n,
        "submit_s": submitted,
        "all_running_s": all_running,
        "setup_ms_per_job": all_running / n * 1000,
        "teardown_all_s": teardown,
        "stopped": stopped,
        "worker_idle": idle,
        "worker_busy": busy,
    }


def statuses(client: Any, ids: list[str]) -> list[str]:
    """The jobs' statuses in one round trip."""
    return [found or "" for found in fields(client, ids, "status")]


def fields(client: Any, ids: list[str], name: str) -> list[Any]:
    """One field of each job's record, in one round trip (None where it is not set)."""
    pipe = client.store.redis.pipeline(transaction=False)
    for i in ids:
        pipe.hget(client.store.keys.job(i), name)
    return [json.loads(raw) if raw else None for raw in pipe.execute()]


def poll_until(check: Callable[[], bool], what: str, timeout: float) -> None:
    """Checks every 0.2 s (a bench, not a test: counting 500 records is the measurement's tick)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


if __name__ == "__main__" and sys.argv[1:2] == ["true-worker"]:
    run_true_worker(sys.argv[2], sys.argv[3])
