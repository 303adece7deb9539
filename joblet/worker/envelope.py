"""What a queue entry must look like before kombu or Celery touch it (pure).

joblet's client sends one task, by name, in Celery's protocol 2: a kombu envelope whose
headers Celery reads before any task code runs. kombu and Celery assume those fields have
the types they write themselves: a list as `id` or `task` raised `TypeError: unhashable`, a
number as `eta` raised in the consumer, and either stopped the worker. So an entry must be
exactly joblet's shape: known header and property fields of the right types, joblet's one
task, the content type the worker accepts (JSON, or Celery's signed `auth` payload with JSON
inside), and for JSON a body `[[], {kwargs}, {embed}]` without callbacks. `problem` returns
why an entry is refused, or None.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

JSON_TYPE = "application/json"
SIGNED_TYPE = "application/data"  # Celery's auth serializer
SIGNED_SEP = b"\x00\x01"  # celery.security.serialization's field separator
MALFORMED = "__joblet_malformed__"

NONE = type(None)
SCALAR = (str, int, float, bool, NONE)
HEADERS: dict[str, tuple[type, ...]] = {
    "lang": (str,),
    "task": (str,),
    "id": (str,),
    "shadow": (str, NONE),
    "eta": (NONE,),
    "expires": (NONE,),
    "group": (str, NONE),
    "group_index": (int, NONE),
    "retries": (int, NONE),
    "timelimit": (list, NONE),
    "root_id": (str, NONE),
    "parent_id": (str, NONE),
    "argsrepr": (str, NONE),
    "kwargsrepr": (str, NONE),
    "origin": (str, NONE),
    "ignore_result": (bool, NONE),
    "replaced_task_nesting": (int, NONE),
    "stamped_headers": (list, NONE),
    "stamps": (dict,),
    "redelivered": (bool, NONE),  # kombu sets it when it restores a message
}
PROPERTIES: dict[str, tuple[type, ...]] = {
    "correlation_id": (str,),
    "reply_to": (str, NONE),
    "delivery_mode": (int, NONE),
    "delivery_info": (dict,),
    "priority": (int, NONE),
    "body_encoding": (str, NONE),
    "delivery_tag": (str,),
}
EMBED = ("callbacks", "errbacks", "chain", "chord")


@dataclass(frozen=True)
class Policy:
    """What this worker accepts."""

    task: str
    content_type: str  # JSON_TYPE, or SIGNED_TYPE when signing is on
    max_bytes: int


def problem(message: Any, policy: Policy) -> str | None:
    """Why this decoded queue entry is refused, or None when it is joblet's shape."""
    if not isinstance(message, dict):
        return f"not an envelope but {type(message).__name__}"
    if MALFORMED in message:
        return str(message[MALFORMED])
    for check in (_top, _properties, _headers):
        why = check(message, policy)
        if why:
            return why
    return _body(message, policy)


def _top(message: dict[str, Any], policy: Policy) -> str | None:
    if not isinstance(message.get("body"), str):  # (a top-level "redelivered" is kombu's too)
        return "body is not a string"
    if not isinstance(message.get("headers"), dict) or not isinstance(message.get("properties"), dict):
        return "headers or properties missing"
    if message.get("content-type") != policy.content_type:
        return f"content type {str(message.get('content-type'))[:60]!r} is not {policy.content_type!r}"
    if message.get("content-encoding") != "utf-8":
        return f"content encoding {str(message.get('content-encoding'))[:60]!r} is not 'utf-8'"
    return None


def _typed(fields: dict[str, Any], known: dict[str, tuple[type, ...]], what: str, unknown_scalars: bool) -> str | None:
    for key, value in fields.items():
        types = known.get(key)
        if types is None and unknown_scalars and isinstance(value, SCALAR):
            continue
        if types is None:
            return f"unknown {what} field {str(key)[:60]!r}"
        if not isinstance(value, types):
            return f"{what} field {key!r} is {type(value).__name__}"
    return None


def _properties(message: dict[str, Any], _policy: Policy) -> str | None:
    props = message["properties"]
    why = _typed(props, PROPERTIES, "property", unknown_scalars=True)
    if why:
        return why
    if "delivery_tag" not in props or "delivery_info" not in props:
        return "delivery_tag or delivery_info missing"
    if props.get("body_encoding") not in (None, "base64"):
        return f"body encoding {str(props['body_encoding'])[:60]!r} is not base64"
    info = props["delivery_info"]
    if not all(isinstance(v, SCALAR) for v in info.values()):
        return "delivery_info holds a non-scalar value"
    if not all(isinstance(info.get(k, ""), str) for k in ("exchange", "routing_key")):
        return "delivery_info exchange or routing_key is not a string"
    return None


def _headers(message: dict[str, Any], policy: Policy) -> str | None:
    headers = message["headers"]
    why = _typed(headers, HEADERS, "header", unknown_scalars=False)
    if why:
        return why
    if headers.get("task") != policy.task:
        return f"task {str(headers.get('task'))[:80]!r} is not {policy.task!r}"
    task_id = headers.get("id")
    if not (isinstance(task_id, str) and 0 < len(task_id) <= 256 and task_id.isascii() and task_id.isprintable()):
        return "header id missing, too long or not printable ASCII"  # Celery logs it before any check
    limit = headers.get("timelimit")
    if limit is not None and (len(limit) != 2 or not all(isinstance(v, int | float | NONE) for v in limit)):
        return "header timelimit is not [soft, hard]"
    if headers.get("stamps") or headers.get("stamped_headers"):
        return "stamped messages are not joblet's"
    return None


def _body(message: dict[str, Any], policy: Policy) -> str | None:
    raw = message["body"]
    try:
        data = base64.b64decode(raw, validate=True) if message["properties"].get("body_encoding") else raw.encode()
        if policy.content_type == SIGNED_TYPE:
            return _signed(data)
        return _json_body(json.loads(data))
    except (ValueError, binascii.Error):
        return "body is not valid base64 or JSON"
    except RecursionError:
        return "body is nested too deeply"


def _json_body(body: Any) -> str | None:
    if not (isinstance(body, list) and len(body) == 3):
        return "body is not [args, kwargs, embed]"
    args, kwargs, embed = body
    if args != [] or not isinstance(kwargs, dict):
        return "body arguments are not keyword arguments only"
    if embed is not None and (not isinstance(embed, dict) or set(embed) - set(EMBED) or any(embed.values())):
        return "body embeds callbacks, a chain or a chord"
    return None


def _signed(data: bytes) -> str | None:
    """Celery checks the signature; only its body is signed, so the inner content type that
    tells Celery how to decode the verified bytes is checked here."""
    fields = base64.b64decode(data, validate=True).split(SIGNED_SEP, 4)
    if len(fields) != 5:
        return "signed body is not signer, signature, type, encoding, body"
    if fields[2] != JSON_TYPE.encode() or fields[3] != b"utf-8":
        return f"signed body's inner content type {fields[2][:60]!r} is not JSON"
    return None
