"""All jobs of a host together stay within the jobs' process budget (JOBLET_JOBS_MAX_PIDS, set
on their parent cgroup): jobs at their own limits cannot take the host's last pids."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from tests.conftest import Host, running_host
from tests.integration.helpers import eventually, run

BUDGET = 48
BOMB = "b() { b | b & }; b; sleep 60"


@pytest.fixture(scope="module")
def small(redis_sock: str) -> Iterator[Host]:
    yield from running_host(redis_sock, "hostpids", jobs_max_pids=str(BUDGET))


@pytest.fixture(scope="module")
def small_client(small: Host) -> Client:
    return Client(small.cfg)


def parent_file(host: Host, name: str) -> Path:
    """The jobs' parent group's file: v2 when the pids controller is there, else v1's twin."""
    v2 = host.cfg.cgroup_root / name
    return v2 if v2.exists() else Path("/sys/fs/cgroup/pids") / host.cfg.cgroup_root.name / name


def test_jobs_together_stay_within_the_budget(small: Host, small_client: Client) -> None:
    client = small_client
    assert parent_file(small, "pids.max").read_text().strip() == str(BUDGET)
    bombs = [client.run("bash", ("-c", BOMB), network="none", timeout=30, limits={"max_pids": 64}) for _ in range(2)]
    current = parent_file(small, "pids.current")
    # control: the bombs do fork up to what holds them (each alone may have 64)
    eventually(lambda: int(current.read_text()) >= BUDGET - 4, "the bombs never neared the budget", timeout=20)
    seen = []
    end = time.monotonic() + 2
    while time.monotonic() < end:
        seen.append(int(current.read_text()))
        time.sleep(0.02)
    assert max(seen) <= BUDGET, max(seen)
    beat = client.live_nodes()[small.name]["beat"]
    eventually(lambda: client.live_nodes().get(small.name, {}).get("beat", 0) > beat, "no heartbeat during the bombs")
    for bomb in bombs:
        client.stop(bomb.id)
    for bomb in bombs:
        assert client.wait(bomb.id, timeout=60).status.final
    after, out, _ = run(client, "echo", "budget-back", network="none")  # the pids came back
    assert after.status == JobStatus.COMPLETED and out == b"budget-back\n"
