"""Cross-host job↔job TCP throughput over joblet's overlay, against the same pair over a plain
VXLAN link in the same run (needs root and iperf3).

    sudo /path/to/venv/bin/python bench/bench_overlay.py [--first-contact-only]

Two throwaway hosts (network namespaces, each with its own worker) on a simulated LAN (a
bridge in a namespace of its own, range checked unused against `ip route`), one private
redis-server. joblet: an iperf3 server job on one host, the client job on the other, in a
custom network (bridge + jx* VXLAN port + joblet's nftables tables + the sandbox). Plain: in
the same two hosts, a namespace each behind a plain bridge with a plain VXLAN port (another
VNI and UDP port, same MTU). Then the first contact: a job that connects at once to a job
on the other host, the first of its network there (the other host learns of it as it
starts), against the same from a job on the server's own host. Prints tables, writes
bench/results/overlay.json, cleans up.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_start import write_results  # noqa: E402

from tests.conftest import Host, private_redis  # noqa: E402
from tests.integration.lan import Lan  # noqa: E402

SECONDS, REPEAT = 5, 3
CONTACTS = 20  # first contacts per side
RESULTS = Path(__file__).resolve().parent / "results" / "overlay.json"


def iperf_gbits(report: str) -> float:
    """Received Gbit/s of the last complete iperf3 JSON report in `report` (failed tries before
    it print reports of their own)."""
    decoder, found, at = json.JSONDecoder(), None, report.find("{")
    while at != -1:
        doc, end = decoder.raw_decode(report, at)
        if "sum_received" in doc.get("end", {}):
            found = doc
        at = report.find("{", end)
    if found is None:
        raise RuntimeError(f"no iperf3 result in: {report[-600:]}")
    return float(found["end"]["sum_received"]["bits_per_second"]) / 1e9


def joblet_pair(client, server_node: str, client_node: str) -> float:  # noqa: ANN001
    server = client.run("iperf3", ("-s", "-1"), network="bench-ov", node=server_node)
    deadline = time.monotonic() + 30
    while not (rec := client.get(server.id)).ip:
        if time.monotonic() > deadline or rec.status.final:
            raise RuntimeError(f"iperf3 server job: {rec.status.value} {rec.error}")
        time.sleep(0.05)
    job = client.run(
        "sh",
        ("-c", f"until iperf3 -c {rec.ip} -t {SECONDS} -J; do sleep 0.2; done"),
        network="bench-ov",
        node=client_node,
    )
    out = b"".join(data for stream, data in client.logs(job.id, follow=True))
    done = client.wait(job.id, timeout=60)
    if done.exit_code != 0:
        raise RuntimeError(f"iperf3 client job: {done.status.value} {done.error}: {out[-600:]!r}")
    client.wait(server.id, timeout=60)
    return iperf_gbits(out.decode())


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def plain_link(hosts: list[Host], lan: Lan, mtu: int) -> list[str]:
    """A namespace behind a plain bridge + plain VXLAN port in each host; returns their names."""
    names = []
    for i, h in enumerate(hosts):
        inner, other = f"{h.netns}-p", lan.address(1 - i)
        sh("ip", "netns", "add", inner)
        names.append(inner)
        sh("ip", "-n", h.netns, "link", "add", "pbr0", "mtu", str(mtu), "type", "bridge")
        sh(
            "ip",
            "-n",
            h.netns,
            "link",
            "add",
            "pvx0",
            "mtu",
            str(mtu),
            "type",
            "vxlan",
            "id",
            "99",
            "local",
            lan.address(i),
            "remote",
            other,
            "dstport",
            "4790",
            "nolearning",
        )
        sh(
            "ip",
            "-n",
            h.netns,
            "link",
            "add",
            "pv0",
            "mtu",
            str(mtu),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            inner,
        )
        for port in ("pvx0", "pv0"):
            sh("ip", "-n", h.netns, "link", "set", port, "master", "pbr0", "up")
        sh("ip", "-n", h.netns, "link", "set", "pbr0", "up")
        sh("ip", "-n", inner, "link", "set", "eth0", "mtu", str(mtu), "up")
        sh("ip", "-n", inner, "addr", "add", f"10.97.0.{i + 2}/24", "dev", "eth0")
    return names


def plain_pair(inner: list[str]) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", inner[0], "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while (
            ":5201 "
            not in subprocess.run(
                ["ip", "netns", "exec", inner[0], "ss", "-Hltn"], capture_output=True, text=True
            ).stdout
        ):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the plain iperf3 server did not start")
            time.sleep(0.05)
        argv = ["ip", "netns", "exec", inner[1], "iperf3", "-c", "10.97.0.2", "-t", str(SECONDS), "-J"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS + 30)
        return iperf_gbits(proc.stdout)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


# the job's own clock, from before its connect() to the reply (refused: the server job is
# not listening yet, tried again; the time counts)
CONTACT = """
import socket, time
t = time.monotonic()
while True:
    try:
        s = socket.create_connection(("{ip}", 7000), timeout=10); break
    except ConnectionRefusedError:
        time.sleep(0.01)
s.sendall(b"ping"); assert s.recv(16) == b"pong"
print(round((time.monotonic() - t) * 1000, 2))
"""
SERVE = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(c.recv(16).replace(b"ping", b"pong")); c.close()
"""


