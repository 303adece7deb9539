"""Network modes: start latency per mode and job-to-job TCP throughput, with baselines
measured in the same run (needs root and iperf3).

    sudo /path/to/venv/bin/python bench/bench_network.py

Reuses bench_start's private redis-server, throwaway namespace and worker. Throughput:
two joblet jobs on one custom network (iperf3 server and client), against the same pair of
plain namespaces on a plain Linux bridge in that namespace, and against loopback. Every
byte stays inside namespaces this run creates. Prints a table, writes
bench/results/network.json, cleans up and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_start import Env, cleanup, measure, start_stack, summarize, verify_clean, write_results

SECONDS, REPEAT = 5, 3
SHAPED_MBIT = (10, 100)  # --max-bandwidth of the iperf3 client job
RESULTS = Path(__file__).resolve().parent / "results" / "network.json"


def iperf_gbits(report: str) -> float:
    return json.loads(report)["end"]["sum_received"]["bits_per_second"] / 1e9


def joblet_pair(client, limits: dict | None = None) -> float:
    """iperf3 between two jobs of one custom network (the client job shaped by `limits`)."""
    # --forceflush: iperf3 buffers its stdout on a pipe, and "Server listening" is the sign
    server = client.run("iperf3", ("-s", "-1", "--forceflush"), network="bench-net")
    deadline = time.monotonic() + 30
    while b"listening" not in b"".join(data for stream, data in client.logs(server.id) if stream == "stdout"):
        rec = client.get(server.id)
        if time.monotonic() > deadline or rec.status.final:
            raise RuntimeError(f"iperf3 server job never listened: {rec.status.value} {rec.error}")
        time.sleep(0.02)
    rec = client.get(server.id)
    job = client.run("iperf3", ("-c", rec.ip, "-t", str(SECONDS), "-J"), network="bench-net", limits=limits or {})
    out = b"".join(data for stream, data in client.logs(job.id, follow=True) if stream == "stdout")
    client.wait(server.id, timeout=30)
    return iperf_gbits(out.decode())


def ns(env: Env, name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def plain_pair(env: Env) -> float:
    """The same iperf3 pair in two plain namespaces on a plain bridge inside the bench namespace."""
    outer, a, b = env.netns, f"{env.netns}-a", f"{env.netns}-b"
    run = lambda *argv: subprocess.run(argv, check=True)  # noqa: E731
    try:
        run("ip", "-n", outer, "link", "add", "pbr0", "type", "bridge")
        run("ip", "-n", outer, "link", "set", "pbr0", "up")
        for i, name in enumerate((a, b), start=2):
            run("ip", "netns", "add", name)
            run("ip", "-n", outer, "link", "add", f"pv{i}", "type", "veth", "peer", "name", "eth0", "netns", name)
            run("ip", "-n", outer, "link", "set", f"pv{i}", "master", "pbr0", "up")
            run("ip", "-n", name, "addr", "add", f"10.99.0.{i}/24", "dev", "eth0")
            run("ip", "-n", name, "link", "set", "eth0", "up")
            run("ip", "-n", name, "link", "set", "lo", "up")
        server = subprocess.Popen(ns(env, a, "iperf3", "-s", "-1"), stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        out = subprocess.run(
            ns(env, b, "iperf3", "-c", "10.99.0.2", "-t", str(SECONDS), "-J"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        server.wait(timeout=30)
        return iperf_gbits(out)
    finally:
        for name in (a, b):
            subprocess.run(["ip", "netns", "del", name], check=False, stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "-n", outer, "link", "del", "pbr0"], check=False)


def loopback(env: Env) -> float:
    server = subprocess.Popen(ns(env, env.netns, "iperf3", "-s", "-1", "-B", "127.0.0.1"), stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    out = subprocess.run(
        ns(env, env.netns, "iperf3", "-c", "127.0.0.1", "-t", str(SECONDS), "-J"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    server.wait(timeout=30)
    return iperf_gbits(out)


def start_case(client, network: str):
    def once() -> None:
        done = client.wait(client.run("true", network=network).id, timeout=30)
        if done.exit_code != 0:
            raise RuntimeError(f"{network}: {done.status.value} {done.error}")

    return once


def main() -> int:
    if os.geteuid() != 0:
        sys.exit("bench_network: must run as root")
    if shutil.which("iperf3") is None:
        sys.exit("bench_network: needs iperf3 (apt-get install iperf3)")
    from rich.console import Console
    from rich.table import Table

    env = Env()
    try:
        client = start_stack(env)
        client.networks.create("bench-net", "10.98.0.0/24")
        latency = {}
        for mode in ("bridge", "bench-net", "isolated"):
            print(f"measuring start latency, {mode} ...", flush=True)
            latency["custom" if mode == "bench-net" else mode] = summarize(measure(start_case(client, mode)))
        throughput: dict[str, list[float]] = {"joblet_network": [], "plain_bridge": [], "loopback": []}
        for i in range(REPEAT):
            print(f"measuring throughput, round {i + 1}/{REPEAT} ...", flush=True)
            throughput["joblet_network"].append(joblet_pair(client))
            throughput["plain_bridge"].append(plain_pair(env))
            throughput["loopback"].append(loopback(env))
        shaping = {}
        for rate in SHAPED_MBIT:
            print(f"measuring shaping at {rate} mbit ...", flush=True)
            got = joblet_pair(client, {"max_bandwidth": f"{rate}mbit"}) * 1000
            shaping[f"{rate}mbit"] = {"target_mbit": rate, "measured_mbit": got, "error": got / rate - 1}
        best = {k: max(v) for k, v in throughput.items()}
        ratio = best["joblet_network"] / best["plain_bridge"]

        table = Table(title="start latency (ms)")
        for col in ("mode", "median", "p90", "min"):
            table.add_column(col, justify="left" if col == "mode" else "right")
        for mode, r in latency.items():
            table.add_row(mode, f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['min_ms']:.1f}")
        Console().print(table)
        table = Table(title=f"job↔job TCP throughput (iperf3, {SECONDS} s, best of {REPEAT}, Gbit/s)")
        for col in ("path", "runs", "best"):
            table.add_column(col)
        for name, runs in throughput.items():
            table.add_row(name, ", ".join(f"{x:.2f}" for x in runs), f"{best[name]:.2f}")
        Console().print(table)
        for name, r in shaping.items():
            print(f"shaping {name}: {r['measured_mbit']:.1f} mbit/s ({r['error']:+.1%}; target within ±10 %)")
        print(f"joblet network / plain bridge = {ratio:.2f} (target ≥ 0.90: {'met' if ratio >= 0.9 else 'NOT met'})")
        write_results(
            RESULTS,
            start_latency=latency,
            throughput_gbit=throughput,
            ratio_vs_plain_bridge=ratio,
            shaping=shaping,
        )
        return 0
    finally:  # the network, its bridge and rules go away with the namespace and Redis
        cleanup(env)
        verify_clean(env)


if __name__ == "__main__":
    sys.exit(main())
