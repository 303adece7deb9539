"""The peer: `podman run` of `true` with `--network=none` and with a netavark bridge.

Set up by the bench when podman is missing (Debian's podman, runc, netavark, iptables). On
this machine podman needs `--runtime runc`, no default ulimits (its default nofile/nproc
limits cannot be set inside this VM: `default_ulimits = []` plus `--ulimit host`), the
cgroupfs manager, and a root filesystem: a tiny one is built from the host's `true` and
the libraries `ldd` names (no image, no registry). It runs inside the bench's throwaway network
namespace through `nsenter --net` (not `ip netns exec`, whose fresh /sys hides the cgroup
mounts runc needs), so its bridge and iptables rules vanish with that namespace. Its storage
lives in the bench's temp dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PACKAGES = ["podman", "runc", "netavark", "iptables"]
# netavark's IPAM state, podman's lock dir and its shared-memory locks
RUN_STATE = [Path("/run/containers"), Path("/run/libpod"), Path("/dev/shm/libpod_lock")]
CONF = '[containers]\ndefault_ulimits = []\n[network]\nnetwork_backend = "netavark"\n'


def install() -> str | None:
    """Install podman from the distribution if missing; None, or why it cannot run."""
    if shutil.which("podman") and shutil.which("runc") and shutil.which("iptables"):
        return None
    if not shutil.which("apt-get"):
        return "podman is not installed and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], env=env, capture_output=True, text=True
    )
    return None if done.returncode == 0 else f"apt-get install podman failed: {done.stderr[-300:]}"


def build_rootfs(root: Path) -> None:
    """A root filesystem holding /usr/bin/true and its shared libraries."""
    for sub in ("usr/bin", "proc", "sys", "dev", "etc", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/bin/true", root / "usr/bin/true")
    libs = subprocess.run(["ldd", "/usr/bin/true"], capture_output=True, text=True, check=True).stdout
    for word in libs.split():
        if word.startswith("/"):
            target = root / word.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(word).resolve(), target)
    (root / "bin").symlink_to("usr/bin")


class Podman:
    """podman with its state in `tmp`, run in the network namespace `netns`."""

    def __init__(self, tmp: Path, netns: str) -> None:
        self.tmp, self.netns = tmp / "podman", netns
        self.rootfs = self.tmp / "rootfs"
        self.tmp.mkdir()
        build_rootfs(self.rootfs)
        (self.tmp / "containers.conf").write_text(CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.tmp / "containers.conf")}
        self.made = [p for p in RUN_STATE if not p.exists()]

    def close(self) -> None:
        """Remove the state podman and netavark keep outside --root/--runroot, if this run created it."""
        for path in self.made:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def argv(self, network: str) -> list[str]:
        return [
            "nsenter",
            f"--net=/run/netns/{self.netns}",
            "podman",
            "--root",
            str(self.tmp / "root"),
            "--runroot",
            str(self.tmp / "run"),
            "--tmpdir",
            str(self.tmp / "libpod"),
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--runtime",
            "runc",
            "run",
            "--rm",
            "--ulimit",
            "host",
            f"--network={network}",
            "--rootfs",
            f"{self.rootfs}:O",
            "/usr/bin/true",
        ]

    def check(self) -> str | None:
        """None when both modes run here, else podman's own error."""
        for network in ("none", "bridge"):
            done = subprocess.run(self.argv(network), env=self.env, capture_output=True, text=True)
            if done.returncode != 0:
                return f"podman run --network={network}: {done.stderr.strip()[-300:]}"
        return None
