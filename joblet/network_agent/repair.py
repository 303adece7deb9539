"""Bridges deleted under running jobs (by hand, or by another tool on the host): made again
on the heartbeat, with the jobs' host ends put back on them.

A bridge made again has a new interface index: that is how a heartbeat knows it, whether it
made the bridge itself or the network's next job did (whose setup makes a missing bridge but
attaches only its own veth); a bridge it sees for the first time gets its jobs put on it too
(it may have been made again before any heartbeat saw it), and so does the network's overlay
port (VXLAN), which the bridge's deletion freed: its jobs reach other nodes' jobs again. Until
then the network's subnet is unreachable (the `joblet:off-route` rules keep its traffic from
leaving by the default route).
"""

from __future__ import annotations

import logging
from typing import Any

from joblet.errors import JobletError
from joblet.network_agent import links, rtnl
from joblet.network_agent.plan import NetPlan

log = logging.getLogger(__name__)


class BridgeWatch:
    """The index each bridge of this host's running jobs had at the last heartbeat."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def repair(self, agent: Any, plans: list[NetPlan]) -> list[str]:
        """Make again the bridges of these running jobs' networks that are gone, and put the
        jobs' host ends on each bridge whose index changed; the bridges made again."""
        bridges = {a.bridge for p in plans for a in p.attachments if a.bridge}
        gone = sorted(b for b in bridges if links.index_of(b) is None)
        if agent.cfg.bridge_name in gone:
            agent.ensure_host()
        for net in {n.name: n for p in plans for n in p.networks}.values() if gone else ():
            agent.ensure_network(net)  # made again where gone (its rules too); else nothing
        now = {b: links.index_of(b) for b in bridges}
        first = {b for b in bridges if b not in self.seen and b not in gone}
        # first seen counts too: made again before a heartbeat saw the first one (enslaving a
        # port to the bridge it is on already changes nothing)
        changed = {b for b, index in now.items() if index is not None and self.seen.get(b) != index}
        for plan in plans:
            for att in plan.attachments:
                if att.bridge in changed or att.bridge in gone:
                    self._put_back(att.host_ifname, att.bridge, now.get(att.bridge))
        if agent.overlay is not None and (changed or gone):
            agent.overlay.reattach(changed | set(gone))  # the networks' ports to other nodes too
        self.seen = {b: i for b, i in now.items() if i is not None}
        if gone or changed - first:
            log.warning(
                "bridge(s) %s were made again under running jobs: their jobs put back",
                ", ".join(sorted({*gone, *(changed - first)})),
            )
        return gone

    @staticmethod
    def _put_back(ifname: str, bridge: str, bridge_index: int | None) -> None:
        index = links.index_of(ifname)
        if index is None or bridge_index is None:
            return  # the job ended meanwhile (its veth went), or the bridge could not be made
        try:
            rtnl.send(f"put {ifname} back on {bridge}", [rtnl.up(index, master=bridge_index)])
        except JobletError as exc:
            log.warning("%s", exc)
