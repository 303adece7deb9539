"""The one place a Redis connection is made and its errors are translated."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from joblet.errors import BackendRefused, BackendUnavailable, ConfigError, PermissionDenied

T = TypeVar("T")


def safe_url(url: str) -> str:
    """The URL without its password, for messages; the host and port as written (a port
    that is not a number is shown, not parsed), a password holding '@' hidden whole."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit((parts.scheme, f"{user}:***@{hostport}", parts.path, parts.query, parts.fragment))


POOL_SIZE = 128
_lite = False  # rnx: the small client (resp.py) where it can
_lite_clients: dict[str, Any] = {}


def prefer_lite() -> None:
    """Make `connect` hand out resp.py's client (one connection per URL) for the URLs it reads:
    `rnx` sends a few commands per process, and redis-py's import alone costs ~45 ms."""
    global _lite
    _lite = True


def connect(url: str) -> Any:
    """A Redis client for `url`: redis-py's (`connect_redis_py`), or after `prefer_lite` the
    small one, which hands what it does not do to redis-py."""
    if _lite:
        from joblet.api import resp

        if resp.supports(url):
            if url not in _lite_clients:
                _lite_clients[url] = resp.LiteRedis(url, lambda: connect_redis_py(url))
            return _lite_clients[url]
    return connect_redis_py(url)


def connect_redis_py(url: str) -> Any:
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
        encoding_errors="surrogateescape",  # a name from argv that is not UTF-8: its bytes, as resp.py
    )
    return redis.Redis(connection_pool=pool)


# error replies that say the server cannot take writes now, whatever the command: waited out
# as an outage, not counted against one entry (review: OOM or a failover's READONLY for two
# seconds dropped every job's output and end markers)
SERVER_STATE = frozenset(
    {"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "MISCONF", "OOM", "NOREPLICAS"}
)


def error_kind(exc: BaseException) -> str | None:
    """ "noperm", "auth", "unreachable", "response" for an error of either Redis client (redis-py
    only if it was imported: none of its errors can exist otherwise), else None. An error
    reply of SERVER_STATE, and a reply that does not parse, read as "unreachable"."""
    from joblet.api import resp

    kinds: list[tuple[Any, str]] = [
        (resp.NoPermissionError, "noperm"),
        (resp.AuthenticationError, "auth"),
        (resp.ConnectionError, "unreachable"),
        (resp.ResponseError, "response"),
    ]
    rp = sys.modules.get("redis.exceptions")
    if rp is not None:  # redis-py's AuthenticationError is a ConnectionError: it comes first
        state = tuple(
            getattr(rp, name)
            for name in ("ReadOnlyError", "OutOfMemoryError", "TryAgainError", "ClusterDownError", "MasterDownError")
            if hasattr(rp, name)
        )
        kinds += [
            (rp.NoPermissionError, "noperm"),
            (rp.AuthenticationError, "auth"),
            (rp.ConnectionError, "unreachable"),
            (rp.TimeoutError, "unreachable"),
            (rp.InvalidResponse, "unreachable"),
            *((cls, "unreachable") for cls in state),  # redis-py strips their codes from the text
            (rp.ResponseError, "response"),
            (rp.RedisError, "response"),
        ]
    kind = next((kind for cls, kind in kinds if isinstance(exc, cls)), None)
    if kind == "response" and str(exc).split(" ", 1)[0] in SERVER_STATE:
        return "unreachable"
    return kind


def translated(url_of: Callable[[Any], str]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a method so redis errors become BackendUnavailable naming the URL."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def inner(self: Any, *args: Any, **kwargs: Any) -> T:
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:
                kind = error_kind(exc)
                where = safe_url(url_of(self))
                if kind == "noperm":
                    raise PermissionDenied(
                        f"not allowed for this Redis user at {where} "
                        f"({str(exc).split(' has no permissions')[0]} has no "
                        "permission); a viewer may only list, status and read logs"
                    ) from None
                if kind == "auth":
                    raise PermissionDenied(f"Redis at {where} refused the credentials: {exc}") from None
                if kind == "unreachable" and _refused_now(exc):
                    raise BackendUnavailable(f"Redis at {where} takes no writes now: {exc}") from None
                if kind == "unreachable":
                    raise BackendUnavailable(f"cannot reach Redis at {where}: {_reason(exc)}") from None
                if kind == "response":
                    raise BackendRefused(f"Redis at {where}: {exc}") from None
                if option := unknown_option(exc):  # redis-py hands a URL's query to its connections
                    raise ConfigError(f"{where}: {option!r} in its query is not an option of a Redis URL") from None
                raise

        return inner

    return wrap


def _refused_now(exc: Exception) -> bool:
    """An error reply of the server's state (SERVER_STATE), not a connection that failed."""
    from joblet.api import resp

    rp = sys.modules.get("redis.exceptions")
    # a reply that is not Redis's (an HTTP server on that port) is a connection that failed:
    # it read "takes no writes now: Protocol Error: b'HTTP/1.1 400 Bad Request'" (review)
    redis_py = (rp.ConnectionError, rp.TimeoutError, rp.InvalidResponse) if rp is not None else ()
    failed = (resp.ConnectionError, *redis_py)
    return not isinstance(exc, failed) or str(exc).split(" ", 1)[0] in SERVER_STATE


def unknown_option(exc: Exception) -> str | None:
    """The name in redis-py's TypeError for a URL query option it does not know
    (`?ssl_cert_req=required`: a traceback, operator's run), else None."""
    text = str(exc)
    if not isinstance(exc, TypeError) or "unexpected keyword argument '" not in text:
        return None
    return text.split("unexpected keyword argument '", 1)[1].split("'", 1)[0]


def _reason(exc: Exception) -> str:
    text = str(exc)
    # redis-py prefixes "Error 111 connecting to host:port. " before the OS reason
    return text.rsplit(". ", 1)[-1].rstrip(".") if ". " in text else text
