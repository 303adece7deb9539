"""Deployment files checked by the real tools: the compose file by a Compose implementation's
config check, the systemd unit by `systemd-analyze verify`. No engine or init is started."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
UNIT = ROOT / "deploy" / "joblet-worker.service"


def compose_cmd() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    need(False, "no Compose implementation (apt-get install docker-compose; scripts/install.sh does)")
    raise AssertionError


def compose(path: Path, *args: str, password: str | None = "s3cret") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JOBLET_REDIS_PASSWORD"}
    if password is not None:
        env["JOBLET_REDIS_PASSWORD"] = password
    return subprocess.run(
        [*compose_cmd(), "-f", str(path), "--project-directory", str(ROOT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_compose_file_passes_the_config_check():
    out = compose(COMPOSE, "config", "-q")
    assert out.returncode == 0, out.stderr


def test_compose_config_check_catches_a_bad_file(tmp_path):
    bad = tmp_path / "docker-compose.yml"
    text = COMPOSE.read_text()
    assert "    network_mode: host\n" in text
    bad.write_text(text.replace("    network_mode: host\n", "    netwrok_mode: host\n", 1))
    out = compose(bad, "config", "-q")
    assert out.returncode != 0 and "netwrok_mode" in out.stderr
    assert compose(COMPOSE, "config", "-q", password=None).returncode != 0  # no password: refused


def test_compose_grants_what_the_worker_needs_and_no_more():
    cfg = yaml.safe_load(compose(COMPOSE, "config").stdout)
    services = cfg["services"]
    assert {"redis", "worker", "flower", "rnx"} <= services.keys()
    redis = services["redis"]
    assert "--requirepass" in redis["command"] and "s3cret" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    ports = [p.get("host_ip", "") if isinstance(p, dict) else p for p in redis["ports"]]
    assert ports and all(str(p).startswith("127.0.0.1") for p in ports)
    worker = services["worker"]
    assert worker["network_mode"] == "host" and worker["pid"] == "host"
    assert not worker.get("privileged")
    assert set(worker["cap_add"]) == {"SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"}
    assert any("/sys/fs/cgroup" in str(v) for v in worker["volumes"])
    assert "s3cret@127.0.0.1" in worker["environment"]["JOBLET_REDIS_URL"]


def _unit_copy(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart pointing at this test run's own joblet-worker."""
    path = tmp_path / "joblet-worker.service"
    own = str(Path(sys.executable).parent / "joblet-worker")
    path.write_text(text.replace("/opt/joblet/venv/bin/joblet-worker", own))
    return path


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    need(
        shutil.which("systemd-analyze") is not None,
        "systemd-analyze is not installed (apt-get install systemd; scripts/install.sh does)",
    )
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)


def test_systemd_unit_verifies_cleanly(tmp_path):
    out = verify(_unit_copy(tmp_path, UNIT.read_text()))
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


@pytest.mark.parametrize(
    ("good", "bad", "said"),
    [
        ("KillMode=mixed", "KillMode=leave-it", "kill mode"),
        ("Restart=on-failure", "Restart=sometimes", "Restart"),
    ],
)
def test_systemd_verify_catches_a_bad_unit(tmp_path, good, bad, said):
    text = UNIT.read_text()
    assert good in text
    out = verify(_unit_copy(tmp_path, text.replace(good, bad)))
    assert said.lower() in out.stderr.lower()


def test_unit_leaves_jobs_to_the_worker():
    lines = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert lines["KillMode"] == "mixed" and lines["Restart"] == "on-failure"
    assert int(lines["TimeoutStopSec"]) > 10 + 30  # default stop grace plus teardown
