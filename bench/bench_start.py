"""Job start latency of joblet, with baselines, in one self-contained run (needs root).

    sudo /path/to/venv/bin/python bench/bench_start.py

Starts a private redis-server on a unix socket, a joblet worker inside a throwaway network
namespace and a no-op Celery worker, measures, prints a table, writes bench/results/start.json
and always cleans up (processes by PID, the namespace, the cgroup directory, temp dirs).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

N, WARMUP = 30, 3
VENV_BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results" / "start.json"
NOOP_QUEUE = "bench-noop"
TARGETS_MS = {"api_bridge": 25, "rnx_none": 200, "rnx_bridge": 200}  # api_none: see floor_ratio


class Env:
    """Everything the run creates, so that cleanup can undo it."""

    def __init__(self) -> None:
        tag = secrets.token_hex(4)
        self.tmp = Path(tempfile.mkdtemp(prefix="joblet-bench-"))
        self.sock = self.tmp / "redis.sock"
        self.netns = f"joblet-bench-{tag}"
        base = Path("/sys/fs/cgroup")
        self.cgroup = (base if (base / "cgroup.procs").exists() else base / "unified") / self.netns
        self.procs: list[subprocess.Popen] = []
        self.netns_made = False

    @property
    def redis_url(self) -> str:
        return f"unix://{self.sock}"

    def joblet_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            JOBLET_REDIS_URL=self.redis_url,
            JOBLET_STATE_DIR=str(self.tmp / "state"),
            JOBLET_RUN_DIR=str(self.tmp / "run"),
            JOBLET_CGROUP_ROOT=str(self.cgroup),
            JOBLET_KEY_PREFIX="bench:",
            JOBLET_STOP_GRACE="2",
            JOBLET_DNS_SERVERS="192.0.2.53",
        )  # never asked: no route out of the namespace
        env.pop("JOBLET_CONFIG", None)
        return env

    def spawn(self, argv: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        out = open(self.tmp / log, "wb")  # noqa: SIM115 - closed with the temp dir
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(proc)
        return proc


def machine_busy_s() -> float:
    """CPU seconds this machine spent busy (all CPUs, all processes and kernel threads)."""
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def start_redis(env: Env) -> None:
    env.spawn(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(env.sock),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        "redis.log",
    )
    import redis

    wait_for(lambda: redis.Redis(unix_socket_path=str(env.sock)).ping(), "redis")


def start_netns(env: Env) -> None:
    subprocess.run(["ip", "netns", "add", env.netns], check=True)
    env.netns_made = True
    subprocess.run(["ip", "-n", env.netns, "link", "set", "lo", "up"], check=True)


def start_joblet_worker(env: Env, client) -> None:
    env.spawn(
        ["nsenter", f"--net=/run/netns/{env.netns}", str(VENV_BIN / "joblet-worker"), "--node", "bench"],
        "joblet-worker.log",
        env.joblet_env(),
    )
    wait_for(lambda: "bench" in client.live_nodes(), "joblet worker heartbeat", 60)


def noop_app(sock: str):
    from celery import Celery

    url = f"redis+socket://{sock}"
    app = Celery("bench-noop", broker=url, backend=url, set_as_current=False)
    app.conf.update(task_default_queue=NOOP_QUEUE, broker_connection_retry_on_startup=True)
    app.task(name="noop")(noop)
    return app


def noop() -> None:
    """The no-op task of the Celery baseline."""


def start_noop_worker(env: Env) -> object:
    env.spawn([sys.executable, __file__, "noop-worker", str(env.sock)], "noop-worker.log")
    app = noop_app(str(env.sock))
    wait_for(lambda: bool(app.control.ping(timeout=0.5)), "no-op celery worker", 60)
    return app


def run_noop_worker(sock: str) -> None:
    noop_app(sock).worker_main(
        [
            "worker",
            "-P",
            "threads",
            "-c",
            "4",
            "-Q",
            NOOP_QUEUE,
            "-l",
            "WARNING",
            "-n",
            "noop@bench",
            "--without-mingle",
            "--without-heartbeat",
            "--without-gossip",
        ]
    )


def measure(fn: Callable[[], None]) -> list[float]:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(N):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def api_job(client, network: str) -> Callable[[], None]:
    def once() -> None:
        rec = client.run("true", network=network)
        done = client.wait(rec.id, timeout=30)
        if done.exit_code != 0:
            raise RuntimeError(f"api job on {network}: {done.status.value} {done.error}")

    return once


def api_stream(client, network: str) -> Callable[[], None]:
    """Like api_job, but blocks on the output stream's end marker instead of polling."""

    def once() -> None:
        rec = client.run("true", network=network)
        for _ in client.logs(rec.id, follow=True):
            pass
        if client.get(rec.id).exit_code != 0:
            raise RuntimeError(f"api stream job on {network} failed")

    return once


def command(argv: list[str], env: dict[str, str] | None = None) -> Callable[[], None]:
    def once() -> None:
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)

    return once


