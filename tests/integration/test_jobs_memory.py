"""All jobs of a host together stay within the jobs' memory (JOBLET_JOBS_MAX_MEMORY, on their
parent cgroup): memory a job handed another job outlives its own group, charged to the
parent, where nothing limited it (red-team run: a chain of jobs took the host's memory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from tests.conftest import Host, running_host
from tests.integration.helpers import eventually, output, run

BUDGET_MB = 160

# keeps every descriptor handed to it over a unix socket in the shared volume
HOLDER = """
import array, os, socket
s = socket.socket(socket.AF_UNIX); s.bind("/volumes/shared/sock"); s.listen(8); print("ready", flush=True)
kept = []
while True:
    c, _ = s.accept()
    fds = array.array("i")
    msg, anc, _, _ = c.recvmsg(1, socket.CMSG_LEN(fds.itemsize))
    fds.frombytes(anc[0][2]); kept.append(fds[0]); c.send(b"k"); print("kept", flush=True)
"""

# fills a memfd of N MB (charged to this job), hands it to the holder, ends
GIVER = """
import array, mmap, os, socket, sys
size = int(sys.argv[1]) << 20
fd = os.memfd_create("x"); os.ftruncate(fd, size)
m = mmap.mmap(fd, size)
for i in range(0, size, 4096):
    m[i] = 1
c = socket.socket(socket.AF_UNIX); c.connect("/volumes/shared/sock")
c.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]); c.recv(1)
print("given", flush=True)
"""


@pytest.fixture(scope="module")
def small(redis_sock: str) -> Iterator[Host]:
    yield from running_host(redis_sock, "hostmem", jobs_max_memory=str(BUDGET_MB))


def parent_limit(host: Host) -> int:
    v2 = host.cfg.cgroup_root / "memory.max"
    path = v2 if v2.exists() else Path("/sys/fs/cgroup/memory") / host.cfg.cgroup_root.name / "memory.limit_in_bytes"
    return int(path.read_text())


def test_memory_handed_between_jobs_stays_within_the_jobs_budget(small: Host) -> None:
    client = Client(small.cfg)
    assert parent_limit(small) == BUDGET_MB << 20
    client.volumes.create("shared")
    holder = client.run("python3", ("-c", HOLDER), network="none", volumes=["shared"], limits={"max_memory": 16})
    try:
        eventually(lambda: b"ready" in output(client, holder.id), "the holder never listened")
        first, out, err = run(
            client, "python3", "-c", GIVER, "100", network="none", volumes=["shared"], limits={"max_memory": 120}
        )
        assert (first.status, out) == (JobStatus.COMPLETED, b"given\n"), (first, err)  # the control
        assert client.get(holder.id).status == JobStatus.RUNNING  # it holds the first 100 MB
        second, out, _ = run(
            client, "python3", "-c", GIVER, "100", network="none", volumes=["shared"], limits={"max_memory": 120}
        )
        assert second.status == JobStatus.FAILED and out == b"", second  # past the jobs' 160 MB
    finally:
        client.stop(holder.id)
        client.wait(holder.id, timeout=60)
        client.volumes.delete("shared")
