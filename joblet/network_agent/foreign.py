"""Other tools' forward chains with a drop policy (Docker, firewalld, a hand-written ruleset).

Every base chain on the forward hook sees a packet, and a drop in any of them is final, so
joblet's own table cannot override a foreign `policy drop`. joblet finds such chains, explains
them, and, when the worker is told to (`foreign_forward = "insert"`), inserts accept rules for
its own interfaces at the top of the chain, or of `DOCKER-USER` when that table has one, the
place Docker keeps for its users. joblet's own table still decides what jobs may reach.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

from joblet.errors import NetworkError
from joblet.names import TABLE
from joblet.network_agent.firewall import apply

log = logging.getLogger(__name__)
ACCEPT_TAG = "joblet:accept"
FIX = (
    'set foreign_forward = "insert" in the worker\'s config (JOBLET_FOREIGN_FORWARD=insert) '
    "to let joblet insert its accept rules there, or accept joblet's interfaces in it yourself"
)


@dataclass(frozen=True)
class Chain:
    family: str
    table: str
    name: str

    def __str__(self) -> str:
        return f"{self.family} {self.table} {self.name}"


def _nft_json(*args: str) -> list[dict[str, Any]]:
    try:
        proc = subprocess.run(["nft", "-j", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NetworkError("nft not found: install nftables") from None
    if proc.returncode != 0:
        raise NetworkError(f"nft {' '.join(args)}: {proc.stderr.strip()}")
    return list(json.loads(proc.stdout or "{}").get("nftables", []))


def _chains() -> list[dict[str, Any]]:
    return [item["chain"] for item in _nft_json("list", "chains") if "chain" in item]


def drop_chains(chains: list[dict[str, Any]] | None = None) -> list[Chain]:
    """Forward base chains with policy drop in tables that are not joblet's (IPv4 families)."""
    found = []
    for c in _chains() if chains is None else chains:
        if (
            c.get("hook") == "forward"
            and c.get("policy") == "drop"
            and c.get("family") in ("ip", "inet")
            and c.get("table") != TABLE
        ):
            found.append(Chain(c["family"], c["table"], c["name"]))
    return found


def explain(chains: list[Chain]) -> str:
    names = ", ".join(f'"{c}"' for c in chains)
    return f"forward chain {names} (another tool's firewall) has policy drop and drops job traffic; {FIX}"


def target_of(chain: Chain, chains: list[dict[str, Any]]) -> Chain:
    """Where accept rules go: the table's DOCKER-USER chain if it has one, else the chain."""
    for c in chains:
        if c.get("family") == chain.family and c.get("table") == chain.table and c.get("name") == "DOCKER-USER":
            return Chain(chain.family, chain.table, "DOCKER-USER")
    return chain


def render_accepts(chain: Chain, ifnames: list[str]) -> str:
    """`insert` lines accepting traffic from and to joblet's interfaces (patterns allowed)."""
    lines = []
    for name in reversed(ifnames):  # each insert goes to the top: reverse keeps the order
        for direction in ("oifname", "iifname"):
            lines.append(
                f"insert rule {chain.family} {chain.table} {chain.name} "
                f'{direction} "{name}" accept comment "{ACCEPT_TAG}"'
            )
    return "\n".join(lines) + "\n"


def has_accepts(chain: Chain) -> bool:
    for item in _nft_json("list", "chain", chain.family, chain.table, chain.name):
        if item.get("rule", {}).get("comment") == ACCEPT_TAG:
            return True
    return False


def insert_accepts(chains: list[Chain], ifnames: list[str]) -> list[Chain]:
    """Insert joblet's accept rules where missing; returns the chains that got them now."""
    listing = _chains()
    done = []
    for chain in chains:
        target = target_of(chain, listing)
        if not has_accepts(target):
            apply(render_accepts(target, ifnames))
            done.append(target)
    return done


class ForwardCheck:
    """The worker's look at foreign forward chains: with `insert`, joblet's accept rules for
    `patterns` (its interfaces) go into each; a problem is logged once when it appears."""

    def __init__(self, insert: bool, patterns: list[str]) -> None:
        self.insert = insert
        self.patterns = patterns
        self._lock = threading.Lock()  # not the agent's setup lock: nft runs here, setups go on
        self._checked = 0.0
        self._problem: str | None = None

    def check(self, max_age: float = 0.0) -> str | None:
        """Look again unless the last look is younger than `max_age` s; the problem standing."""
        with self._lock:
            if time.monotonic() - self._checked < max_age:
                return self._problem
            chains = drop_chains()
            problem = explain(chains) if chains else None
            if chains and self.insert:
                for chain in insert_accepts(chains, self.patterns):
                    log.warning("inserted joblet's accept rules into forward chain %s", chain)
                problem = None
            if problem != self._problem and problem:
                log.error("%s", problem)
            self._problem, self._checked = problem, time.monotonic()
            return problem
