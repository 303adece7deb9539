"""Checks a job passes before anything of it is stored or queued: its size, its networks and
volumes exist, a live worker offers its runtime, a live node can take it (placement,
`joblet.api.nodes`), and the live workers would accept what this client sends (signed or not)."""

from __future__ import annotations

import json
from typing import Any

from joblet.api import nodes
from joblet.api.models import JobSpec, check_fresh
from joblet.api.networks import BUILTINS, NetworkStore
from joblet.api.store import Store
from joblet.api.store_homes import user_networks
from joblet.api.store_nodes import NodeStore
from joblet.api.volumes import VolumeStore
from joblet.config import Settings
from joblet.errors import ConfigError, NotFound, ValidationError
from joblet.fields import FieldError
from joblet.text import did_you_mean


def runtimes(live_nodes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Runtimes installed on live workers: [{"name", "nodes"}], sorted by name."""
    found: dict[str, list[str]] = {}
    for node, info in live_nodes.items():
        for name in info.get("runtimes", []):
            found.setdefault(name, []).append(node)
    return [{"name": n, "nodes": sorted(nodes)} for n, nodes in sorted(found.items())]


class Preflight:
    """The checks, against one installation's state."""

    def __init__(self, settings: Settings, store: Store, networks: NetworkStore, volumes: VolumeStore) -> None:
        self.settings = settings
        self.store = store
        self.networks = networks
        self.volumes = volumes
        # the last placement's fleet had more than one node: where a job is queued is kept
        # for its user networks (store_homes.py); with one node nothing reads it
        self.many_nodes = True

    def check(self, spec: JobSpec) -> JobSpec:
        """The spec as it will be queued, or an error."""
        spec = self._check_job(spec)
        self.check_fleet(spec.node)
        return spec

    def check_and_place(self, spec: JobSpec) -> tuple[JobSpec, str | None]:
        """`check`, then `place`, reading the live workers once for both signing checks."""
        spec = self._check_job(spec)
        live = self.store.live_nodes()
        self.check_fleet(spec.node, live)
        view = fleet_view(self.store, self.settings)
        self.many_nodes = len(view) > 1
        target = nodes.place(spec, view, homes=network_homes(self.store, spec, view))
        if target != spec.node:
            self.check_fleet(target, live)
        return spec, target

    def _check_job(self, spec: JobSpec) -> JobSpec:
        self.check_size(spec)
        self.check_networks(spec)
        return self.check_resources(spec)

    def check_size(self, spec: JobSpec) -> None:
        """Refuse a spec too large to queue, or past a bound on what is submitted now
        (models.check_fresh), before anything is stored."""
        check_fresh(spec)
        limit = self.settings.upload_max_bytes
        if spec.upload_bytes > limit:
            raise FieldError("uploads", f"{spec.upload_bytes} bytes exceed the limit of {limit}")
        size = len(json.dumps(spec.to_dict(), separators=(",", ":"), ensure_ascii=False))
        if size > self.settings.spec_max_bytes:
            raise ValidationError(
                f"invalid job: its spec is {size} bytes, over the limit of "
                f"{self.settings.spec_max_bytes} (spec_max_bytes; uploads, arguments and "
                "environment count)"
            )

    def check_networks(self, spec: JobSpec) -> None:
        for name in spec.network:
            if name not in BUILTINS:
                try:
                    self.networks.get(name)
                except NotFound:
                    if name.lower() in BUILTINS:
                        hint = f"the built-in one is {name.lower()!r}"
                    else:  # `--network=MyApp` for myapp: names keep their case
                        known = [*self.networks.names(), *sorted(BUILTINS)]  # `--network=nonee`: none
                        hint = " ".join(filter(None, (did_you_mean(name, known), "rnx network list")))
                    raise FieldError("network", f"no such network {name!r} ({hint})") from None

    def check_resources(self, spec: JobSpec) -> JobSpec:
        """Volumes must exist; a runtime must be offered by a live worker (the job is pinned
        to one that has it); bandwidth limits need a network of the job's own."""
        for name in spec.volumes:
            try:
                self.volumes.get(name)
            except NotFound:
                hint = " ".join(filter(None, (did_you_mean(name, self.volumes.names()), "rnx volume create")))
                raise FieldError("volumes", f"no such volume {name!r} ({hint})") from None
        lim = spec.limits
        if spec.network in (("host",), ("none",)) and (
            lim.max_bandwidth or lim.max_bandwidth_in or lim.max_bandwidth_out
        ):
            # none: no link to shape (it was accepted and did nothing)
            given = next(f for f in ("max_bandwidth", "max_bandwidth_in", "max_bandwidth_out") if getattr(lim, f))
            raise FieldError(("limits", given), f"bandwidth limits need a job network, not {spec.network[0]!r}")
        if spec.runtime is None:
            return spec
        offers = runtimes(self.store.live_nodes())
        offered: list[str] = next((r["nodes"] for r in offers if r["name"] == spec.runtime), [])
        if not offered:
            raise FieldError("runtime", f"no live worker offers runtime {spec.runtime!r} (rnx runtime list)")
        if spec.node is not None and spec.node not in offered:
            raise FieldError(
                "runtime", f"node {spec.node!r} does not offer runtime {spec.runtime!r} (it is on {', '.join(offered)})"
            )
        return spec

    def check_fleet(self, node: str | None, live: dict[str, dict[str, Any]] | None = None) -> None:
        """Refuse to queue what the live workers would refuse unread (signed vs unsigned, a
        certificate they do not trust) or never read (another broker or queue)."""
        from joblet.api.tasks import client_signer, route_mismatch, signing_mismatch

        live = self.store.live_nodes() if live is None else live
        if why := route_mismatch(self.settings, live, node):
            raise ConfigError(why)
        signer = client_signer(self.settings)
        why = signing_mismatch(signer is not None, live, node, signer.signer_id if signer else None)
        if why:
            raise ConfigError(why)


def network_homes(store: Store, spec: JobSpec, view: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The nodes each of the job's user networks has jobs running on or queued for
    (store_homes.py; nothing read for a job on built-in networks only, or a fleet of one)."""
    user = user_networks(spec.network)
    if not user or len(view) < 2:
        return {}
    return store.network_homes(user)


def fleet_view(store: Store, cfg: Settings) -> list[dict[str, Any]]:
    """Every node's row (`rnx nodes`), read now."""
    import time

    node_store = NodeStore(cfg.redis_url, cfg.key_prefix, store.redis)
    return nodes.view(node_store.records(), node_store.drained(), time.time(), cfg.node_down_after)


def best_effort_target(store: Store, cfg: Settings, spec: JobSpec) -> str | None:
    """Placement for a job queued later (a workflow's next job): a fitting node, else the
    shared queue (its pin, if it has one: a node full, draining or down now, restarting say,
    whose queue the fleet's sweep of its silence still empties). A job pinned to a node
    forgotten, or down with its silence swept already, raises, as `rnx run --node` is
    refused: queued there, it waited for good (fleet run)."""
    from joblet.errors import JobletError

    view: list[dict[str, Any]] = []
    try:
        view = fleet_view(store, cfg)
        return nodes.place(spec, view, homes=network_homes(store, spec, view))
    except JobletError:
        if spec.node is not None and view and node_gone(store, cfg, spec.node, view):
            raise
        return spec.node


def node_gone(store: Store, cfg: Settings, node: str, view: list[dict[str, Any]] | None = None) -> bool:
    """Not in the fleet (forgotten), or down with the sweep of its last silence begun (its
    jobs made LOST, those the sweep read): nothing may take or end a job queued there now.
    A job's record names its node before this is asked (workflow_store._queue): a sweep that
    began after read it; one that began before is seen here (red-team run: a job queued
    while the sweep ran stayed PENDING for good)."""
    view = fleet_view(store, cfg) if view is None else view
    row = next((n for n in view if n["name"] == node), None)
    if row is None:
        return True
    if row["state"] != nodes.DOWN:
        return False
    node_store = NodeStore(cfg.redis_url, cfg.key_prefix, store.redis)
    beat = node_store.records().get(node, {}).get("beat")
    return beat is not None and node_store.sweeping(node, float(beat))
