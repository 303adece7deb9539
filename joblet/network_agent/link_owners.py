"""Which running job here holds each host link name and each job MAC.

Both are derived from the job's id (names.host_veth_name, portsec.mac_for: 40 bits of a
SHA-1 each), and a job's id is whatever its submitter wrote: two ids whose link names clash
are found in seconds (a birthday search), and one aimed at a given job in about a minute on a
GPU. A job whose veth name was taken failed its start and then deleted the link by name, the
other job's, which ran on with no network; one whose MAC was another's on the same network
would have drawn that job's frames (red-team run). A job now claims its names and MACs when
its addresses are reserved, before anything of it is made, and is refused if another job
here holds one, or its MAC is the network's gateway's or a remote job's on that network; it
gives them back when its addresses are freed, after its links are gone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from joblet.errors import NetworkError

AGAIN = "job ids that hash alike: submit the job again"


class LinkOwners:
    """Claims of link names and (network, MAC) pairs by job id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: dict[str | tuple[str, str], str] = {}  # a link name or (network, MAC) -> job id
        self._held: dict[str, list[str | tuple[str, str]]] = {}  # job id -> what it claimed

    def claim(
        self,
        job_id: str,
        names: Iterable[str],
        macs: Iterable[tuple[str, str]],
        taken: Callable[[str, str], str | None] = lambda network, mac: None,
    ) -> None:
        """All or nothing. `taken(network, mac)`: who else has that MAC there (the network's
        gateway, a job on another node), or None."""
        macs = list(macs)
        for key in macs:  # outside the lock: it may read Redis, and every job's start claims
            if (other := taken(*key)) is not None:
                raise NetworkError(_clash(key, other))
        wanted: list[str | tuple[str, str]] = [*names, *macs]
        with self._lock:
            for key in wanted:
                owner = self._owner.get(key)
                if owner is not None and owner != job_id:
                    raise NetworkError(_clash(key, f"job {owner[:12]}"))
            for key in wanted:
                self._owner[key] = job_id
            self._held.setdefault(job_id, []).extend(wanted)

    def release(self, job_id: str) -> None:
        with self._lock:
            for key in self._held.pop(job_id, []):
                if self._owner.get(key) == job_id:
                    del self._owner[key]


def _clash(key: str | tuple[str, str], other: str) -> str:
    if isinstance(key, tuple):
        return f"its MAC {key[1]} on network {key[0]!r} is taken by {other} ({AGAIN})"
    return f"its link name {key} is taken by {other} on this node ({AGAIN})"
