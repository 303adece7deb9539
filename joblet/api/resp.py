"""A small synchronous Redis client (RESP2) for `rnx`, which speaks to Redis a few times per
command: importing redis-py costs ~45 ms per process (redis-py 8 imports its asyncio client
from its package's `__init__`), more than the rest of `rnx run`'s Redis work.

It answers the commands joblet's stores send, with redis-py's reply types (bytes, dicts of
bytes, lists of (id, fields) for streams), over one connection per URL. Anything else, a
method it does not know or a URL option it does not read, goes to a redis-py client made then
(`fallback`), so a rare path costs the import and never breaks. Errors are this module's
classes; `redis_conn.translated` maps them like redis-py's.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from joblet import wakeup
from joblet.api.resp_commands import Commands

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 30.0  # seconds a reply may take (a blocking read: its BLOCK on top); then the server is
# taken for hung or for something else than Redis (it waited forever, silently, at a port that accepts)
TLS_OPTIONS = {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}


class RespError(Exception):
    """Any error of this client."""


class ConnectionError(RespError):  # noqa: A001 - named like redis-py's, which it stands for
    """Redis could not be reached, or the connection broke."""


class ResponseError(RespError):
    """Redis answered with an error."""


class NoPermissionError(ResponseError):
    """-NOPERM: the user's ACL does not allow the command."""


class AuthenticationError(ResponseError):
    """-WRONGPASS or -NOAUTH."""


class NoScriptError(ResponseError):
    """-NOSCRIPT: EVALSHA of a script the server does not hold."""


class ReplyTimeout(ConnectionError):
    """No reply within READ_TIMEOUT: the server is hung (or no Redis), not a connection that
    broke; sent again it waited as long again (usability run: 60 s before rnx said so)."""


