"""Small helpers shared by integration tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from joblet.api.client import Client
from joblet.api.models import JobRecord, JobStatus
from tests.conftest import BIN


def run(
    client: Client, command: str, *args: str, timeout: float = 60, **fields: object
) -> tuple[JobRecord, bytes, bytes]:
    """Run a job to its end; returns its record, stdout and stderr."""
    record = client.run(command, args, **fields)
    out, err = bytearray(), bytearray()
    for stream, data in client.logs(record.id, follow=True):
        (out if stream == "stdout" else err).extend(data)
    return client.wait(record.id, timeout=timeout), bytes(out), bytes(err)


SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(1); s.settimeout(60); print("listening", flush=True)
c, _ = s.accept(); c.sendall(c.recv(16).replace(b"ping", b"pong")); c.close()
"""
CLIENT = """
import socket
for _ in range(100):
    try:
        s = socket.create_connection(("{ip}", 7000), timeout=5); break
    except OSError:
        import time; time.sleep(0.1)
s.sendall(b"ping"); print(s.recv(16).decode())
"""
UPSTREAM = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("203.0.113.2", 7000)); s.listen(1); s.settimeout(60)
c, addr = s.accept(); c.sendall(c.recv(16).replace(b"ping", b"pong")); print(addr[0]); c.close()
"""


def wait_running(client: Client, job_id: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        rec = client.get(job_id)
        if rec.status == JobStatus.RUNNING and rec.ips:
            return rec.ip or ""
        assert time.monotonic() < deadline and not rec.status.final, rec
        time.sleep(0.05)


def connect_ok(client: Client, ip: str, network: str) -> bool:
    probe = CLIENT.replace("range(100)", "range(3)").replace("timeout=5", "timeout=1")
    rec, _, _ = run(client, "python3", "-c", probe.format(ip=ip), network=network)
    return rec.exit_code == 0


def can_ping(client: Client, ip: str, network: str) -> bool:
    rec, _, _ = run(client, "ping", "-c", "1", "-W", "1", ip, network=network)
    return rec.exit_code == 0


SERVE = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(16); print("listening", flush=True)
while True:
    c, _ = s.accept(); c.sendall(c.recv(16).replace(b"ping", b"pong")); c.close()
"""


def serve(client: Client, network: str) -> tuple[str, str]:
    """A job answering on port 7000 until stopped, listening already; returns (job id, its address)."""
    rec = client.run("python3", ("-c", SERVE), network=network)
    ip = wait_running(client, rec.id)
    wait_listening(client, rec.id)
    return rec.id, ip


def wait_listening(client: Client, job_id: str, timeout: float = 30) -> None:
    """Until a server job (SERVER, SERVE) has printed that it listens."""
    eventually(lambda: b"listening" in output(client, job_id), f"job {job_id[:12]} never listened", timeout)


def host_listener(netns: str, port: int = 7000, seconds: int = 60) -> subprocess.Popen[bytes]:
    """A TCP listener on every address of a namespace (e.g. the test host's), ready when returned:
    the namespace itself connects to it first (the positive control of "a job cannot reach it")."""
    script = (
        "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('0.0.0.0', {port})); s.listen(64); time.sleep({seconds})"
    )
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-c", script])
    eventually(lambda: ns_connects(netns, "127.0.0.1", port), f"listener in {netns} never came up", 15)
    return proc


def ns_connects(netns: str, ip: str, port: int = 7000) -> bool:
    """Can a process in `netns` open a TCP connection to ip:port (within 2 s)?"""
    probe = f"import socket; socket.create_connection(('{ip}', {port}), timeout=2).close()"
    return (
        subprocess.run(
            ["ip", "netns", "exec", netns, "python3", "-c", probe], capture_output=True, timeout=30
        ).returncode
        == 0
    )


def wait_port(netns: str, port: int, timeout: float = 15) -> None:
    """Until something in `netns` listens on TCP `port` (without connecting to it)."""

    def listening() -> bool:
        out = subprocess.run(
            ["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True
        ).stdout
        return bool(out.strip())

    eventually(listening, f"nothing listened on port {port} in {netns}", timeout)


def eventually(check: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Poll `check` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def output(client: Client, job_id: str, stream: str | None = "stdout", whole: bool = False) -> bytes:
    """A job's output as recorded so far: one stream, or both (None) in order. `whole`: up to
    its end marker, which follows its last byte (its final record may come before the
    output pump's last write: a COMPLETED job's output read at once lacked its line, once,
    on a slow machine)."""
    return b"".join(d for s, d in client.logs(job_id, follow=whole) if stream is None or s == stream)


LISTEN = """
import socket, sys, time
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
held = []
for port in sys.argv[2:]:
    s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # 127.0.0.1 and ::1 alike
    s.bind((sys.argv[1], int(port))); s.listen(64); held.append(s)
print("ready", flush=True)
time.sleep(120)
"""


def listening(netns: str, address: str, *ports: int) -> subprocess.Popen[str]:
    """TCP listeners on these ports of an address in a namespace, once they listen."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, "python3", "-c", LISTEN, address, *map(str, ports)],
        stdout=subprocess.PIPE,
        text=True,
    )
    if proc.stdout is None or proc.stdout.readline().strip() != "ready":
        proc.kill()
        proc.wait()
        raise AssertionError(f"no listener on {address} in {netns}")
    return proc


@contextlib.contextmanager
def ending(*procs: subprocess.Popen[str]) -> Iterator[None]:
    """Kill and reap `procs` when the block ends, however it ends."""
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def job_file(host: Any, job_id: str, path: str) -> Path | None:
    """`path` as a process inside the job's sandbox sees it (through /proc/<pid>/root), once
    it exists; not bwrap's own process, which is in the cgroup too but sees the host's root."""
    group = Path(host.env["JOBLET_CGROUP_ROOT"]) / job_id / "cgroup.procs"
    for pid in group.read_text().split():
        candidate = Path(f"/proc/{pid}/root{path}")
        try:
            with open(f"/proc/{pid}/status") as fh:
                inside = any(len(line.split()) > 2 for line in fh if line.startswith("NSpid:"))
            if inside and candidate.exists():
                return candidate
        except OSError:
            continue
    return None


def complete(
    host: Any, *words: str, env: dict[str, str] | None = None, timeout: float = 60, typed: bool = False
) -> list[str]:
    """What bash would offer after `rnx WORDS...` (the last word is being typed); `typed`: as
    `TYPE,VALUE` (`file,` where bash is to offer its own file names)."""
    line = ["rnx", *words]
    out = subprocess.run(
        [str(BIN / "rnx")],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            **host.env,
            **(env or {}),
            "_RNX_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(line),
            "COMP_CWORD": str(len(line) - 1),
        },
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return [item if typed else item.split(",", 1)[1] for item in out.stdout.splitlines() if "," in item]


def stop_all(client: Client, job_ids: list[str]) -> None:
    """Stop these jobs, all asked at once, then wait for each one's end (a test's cleanup)."""
    for job_id in job_ids:
        client.stop(job_id)
    for job_id in job_ids:
        client.wait(job_id, timeout=60)
