"""Nodes as users see them, and where a job goes (pure: tests give plain dicts).

A node's state comes from its lasting record (its last heartbeat, `store_nodes`): `down`
once it has not beaten for `node_down_after` seconds (or it stopped cleanly), else
`draining` while an operator drains it, else `up`.

Placement: a job goes only to an `up` node that can run it (host networking allowed there,
its runtime present, a free slot of its concurrency). `--node` pins and is checked the
same way. Among fitting nodes one is drawn at random weighted by free slots, so a burst of
submits between two heartbeats spreads instead of piling onto the node that looked
emptiest. With no node up or draining at all, a job any node could run goes to the shared
queue and waits for a worker (a fleet restarting loses nothing); anything else is refused,
naming why for each node (a draining node would only refuse it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from joblet.api.limits import above_ceiling
from joblet.api.models import JobSpec
from joblet.errors import ValidationError
from joblet.fields import FieldError
from joblet.limit_names import as_flag
from joblet.text import did_you_mean, shown, sized

UP, DOWN, DRAINING = "up", "down", "draining"


def stop_graces(live: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each node's stop grace from its heartbeat (`live_nodes`), where it publishes one."""
    graces = ((n, info.get("stop_grace")) for n, info in live.items())
    numbers = ((n, g) for n, g in graces if isinstance(g, int | float) and not isinstance(g, bool))
    return {n: float(g) for n, g in numbers if 0 <= g < math.inf}  # JSON's 1e999 is infinite: a wait for good


def state(record: dict[str, Any], drained: bool, now: float, down_after: float) -> str:
    if record.get("left") or now - float(record.get("beat", 0)) > down_after:
        return DOWN
    return DRAINING if drained else UP


