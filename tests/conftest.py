"""Fixtures: a private redis-server, a throwaway host network namespace, a real worker.

Tests that need root or Redis fail (not skip) when CI is set.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from joblet.api.client import Client
from joblet.config import Settings, load

BIN = Path(sys.executable).parent


def need(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI: {why}")
    pytest.skip(why)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def private_redis(tmp: Path, *options: str) -> subprocess.Popen[bytes]:
    """A redis-server on `tmp`/redis.sock only (no TCP, nothing saved), ready when returned."""
    sock = tmp / "redis.sock"
    argv = [
        "redis-server",
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        "no",
        *options,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while (
        subprocess.run(["redis-cli", "-s", str(sock), "ping"], capture_output=True).returncode != 0
        and proc.poll() is None
    ):
        assert time.monotonic() < deadline, "redis-server did not answer"
        time.sleep(0.05)
    assert proc.poll() is None, f"redis-server {' '.join(options)} exited at start"
    return proc


@pytest.fixture(scope="module")
def redis_sock() -> Iterator[str]:
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="joblet-redis-"))
    proc = private_redis(tmp)
    yield f"unix://{tmp / 'redis.sock'}"
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(tmp, ignore_errors=True)


def cgroup_base() -> Path:
    for path in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (path / "cgroup.subtree_control").exists():
            return path
    raise RuntimeError("no cgroup v2 hierarchy")


@pytest.fixture
def mount_dir() -> Iterator[Path]:
    """A directory to mount under (root): what is mounted there is detached, the tree removed."""
    need(os.geteuid() == 0, "needs root (mounts)")
    made = Path(tempfile.mkdtemp(prefix="joblet-mounts-"))
    try:
        yield made
    finally:
        for point in mounts_under(made):
            subprocess.run(["umount", "-l", point], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(made)], check=False)


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    return sorted((p for p in points if p.startswith(f"{path}/")), reverse=True)


class Host:
    """A throwaway host: its own network namespace, dirs, key prefix and worker."""

    def __init__(self, redis_url: str, name: str, fleet: Host | None = None, **settings: str) -> None:
        """`fleet`: share that host's keys and queue (two hosts of one installation);
        `settings`: extra JOBLET_* settings, e.g. foreign_forward="insert"."""
        self.tag = uuid.uuid4().hex[:8]
        self.netns = f"joblet-t-{self.tag}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"joblet-{self.tag}-"))
        self.name = name
        self.env = {
            "JOBLET_REDIS_URL": redis_url,
            "JOBLET_KEY_PREFIX": f"t{self.tag}:",
            "JOBLET_QUEUE": f"joblet-{self.tag}",
            "JOBLET_STATE_DIR": str(self.tmp / "state"),
            "JOBLET_RUN_DIR": str(self.tmp / "run"),
            "JOBLET_STOP_GRACE": "2",
            "JOBLET_CGROUP_ROOT": str(cgroup_base() / f"joblet-t-{self.tag}"),
            "JOBLET_HEARTBEAT_INTERVAL": "1",
            # DNS to the test upstream's address fails at once (no listener, or no route)
            # instead of waiting on timeouts, and never leaves the test's namespaces
            "JOBLET_DNS_SERVERS": "203.0.113.2",
            "JOBLET_RUNTIMES_DIR": str(self.tmp / "runtimes"),
        }
        if fleet is not None:
            for key in ("JOBLET_KEY_PREFIX", "JOBLET_QUEUE"):
                self.env[key] = fleet.env[key]
        self.env.update({f"JOBLET_{k.upper()}": v for k, v in settings.items()})
        self.cfg: Settings = load(**{k[7:].lower(): v for k, v in self.env.items()})
        self.worker: subprocess.Popen[bytes] | None = None
        sh("ip", "netns", "add", self.netns)
        sh("ip", "-n", self.netns, "link", "set", "lo", "up")

    def start_worker(self, *extra: str, timeout: float = 10) -> None:
        log = open(self.tmp / "worker.log", "ab")  # noqa: SIM115
        self.worker = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", str(BIN / "joblet-worker"), "--node", self.name, *extra],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=log,
        )
        client = Client(self.cfg)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.name in client.live_nodes():
                return
            assert self.worker.poll() is None, self.log()
            time.sleep(0.05)
        raise AssertionError(f"worker did not start:\n{self.log()}")

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        self.worker = None

    def log(self) -> str:
        path = self.tmp / "worker.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def rnx(
        self, *args: str, timeout: float = 120, env_extra: dict[str, str] | None = None, **kw: object
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(BIN / "rnx"), *args],
            env={**os.environ, **self.env, **(env_extra or {})},
            capture_output=True,
            timeout=timeout,
            **kw,
        )  # type: ignore[call-overload]

    def in_ns(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.netns, *argv, check=False)

    def close(self) -> None:
        self.stop_worker()
        sh("ip", "netns", "del", self.netns, check=False)
        cg = Path(self.env["JOBLET_CGROUP_ROOT"])
        v1 = [Path("/sys/fs/cgroup") / c / cg.name for c in ("cpu", "memory", "blkio", "pids")]
        for group in (cg, *v1):
            if group.exists():
                for child in group.iterdir():
                    if child.is_dir():
                        child.rmdir()
                group.rmdir()
        for mount in mounts_under(self.tmp):  # sized volumes, if the worker did not unmount
            sh("umount", "-l", mount, check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(self.tmp)], check=False)  # any depth a job made


def running_host(
    redis_sock: str,
    name: str,
    env: dict[str, str] | None = None,
    prepare: Callable[[Host], None] | None = None,
    **settings: str,
) -> Iterator[Host]:
    """A throwaway host with its worker running, for a module fixture to yield from: `env`
    extra worker environment, `prepare` run on the host before its worker starts."""
    need(os.geteuid() == 0, "needs root (namespaces, links, nftables)")
    need(shutil.which("nft") is not None, "nft is not installed")
    h = Host(redis_sock, name, **settings)
    h.env.update(env or {})
    try:
        if prepare is not None:
            prepare(h)
        h.start_worker()
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def host(redis_sock: str) -> Iterator[Host]:
    yield from running_host(redis_sock, "hosta")


@pytest.fixture(scope="module")
def client(host: Host) -> Client:
    return Client(host.cfg)


def add_upstream(host: Host) -> str:
    """A namespace behind the host's namespace standing for the internet (203.0.113.0/24)."""
    name = f"joblet-up-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    sh("ip", "-n", host.netns, "link", "add", "upl0", "type", "veth", "peer", "name", "eth0", "netns", name)
    sh("ip", "-n", host.netns, "addr", "add", "203.0.113.1/24", "dev", "upl0")
    sh("ip", "-n", host.netns, "link", "set", "upl0", "up")
    sh("ip", "-n", host.netns, "route", "add", "default", "via", "203.0.113.2")
    sh("ip", "-n", name, "addr", "add", "203.0.113.2/24", "dev", "eth0")
    sh("ip", "-n", name, "link", "set", "eth0", "up")
    sh("ip", "-n", name, "link", "set", "lo", "up")
    return name


