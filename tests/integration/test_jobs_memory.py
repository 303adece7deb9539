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
        # the jobs' cap struck, not its own 120 MB (it read "killed at its limit of 120 MB")
        assert f"together reached their {BUDGET_MB} MB" in (second.error or ""), second.error
        assert "before its own limit of 120 MB" in (second.error or ""), second.error
        own, _, _ = run(client, "python3", "-c", GIVER, "40", network="none", limits={"max_memory": 24})
        assert own.error == "out of memory: killed at its limit of 24 MB", own  # the control: its own
    finally:
        client.stop(holder.id)
        client.wait(holder.id, timeout=60)
        client.volumes.delete("shared")


# queues up to N MB in loopback TCP connections nobody reads; prints how many it queued
QUEUE_TCP = """
import socket, sys, time
want, queued, held = int(sys.argv[1]) << 20, 0, []
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(256)
chunk = b"x" * 65536
end = time.monotonic() + 8
while queued < want and time.monotonic() < end:
    c = socket.create_connection(server.getsockname()); s, _ = server.accept(); held += [c, s]
    c.setblocking(False)
    stuck = 0
    while queued < want and stuck < 50:
        try:
            queued += c.send(chunk); stuck = 0
        except BlockingIOError:
            stuck += 1; time.sleep(0.002)
print(queued >> 20, flush=True)
"""


def test_tcp_buffers_count_against_the_jobs_budget(small: Host) -> None:
    """Cgroup v1 counts TCP buffers apart from memory, and only where a limit is set: a job
    queued 600 MB of them past a 400 MB cap (red-team run). v2 counts them in memory."""
    client = Client(small.cfg)
    rec, out, _ = run(client, "python3", "-c", QUEUE_TCP, "60", network="none")
    assert rec.status == JobStatus.COMPLETED and int(out) >= 60, (rec, out)  # the control: room for 60
    rec, out, _ = run(client, "python3", "-c", QUEUE_TCP, "400", network="none")
    # within the budget, but for what the kernel lets each socket have past it (tcp_wmem's minimum)
    assert rec.status == JobStatus.COMPLETED and int(out) <= BUDGET_MB + 32, (rec, out)