def benchmarks(env: Env, client, noop) -> dict[str, Callable[[], None]]:
    rnx, jenv = str(VENV_BIN / "rnx"), env.joblet_env()
    return {
        "api_none": api_job(client, "none"),
        "api_bridge": api_job(client, "bridge"),
        "api_none_stream": api_stream(client, "none"),
        "api_bridge_stream": api_stream(client, "bridge"),
        "rnx_none": command([rnx, "run", "--network=none", "true"], jenv),
        "rnx_bridge": command([rnx, "run", "--network=bridge", "true"], jenv),
        "rnx_help": command([rnx, "--help"], jenv),
        "subprocess_true": command(["true"]),
        "unshare_net_true": command(["unshare", "--net", "true"]),
        "celery_noop": lambda: noop.send_task("noop", queue=NOOP_QUEUE).get(timeout=30),
    }


def summarize(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1) + 0.5)],
        "min_ms": ordered[0],
        "n": len(ordered),
    }


def show(results: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"joblet start latency (N={N}, {WARMUP} warm-ups, ms)")
    for col in ("case", "median", "p90", "min", "target (median)", "met"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for name, r in results.items():
        target = TARGETS_MS.get(name)
        met = "" if target is None else ("yes" if r["median_ms"] <= target else "NO")
        table.add_row(
            name,
            f"{r['median_ms']:.1f}",
            f"{r['p90_ms']:.1f}",
            f"{r['min_ms']:.1f}",
            "" if target is None else f"≤ {target}",
            met,
        )
    Console().print(table)


def floor_ratio(results: dict[str, dict[str, float]]) -> dict[str, float] | None:
    """issue 12's target for a none job: api_none <= 2 x (celery_noop + unshare_net_true),
    all three from this run."""
    if not all(k in results for k in ("api_none", "celery_noop", "unshare_net_true")):
        return None
    floor = results["celery_noop"]["median_ms"] + results["unshare_net_true"]["median_ms"]
    ratio = results["api_none"]["median_ms"] / floor
    print(f"api_none / (celery_noop + unshare_net_true) = {ratio:.1f} (target <= 2; floor {floor:.1f} ms)")
    return {"floor_ms": floor, "ratio": ratio, "target": 2.0}


def write_results(path: Path, **figures: Any) -> None:
    """A benchmark's JSON file: the machine it ran on, then its figures (every bench's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        **figures,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")


def write_json(results: dict[str, dict[str, float]]) -> None:
    write_results(
        RESULTS,
        n=N,
        warmup=WARMUP,
        targets_median_ms=TARGETS_MS,
        results=results,
        api_none_over_floor=floor_ratio(results),
    )


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def remove_cgroup(path: Path) -> None:
    if not path.exists():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            sub.rmdir()
        except OSError as exc:
            print(f"cleanup: cannot remove {sub}: {exc}", file=sys.stderr)
    try:
        path.rmdir()
    except OSError as exc:
        print(f"cleanup: cannot remove {path}: {exc}", file=sys.stderr)


def cgroups(env: Env) -> list[Path]:
    """The bench's v2 cgroup and the v1 twins (cpu, memory, blkio, pids) the worker makes on hybrid hosts."""
    return [env.cgroup, *(Path("/sys/fs/cgroup") / c / env.cgroup.name for c in ("cpu", "memory", "blkio", "pids"))]


def cleanup(env: Env) -> None:
    for proc in reversed(env.procs):  # workers first, redis last
        try:
            stop_process(proc)
        except Exception as exc:  # noqa: BLE001 - keep cleaning
            print(f"cleanup: pid {proc.pid}: {exc}", file=sys.stderr)
    if env.netns_made:
        subprocess.run(["ip", "netns", "del", env.netns], check=False)
    for group in cgroups(env):
        remove_cgroup(group)
    if os.environ.get("BENCH_KEEP_LOGS"):
        print(f"logs kept in {env.tmp}")
    else:
        shutil.rmtree(env.tmp, ignore_errors=True)


def verify_clean(env: Env) -> None:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [p.pid for p in env.procs if p.poll() is None]
    problems = (
        ([f"netns {env.netns} still exists"] if env.netns in netns else [])
        + ([f"processes still running: {left}"] if left else [])
        + [f"cgroup {g} still exists" for g in cgroups(env) if g.exists()]
    )
    print("cleanup: " + ("; ".join(problems) if problems else "nothing left behind"))


def start_stack(env: Env):  # noqa: ANN201 - a joblet Client
    """Private Redis, throwaway namespace, a joblet worker in it; a Client talking to them."""
    from joblet.api.client import Client
    from joblet.config import load

    start_redis(env)
    client = Client(load(redis_url=env.redis_url, key_prefix="bench:"))
    start_netns(env)
    start_joblet_worker(env, client)
    return client


def main() -> int:
    if os.geteuid() != 0:
        sys.exit("bench_start: must run as root (the worker builds namespaces and cgroups)")
    env = Env()
    try:
        client = start_stack(env)
        noop = start_noop_worker(env)
        results = {}
        wanted = os.environ.get("BENCH_CASES", "").split(",")  # e.g. api_none,celery_noop
        for name, fn in benchmarks(env, client, noop).items():
            if wanted != [""] and name not in wanted:
                continue
            print(f"measuring {name} ...", flush=True)
            results[name] = summarize(measure(fn))
        show(results)
        write_json(results)
        return 0
    finally:
        cleanup(env)
        verify_clean(env)


if __name__ == "__main__":
    if sys.argv[1:2] == ["noop-worker"]:
        run_noop_worker(sys.argv[2])
    else:
        sys.exit(main())
