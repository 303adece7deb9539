"""Discovery by name: each job in a user network gets an /etc/hosts listing that network's
running jobs, fleet-wide, rewritten in place as jobs come and go (here, and on other hosts
through a "hosts" event). Docker's rule: names resolve in user networks only."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from joblet.api.store import Store
from joblet.api.store_homes import user_networks
from joblet.errors import BackendUnavailable

log = logging.getLogger(__name__)


class Discovery:
    """Who is where, and this host's jobs' /etc/hosts files."""

    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        self._local: dict[str, tuple[set[str], str, Callable[[dict[str, str]], None]]] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[list[str]], None]] = []  # told of every change (the overlay)

    def peers(self, networks: list[str], scope: str = "") -> dict[str, str]:
        """name -> address of the running jobs in these user networks, fleet-wide, as a job
        of `scope` (its workflow's id, "" for none) sees them (store.resolve_names)."""
        wanted = user_networks(networks)
        return self.store.members(wanted, scope) if wanted else {}

    def join(
        self,
        job_id: str,
        ips: dict[str, str],
        names: list[str],
        write_hosts: Callable[[dict[str, str]], None],
        scope: str = "",
    ) -> None:
        """A job of this host is running with these addresses: list it, and keep its hosts
        file (`write_hosts` gets the peers of the job's user networks, seen from `scope`)."""
        mine = {n: ips[n] for n in user_networks(list(ips))}
        if mine:
            self.store.join_networks(job_id, mine, names, self.node, scope)
        with self._lock:
            self._local[job_id] = (set(ips), scope, write_hosts)

    def leave(self, job_id: str, networks: list[str]) -> None:
        with self._lock:
            self._local.pop(job_id, None)
        self.store.leave_networks(job_id, networks)

    def refresh(self, networks: list[str], tell_fleet: bool = True) -> None:
        """Rewrite /etc/hosts of this host's jobs in these user networks (in place: bind
        mounts), then tell the other workers to do the same for theirs. The peers are read
        once per set of networks that jobs share, not once per job: with hundreds of jobs in
        one network, every job that came or went cost a Redis read per job."""
        wanted = set(user_networks(networks))
        if not wanted:
            return
        for listener in self.listeners:
            try:
                listener(sorted(wanted))
            except Exception as exc:  # noqa: BLE001 - the hosts files still get written
                log.warning("overlay of %s: %s: %s", sorted(wanted), type(exc).__name__, exc)
        with self._lock:
            writers = [(nets, scope, write) for nets, scope, write in self._local.values() if nets & wanted]
        groups: dict[tuple[frozenset[str], str], list[Callable[[dict[str, str]], None]]] = {}
        for nets, scope, write in writers:
            groups.setdefault((frozenset(user_networks(list(nets))), scope), []).append(write)
        for (nets_of_group, scope), writes in groups.items():
            peers = self.peers(sorted(nets_of_group), scope)
            for write in writes:
                write(peers)
        if tell_fleet:
            try:
                self.store.publish_event("hosts", networks=sorted(wanted), node=self.node)
            except BackendUnavailable as exc:
                log.warning("could not tell other workers about %s: %s", sorted(wanted), exc)
