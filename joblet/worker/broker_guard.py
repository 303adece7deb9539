"""Guards around kombu's Redis transport, installed once per worker process.

kombu 5.x has two failure modes that stop a Celery worker for good, and a job runner that is
trusted with a fleet must survive both:

- a message on the queue that is not a well-formed envelope (not JSON, or JSON of another
  shape) raises inside the transport's read loop: "Unrecoverable error", the worker exits;
- when Redis restarts, the old channel, detached from its transport, is still used to put
  unacknowledged messages back and to acknowledge tasks that were running during the outage
  (AttributeError: 'NoneType' object has no attribute ...), and Celery stops consuming.

The first is dropped with a log line; the second is skipped with a log line: those messages
stay in Redis's unacked set and come back after the visibility timeout, and a job's claim
turns that second delivery into a no-op.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
from typing import Any

log = logging.getLogger(__name__)
MALFORMED = "__joblet_malformed__"


def install() -> None:
    from kombu.transport import redis as kombu_redis

    if getattr(kombu_redis, "_joblet_guarded", False):
        return
    refuse_malformed_messages(kombu_redis)
    survive_broker_restarts(kombu_redis)
    kombu_redis._joblet_guarded = True  # type: ignore[attr-defined]


def well_formed(message: Any) -> bool:
    """The envelope kombu's virtual transport needs before Celery can look at it, and for a
    JSON body Celery's protocol 2 shape [args, kwargs, embed] (Celery does not check it)."""
    if not isinstance(message, dict):
        return False
    props = message.get("properties")
    if not (isinstance(message.get("body"), str) and isinstance(message.get("headers"), dict)
            and isinstance(message.get("content-type"), str) and isinstance(props, dict)
            and isinstance(props.get("delivery_info"), dict) and "delivery_tag" in props):
        return False
    if message["content-type"] != "application/json":
        return True  # signed ("auth") bodies are checked after verification; others refused
    try:
        raw = message["body"]
        body = json.loads(base64.b64decode(raw) if props.get("body_encoding") == "base64" else raw)
    except (ValueError, binascii.Error):
        return True  # Celery reports undecodable bodies itself and goes on
    return (isinstance(body, list) and len(body) == 3 and isinstance(body[0], list)
            and isinstance(body[1], dict) and isinstance(body[2], dict | None))


def refuse_malformed_messages(kombu_redis: Any) -> None:
    original_loads = kombu_redis.loads

    def loads(text: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original_loads(text, *args, **kwargs)
        except ValueError:
            return {MALFORMED: str(text)[:200]}

    kombu_redis.loads = loads
    original_deliver = kombu_redis.Transport._deliver

    @functools.wraps(original_deliver)
    def deliver(self: Any, message: Any, queue: Any) -> Any:
        if not well_formed(message):
            shown = message.get(MALFORMED, message) if isinstance(message, dict) else message
            log.error("dropped a malformed message from queue %s: %.200r", queue, shown)
            return None
        return original_deliver(self, message, queue)

    kombu_redis.Transport._deliver = deliver


def survive_broker_restarts(kombu_redis: Any) -> None:
    qos = kombu_redis.QoS

    def guarded(method: Any) -> Any:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(self.channel, "connection", None) is None:
                log.warning("broker channel closed: %s skipped; unacked messages return after "
                            "the visibility timeout", method.__name__)
                return None
            try:
                return method(self, *args, **kwargs)
            except AttributeError as exc:
                log.warning("broker channel detached during %s (%s); unacked messages return "
                            "after the visibility timeout", method.__name__, exc)
                return None
        return call

    for name in ("restore_unacked_once", "ack", "reject"):
        setattr(qos, name, guarded(getattr(qos, name)))
