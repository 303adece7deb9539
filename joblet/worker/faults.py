"""Test-only fault points for crash-recovery tests.

With JOBLET_FAULT_PAUSE=<point> in the worker's environment, the job thread that reaches that
point writes the point's name to JOBLET_FAULT_MARKER (a file) and blocks for good, so a test
can SIGKILL the worker exactly there. Points: claimed, planned, attached, running, teardown.
Unset (always, outside tests), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import threading

POINTS = ("claimed", "planned", "attached", "running", "teardown")


def point(name: str, job_id: str) -> None:
    if os.environ.get("JOBLET_FAULT_PAUSE") != name:
        return
    marker = os.environ.get("JOBLET_FAULT_MARKER")
    if marker:
        with open(marker, "a") as fh:
            fh.write(f"{name} {job_id}\n")
    threading.Event().wait()  # until the test kills the process
