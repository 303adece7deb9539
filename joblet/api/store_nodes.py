"""Node records in Redis: the lasting record of each node's last heartbeat, drains, and the
guard that lets one worker sweep a lost node.

A node's presence key (`Store.heartbeat`) expires three heartbeats after its last beat; the
record here does not, so `rnx nodes` shows a node that stopped beating as down, and the
fleet knows when it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from joblet.api.keys import Keys
from joblet.api.redis_conn import connect, translated
from joblet.fields import is_epoch, loaded

_url = translated(lambda self: self.url)
log = logging.getLogger(__name__)
# A node's record, drain, sweep mark and held jobs go together, and only while its record
# is the one read (a beat meanwhile: its worker is back, and stays listed).
_FORGET = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4], KEYS[5])
return 1
"""


class NodeStore:
    """Node records, drains and lost-node sweeps of one installation."""

    def __init__(self, url: str, prefix: str = "joblet:", client: Any = None) -> None:
        self.url = url
        self.keys = Keys(prefix)
        self.redis = client if client is not None else connect(url)

    @_url
    def records(self) -> dict[str, dict[str, Any]]:
        """name -> the node's last published heartbeat (with "beat", and "left" after a clean stop)."""
        found = {}
        for key, raw in self.redis.hgetall(self.keys.nodes).items():
            name = key.decode(errors="replace")
            record, why = node_record(raw)
            if record is None:  # one such entry failed every rnx run, rnx nodes and lost-node sweep (red-team run)
                log.warning("node record %r does not read: %s: left out", name[:64], why)
            else:
                found[name] = record
        return found

    @_url
    def mark_left(self, node: str) -> None:
        """A worker stopped cleanly: its record stays, marked with when it left."""
        raw = self.redis.hget(self.keys.nodes, node)
        record = node_record(raw)[0] or {"node": node, "beat": time.time()}
        record["left"] = time.time()
        self.redis.hset(self.keys.nodes, node, json.dumps(record))

    @_url
    def forget(self, node: str, seen: dict[str, Any]) -> bool:
        """Remove a node's record, drain and sweep mark, held jobs and counts of dropped
        messages (kept for good before: one hash per node ever named), if its record is still
        `seen` (its worker did not beat meanwhile); whether it did."""
        raw = self.redis.hget(self.keys.nodes, node)
        if raw is None or node_record(raw)[0] != seen:
            return False
        return self._forget(node, raw)

    @_url
    def forget_unreadable(self, node: str) -> bool:
        """Remove a node's record that does not read (written by other means than a worker:
        left out of every listing, so `rnx node forget` named no such node and only
        `redis-cli HDEL` took it away; red-team run), with its drain and marks; whether
        there was one. A worker of that name writes its record again at its next beat."""
        raw = self.redis.hget(self.keys.nodes, node)
        if raw is None or node_record(raw)[0] is not None:
            return False
        return self._forget(node, raw)

    def _forget(self, node: str, raw: bytes) -> bool:
        """Its record, drain, marks, held jobs and drop counts go, if its record is still `raw`."""
        script = self.redis.register_script(_FORGET)
        keys = [self.keys.nodes, self.keys.drained, self.keys.lost_swept, self.keys.held(node), self.keys.dropped(node)]
        return bool(script(keys=keys, args=[node, raw]))

    @_url
    def set_drain(self, node: str, on: bool) -> None:
        if on:
            self.redis.hsetnx(self.keys.drained, node, json.dumps(time.time()))
        else:
            self.redis.hdel(self.keys.drained, node)

    @_url
    def hold(self, node: str, job_id: str) -> bool:
        """Keep a workflow's job pinned to `node` for its undrain, if `node` is draining;
        False when it is not (send it). Looked at again after the job is kept: an undrain
        that read the kept jobs before would not send it, and this one does."""
        if not self.is_drained(node):
            return False
        self.redis.sadd(self.keys.held(node), job_id)
        if self.is_drained(node):
            return True
        self.redis.srem(self.keys.held(node), job_id)  # undrained meanwhile (two sends: the claim drops one)
        return False

    @_url
    def held(self, node: str) -> list[str]:
        """The jobs kept for `node`'s undrain."""
        return sorted(m.decode() for m in self.redis.smembers(self.keys.held(node)))

    @_url
    def release_held(self, node: str, job_ids: list[str]) -> None:
        """These kept jobs were sent (or ended meanwhile): only they go, once sent, so an
        undrain that failed on the way (a broker down) leaves the rest for the next."""
        if job_ids:
            self.redis.srem(self.keys.held(node), *job_ids)

    @_url
    def drained(self) -> set[str]:
        return {k.decode() for k in self.redis.hkeys(self.keys.drained)}

    @_url
    def is_drained(self, node: str) -> bool:
        return bool(self.redis.hexists(self.keys.drained, node))

    @_url
    def claim_sweep(self, node: str, beat: float, ttl: int) -> bool:
        """True for the one worker that marks this node's jobs LOST for this silence; the
        claim expires after `ttl`, so a sweeper that dies half-way is replaced."""
        return bool(self.redis.set(self.keys.lost_sweep(node, beat), "1", nx=True, ex=ttl))

    @_url
    def sweeping(self, node: str, beat: float) -> bool:
        """Whether a worker has begun (or ended) the sweep of this node's silence."""
        return bool(self.redis.exists(self.keys.lost_sweep(node, beat))) or self.swept().get(node) == beat

    @_url
    def mark_swept(self, node: str, beat: float) -> None:
        self.redis.hset(self.keys.lost_swept, node, json.dumps(beat))

    @_url
    def swept(self) -> dict[str, float]:
        """node -> the last beat whose silence was swept to the end."""
        found = {}
        for key, raw in self.redis.hgetall(self.keys.lost_swept).items():
            beat = loaded(raw)
            if is_epoch(beat):  # one that does not read: as if never swept (the sweep repeats safely)
                found[key.decode(errors="replace")] = float(beat)
        return found


def node_record(raw: bytes | str | None) -> tuple[dict[str, Any] | None, str]:
    """A node's stored heartbeat as readers use it, or None and why it does not read: a JSON
    object whose `beat` (and `left`, where there is one) is a time. Written by a worker, but
    Redis holds whatever anyone wrote there."""
    record = loaded(raw)
    if not isinstance(record, dict):
        return None, "not a JSON object"
    if not is_epoch(record.get("beat", 0)):
        return None, "its 'beat' is no time"
    left = record.get("left")
    if left is not None and not isinstance(left, bool) and not is_epoch(left):
        return None, "its 'left' is no time"
    return record, ""
