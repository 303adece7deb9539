"""The worker lock's holders, as /proc/locks names them (a file stands for the namespace)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from joblet.errors import JobletError
from joblet.worker import ns_lock


def test_a_held_lock_names_its_holder_and_a_second_is_refused(tmp_path: Path, monkeypatch):
    ns = tmp_path / "ns"
    ns.write_text("")
    fd = os.open(ns, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a worker holds it (this process)
        assert ns_lock.holders_of(os.fstat(fd)) == [os.getpid()]
        # a second open file description is refused, naming the holder
        with pytest.raises(JobletError, match=rf"another joblet worker .*\(pid {os.getpid()}: "):
            ns_lock.hold(tmp_path / "joblet", namespace=str(ns))
        monkeypatch.setattr(ns_lock, "job_of", lambda pid, root: True)  # the holder is a job
        ns_lock.hold(tmp_path / "joblet", namespace=str(ns))  # starts without the lock
        assert ns_lock._held == []
    finally:
        os.close(fd)
    ns_lock.hold(tmp_path / "joblet", namespace=str(ns))  # the control: free, so taken
    assert len(ns_lock._held) == 1
    os.close(ns_lock._held.pop())
