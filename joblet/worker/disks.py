"""The worker's own disks: whether the one under its state_dir or run_dir is full, said in a
job's error (ENOSPC at its start) and published with the heartbeat (placement passes such a
node by, `rnx nodes` shows `up (disk full)`)."""

from __future__ import annotations

import os
from typing import Any


def full_disks(cfg: Any) -> str:
    """What says which of the worker's directories is on a full disk (ENOSPC at a job's
    start), or "" when neither is (the job's own /work, say)."""
    full = full_dirs(cfg)
    if not full:
        return ""
    return f"no space left on this node's disk ({' and '.join(full)}): jobs cannot start here until space is freed"


def full_dirs(cfg: Any) -> list[str]:
    """`state_dir PATH`, `run_dir PATH` for each on a disk with less than FULL_BELOW free (or
    no inode): published with the heartbeat, so that placement passes the node by."""
    full = []
    for setting, path in (("state_dir", cfg.state_dir), ("run_dir", cfg.run_dir)):
        try:
            st = os.statvfs(path)
        except OSError:
            continue
        if st.f_bavail * st.f_frsize < FULL_BELOW or (st.f_files and st.f_favail == 0):
            full.append(f"{setting} {path}")
    return full


FULL_BELOW = 1 << 20  # bytes free under which a directory's disk counts as full
