"""`Client().volumes` and `Client().runtimes`: volumes, and the runtimes live workers offer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from joblet.api.volumes import VolumeDef, VolumeStore
from joblet.errors import Conflict

if TYPE_CHECKING:
    from joblet.api.client import Client


class Volumes:
    """Volume operations of a Client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        cfg = client.settings
        self.store = VolumeStore(cfg.redis_url, cfg.key_prefix, client.store.redis)

    def create(self, name: str, size: str | None = None) -> VolumeDef:
        return self.store.create(name, size)

    def users(self, name: str) -> list[str]:
        return [r.short_id for r in self.client.list() if name in r.spec.volumes and not r.status.final]

    def list(self) -> list[dict[str, Any]]:
        return [{**v.model_dump(mode="json"), "jobs": len(self.users(v.name))} for v in self.store.all()]

    def delete(self, name: str) -> None:
        self.store.get(name)
        users = self.users(name)
        if users:
            raise Conflict(f'failed to delete volume "{name}": {len(users)} job(s) use it '
                           f"({', '.join(users[:5])}); stop them first")
        self.store.delete(name)
        self.client.store.publish_event("volume-deleted", name=name)  # every host drops its data


def runtimes(client: Client) -> list[dict[str, Any]]:
    """Runtimes installed on live workers: [{"name", "nodes"}], sorted by name."""
    found: dict[str, list[str]] = {}
    for node, info in client.live_nodes().items():
        for name in info.get("runtimes", []):
            found.setdefault(name, []).append(node)
    return [{"name": n, "nodes": sorted(nodes)} for n, nodes in sorted(found.items())]
