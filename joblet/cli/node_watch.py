"""What `rnx run`, `rnx log -f` and `rnx stop` say when a job's node stops heartbeating
while they wait for the job."""

from __future__ import annotations

import sys
import time
from typing import Any


def warn_if_node_down(
    client: Any, job_id: str, said: str | None, where: tuple[Any, str | None] | None = None
) -> str | None:
    """Its node's heartbeat is gone while the job runs (its worker killed, its host down):
    rnx said nothing and waited for good where no other node marks the job LOST. Said once
    per node (`said`: the node told of; returned, or the new one), and again if the job moves
    on (rnx still waits: a worker that comes back ends the job LOST, or a stop, or Ctrl-C).
    `rnx run` and `rnx log -f` (usability run: it waited silently). `where`: the job's
    status and node, read by the caller already (else read here)."""
    from joblet.errors import JobletError

    try:
        status, node = client.store.where_is(job_id) if where is None else where
        if status is None or status.value != "RUNNING" or node is None or node == said:
            return said
        if not heartbeat_stopped(client, node):
            return said
    except (JobletError, ValueError):  # Redis gone, or a record that does not read: the reads go on
        return said
    sys.stderr.write(
        f"rnx: job {job_id[:12]} runs on node {node!r}, whose heartbeat has stopped (its "
        f"worker down?); waiting until it is marked lost or its worker returns (Ctrl-C leaves it)\n"
    )
    return node


def silent_for(client: Any, node: str) -> float | None:
    """Seconds since `node`'s last heartbeat once its presence has expired, else None (also
    when Redis cannot say). `rnx stop`'s wait for a job on that node."""
    from joblet.errors import JobletError

    try:
        if not heartbeat_stopped(client, node):
            return None
        row = next((n for n in client.nodes() if n["name"] == node), None)
        return float(row["heartbeat_age"]) if row is not None else None
    except (JobletError, KeyError, TypeError, ValueError):
        return None


def heartbeat_stopped(client: Any, node: str) -> bool:
    """`node`'s presence has expired (three beats missed): its worker killed, or its host down."""
    return node not in client.live_nodes()


class NodeDownNote:
    """`rnx log -f`'s idle call: warn_if_node_down, looking at most every NODE_LOOK seconds."""

    def __init__(self, client: Any) -> None:
        self.client, self.said, self.look_at = client, None, time.monotonic() + NODE_LOOK

    def __call__(self, job_id: str) -> None:
        if time.monotonic() >= self.look_at:
            self.look_at = time.monotonic() + NODE_LOOK
            self.said = warn_if_node_down(self.client, job_id, self.said)


NODE_LOOK = 5.0  # seconds between looks at a followed job's node (its heartbeat expires in 3 beats)
