"""The whole benchmark suite in one command (needs root):

    sudo /path/to/venv/bin/python bench/run_all.py [--jobs 1000] [--scale 500] [--n 30] [--skip-network]

One private Redis, one joblet worker in a throwaway network namespace (bench_start's stack),
a no-op Celery worker and a Celery worker whose task runs /bin/true (same concurrency as the
joblet worker), and podman as the peer (installed if missing, see podman_peer.py). Every
figure is printed beside its same-run baseline and the ratio, with the target where the
issue sets one; bench/results/all.json holds the same rows and the raw figures. Data plane
figures come from bench_network.py, run after this stack is gone. Cleans up everything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import bench_sandbox
import bench_start as bs
import cases
from podman_peer import Podman, install

RESULTS = Path(__file__).resolve().parent / "results" / "all.json"
CONCURRENCY = 512  # the joblet worker's default (JOBLET_CONCURRENCY), given to the Celery baseline too


def latency(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "n": len(ordered),
    }


def row(
    name: str,
    value: float,
    unit: str,
    base: str = "",
    base_value: float | None = None,
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> dict[str, Any]:
    ratio = value / base_value if base_value else None
    return {
        "figure": name,
        "value": value,
        "unit": unit,
        "baseline": base,
        "baseline_value": base_value,
        "ratio": ratio,
        "target": target,
        "met": met,
        "note": note,
    }


def measure_latency(env: bs.Env, client: Any, noop: Any, podman: Podman | None, n: int) -> dict[str, Any]:
    rnx, jenv = str(bs.VENV_BIN / "rnx"), env.joblet_env()
    fns = {
        f"api_{m}": bs.api_job(client, net)
        for m, net in (("none", "none"), ("bridge", "bridge"), ("custom", "bench-net"), ("isolated", "isolated"))
    }
    fns.update({f"rnx_{m}": bs.command([rnx, "run", f"--network={m}", "true"], jenv) for m in ("none", "bridge")})
    fns.update(
        {
            "rnx_help": bs.command([rnx, "--help"], jenv),
            "python_pass": bs.command([sys.executable, "-c", "pass"]),
            "subprocess_true": bs.command(["true"]),
            "unshare_net_true": bs.command(["unshare", "--net", "true"]),
            "celery_noop": lambda: noop.send_task("noop", queue=bs.NOOP_QUEUE).get(timeout=30),
        }
    )
    if podman is not None:
        fns.update(
            {
                f"podman_{m}": lambda m=m: subprocess.run(
                    podman.argv(m), env=podman.env, check=True, stdout=subprocess.DEVNULL
                )
                for m in ("none", "bridge")
            }
        )
    bs.N = n
    out = {}
    for name, fn in fns.items():
        print(f"latency: {name} ...", flush=True)
        out[name] = latency(bs.measure(fn))
    return out


def latency_rows(lat: dict[str, Any]) -> list[dict[str, Any]]:
    p50 = {k: v["p50"] for k, v in lat.items()}
    floor = p50["celery_noop"] + p50["unshare_net_true"]
    rows = [
        row(
            "api none p50",
            p50["api_none"],
            "ms",
            "celery no-op + unshare --net",
            floor,
            "≤ 2×",
            p50["api_none"] <= 2 * floor,
            f"p99 {lat['api_none']['p99']:.1f}",
        )
    ]
    for mode, target in (("bridge", 25), ("custom", 30), ("isolated", 30)):
        rows.append(
            row(
                f"api {mode} p50",
                p50[f"api_{mode}"],
                "ms",
                "api none",
                p50["api_none"],
                f"≤ {target} ms",
                p50[f"api_{mode}"] <= target,
                f"p99 {lat[f'api_{mode}']['p99']:.1f}",
            )
        )
    peer = p50.get("podman_bridge")
    for mode in ("none", "bridge"):
        value = p50[f"rnx_{mode}"]
        base = p50.get(f"podman_{mode}")
        met = value <= 150 and (mode != "bridge" or (peer is not None and value <= 0.5 * peer))
        rows.append(
            row(
                f"rnx run --network={mode} true p50",
                value,
                "ms",
                f"podman run --network={mode}",
                base,
                "≤ 150 ms, ≤ 0.5× podman" if mode == "bridge" else "",
                met if mode == "bridge" else None,
                f"p99 {lat[f'rnx_{mode}']['p99']:.1f}",
            )
        )
    rows.append(
        row(
            "rnx --help p50",
            p50["rnx_help"],
            "ms",
            "python -c pass",
            p50["python_pass"],
            "≤ 60 ms",
            p50["rnx_help"] <= 60,
        )
    )
    for name in ("subprocess_true", "unshare_net_true", "celery_noop", "podman_none", "podman_bridge"):
        if name in p50:
            rows.append(row(f"{name} p50 (baseline)", p50[name], "ms", "subprocess true", p50["subprocess_true"]))
    return rows


def cpu_note(case: dict[str, Any], celery: dict[str, Any]) -> str:
    """The machine's CPU per job (client, Redis, worker, kernel), beside Celery's per task."""
    return f"{case['machine_cpu_ms_per_job']:.1f} ms CPU per job (celery: {celery['machine_cpu_ms_per_job']:.1f})"


def throughput_rows(tp: dict[str, Any]) -> list[dict[str, Any]]:
    base = tp["celery_true"]["jobs_per_s"]
    none, bridge, cli, bare = tp["api_none"], tp["api_bridge"], tp["cli_batch"], tp["sandbox_ceiling"]
    return [
        row(
            f"{none['jobs']} none jobs via API",
            none["jobs_per_s"],
            "jobs/s",
            "celery /bin/true tasks",
            base,
            "≥ 0.7×",
            none["jobs_per_s"] >= 0.7 * base,
            cpu_note(none, tp["celery_true"]),
        ),
        row(
            f"{bridge['jobs']} bridge jobs via API",
            bridge["jobs_per_s"],
            "jobs/s",
            "celery /bin/true tasks",
            base,
            "≥ 100 jobs/s",
            bridge["jobs_per_s"] >= 100,
            cpu_note(bridge, tp["celery_true"]),
        ),
        row(
            f"{cli['jobs']} detached submissions (rnx batch)",
            cli["submissions_per_s"],
            "subm/s",
            "celery /bin/true tasks",
            base,
            "≥ 500/s",
            cli["submissions_per_s"] >= 500,
            f"all ended after {cli['total_s']:.1f} s ({cli['jobs_per_s']:.0f} jobs/s)",
        ),
        row(
            f"{bare['starts']} bare sandboxed none starts, {bare['threads']} at a time",
            bare["starts_per_s"],
            "starts/s",
            "celery /bin/true tasks",
            base,
            note=f"no worker, Celery or Redis: the sandbox alone; machine {bare['machine_busy']:.0%} busy, "
            f"{bare['machine_cpu_ms_per_start']:.1f} ms CPU per start",
        ),
    ]


def stream_rows(st: dict[str, Any]) -> list[dict[str, Any]]:
    base = st["local_pipe"]["mb_per_s"]
    return [
        row(
            f"200 MB output via {label}",
            st[key]["mb_per_s"],
            "MB/s",
            "same command, local pipe",
            base,
            "≥ 100 MB/s",
            st[key]["mb_per_s"] >= 100 and st[key]["byte_exact"],
            "byte-exact" if st[key]["byte_exact"] else "NOT byte-exact",
        )
        for key, label in (("rnx_run", "attached rnx run"), ("rnx_log_f", "rnx log -f"))
    ]


def scale_rows(sc: dict[str, Any]) -> list[dict[str, Any]]:
    busy, idle = sc["worker_busy"], sc["worker_idle"]
    return [
        row(
            f"{sc['jobs']} bridge jobs: setup per job",
            sc["setup_ms_per_job"],
            "ms",
            "",
            None,
            "≤ 10 ms",
            sc["setup_ms_per_job"] <= 10,
            f"all running after {sc['all_running_s']:.1f} s",
        ),
        row(
            f"{sc['jobs']} bridge jobs: teardown of all",
            sc["teardown_all_s"],
            "s",
            "",
            None,
            "≤ 3 s",
            sc["teardown_all_s"] <= 3,
            f"{sc['stopped']} STOPPED",
        ),
        row(f"worker RSS with {sc['jobs']} jobs", busy["rss_mib"], "MiB", "idle worker", idle["rss_mib"]),
        row(f"worker threads with {sc['jobs']} jobs", busy["threads"], "", "idle worker", idle["threads"]),
    ]


def network_rows() -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("bench_network.py"))], check=False)
    path = bs.RESULTS.with_name("network.json")
    if done.returncode != 0 or not path.exists():
        return [row("job↔job TCP", float("nan"), "Gbit/s", note="bench_network.py failed")]
    net = json.loads(path.read_text())
    best = {k: max(v) for k, v in net["throughput_gbit"].items()}
    shaped = [
        row(
            f"shaped job↔job TCP at {name}",
            r["measured_mbit"],
            "Mbit/s",
            "its --max-bandwidth",
            r["target_mbit"],
            "within ±10 %",
            abs(r["error"]) <= 0.10,
        )
        for name, r in net.get("shaping", {}).items()
    ]
    return shaped + [
        row(
            "job↔job TCP (iperf3, best of 3)",
            best["joblet_network"],
            "Gbit/s",
            "plain veth/bridge pair",
            best["plain_bridge"],
            "≥ 0.9×",
            best["joblet_network"] >= 0.9 * best["plain_bridge"],
            f"loopback {best['loopback']:.1f}",
        )
    ]


def show(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="joblet benchmark suite (medians; ratio = figure / same-run baseline)")
    for col in ("figure", "value", "baseline", "ratio", "target", "met", "note"):
        table.add_column(col, justify="right" if col in ("value", "ratio") else "left")
    for r in rows:
        base = f"{r['baseline']} {r['baseline_value']:.1f}" if r["baseline_value"] is not None else r["baseline"]
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        table.add_row(
            r["figure"],
            f"{r['value']:.1f} {r['unit']}",
            base,
            "" if r["ratio"] is None else f"{r['ratio']:.2f}",
            r["target"],
            met,
            r["note"],
        )
    Console(width=200).print(table)


def start_podman(env: bs.Env) -> tuple[Podman | None, str | None]:
    why = install()
    if why:
        return None, why
    podman = Podman(env.tmp, env.netns)
    why = podman.check()
    if why:
        podman.close()
        return None, why
    return podman, None


def run_stack(args: argparse.Namespace, env: bs.Env) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    client = bs.start_stack(env)
    client.networks.create("bench-net", "10.98.0.0/24")
    noop = bs.start_noop_worker(env)
    true_app = cases.start_true_worker(env, CONCURRENCY)
    podman, why = start_podman(env)
    try:
        return measure_all(args, env, client, noop, true_app, podman, why)
    finally:
        if podman is not None:
            podman.close()


def measure_all(
    args: argparse.Namespace, env: bs.Env, client: Any, noop: Any, true_app: Any, podman: Podman | None, why: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    raw: dict[str, Any] = {"podman": why or "ran"}
    raw["latency"] = measure_latency(env, client, noop, podman, args.n)
    print("throughput ...", flush=True)
    raw["throughput"] = {
        "celery_true": cases.celery_true(true_app, args.jobs),
        "api_none": cases.api_throughput(client, "none", args.jobs),
        "api_bridge": cases.api_throughput(client, "bridge", args.jobs),
        "cli_batch": cases.cli_batch(env, client, args.jobs),
        "sandbox_ceiling": bench_sandbox.ceiling(args.jobs, os.cpu_count() or 1),
    }
    print("output streaming ...", flush=True)
    raw["streaming"] = cases.streaming(env, client)
    print(f"scale: {args.scale} bridge jobs ...", flush=True)
    worker = next(p for p in env.procs if "joblet-worker" in " ".join(map(str, p.args)))
    raw["scale"] = cases.scale(client, worker.pid, args.scale)
    rows = (
        latency_rows(raw["latency"])
        + throughput_rows(raw["throughput"])
        + stream_rows(raw["streaming"])
        + scale_rows(raw["scale"])
    )
    if why:
        rows.append(row("podman peer", float("nan"), "", note=f"not run: {why}"))
    return rows, raw


def main() -> int:
    if os.geteuid() != 0:
        sys.exit("run_all: must run as root (the worker builds namespaces and cgroups)")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per throughput case")
    parser.add_argument("--scale", type=int, default=500, help="concurrent bridge jobs")
    parser.add_argument("--n", type=int, default=30, help="runs per latency case (after 3 warm-ups)")
    parser.add_argument("--skip-network", action="store_true", help="skip bench_network.py (iperf3)")
    args = parser.parse_args()
    os.environ["JOBLET_OUTPUT_MAX_BYTES"] = "256M"  # the streaming case's 200 MB fits under the cap
    env = bs.Env()
    try:
        rows, raw = run_stack(args, env)
    finally:
        bs.cleanup(env)
        bs.verify_clean(env)
    if not args.skip_network:
        rows += network_rows()
    show(rows)
    bs.write_results(RESULTS, args=vars(args), rows=rows, raw=raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
