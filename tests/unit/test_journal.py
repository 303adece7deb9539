"""The journal: one append-only log whose live entries a restarted worker reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from joblet.api.models import JobStatus
from joblet.worker import journal as journal_mod
from joblet.worker.journal import Entry, Journal


def entry(job_id: str, run_dir: str = "/run/joblet/jobs/x") -> Entry:
    return Entry(job_id=job_id, cgroup=f"/sys/fs/cgroup/joblet/{job_id}", work_dir=run_dir, run_dir=run_dir)


def test_the_latest_entry_wins_and_a_forgotten_job_is_gone(tmp_path: Path):
    j = Journal(tmp_path)
    j.record(entry("a" * 32))
    j.record(entry("a" * 32, "/run/joblet/jobs/later"))
    j.record(entry("b" * 32))
    j.forget("b" * 32)
    j.forget("c" * 32)  # never recorded: nothing to do
    assert [(e.job_id, e.run_dir) for e in j.entries()] == [("a" * 32, "/run/joblet/jobs/later")]
    # a worker started after this one was killed reads the same from the file
    assert [(e.job_id, e.run_dir) for e in Journal(tmp_path).entries()] == [("a" * 32, "/run/joblet/jobs/later")]
    assert list((tmp_path / "journal").iterdir()) == [tmp_path / "journal" / "log"]  # no file per job


def test_an_outcome_kept_with_its_entry_is_read_by_a_restarted_worker(tmp_path: Path):
    j = Journal(tmp_path)
    j.record(entry("a" * 32))
    j.keep_outcome("a" * 32, {"status": JobStatus.FAILED, "exit_code": 3, "finished": 5.0})
    j.keep_outcome("c" * 32, {"status": JobStatus.FAILED})  # forgotten or never recorded: nothing
    again = Journal(tmp_path).entries()
    assert [(e.job_id, e.outcome, e.run_dir) for e in again] == [
        ("a" * 32, {"status": "FAILED", "exit_code": 3, "finished": 5.0}, "/run/joblet/jobs/x")
    ]


def test_a_torn_line_is_skipped(tmp_path: Path):
    j = Journal(tmp_path)
    j.record(entry("a" * 32))
    with open(tmp_path / "journal" / "log", "a") as fh:
        fh.write('{"job_id": "' + "b" * 32 + '", "cgr')  # a power loss mid-line
    again = Journal(tmp_path)
    again.record(entry("c" * 32))  # the torn line was ended first: this one is a line of its own
    again.record(entry("d" * 32))
    assert [e.job_id for e in Journal(tmp_path).entries()] == ["a" * 32, "c" * 32, "d" * 32]


def test_an_older_workers_files_are_read_and_removed_when_forgotten(tmp_path: Path):
    (tmp_path / "journal").mkdir()
    old = tmp_path / "journal" / f"{'e' * 32}.json"
    old.write_text(entry("e" * 32).model_dump_json())
    (tmp_path / "journal" / f"{'f' * 32}.json").write_text("{not json")
    j = Journal(tmp_path)
    assert [e.job_id for e in j.entries()] == ["e" * 32]
    j.forget("e" * 32)
    assert not old.exists() and j.entries() == []


def test_the_log_is_rewritten_with_the_live_entries(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(journal_mod, "COMPACT_AFTER", 3)
    j = Journal(tmp_path)
    j.record(entry("a" * 32))
    for i in range(3):
        j.record(entry(f"{i:032x}"))
        j.forget(f"{i:032x}")
    lines = (tmp_path / "journal" / "log").read_text().splitlines()
    assert [json.loads(line)["job_id"] for line in lines] == ["a" * 32]  # only the live one
    assert (tmp_path / "journal" / "log").stat().st_mode & 0o777 == 0o600  # as the log was made
    j.record(entry("b" * 32))  # and appending goes on, into the new file
    assert [e.job_id for e in Journal(tmp_path).entries()] == ["a" * 32, "b" * 32]


def test_an_entry_that_could_not_be_written_is_not_live(tmp_path: Path):
    journal = Journal(tmp_path)
    journal.record(entry("a" * 32, "/r"))  # the control: written and live
    full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC, as on a full state disk
    os.dup2(full, journal._fd)
    os.close(full)
    with pytest.raises(OSError, match="No space left"):
        journal.record(entry("b" * 32, "/r"))
    assert [e.job_id for e in journal.entries()] == ["a" * 32]


class ShortDisk:
    """`os` as the journal sees it, on a disk that fills up: the next `cut` writes take half
    of what they are given, then raise ENOSPC; every other call is the real one."""

    def __init__(self) -> None:
        self.cut = 0

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        if self.cut == 0:
            return os.write(fd, data)
        self.cut -= 1
        if self.cut % 2 == 1:
            return os.write(fd, bytes(data)[: max(1, len(data) // 2)])
        raise OSError(28, "No space left on device")


def test_a_line_cut_short_by_a_full_disk_does_not_swallow_the_next(tmp_path: Path, monkeypatch):
    disk = ShortDisk()
    monkeypatch.setattr(journal_mod, "os", disk)
    j = Journal(tmp_path)
    j.record(entry("a" * 32))  # the control
    disk.cut = 2  # half the line, then the disk is full
    with pytest.raises(OSError, match="No space left"):
        j.record(entry("b" * 32))
    j.record(entry("c" * 32))  # space again: a line of its own, not the tail of the torn one
    assert [e.job_id for e in j.entries()] == ["a" * 32, "c" * 32]
    assert [e.job_id for e in Journal(tmp_path).entries()] == ["a" * 32, "c" * 32]


def test_a_rewrite_that_fails_leaves_the_log_as_it_was(tmp_path: Path, monkeypatch):
    disk = ShortDisk()
    monkeypatch.setattr(journal_mod, "os", disk)
    monkeypatch.setattr(journal_mod, "COMPACT_AFTER", 1)
    j = Journal(tmp_path)
    j.record(entry("a" * 32))
    j.record(entry("b" * 32))
    log_fd, real_write = j._fd, disk.write

    def write(fd: int, data: bytes) -> int:  # the log's own lines go in; the rewrite's copy is cut
        return os.write(fd, data) if fd == log_fd else real_write(fd, data)

    disk.write = write  # type: ignore[method-assign]
    disk.cut = 2
    j.forget("b" * 32)  # its line, then the rewrite: cut short, then no space (logged, not raised)
    assert not (tmp_path / "journal" / "log.tmp").exists() and j._fd == log_fd
    j.record(entry("e" * 32))  # the log and its descriptor are still the journal's
    assert [e.job_id for e in Journal(tmp_path).entries()] == ["a" * 32, "e" * 32]


def test_an_outcome_holding_unicode_line_separators_is_read_back(tmp_path: Path):
    """Its error text is the job's (a `#!` interpreter's name): U+2028, U+2029 and U+0085 are
    written as they are in JSON, and splitlines() cut the line there, so a restarted worker
    read the entry before it and recorded the job LOST instead of its outcome (review)."""
    j = Journal(tmp_path)
    j.record(entry("a" * 32))
    why = "bad interpreter: /bin/sh\u2028x\u2029y\x85z"
    j.keep_outcome("a" * 32, {"status": JobStatus.FAILED, "error": why})
    j.record(entry("b" * 32))  # the control: a plain entry after it
    again = {e.job_id: e for e in Journal(tmp_path).entries()}
    assert again["a" * 32].outcome == {"status": "FAILED", "error": why} and "b" * 32 in again