def when(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def view(records: dict[str, dict[str, Any]], drained: set[str], now: float, down_after: float) -> list[dict[str, Any]]:
    """One row per node, by name: what `rnx nodes --json` prints."""
    return [row(name, rec, name in drained, now, down_after) for name, rec in sorted(records.items())]


def row(name: str, rec: dict[str, Any], drained: bool, now: float, down_after: float) -> dict[str, Any]:
    beat, now_state = float(rec.get("beat", 0)), state(rec, drained, now, down_after)
    return {
        "name": name,
        "state": now_state,
        "draining": drained,
        "last_heartbeat": when(beat),
        "heartbeat_age": round(max(0.0, now - beat), 1),
        "left": when(rec.get("left")),
        "version": rec.get("version"),
        "concurrency": rec.get("concurrency"),
        # a down node's last count is not its jobs now (they ended with it, or are being
        # failed as lost): None, not a number that looked like jobs still running there
        "jobs": None if now_state == DOWN else rec.get("jobs", 0),
        "capabilities": {
            "cpus": rec.get("cpus"),  # None from workers before 2026-11-29
            "memory_ceiling": rec.get("memory_ceiling"),  # MB; None from workers before 2026-12-01, or uncapped
            "disk_ceiling": rec.get("disk_ceiling"),  # MB; None from workers before 2026-11-30
            "pids_ceiling": rec.get("pids_ceiling"),
            "output_ceiling": rec.get("output_ceiling"),  # bytes; None from workers before 2026-11-29
            "host_network": rec.get("host_network"),
            "runtimes": rec.get("runtimes", []),
            "cgroup": rec.get("cgroup"),
            "sandbox": rec.get("sandbox", {}),
            "signed": rec.get("signed"),
            "disk_full": rec.get("disk_full") or [],  # `state_dir PATH`...: its jobs would fail at their start
            # where other nodes send its user networks' traffic (VXLAN); None: its user
            # networks stay on it (overlay off, or no address to be reached at)
            "underlay": rec.get("underlay"),
        },
        "addresses": rec.get("addresses", []),
    }


def unfit(spec: JobSpec, node: dict[str, Any]) -> str | None:
    """Why this node cannot take the job now (one phrase), or None."""
    if node["state"] != UP:
        return "down" if node["state"] == DOWN else "draining"
    why = incapable(spec, node)
    if why is not None:
        return why
    full = node["capabilities"].get("disk_full")
    if full and isinstance(full, list):
        return f"its disk is full ({' and '.join(map(str, full))})"
    if free_slots(node) <= 0:
        return f"full ({node['jobs']} of {node['concurrency']} jobs)"
    return None


def incapable(spec: JobSpec, node: dict[str, Any], named: Callable[[str], str] = as_flag) -> str | None:
    """Why this node could not take the job whatever its state and load (one phrase), or None.
    `named`: a limit's name as the user gave it (rnx run's option; a workflow file's field)."""
    caps = node["capabilities"]
    if "host" in spec.network and caps["host_network"] is False:
        return "host networking not allowed"
    if spec.runtime is not None and spec.runtime not in caps["runtimes"]:
        return f"no runtime {spec.runtime!r}"
    cpus, asked = caps.get("cpus"), spec.limits.max_cpu
    if isinstance(cpus, int) and asked is not None and asked > cpus * 100:  # as docker run --cpus
        return f"{cpus} CPUs, less than {named('max_cpu')} {asked}"
    memory, asked = caps.get("memory_ceiling"), spec.limits.max_memory
    if isinstance(memory, int) and asked is not None and asked > memory:  # its cgroup could never give it
        return f"{memory} MB for all its jobs, less than {named('max_memory')} {asked} MB"
    above = above_ceiling(spec.limits, caps.get("disk_ceiling"), caps.get("pids_ceiling"), caps.get("output_ceiling"))
    if above is not None:  # its worker would refuse it
        field, asked, ceiling, unit = above
        if unit == " bytes":
            return f"{named(field)} {sized(asked)} is above its ceiling of {sized(ceiling)}"
        return f"{named(field)} {asked}{unit} is above its ceiling of {ceiling}{unit}"
    return None


def free_slots(node: dict[str, Any]) -> int:
    cap = node.get("concurrency")
    return 1 << 20 if not isinstance(cap, int) else cap - int(node.get("jobs") or 0)


def constrained(spec: JobSpec) -> bool:
    """Not every node can be assumed to run it (host networking, a runtime, a pin)."""
    return spec.node is not None or spec.runtime is not None or "host" in spec.network


def apart(node: str, homes: dict[str, set[str]], nodes: list[dict[str, Any]]) -> str | None:
    """Why a job on these user networks could not reach their jobs from `node`, or None.
    `homes`: each network's nodes with running jobs. Two nodes reach each other's jobs when
    both carry an overlay (an underlay address); a node that does not keeps a network it
    has jobs of to itself, and its peers elsewhere were unreachable, with no word but a log
    line on the worker (red-team run). A home that is down is not waited for. A network
    already split over such nodes (jobs of it submitted at once, before any was placed, or
    while its home was down) takes new jobs on any of its homes, each reaching the jobs
    there: it was refused on every node until the split jobs ended (fleet run)."""
    joined = {n["name"] for n in nodes if n["capabilities"].get("underlay")}
    live = {n["name"] for n in nodes if n["state"] != DOWN}
    for network, where in sorted(homes.items()):
        if node in where:
            continue
        for home in sorted((where & live) - {node}):
            if not (node in joined and home in joined):
                return f"network {network!r} has jobs on {home} and no overlay joins the two"
    return None


def place(
    spec: JobSpec,
    nodes: list[dict[str, Any]],
    rng: random.Random | None = None,
    homes: dict[str, set[str]] | None = None,
) -> str | None:
    """The node to queue the job on; None: the shared queue (no node is up or draining: the
    job waits for any to start). A draining node takes from the shared queue only to refuse.
    `homes`: the nodes its user networks have jobs on (`apart`)."""
    if spec.node is not None:
        return _pinned(spec, nodes, homes or {})
    if not any(n["state"] in (UP, DRAINING) for n in nodes) and not constrained(spec):
        return None
    reasons = {n["name"]: unfit(spec, n) or apart(n["name"], homes or {}, nodes) for n in nodes}
    fit = [n for n in nodes if reasons[n["name"]] is None]
    if not fit:
        why = "; ".join(f"{name}: {r}" for name, r in reasons.items()) or "no node has joined the fleet"
        raise ValidationError(f"cannot place the job: no live node can take it ({why}; rnx nodes)")
    weights = [min(free_slots(n), 4096) for n in fit]
    return str((rng or random).choices(fit, weights=weights)[0]["name"])


def no_node(name: str, nodes: list[dict[str, Any]]) -> str:
    """`no node 'NodeB' in the fleet (did you mean 'nodeb'? rnx nodes)`: names keep their case."""
    hint = did_you_mean(name, (str(n["name"]) for n in nodes))
    return f"no node '{shown(name)}' in the fleet ({hint + ' ' if hint else ''}rnx nodes)"


def _pinned(spec: JobSpec, nodes: list[dict[str, Any]], homes: dict[str, set[str]]) -> str:
    node = next((n for n in nodes if n["name"] == spec.node), None)
    if node is None:
        raise FieldError("node", no_node(str(spec.node), nodes))
    why = unfit(spec, node) or apart(node["name"], homes, nodes)
    if why is not None:
        raise ValidationError(f"cannot place the job on node {spec.node!r}: {why} (rnx nodes)")
    return str(node["name"])
