"""Whether the worker can pin jobs' OOM score adjustment (execution.oom_floor), on status
files of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from joblet.errors import ExecutionError
from joblet.worker.execution import oom_floor

WITH_SYS_RESOURCE, WITHOUT = "000001ffffffffff", "000001fffeffffff"  # bit 24


def files(tmp_path: Path, caps: str, own: int) -> dict[str, str]:
    (tmp_path / "status").write_text(f"Name:\tjoblet-worker\nCapInh:\t0\nCapEff:\t{caps}\nCapBnd:\t{caps}\n")
    (tmp_path / "adj").write_text(f"{own}\n")
    return {"status": str(tmp_path / "status"), "adj": str(tmp_path / "adj")}


def test_with_cap_sys_resource_jobs_are_pinned(tmp_path):
    assert oom_floor(500, **files(tmp_path, WITH_SYS_RESOURCE, -500)) is None
    # it can lower jobs below itself, but then the worker goes first
    warning = oom_floor(-800, **files(tmp_path, WITH_SYS_RESOURCE, -500))
    assert warning == "the worker's own OOM score adjustment (-500) is not below its jobs' (-800): it may go first"


def test_without_it_jobs_could_go_back_to_the_workers_value(tmp_path):
    warning = oom_floor(500, **files(tmp_path, WITHOUT, 0))
    assert warning == "the worker lacks CAP_SYS_RESOURCE: jobs can lower their OOM score adjustment from 500 to 0"


def test_without_it_a_value_below_the_workers_cannot_be_set(tmp_path):
    with pytest.raises(ExecutionError, match="job_oom_score_adj -100 is below the worker's own \\(0\\)"):
        oom_floor(-100, **files(tmp_path, WITHOUT, 0))
