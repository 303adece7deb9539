"""A killed worker's messages come back at its restart, not an hour later.

On Redis, kombu keeps each message a worker has taken and not yet acknowledged (late acks:
every job, until its end) in one `unacked` hash for the whole broker, and puts it back on its
queue only once it is older than visibility_timeout (an hour). A worker killed with jobs it
had taken but not yet started (claimed) left them PENDING that long, with the worker back
and idle (usability run: 2 of 40, one still waiting 8 minutes on). At its start, before it
consumes, a worker puts back what was taken from its own node's queue: only it reads that
queue (one worker per host, ns_lock), so all of it is a dead predecessor's. Those the
predecessor had started arrive again and are refused as deliveries of a job already claimed
(tasks.accept). Messages of the shared queue may be another live worker's: they wait for
visibility_timeout as before. RabbitMQ gives a dead connection's messages back at once itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)


def restore_own(app: Any, queue: str) -> int:
    """Put back on `queue` the unacknowledged messages taken from it; how many."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        qos = getattr(channel, "qos", None)
        if not hasattr(qos, "restore_by_tag"):  # not Redis: the broker gives them back itself
            return 0
        tags = [tag for tag, raw in channel.client.hscan_iter(channel.unacked_key) if _routed_to(raw, queue)]
        put = sum(_restore(qos, tag.decode() if isinstance(tag, bytes) else tag) for tag in tags)
    if put:
        log.warning("%d message(s) a previous run of this worker had taken put back on its queue", put)
    return put


def _restore(qos: Any, tag: str) -> bool:
    """kombu's own restore (one transaction); one that fails (an entry rewritten since it was
    read) leaves the others to go back all the same."""
    try:
        qos.restore_by_tag(tag)
    except Exception as exc:  # noqa: BLE001 - it comes back after visibility_timeout
        log.warning("unacked message %r not put back: %s: %s", tag, type(exc).__name__, exc)
        return False
    return True


def _routed_to(raw: bytes | str, queue: str) -> bool:
    """Whether an unacked entry, kombu's [message, exchange, routing key], was routed to
    `queue` (its routing key, on the default exchange). Only an entry that ends so is
    decoded: the hash holds every running job's message of the whole fleet, specs with
    their uploads. One nested too deeply (RecursionError) stopped every restore."""
    data = raw if isinstance(raw, bytes) else raw.encode(errors="surrogateescape")
    if not data.rstrip().endswith(json.dumps(queue).encode() + b"]"):  # no copy of what is not ours
        return False
    try:
        entry = json.loads(data)
    except (ValueError, RecursionError):
        return False
    return isinstance(entry, list) and len(entry) == 3 and entry[2] == queue
