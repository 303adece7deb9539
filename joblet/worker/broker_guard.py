"""Guards around kombu's Redis transport, installed once per worker process.

kombu 5.x has two failure modes that stop a Celery worker for good, and a job runner that is
trusted with a fleet must survive both:

- a message on the queue that is not joblet's envelope (not JSON, JSON nested deeper than
  Python's recursion limit, headers of the wrong types, another task) raises inside the
  transport's read loop or in Celery's consumer: "Unrecoverable error", the worker exits,
  or the message goes back on the queue and kills every worker that takes it;
- when Redis restarts, the old channel, detached from its transport, is still used to put
  unacknowledged messages back and to acknowledge tasks that were running during the outage
  (AttributeError: 'NoneType' object has no attribute ...), and Celery stops consuming.

The first is dropped before kombu or Celery look at it (`joblet.worker.envelope`), with one
log line, and counted per reason in Redis (`Keys.dropped`); what Celery itself refuses later
(an unsigned or untrusted signature) is counted too. The second is skipped with a log line:
those messages stay in Redis's unacked set and come back after the visibility timeout, and a
job's claim turns that second delivery into a no-op.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

from joblet.config import Settings
from joblet.worker.envelope import MALFORMED, Policy, problem

log = logging.getLogger(__name__)


class Drops:
    """One log line and a counter per dropped message; never raises."""

    def __init__(self, cfg: Settings) -> None:
        from joblet.api.store import Store

        self.node = cfg.node
        self.store = Store(cfg.redis_url, cfg.key_prefix)

    def drop(self, reason: str, detail: str) -> None:
        log.error("dropped a message (%s): %s", reason, detail[:300])
        self.count(reason)

    def count(self, reason: str) -> None:
        """Count a message refused by reason (its log line is written by the caller)."""
        try:
            self.store.count_drop(self.node, reason)
        except Exception as exc:  # noqa: BLE001 - counting must not stop the consumer
            log.warning("could not count a refused message: %s", exc)


_state: dict[str, Any] = {}


def install(cfg: Settings, signed: bool) -> Drops:
    """Guard this process's kombu transport and Celery consumer for this worker's settings."""
    from kombu.transport import redis as kombu_redis

    from joblet.api.keys import RUN_TASK
    from joblet.worker.envelope import JSON_TYPE, SIGNED_TYPE

    _state["policy"] = Policy(RUN_TASK, SIGNED_TYPE if signed else JSON_TYPE, cfg.message_max_bytes)
    _state["drops"] = drops = Drops(cfg)
    if not getattr(kombu_redis, "_joblet_guarded", False):
        refuse_malformed_messages(kombu_redis)
        survive_broker_restarts(kombu_redis)
        count_celery_refusals()
        kombu_redis._joblet_guarded = True  # type: ignore[attr-defined]
    return drops


def drops() -> Drops:
    """The process's drop counter (after `install`)."""
    return _state["drops"]  # type: ignore[no-any-return]


_reading = threading.local()  # set while kombu reads a queue entry (not its own unacked hash)


def safe_loads(original: Any, text: Any, *args: Any, **kwargs: Any) -> Any:
    """kombu's loads, refusing oversized and undecodable queue entries instead of raising."""
    limit = _state["policy"].max_bytes
    if getattr(_reading, "queue", False) and isinstance(text, str | bytes) and len(text) > limit:
        return {MALFORMED: f"message of {len(text)} bytes is over the limit of {limit}"}
    try:
        return original(text, *args, **kwargs)
    except (ValueError, TypeError):
        return {MALFORMED: f"not JSON: {str(text)[:120]!r}"}
    except RecursionError:
        return {MALFORMED: "JSON nested too deeply"}


def reading_queue(method: Any) -> Any:
    """Mark a kombu read of a queue entry: its size limit applies (restoring an unacked
    message also goes through loads, and must not be refused half-way)."""

    @functools.wraps(method)
    def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        _reading.queue = True
        try:
            return method(self, *args, **kwargs)
        finally:
            _reading.queue = False

    return read


def refuse_malformed_messages(kombu_redis: Any) -> None:
    kombu_redis.loads = functools.partial(safe_loads, kombu_redis.loads)
    for name in ("_brpop_read", "_get"):
        setattr(kombu_redis.Channel, name, reading_queue(getattr(kombu_redis.Channel, name)))
    original_deliver = kombu_redis.Transport._deliver

    @functools.wraps(original_deliver)
    def deliver(self: Any, message: Any, queue: Any) -> Any:
        try:
            why = problem(message, _state["policy"])
        except RecursionError:
            why = "nested too deeply"
        if why:
            _state["drops"].drop("envelope", f"queue {queue}: {why}")
            return None
        return original_deliver(self, message, queue)

    kombu_redis.Transport._deliver = deliver


def count_celery_refusals() -> None:
    """What Celery refuses itself (a signature it does not trust, an unknown task): one log
    line naming the message's task, id and why, counted, then acknowledged or rejected as
    Celery does. Celery's own lines dumped the message's body: a job's environment (its
    DB_PASSWORD) in the worker's log at CRITICAL, whatever the level (operator's run)."""
    from celery.worker.consumer.consumer import Consumer

    def undecodable(self: Any, message: Any, exc: Exception) -> None:
        refused(message, "undecodable", exc)
        message.ack()

    def unknown_message(self: Any, body: Any, message: Any) -> None:
        refused(message, "unknown-message", None)
        message.reject_log_error(log, self.connection_errors)

    def unknown_task(self: Any, body: Any, message: Any, exc: Exception) -> None:
        refused(message, "unknown-task", exc)
        message.reject_log_error(log, self.connection_errors)

    def invalid_task(self: Any, body: Any, message: Any, exc: Exception) -> None:
        refused(message, "invalid-task", exc)
        message.reject_log_error(log, self.connection_errors)

    for name, handler in (
        ("on_decode_error", undecodable),
        ("on_unknown_message", unknown_message),
        ("on_unknown_task", unknown_task),
        ("on_invalid_task", invalid_task),
    ):
        setattr(Consumer, name, functools.wraps(getattr(Consumer, name))(handler))


def refused(message: Any, reason: str, exc: Exception | None) -> None:
    """Log and count a message Celery refused: its headers' task and id, and the error's
    first line; never its body."""
    from joblet.text import printable

    headers = getattr(message, "headers", None)
    headers = headers if isinstance(headers, dict) else {}
    why = "not a task message"
    if exc is not None:
        why = str(exc).splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    task, job = (printable(str(headers.get(k)))[:100] for k in ("task", "id"))
    log.error("refused a message (%s) of task %s, id %s: %s", reason, task, job, printable(why))
    _state["drops"].count(reason)


def survive_broker_restarts(kombu_redis: Any) -> None:
    qos = kombu_redis.QoS

    def guarded(method: Any) -> Any:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(self.channel, "connection", None) is None:
                log.warning(
                    "broker channel closed: %s skipped; unacked messages return after the visibility timeout",
                    method.__name__,
                )
                return None
            try:
                return method(self, *args, **kwargs)
            except AttributeError as exc:
                log.warning(
                    "broker channel detached during %s (%s); unacked messages return after the visibility timeout",
                    method.__name__,
                    exc,
                )
                return None

        return call

    for name in ("restore_unacked_once", "ack", "reject"):
        setattr(qos, name, guarded(getattr(qos, name)))