def supports(url: str) -> bool:
    """URLs this client reads whole: redis://, rediss:// (the TLS options above), unix://."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return False
    allowed = {"db"} | (TLS_OPTIONS if parts.scheme == "rediss" else set())
    return set(parse_qs(parts.query)) <= allowed


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):  # a name from argv that is not UTF-8 (surrogate escapes): its bytes
        return value.encode(errors="surrogateescape")
    if isinstance(value, bool):
        raise TypeError("a bool is not a Redis value (as in redis-py)")
    if isinstance(value, int | float):
        return repr(value).encode()
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def _error(text: str) -> ResponseError:
    code = text.split(" ", 1)[0]
    kind = {
        "NOPERM": NoPermissionError,
        "WRONGPASS": AuthenticationError,
        "NOAUTH": AuthenticationError,
        "NOSCRIPT": NoScriptError,
    }.get(code, ResponseError)  # -LOADING and the server's other states: redis_conn.SERVER_STATE
    return kind(text)


class Connection:
    """One socket to Redis: RESP2 requests out, replies parsed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sock: socket.socket | None = None
        self._buf = bytearray()  # what was received; replies are parsed from _pos on
        self._pos = 0

    def open(self) -> None:
        parts = urlsplit(self.url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        where = parts.path if parts.scheme == "unix" else f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        try:
            if parts.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(CONNECT_TIMEOUT)
                sock.connect(unquote(parts.path))
            else:
                sock = socket.create_connection((parts.hostname or "localhost", parts.port or 6379), CONNECT_TIMEOUT)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if parts.scheme == "rediss":
                sock = _tls(sock, parts.hostname or "localhost", query)
            sock.settimeout(None)  # replies may block (XREAD BLOCK): the server bounds them
        except OSError as exc:
            raise ConnectionError(f"Error {exc.errno or 0} connecting to {where}. {exc.strerror or exc}.") from None
        self.sock, self._buf, self._pos = sock, bytearray(), 0
        password = unquote(parts.password) if parts.password else None
        if password is not None:
            user = unquote(parts.username) if parts.username else None
            self._setup(["AUTH", user, password] if user else ["AUTH", password])
        db = query.get("db") or parts.path.strip("/") if parts.scheme != "unix" else query.get("db")
        if db and db != "0":
            self._setup(["SELECT", db])

    def _setup(self, args: list[Any]) -> None:
        """AUTH or SELECT, whose error ends the connection: a wrong password went on as the
        default user, a database out of range as database 0 (usability review)."""
        reply = self.call(args)
        if isinstance(reply, ResponseError):
            self.close()
            raise reply

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def call(self, args: list[Any]) -> Any:
        self.send([args])
        return self.read()

    def send(self, commands: list[list[Any]]) -> None:
        if self.sock is None:
            self.open()
        assert self.sock is not None
        out = bytearray()
        for args in commands:
            out += b"*%d\r\n" % len(args)
            for arg in args:
                data = _encode(arg)
                out += b"$%d\r\n%s\r\n" % (len(data), data)
        try:
            blocks = [_blocks(args) for args in commands]
            wait = None if None in blocks else READ_TIMEOUT + max(b or 0.0 for b in blocks)
            if self.sock.gettimeout() != wait:  # settimeout is an ioctl each time: once per change
                self.sock.settimeout(wait)
            self.sock.sendall(out)
        except OSError as exc:
            self.close()
            raise ConnectionError(f"Error while writing to Redis: {exc}") from None

    def read(self) -> Any:
        """One reply; an error reply is returned as a ResponseError, not raised (a pipeline
        reads every reply before raising)."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return _error(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exactly(size + 2)[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.read() for _ in range(count)]  # errors inside: EXEC's
        self.close()
        raise ConnectionError(f"unexpected reply from Redis: {line[:40]!r}")

    @staticmethod
    def _raise(reply: Any) -> Any:
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _line(self) -> bytes:
        end = self._buf.find(b"\r\n", self._pos)
        while end < 0:
            searched = len(self._buf) - self._pos
            self._fill()  # may move the unread tail to the front: offsets from _pos
            end = self._buf.find(b"\r\n", self._pos + max(searched - 1, 0))
        line = bytes(self._buf[self._pos : end])
        self._pos = end + 2
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self._buf) - self._pos < size:
            self._fill()
        data = bytes(self._buf[self._pos : self._pos + size])
        self._pos += size
        return data

    def _fill(self) -> None:
        """More bytes (a big reply, e.g. 1,000 stream entries of output, comes in many)."""
        assert self.sock is not None
        if self._pos:  # drop what was parsed: the buffer holds one unread tail, never the whole stream
            del self._buf[: self._pos]
            self._pos = 0
        try:
            if wakeup.watching() and not _buffered(self.sock):  # rnx: a Ctrl-C ends the wait
                if not wakeup.readable(self.sock.fileno(), self.sock.gettimeout()):
                    raise TimeoutError
            chunk = self.sock.recv(1 << 18)
        except TimeoutError:
            waited = self.sock.gettimeout()
            self.close()
            raise ReplyTimeout(f"no reply within {waited:g} s (is it Redis, and not hung?)") from None
        except OSError as exc:
            self.close()
            raise ConnectionError(f"Error while reading from Redis: {exc}") from None
        if not chunk:
            self.close()
            raise ConnectionError("Connection closed by server.")
        self._buf += chunk


def _buffered(sock: socket.socket) -> bool:
    """Whether TLS holds decrypted bytes the socket itself no longer shows as readable."""
    pending = getattr(sock, "pending", None)
    return bool(pending and pending())


def _blocks(args: list[Any]) -> float | None:
    """Seconds a command may block in Redis by its own arguments: XREAD's BLOCK ms, among its
    options (before STREAMS; a key or a value named "block" elsewhere is data); None: BLOCK 0,
    for ever."""
    if not args or not isinstance(args[0], str) or args[0].upper() not in ("XREAD", "XREADGROUP"):
        return 0.0
    for i, arg in enumerate(args[:-1]):
        word = arg.upper() if isinstance(arg, str) else None
        if word == "STREAMS":
            break
        if word == "BLOCK":
            return int(args[i + 1]) / 1000 or None
    return 0.0


def _tls(sock: socket.socket, host: str, query: dict[str, str]) -> socket.socket:
    import ssl

    reqs = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(query.get("ssl_cert_reqs", ""), ssl.CERT_REQUIRED)
    ctx = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
    no = query.get("ssl_check_hostname", "").upper() in ("0", "F", "FALSE", "N", "NO")  # redis-py's words
    ctx.check_hostname = reqs != ssl.CERT_NONE and not no
    ctx.verify_mode = reqs
    if query.get("ssl_certfile"):
        ctx.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
    return ctx.wrap_socket(sock, server_hostname=host)


class LiteRedis(Commands):
    """A client on one connection (a lock serializes threads); see the module's docstring."""

    def __init__(self, url: str, fallback: Callable[[], Any]) -> None:
        self.url = url
        self._conn = Connection(url)
        self._lock = threading.Lock()
        self._fallback = fallback
        self._real: Any = None

    def real(self) -> Any:
        """The redis-py client for what this one does not do (made once, on first need)."""
        if self._real is None:
            self._real = self._fallback()
        return self._real

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.real(), name)

    def _send(self, args: tuple[Any, ...], convert: Callable[[Any], Any] | None = None) -> Any:
        return self.run([(args, convert)])[0]

    def run(self, commands: list[tuple[tuple[Any, ...], Callable[[Any], Any] | None]]) -> list[Any]:
        """Send commands in one write, read their replies; raises the first error reply.
        A connection that worked before and broke (a restarted server) is opened again once,
        as redis-py does; one that cannot be opened is not tried twice."""
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn.sock is not None
                try:
                    self._conn.send([list(args) for args, _ in commands])
                    replies = [self._conn.read() for _ in commands]
                    break
                except ReplyTimeout:
                    raise
                except ConnectionError:
                    if attempt == 2 or not reused:
                        raise
                except BaseException:  # Ctrl-C mid-reply: its reply would answer the next command
                    self._conn.close()  # (review: a stale LPUSH reply read as a script's)
                    raise
        for reply in replies:
            Connection._raise(reply)
        return [convert(r) if convert else r for r, (_, convert) in zip(replies, commands, strict=True)]

    def pipeline(self, transaction: bool = True) -> Pipeline:
        return Pipeline(self, transaction)

    def register_script(self, script: str) -> Script:
        return Script(self, script)

    def close(self) -> None:
        self._conn.close()


