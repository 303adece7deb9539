"""rnx's small Redis client (joblet/api/resp.py) against a real redis-server, each reply
compared with redis-py's for the same call on the same server."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from joblet.api import resp
from joblet.api.redis_conn import connect_redis_py, error_kind, translated
from joblet.errors import BackendUnavailable


@pytest.fixture
def pair(redis_sock: str) -> tuple[Any, Any, str]:
    """(lite, redis-py, a key prefix of this test)"""
    lite = resp.LiteRedis(redis_sock, lambda: connect_redis_py(redis_sock))
    yield lite, connect_redis_py(redis_sock), f"resp-{uuid.uuid4().hex[:8]}:"
    lite.close()


def both(pair: tuple[Any, Any, str], call: Any) -> Any:
    """The reply of `call` on each client (on keys of its own); they must agree."""
    lite, real, prefix = pair
    got = call(lite, prefix + "lite:")
    want = call(real, prefix + "real:")
    assert got == want
    return got


CALLS = {
    "set/get": lambda r, k: (r.set(k + "s", "v"), r.get(k + "s"), r.get(k + "missing")),
    "set nx ex": lambda r, k: (r.set(k + "n", b"1", nx=True, ex=60), r.set(k + "n", b"2", nx=True, ex=60)),
    "exists/delete": lambda r, k: (r.set(k + "e", 1), r.exists(k + "e", k + "x"), r.delete(k + "e"), r.exists(k + "e")),
    "expire": lambda r, k: (r.set(k + "t", 1.5), r.expire(k + "t", 60), r.pexpire(k + "none", 60)),
    "mget": lambda r, k: (r.set(k + "a", "1"), r.mget([k + "a", k + "b"]), r.mget(k + "a")),
    "hashes": lambda r, k: (
        r.hset(k + "h", mapping={"f": "1", "g": b"\x00\xff"}),
        r.hset(k + "h", "f", "2"),
        r.hsetnx(k + "h", "f", "3"),
        r.hsetnx(k + "h", "n", "3"),
        r.hget(k + "h", "f"),
        r.hgetall(k + "h"),
        r.hgetall(k + "nothing"),
        sorted(r.hkeys(k + "h")),
        sorted(r.hvals(k + "h")),
        r.hexists(k + "h", "g"),
        r.hincrby(k + "h", "c", 5),
        r.hdel(k + "h", "f", "zz"),
    ),
    "sorted sets": lambda r, k: (
        r.zadd(k + "z", {"a": 2, "b": 1.5, "c": 9}),
        r.zrange(k + "z", 0, -1),
        r.zrem(k + "z", "c", "q"),
        r.zrevrangebyscore(k + "z", "+inf", "(1.5"),
        r.zrevrangebyscore(k + "z", "+inf", "(99"),
        r.zscore(k + "z", "b"),
        r.zscore(k + "z", "nothing"),
        r.zremrangebyscore(k + "z", "-inf", 1.9),
        r.zrange(k + "z", 0, -1),
        r.zadd(k + "z", {"d": 3, "e": 4}),
        r.zrevrange(k + "z", 0, 1),  # `rnx list`: the newest from the end
        r.zcard(k + "z"),
        r.zcard(k + "nothing"),
    ),
    "lists, publish": lambda r, k: (r.lpush(k + "l", "x", "y"), r.publish(k + "chan", "hello")),
    "streams": lambda r, k: (
        [len(r.xadd(k + "x", {"out": b"a\nb", "err": "c"}, maxlen=100)) > 0 for _ in range(3)],
        [[key == (k + "x").encode(), [f for _, f in entries]] for key, entries in r.xread({k + "x": "0-0"}, count=2)],
        r.xread({k + "x": "$"}, block=5),  # nothing new: empty after the block
        [fields for _, fields in r.xrevrange(k + "x", count=1)],
    ),
}


@pytest.mark.parametrize("name", CALLS)
def test_replies_match_redis_py(pair, name):
    assert both(pair, lambda r, k: (CALLS[name](r, k), r.ping()))[1] is True


def test_big_replies_arrive_whole(pair):
    """Replies larger than one read (a 5 MB value; 1,000 stream entries of 4 KiB, as
    `rnx log -f` reads a chatty job's output) are parsed across many reads."""

    def big(r: Any, k: str) -> Any:
        r.set(k + "big", b"\xab" * 5_000_000)
        pipe = r.pipeline(transaction=False)
        for i in range(1500):
            pipe.xadd(k + "out", {"out": bytes([i % 256]) * 4096})
        pipe.execute()
        entries = r.xread({k + "out": "0-0"}, count=1000)[0][1]
        return r.get(k + "big") == b"\xab" * 5_000_000, [fields for _, fields in entries]

    fine, entries = both(pair, big)
    assert fine and len(entries) == 1000 and entries[999] == {b"out": bytes([999 % 256]) * 4096}


def test_pipelines_match_redis_py(pair):
    def piped(r: Any, k: str) -> Any:
        pipe = r.pipeline()
        pipe.hset(k + "p", mapping={"a": "1"}).zadd(k + "pz", {"a": 1.0})
        pipe.hgetall(k + "p")
        pipe.zscore(k + "pz", "a").zscore(k + "pz", "nothing")  # a conversion, queued
        first = pipe.execute()
        loose = r.pipeline(transaction=False)
        for i in range(3):
            loose.lpush(k + "pl", i)
        return first, loose.execute(), r.pipeline().execute()

    assert both(pair, piped)[0] == [1, 1, {b"a": b"1"}, 1.0, None]


def test_a_transaction_with_a_failing_command_raises_like_redis_py(pair):
    lite, real, prefix = pair
    for client in (lite, real):
        client.set(prefix + "str", "x")
        pipe = client.pipeline()
        pipe.hset(prefix + "str", "f", "v")  # WRONGTYPE at EXEC
        with pytest.raises(Exception) as caught:
            pipe.execute()
        assert error_kind(caught.value) == "response" and "WRONGTYPE" in str(caught.value)
        assert client.ping() is True  # the connection is still in step


def test_scripts_load_themselves(pair):
    lite, _, prefix = pair
    lite.real().script_flush()  # the server forgets its scripts
    script = lite.register_script("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
    assert script(keys=[prefix + "k"], args=["v", 41]) == [(prefix + "k").encode(), b"v", 42]  # EVAL
    assert script(keys=[prefix + "k"], args=["w", 1]) == [(prefix + "k").encode(), b"w", 2]  # EVALSHA


def test_what_it_does_not_do_goes_to_redis_py(pair):
    lite, real, prefix = pair
    lite.set(prefix + "a", "1")
    assert sorted(lite.scan_iter(match=prefix + "*")) == [(prefix + "a").encode()]  # not a lite method
    with lite.pipeline() as pipe:  # WATCH makes it redis-py's
        pipe.watch(prefix + "a")
        assert pipe.get(prefix + "a") == b"1"  # immediate after WATCH, as in redis-py
        pipe.multi()
        pipe.set(prefix + "a", "3")
        assert pipe.execute() == [True]
    assert real.get(prefix + "a") == b"3"
    pipe = lite.pipeline()
    pipe.set(prefix + "c", "4")
    pipe.sadd(prefix + "set", "m")  # not a lite command: what was queued is replayed on redis-py's
    assert pipe.execute() == [True, 1] and real.smembers(prefix + "set") == {b"m"}


def test_a_connection_that_broke_is_opened_again(pair):
    lite, real, prefix = pair
    lite.set(prefix + "k", "1")
    killed = real.client_kill_filter(skipme=True, _type="normal")  # every other client: lite's too
    assert killed >= 1
    assert lite.get(prefix + "k") == b"1"  # opened again, once


def test_a_reply_left_unread_by_ctrl_c_answers_no_later_command(pair, monkeypatch):
    """Ctrl-C while rnx waited for LPUSH's reply left it on the socket: the next command read
    it as its own (a script's EVALSHA took LPUSH's 1 for success), each reply one behind."""
    lite, real, prefix = pair
    lite.set(prefix + "warm", "1")  # the connection is open
    reads = []
    read = resp.Connection.read

    def interrupted(self: Any) -> Any:
        if not reads:
            reads.append(1)
            raise KeyboardInterrupt
        return read(self)

    monkeypatch.setattr(resp.Connection, "read", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lite.lpush(prefix + "q", "job")
    assert real.llen(prefix + "q") == 1  # the LPUSH went: its reply was left unread
    assert lite.set(prefix + "k", "v") is True and lite.get(prefix + "k") == b"v"
    assert lite.incr(prefix + "n") == 1  # the control: replies in step


def test_a_loading_server_is_unreachable_not_an_error_reply():
    """-LOADING (a restarted Redis reading its data back) is an outage to wait out, as
    redis-py has it, not a refusal of the command (which the output pump counts and drops)."""
    assert error_kind(resp._error("LOADING Redis is loading the dataset in memory")) == "unreachable"
    assert error_kind(resp._error("WRONGTYPE Operation against a key")) == "response"  # the control


def test_urls_it_reads_itself():
    assert resp.supports("redis://u:p@host:6379/2") and resp.supports("unix:///run/redis.sock?db=1")
    assert resp.supports("rediss://h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem")
    assert not resp.supports("redis://h/0?socket_timeout=5")  # an option it does not read
    assert not resp.supports("redis+sentinel://h")


def test_an_unreachable_server_reads_like_redis_py(tmp_path: Path):
    url = f"unix://{tmp_path / 'absent.sock'}"

    class Holder:
        def __init__(self) -> None:
            self.url, self.redis = url, resp.LiteRedis(url, lambda: connect_redis_py(url))

        @translated(lambda self: self.url)
        def ping(self) -> Any:
            return self.redis.ping()

    with pytest.raises(BackendUnavailable, match=r"cannot reach Redis at unix://.*: No such file or directory$"):
        Holder().ping()


def test_a_server_that_never_answers_times_out_and_a_blocking_read_gets_its_block(pair, tmp_path, monkeypatch):
    """A socket that accepts and never answers (a hung server, another service's port): rnx
    waited for ever, silently. A reply may take READ_TIMEOUT, a blocking XREAD its BLOCK on
    top: against the real Redis (the control) a read blocking 0.6 s with a 0.2 s timeout
    returns empty, not an error."""
    import socket
    import time

    monkeypatch.setattr(resp, "READ_TIMEOUT", 0.2)
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(tmp_path / "silent.sock"))
    silent.listen(4)
    url = f"unix://{tmp_path / 'silent.sock'}"
    try:
        lite_silent = resp.LiteRedis(url, lambda: connect_redis_py(url))
        with pytest.raises(resp.ConnectionError, match=r"no reply within 0.2 s \(is it Redis, and not hung\?\)"):
            lite_silent.ping()
        started = time.monotonic()
        with pytest.raises(resp.ConnectionError, match="no reply within 0.8 s"):
            lite_silent.xread({"k": "0"}, block=600)
        assert time.monotonic() - started >= 0.7
    finally:
        silent.close()
    lite, _, prefix = pair
    assert lite.xread({prefix + "empty": "0"}, block=600) in (None, [], {})


def test_a_hung_server_is_waited_for_once_not_again_on_a_new_connection(pair, monkeypatch):
    """A reply that did not come within READ_TIMEOUT on a connection that had worked was sent
    again on a new one and waited for as long again: rnx said a hung Redis was hung after
    60 s, not 30 (usability run). A broken connection is still opened again (the control:
    test_a_connection_that_broke_is_opened_again)."""
    lite, real, prefix = pair
    assert lite.set(prefix + "k", "1") is True  # the connection works: a reused one
    sends: list[int] = []
    send = resp.Connection.send
    monkeypatch.setattr(resp.Connection, "send", lambda self, cmds: (sends.append(1), send(self, cmds))[1])
    monkeypatch.setattr(resp, "READ_TIMEOUT", 0.2)
    real.execute_command("CLIENT", "PAUSE", "700", "ALL")  # the server holds every reply
    try:
        with pytest.raises(resp.ReplyTimeout):
            lite.get(prefix + "k")
        assert sends == [1]
    finally:
        real.execute_command("CLIENT", "UNPAUSE")  # answered once the server answers again
    assert lite.get(prefix + "k") == b"1"


def test_a_key_or_value_named_block_is_data(pair):
    """The read timeout looks for XREAD's BLOCK option only: `rnx volume create block` sent
    HSETNX ... block '{...}' and failed on int('{...}')."""
    lite, real, prefix = pair
    assert lite.hset(prefix + "h", "block", "{json}") == 1 and lite.hget(prefix + "h", "block") == b"{json}"
    assert resp._blocks(["HSET", "h", "BLOCK", "0"]) == 0.0  # not a wait for ever
    assert resp._blocks(["XREAD", "COUNT", 5, "BLOCK", 250, "STREAMS", "block", "0"]) == 0.25
    assert resp._blocks(["XREAD", "STREAMS", "BLOCK", "0"]) == 0.0  # a stream named BLOCK


def test_a_refused_auth_or_select_is_an_error_not_the_default_user(redis_sock: str):
    """AUTH's and SELECT's error replies were returned and dropped: a wrong password went on as
    the default user (open on this server), a database out of range read database 0."""
    sock = redis_sock.removeprefix("unix://")
    user, key = f"u{uuid.uuid4().hex[:8]}", f"resp-{uuid.uuid4().hex[:8]}"
    admin = connect_redis_py(redis_sock)
    admin.execute_command("ACL", "SETUSER", user, "on", ">right", f"~{key}", "+get", "+set")

    def lite(url: str) -> Any:
        return resp.LiteRedis(url, lambda: connect_redis_py(url))

    try:
        good = lite(f"unix://{user}:right@{sock}")
        assert good.set(key, "v") and good.get(key) == b"v"  # the control: the right password
        with pytest.raises(resp.AuthenticationError, match="WRONGPASS"):
            lite(f"unix://{user}:wrong@{sock}").get(key)
        with pytest.raises(resp.ResponseError, match="DB index is out of range"):
            lite(f"unix://{sock}?db=99999").get(key)
        assert lite(f"unix://{sock}?db=1").get(key) is None  # the control: database 1 is there, and empty
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.delete(key)


def test_the_listings_of_rnx_load_no_redis_py(redis_sock: str):
    """`rnx list` read the newest jobs with ZCARD and ZREVRANGE, which rnx's client did not
    do: it loaded redis-py (45 ms) and opened a second connection (review)."""
    import subprocess
    import sys

    from joblet.api.store import Store

    prefix = f"probe-{uuid.uuid4().hex[:6]}:"
    Store(redis_sock, prefix).heartbeat("n1", {"indexes_live": True}, ttl=60)  # a live worker, as where rnx runs
    probe = (
        "import sys\nfrom joblet.api.client import Client\nfrom joblet.config import load\n"
        "from joblet.api.redis_conn import prefer_lite\nprefer_lite()  # as rnx does\n"
        f"c = Client(load(redis_url={redis_sock!r}, key_prefix={prefix!r}))\n"
        "c.recent(20); c.list(status='RUNNING')\nprint('redis' in sys.modules)\n"
        "list(c.store.redis.scan_iter(match='x'))\nprint('redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]  # the control: what it does not do loads redis-py
