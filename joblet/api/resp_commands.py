"""The Redis commands joblet's stores send, spelled as in redis-py and answered with its reply
types: `Commands._send` runs one (client) or queues it (pipeline); see resp.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _pairs(reply: Any) -> dict[bytes, bytes]:
    return dict(zip(reply[::2], reply[1::2], strict=True)) if reply else {}


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [(entry_id, _pairs(fields)) for entry_id, fields in reply or []]


def _streams(reply: Any) -> list[list[Any]]:
    return [[key, _entries(entries)] for key, entries in reply or []]


class Commands:
    """The commands joblet's stores send, spelled as in redis-py; `_send` runs or queues one."""

    def _send(self, args: tuple[Any, ...], convert: Callable[[Any], Any] | None = None) -> Any:
        raise NotImplementedError

    def ping(self) -> Any:
        return self._send(("PING",), lambda r: r == b"PONG")

    def get(self, name: str) -> Any:
        return self._send(("GET", name))

    def set(self, name: str, value: Any, ex: int | None = None, px: int | None = None, nx: bool = False) -> Any:
        args: tuple[Any, ...] = ("SET", name, value)
        args += ("EX", ex) if ex is not None else ()
        args += ("PX", px) if px is not None else ()
        args += ("NX",) if nx else ()
        return self._send(args, lambda r: True if r == b"OK" else None)

    def exists(self, *names: str) -> Any:
        return self._send(("EXISTS", *names))

    def delete(self, *names: str) -> Any:
        return self._send(("DEL", *names))

    def expire(self, name: str, time: int) -> Any:
        return self._send(("EXPIRE", name, time), bool)

    def pexpire(self, name: str, time: int) -> Any:
        return self._send(("PEXPIRE", name, time), bool)

    def mget(self, keys: Any, *args: str) -> Any:
        return self._send(("MGET", *([keys] if isinstance(keys, str | bytes) else keys), *args))

    def hget(self, name: str, key: str) -> Any:
        return self._send(("HGET", name, key))

    def hset(self, name: str, key: Any = None, value: Any = None, mapping: dict[Any, Any] | None = None) -> Any:
        pairs = [] if key is None else [key, value]
        for field, data in (mapping or {}).items():
            pairs += [field, data]
        return self._send(("HSET", name, *pairs))

    def hsetnx(self, name: str, key: str, value: Any) -> Any:
        return self._send(("HSETNX", name, key, value))

    def hgetall(self, name: str) -> Any:
        return self._send(("HGETALL", name), _pairs)

    def hkeys(self, name: str) -> Any:
        return self._send(("HKEYS", name))

    def hvals(self, name: str) -> Any:
        return self._send(("HVALS", name))

    def hdel(self, name: str, *keys: str) -> Any:
        return self._send(("HDEL", name, *keys))

    def hexists(self, name: str, key: str) -> Any:
        return self._send(("HEXISTS", name, key), bool)

    def hincrby(self, name: str, key: str, amount: int = 1) -> Any:
        return self._send(("HINCRBY", name, key, amount))

    def zadd(self, name: str, mapping: dict[Any, float]) -> Any:
        pairs: list[Any] = []
        for member, score in mapping.items():
            pairs += [score, member]
        return self._send(("ZADD", name, *pairs))

    def zrange(self, name: str, start: int, end: int) -> Any:
        return self._send(("ZRANGE", name, start, end))

    def zrevrange(self, name: str, start: int, end: int) -> Any:
        return self._send(("ZREVRANGE", name, start, end))

    def zcard(self, name: str) -> Any:
        return self._send(("ZCARD", name))

    def zrem(self, name: str, *values: Any) -> Any:
        return self._send(("ZREM", name, *values))

    def zrevrangebyscore(self, name: str, max: Any, min: Any) -> Any:  # noqa: A002 - redis-py's names
        return self._send(("ZREVRANGEBYSCORE", name, max, min))

    def zscore(self, name: str, value: Any) -> Any:
        return self._send(("ZSCORE", name, value), lambda r: None if r is None else float(r))

    def zremrangebyscore(self, name: str, min: Any, max: Any) -> Any:  # noqa: A002 - redis-py's names
        return self._send(("ZREMRANGEBYSCORE", name, min, max))

    def lpush(self, name: str, *values: Any) -> Any:
        return self._send(("LPUSH", name, *values))

    def publish(self, channel: str, message: Any) -> Any:
        return self._send(("PUBLISH", channel, message))

    def xadd(
        self, name: str, fields: dict[Any, Any], id: str = "*", maxlen: int | None = None, approximate: bool = True
    ) -> Any:
        args: tuple[Any, ...] = ("XADD", name)
        args += ("MAXLEN", "~" if approximate else "=", maxlen) if maxlen is not None else ()
        pairs: list[Any] = []
        for field, data in fields.items():
            pairs += [field, data]
        return self._send((*args, id, *pairs))

    def xread(self, streams: dict[Any, Any], count: int | None = None, block: int | None = None) -> Any:
        args: tuple[Any, ...] = ("XREAD",)
        args += ("COUNT", count) if count is not None else ()
        args += ("BLOCK", block) if block is not None else ()
        return self._send((*args, "STREAMS", *streams.keys(), *streams.values()), _streams)

    def xrevrange(self, name: str, max: str = "+", min: str = "-", count: int | None = None) -> Any:  # noqa: A002
        args: tuple[Any, ...] = ("XREVRANGE", name, max, min)
        return self._send(args + (("COUNT", count) if count is not None else ()), _entries)
