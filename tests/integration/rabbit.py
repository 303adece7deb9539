"""A private RabbitMQ for tests: its own network namespace (the "broker host"), node name,
port, data, cookie and epmd, joined to the test process and to each test host by a LAN
bridge. Never the machine's own RabbitMQ; stopped by PID."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.conftest import Host, sh

LAN = ipaddress.IPv4Network("10.213.7.0/24")  # checked free against the machine's routes first
PORT = 35672
BIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves: Debian's /usr/sbin wrappers su to rabbitmq


def lan_is_free() -> bool:
    routes = sh("ip", "-4", "route", "show", "table", "all").stdout.split()
    nets = [ipaddress.IPv4Network(w, strict=False) for w in routes if "/" in w and w[0].isdigit()]
    addrs = [
        ipaddress.IPv4Network(w, strict=False)
        for w in sh("ip", "-4", "-o", "addr").stdout.split()
        if "/" in w and w[0].isdigit()
    ]
    return not any(n.overlaps(LAN) for n in nets + addrs)


class Rabbit:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.netns = f"jrmq-{self.tag}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"joblet-rmq-{self.tag}-"))
        self.hosts = 0
        self.pid: int | None = None
        self.address = str(LAN.network_address + 1)
        self.url = f"amqp://guest:guest@{self.address}:{PORT}//"
        sh("ip", "netns", "add", self.netns)
        self._ns("ip", "link", "set", "lo", "up")
        # a fixed MAC: a bridge otherwise takes its ports' lowest, which changes as hosts come
        # and go, and peers' ARP caches then point at a MAC nobody has for a while
        self._ns("ip", "link", "add", "br0", "address", "02:6a:62:00:00:01", "type", "bridge")
        self._ns("ip", "addr", "add", f"{self.address}/{LAN.prefixlen}", "dev", "br0")
        self._ns("ip", "link", "set", "br0", "up")
        self._plug(None, f"jr{self.tag}", str(LAN.network_address + 254))

    def _ns(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.netns, *argv)

    def _plug(self, host: Host | None, name: str, address: str) -> None:
        """A veth from the LAN bridge to a host (None: the test process's namespace)."""
        where = [] if host is None else ["-n", host.netns]
        sh("ip", *where, "link", "add", name, "type", "veth", "peer", "name", f"p{name}", "netns", self.netns)
        self._ns("ip", "link", "set", f"p{name}", "master", "br0", "up")
        sh("ip", *where, "addr", "add", f"{address}/{LAN.prefixlen}", "dev", name)
        sh("ip", *where, "link", "set", name, "up")

    def join(self, host: Host) -> None:
        self.hosts += 1
        self._plug(host, f"jl{self.tag}{self.hosts}", str(LAN.network_address + 10 + self.hosts))

    def env(self) -> dict[str, str]:
        t = self.tmp
        (t / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {PORT}\nloopback_users = none\nconsumer_timeout = 86400000\n"
        )
        for name in ("enabled_plugins", "env.conf"):
            (t / name).write_text("")
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(t),
            "RABBITMQ_CONF_ENV_FILE": str(t / "env.conf"),
            "RABBITMQ_NODENAME": f"joblet{self.tag}@localhost",
            "RABBITMQ_NODE_PORT": str(PORT),
            "RABBITMQ_DIST_PORT": str(PORT + 1),
            "RABBITMQ_MNESIA_BASE": str(t / "mnesia"),
            "RABBITMQ_LOG_BASE": str(t / "log"),
            "RABBITMQ_PID_FILE": str(t / "pid"),
            "RABBITMQ_CONFIG_FILE": str(t / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(t / "enabled_plugins"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(t / "advanced.config"),
        }

    def start(self, timeout: float = 90) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.netns, str(BIN / "rabbitmq-server"), "-detached"],
            env=self.env(),
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + timeout
        while not self._listening():
            assert time.monotonic() < deadline, f"RabbitMQ did not start: {self.log()}"
            time.sleep(0.2)
        self.pid = int((self.tmp / "pid").read_text())

    def _listening(self) -> bool:
        if not (self.tmp / "pid").exists():
            return False
        try:
            socket.create_connection((self.address, PORT), timeout=0.5).close()
            return True
        except OSError:
            return False

    def log(self) -> str:
        logs = sorted((self.tmp / "log").glob("*.log")) if (self.tmp / "log").is_dir() else []
        return logs[0].read_text(errors="replace")[-3000:] if logs else "(no log)"

    def close(self) -> None:
        """Stop the server by its PID, then what it left in its namespace (its epmd)."""
        if self.pid is not None:
            _kill_and_wait(self.pid)
        for pid in sh("ip", "netns", "pids", self.netns, check=False).stdout.split():
            _kill_and_wait(int(pid))
        sh("ip", "netns", "del", self.netns, check=False)
        sh("ip", "link", "del", f"jr{self.tag}", check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _kill_and_wait(pid: int, timeout: float = 30) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
