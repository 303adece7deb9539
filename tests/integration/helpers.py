"""Small helpers shared by integration tests."""

from __future__ import annotations

from joblet.api.client import Client
from joblet.api.models import JobRecord


def run(
    client: Client, command: str, *args: str, timeout: float = 60, **fields: object
) -> tuple[JobRecord, bytes, bytes]:
    """Run a job to its end; returns its record, stdout and stderr."""
    record = client.run(command, args, **fields)
    out, err = bytearray(), bytearray()
    for stream, data in client.logs(record.id, follow=True):
        (out if stream == "stdout" else err).extend(data)
    return client.wait(record.id, timeout=timeout), bytes(out), bytes(err)
