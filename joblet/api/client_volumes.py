"""`Client().volumes`: create, list and delete volumes."""

from __future__ import annotations

from typing import Any

from joblet.api.store import Store
from joblet.api.volumes import VolumeDef, VolumeStore
from joblet.errors import Conflict


class Volumes:
    """Volume operations of a Client."""

    def __init__(self, jobs: Store, store: VolumeStore) -> None:
        self.jobs = jobs
        self.store = store

    def create(self, name: str, size: str | None = None) -> VolumeDef:
        return self.store.create(name, size)

    def users(self, name: str) -> list[str]:
        return [r.short_id for r in self.jobs.list_jobs() if name in r.spec.volumes and not r.status.final]

    def list(self) -> list[dict[str, Any]]:
        return [{**v.to_dict(), "jobs": len(self.users(v.name))} for v in self.store.all()]

    def delete(self, name: str) -> None:
        self.store.get(name)
        users = self.users(name)
        if users:
            raise Conflict(
                f'failed to delete volume "{name}": {len(users)} job(s) use it '
                f"({', '.join(users[:5])}); stop them first"
            )
        self.store.delete(name)
        self.jobs.publish_event("volume-deleted", name=name)  # every host drops its data