def add_guest(netns: str, subnet: str) -> str:
    """A container of the host in `netns`: a bridge `dk0` of its own there holding the
    subnet's .1 (Docker's br-* stands so), and a namespace on it at .2, routed by .1; its name."""
    net = ipaddress.IPv4Network(subnet)
    bridge_ip, guest_ip = net.network_address + 1, net.network_address + 2
    name = f"joblet-t-guest-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    for argv in (
        f"-n {netns} link add dk0 type bridge",
        f"-n {netns} addr add {bridge_ip}/{net.prefixlen} dev dk0",
        f"-n {netns} link set dk0 up",
        f"-n {netns} link add dkv0 master dk0 type veth peer eth0 netns {name}",
        f"-n {netns} link set dkv0 up",
        f"-n {name} addr add {guest_ip}/{net.prefixlen} dev eth0",
        f"-n {name} link set eth0 up",
        f"-n {name} link set lo up",
        f"-n {name} route add default via {bridge_ip}",
    ):
        sh("ip", *argv.split())
    return name


def remove_guest(netns: str, name: str) -> None:
    sh("ip", "netns", "del", name, check=False)
    sh("ip", "-n", netns, "link", "del", "dk0", check=False)


def remove_upstream(host: Host, name: str) -> None:
    sh("ip", "netns", "del", name, check=False)
    sh("ip", "-n", host.netns, "link", "del", "upl0", check=False)


@pytest.fixture(scope="module")
def upstream(host: Host) -> Iterator[str]:
    name = add_upstream(host)
    try:
        yield name
    finally:
        remove_upstream(host, name)
