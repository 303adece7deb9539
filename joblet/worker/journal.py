"""The per-host journal: each job's plan, written before any kernel object is made.

A worker that starts after a crash reads it to remove what no live job owns.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from joblet.network_agent.plan import NetPlan


class Entry(BaseModel):
    """What one job has on this host."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    cgroup: str
    work_dir: str
    run_dir: str
    plan: NetPlan | None = None


class Journal:
    """One small JSON file per job under <state_dir>/journal."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "journal"
        self.dir.mkdir(parents=True, exist_ok=True)

    def record(self, entry: Entry) -> None:
        tmp = self.dir / f".{entry.job_id}.tmp"
        tmp.write_text(entry.model_dump_json())
        os.replace(tmp, self.dir / f"{entry.job_id}.json")

    def forget(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / f"{job_id}.json").unlink()

    def entries(self) -> list[Entry]:
        found = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                found.append(Entry.model_validate(json.loads(path.read_text())))
            except (OSError, ValueError):
                continue
        return found