def first_contacts(client, server_node: str, client_node: str) -> list[float]:  # noqa: ANN001
    """ms to a reply for CONTACTS jobs on `client_node`, one after another: each is its
    network's only job there (the one before it ended), so the server's host learns of it
    as it starts when the nodes differ."""
    server = client.run("python3", ("-c", SERVE), network="bench-first", node=server_node)
    deadline = time.monotonic() + 30
    while not (rec := client.get(server.id)).ip:
        if time.monotonic() > deadline or rec.status.final:
            raise RuntimeError(f"server job: {rec.status.value} {rec.error}")
        time.sleep(0.05)
    found = []
    try:
        for _ in range(CONTACTS):
            job = client.run("python3", ("-c", CONTACT.format(ip=rec.ip)), network="bench-first", node=client_node)
            out = b"".join(data for stream, data in client.logs(job.id, follow=True) if stream == "stdout")
            done = client.wait(job.id, timeout=60)
            if done.exit_code != 0:
                raise RuntimeError(f"contact job: {done.status.value} {done.error}")
            found.append(float(out))
    finally:
        client.stop(server.id)
        client.wait(server.id, timeout=60)
    return found


def contact_table(runs: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"first contact: connect + reply, ms ({CONTACTS} jobs each)")
    for col in ("path", "median", "p90", "max", "over 500 ms"):
        table.add_column(col)
    summary = {}
    for name, found in runs.items():
        ordered = sorted(found)
        row = {
            "median": statistics.median(ordered),
            "p90": ordered[int(0.9 * (len(ordered) - 1))],
            "max": ordered[-1],
            "over_500ms": sum(1 for x in ordered if x > 500),
        }
        summary[name] = row
        table.add_row(name, *(f"{row[k]:.1f}" for k in ("median", "p90", "max")), str(row["over_500ms"]))
    Console().print(table)
    return summary


def main() -> int:
    if os.geteuid() != 0:
        sys.exit("bench_overlay: must run as root")
    if shutil.which("iperf3") is None:
        sys.exit("bench_overlay: needs iperf3 (apt-get install iperf3)")
    from rich.console import Console
    from rich.table import Table

    from joblet.api.client import Client

    tmp = Path(tempfile.mkdtemp(prefix="joblet-bench-ov-"))
    redis, url = private_redis(tmp), f"unix://{tmp / 'redis.sock'}"
    lan, hosts, inner = Lan(), [], []
    try:
        hosts.append(Host(url, "bencha", underlay_address=lan.address(0)))
        hosts.append(Host(url, "benchb", fleet=hosts[0], underlay_address=lan.address(1)))
        for i, h in enumerate(hosts):
            lan.attach(h.netns, i)
            h.start_worker(timeout=120)  # a busy machine starts workers slowly
        client = Client(hosts[0].cfg)
        client.networks.create("bench-first", "10.95.0.0/24")
        contacts = {
            "same host": first_contacts(client, "bencha", "bencha"),
            "across hosts": first_contacts(client, "bencha", "benchb"),
        }
        summary = contact_table(contacts)
        if "--first-contact-only" in sys.argv[1:]:
            write_results(RESULTS, first_contact_ms=contacts, first_contact=summary)
            return 0
        client.networks.create("bench-ov", "10.96.0.0/24")
        mtu = int(client.live_nodes()["bencha"]["mtu"]) - 50
        inner = plain_link(hosts, lan, mtu)
        ping = subprocess.run(
            ["ip", "netns", "exec", inner[1], "ping", "-c", "1", "-W", "2", "10.97.0.2"], capture_output=True, text=True
        )
        print(ping.stdout.splitlines()[1] if ping.returncode == 0 else f"plain link ping failed: {ping.stdout}")
        runs: dict[str, list[float]] = {"joblet_overlay": [], "plain_vxlan": []}
        for i in range(REPEAT):
            print(f"measuring, round {i + 1}/{REPEAT} ...", flush=True)
            runs["joblet_overlay"].append(joblet_pair(client, "bencha", "benchb"))
            runs["plain_vxlan"].append(plain_pair(inner))
        best = {k: max(v) for k, v in runs.items()}
        ratio = best["joblet_overlay"] / best["plain_vxlan"]
        table = Table(title=f"cross-host TCP throughput (iperf3, {SECONDS} s, best of {REPEAT}, Gbit/s, MTU {mtu})")
        for col in ("path", "runs", "best"):
            table.add_column(col)
        for name, found in runs.items():
            table.add_row(name, ", ".join(f"{x:.2f}" for x in found), f"{best[name]:.2f}")
        Console().print(table)
        print(f"joblet overlay / plain VXLAN = {ratio:.2f} (target ≥ 0.90: {'met' if ratio >= 0.9 else 'NOT met'})")
        write_results(
            RESULTS,
            mtu=mtu,
            throughput_gbit=runs,
            ratio_vs_plain_vxlan=ratio,
            first_contact_ms=contacts,
            first_contact=summary,
        )
        return 0
    finally:
        for name in inner:
            subprocess.run(["ip", "netns", "del", name], check=False)
        for h in reversed(hosts):
            h.close()
        lan.close()
        redis.terminate()
        redis.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
        print("cleaned up: hosts, LAN, redis-server")


if __name__ == "__main__":
    sys.exit(main())
