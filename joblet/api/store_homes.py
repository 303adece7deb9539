"""Where each user network's jobs are (a mixin of api/store.py's Store, whose Redis client
and keys it uses): the nodes its running jobs are on (the members hash, discovery's) and the
nodes its jobs not yet running were queued for (the placed hash).

Placement keeps a user network's jobs on nodes that reach each other (nodes.apart). It read
only the running jobs: two `rnx run --network=app -d` a moment apart put the second on
another node while the first still waited in its node's queue, and on a fleet without an
overlay the two never reached each other (session 24's closing note). Each record written
for a node's queue now names that node under each of its user networks; the worker takes
the entry out when the job joins the network's members, or leaves them at its end (the same
round trips), and a read drops the entries of jobs that ended without running (a stop while
queued), checked against their records; a network's hash expires a week after its last
entry was written, and goes when the network is deleted. Written only in a fleet of more
than one node (with one, nothing reads them).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any

from joblet.api.keys import Keys
from joblet.api.models import JobRecord
from joblet.api.networks import BUILTINS
from joblet.api.record_fields import stored_status
from joblet.api.redis_conn import translated
from joblet.fields import loaded

_url = translated(lambda self: self.url)
# a network's placed entries expire a week after the last job queued for it (one that
# ended without running, on a network no job is submitted to again, is read by nobody)
PLACED_TTL = 7 * 86400
# a submitter holds a network while it reads where its jobs are, places, and writes where it
# put its job: milliseconds; a holder that died lets go after HOLD_MS, and one that waits
# longer than that goes on without (placement as before: best effort)
HOLD_MS, HOLD_WAIT = 3000, 5.0
_LET_GO = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def user_networks(networks: Iterable[str]) -> list[str]:
    return [n for n in networks if n not in BUILTINS]


class NetworkHomes:
    redis: Any
    keys: Keys
    url: str

    def _place(self, pipe: Any, records: Iterable[JobRecord]) -> None:
        """Add to `pipe`: each record queued for a node, under each of its user networks."""
        for record in records:
            if record.node and not record.status.final:
                self._place_one(pipe, record.id, record.spec.network, record.node)

    def _place_one(self, pipe: Any, job_id: str, networks: Iterable[str], node: str) -> None:
        for network in user_networks(networks):
            pipe.hset(self.keys.placed(network), job_id, node)
            pipe.expire(self.keys.placed(network), PLACED_TTL)

    @_url
    def mark_placed(self, job_id: str, networks: Iterable[str], node: str) -> None:
        """A job queued for `node` after its record was written (a workflow's next job)."""
        pipe = self.redis.pipeline(transaction=False)
        self._place_one(pipe, job_id, networks, node)
        pipe.execute()  # nothing sent for a job on built-in networks only

    @_url
    def network_homes(self, networks: list[str]) -> dict[str, set[str]]:
        """{network: the nodes it has jobs running on or queued for}: one round trip, two when
        jobs are queued (their records read), entries of jobs that ended dropped."""
        pipe = self.redis.pipeline(transaction=False)
        for network in networks:
            pipe.hgetall(self.keys.members(network))
            pipe.hgetall(self.keys.placed(network))
        answers = pipe.execute()
        homes: dict[str, set[str]] = {}
        queued: dict[tuple[str, str], str] = {}  # (network, job id) -> node
        for network, members, placed in zip(networks, answers[::2], answers[1::2], strict=True):
            entries = (member_entry(v) for v in members.values())
            homes[network] = {str(e.get("node") or "") for e in entries if e is not None} - {""}
            for job_id, node in placed.items():
                if job_id not in members:
                    queued[(network, job_id.decode())] = node.decode()
        if queued:
            self._queued_homes(homes, queued)
        return homes

    def _queued_homes(self, homes: dict[str, set[str]], queued: dict[tuple[str, str], str]) -> None:
        ids = sorted({job_id for _, job_id in queued})
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.keys.job(job_id), "status")
        ended = {i for i, raw in zip(ids, pipe.execute(), strict=True) if raw is None or _final(raw)}
        pipe = self.redis.pipeline(transaction=False)
        for (network, job_id), node in queued.items():
            if job_id in ended:
                pipe.hdel(self.keys.placed(network), job_id)
            else:
                homes[network].add(node)
        pipe.execute()

    @contextlib.contextmanager
    def holding_networks(self, networks: Iterable[str]) -> Iterator[None]:
        """Hold these user networks (in name order: two submitters never wait on each other
        crosswise) while a job is placed and written: two `rnx run -d --network=app` at the
        same instant each read no home and went to two nodes with no overlay between them
        (fleet run). Two round trips per network, plus the wait of one that comes second."""
        held: list[tuple[str, str]] = []
        try:
            for network in sorted(set(user_networks(networks))):
                key, token = self.keys.placing(network), secrets.token_hex(8)
                if self._hold(key, token):
                    held.append((key, token))
            yield
        finally:
            for key, token in held:
                with contextlib.suppress(Exception):  # it lets go by itself after HOLD_MS
                    self._let_go()(keys=[key], args=[token])

    def _let_go(self) -> Any:
        script = self.__dict__.get("_let_go_script")
        if script is None:
            script = self.__dict__["_let_go_script"] = self.redis.register_script(_LET_GO)
        return script

    @_url
    def _hold(self, key: str, token: str) -> bool:
        deadline, pause = time.monotonic() + HOLD_WAIT, 0.001
        while not self.redis.set(key, token, px=HOLD_MS, nx=True):
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return True

    @_url
    def unplace(self, job_id: str, networks: Iterable[str]) -> None:
        """A job that ended before joining its networks: where it was queued goes."""
        pipe = self.redis.pipeline(transaction=False)
        for network in user_networks(networks):
            pipe.hdel(self.keys.placed(network), job_id)
        pipe.execute()


def _final(raw: bytes) -> bool:
    status = stored_status(raw)
    return status is None or status.final  # a record that does not read is no job that will run


def member_entry(raw: bytes | str) -> dict[str, Any] | None:
    """A members hash's entry as a worker writes it (`{"ip", "names", "node"}`, maybe
    `"scope"`), or None where it does not read: one such entry, written to Redis by other
    means, failed every job's start in its network and its peers' /etc/hosts (red-team run)."""
    entry = loaded(raw)
    if not isinstance(entry, dict) or not isinstance(entry.get("ip"), str):
        return None
    names = entry.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return None
    if not all(isinstance(entry.get(k), str | None) for k in ("node", "scope")):
        return None
    return entry
