"""The journal: one append-only log whose live entries a restarted worker reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

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
