"""The one place a Redis connection is made and its errors are translated."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from joblet.errors import BackendUnavailable, PermissionDenied

T = TypeVar("T")


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


POOL_SIZE = 128


def connect(url: str) -> Any:
    """A binary-safe redis-py client with short connect timeouts.

    A blocking pool: when all its connections are busy a caller waits for one (up to 30 s)
    instead of failing; redis-py 8's default pool fails past 100 connections, which a worker
    with hundreds of job threads reaches under load.
    """
    import redis

    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=30,
        socket_connect_timeout=3,
        health_check_interval=30,
        retry_on_timeout=True,
    )
    return redis.Redis(connection_pool=pool)


def translated(url_of: Callable[[Any], str]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a method so redis errors become BackendUnavailable naming the URL."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def inner(self: Any, *args: Any, **kwargs: Any) -> T:
            import redis

            try:
                return fn(self, *args, **kwargs)
            except redis.exceptions.NoPermissionError as exc:
                raise PermissionDenied(
                    f"not allowed for this Redis user at {safe_url(url_of(self))} "
                    f"({str(exc).split(' has no permissions')[0]} has no "
                    "permission); a viewer may only list, status and read logs"
                ) from None
            except redis.exceptions.AuthenticationError as exc:
                raise PermissionDenied(f"Redis at {safe_url(url_of(self))} refused the credentials: {exc}") from None
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                raise BackendUnavailable(f"cannot reach Redis at {safe_url(url_of(self))}: {_reason(exc)}") from None
            except redis.exceptions.ResponseError as exc:
                raise BackendUnavailable(f"Redis at {safe_url(url_of(self))}: {exc}") from None

        return inner

    return wrap


def _reason(exc: Exception) -> str:
    text = str(exc)
    # redis-py prefixes "Error 111 connecting to host:port. " before the OS reason
    return text.rsplit(". ", 1)[-1].rstrip(".") if ". " in text else text