class _Capture(Commands):
    """Turns a command method's call into (arguments, reply conversion), for a pipeline."""

    def _send(self, args: tuple[Any, ...], convert: Callable[[Any], Any] | None = None) -> Any:
        return args, convert


_CAPTURE = _Capture()


class Pipeline:
    """Commands queued, then sent in one write (MULTI ... EXEC when transactional). Any other
    method (WATCH, say) makes it a redis-py pipeline, with what was queued so far replayed."""

    def __init__(self, client: LiteRedis, transaction: bool) -> None:
        self.client = client
        self.transaction = transaction
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._real: Any = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._real is not None:
            self._real.reset()
        self._calls = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._real is None and hasattr(Commands, name):

            def queue(*args: Any, **kwargs: Any) -> Pipeline:
                self._calls.append((name, args, kwargs))
                return self

            return queue
        if self._real is None:
            self._real = self.client.real().pipeline(transaction=self.transaction)
            for method, args, kwargs in self._calls:
                getattr(self._real, method)(*args, **kwargs)
        return getattr(self._real, name)

    def execute(self) -> list[Any]:
        if self._real is not None:
            return list(self._real.execute())
        queued = [getattr(_CAPTURE, name)(*args, **kwargs) for name, args, kwargs in self._calls]
        self._calls = []
        if not queued:
            return []
        if not self.transaction:
            return self.client.run(queued)
        replies = self.client.run([(("MULTI",), None), *[(args, None) for args, _ in queued], (("EXEC",), None)])
        results = replies[-1] or []
        for result in results:
            Connection._raise(result)
        return [convert(r) if convert else r for r, (_, convert) in zip(results, queued, strict=True)]


class Script:
    """A Lua script run by its SHA1 (EVALSHA), loaded with EVAL when the server lacks it."""

    def __init__(self, client: LiteRedis, script: str) -> None:
        self.client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts so

    def __call__(self, keys: Any = (), args: Any = ()) -> Any:
        try:
            return self.client._send(("EVALSHA", self.sha, len(keys), *keys, *args))
        except NoScriptError:
            return self.client._send(("EVAL", self.script, len(keys), *keys, *args))
