"""A job's figures as the worker samples them (stats.py), without root."""

from __future__ import annotations


def test_a_jobs_memory_without_a_cgroup_count_reads_a_bounded_sample(monkeypatch, tmp_path):
    """Without a memory cgroup's count (v1, no --max-memory) a job's memory was every one of
    its processes' resident set, read each heartbeat: 4,000 processes took 80 ms of the
    heartbeat's thread a beat (red-team run). Past STATM_MOST an evenly spread sample is
    read and scaled; a small job (the control) is read whole."""
    from joblet.worker import stats

    read: list[str] = []

    def fake_read(path):
        read.append(str(path))
        return "100 10 0 0 0 0 0" if str(path).startswith("/proc/") else ""

    monkeypatch.setattr(stats, "_read", fake_read)
    small = stats.memory_bytes(tmp_path, tmp_path, list(range(1, 11)))
    assert small == (10 * 10 * stats.PAGE, None) and len([r for r in read if r.startswith("/proc/")]) == 10
    read.clear()
    big = stats.memory_bytes(tmp_path, tmp_path, list(range(1, 4001)))
    assert big == (4000 * 10 * stats.PAGE, None)
    assert len([r for r in read if r.startswith("/proc/")]) <= stats.STATM_MOST
