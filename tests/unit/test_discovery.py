"""Discovery's refresh with a fake store: every local job of a network gets the network's
peers, read once per set of networks the jobs share, not once per job."""

from __future__ import annotations

from typing import Any

from joblet.api.store import resolve_names
from joblet.worker.discovery import Discovery


class CountingStore:
    def __init__(self, members: dict[str, dict[str, str]]) -> None:
        self.by_network = members
        self.reads: list[list[str]] = []
        self.events: list[dict[str, Any]] = []

    def members(self, networks: list[str], scope: str = "") -> dict[str, str]:
        self.reads.append(list(networks))
        return {name: ip for n in networks for name, ip in self.by_network.get(n, {}).items()}

    def join_networks(self, *args: Any) -> None:
        pass

    def leave_networks(self, *args: Any) -> None:
        pass

    def publish_event(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, **fields})


def test_a_refresh_reads_the_peers_once_per_network_set_and_writes_every_job() -> None:
    store = CountingStore({"web": {"a": "10.0.0.2", "b": "10.0.0.3"}, "db": {"d": "10.1.0.2"}})
    discovery = Discovery(store, "n1")  # type: ignore[arg-type]
    written: dict[str, dict[str, str]] = {}
    for i in range(50):  # fifty jobs in web (and the default bridge, which has no discovery)
        job = f"web{i}"
        discovery.join(job, {"web": "10.0.0.9", "bridge": "172.20.0.9"}, [job], lambda p, j=job: written.update({j: p}))
    discovery.join("both", {"web": "10.0.0.8", "db": "10.1.0.8"}, ["both"], lambda p: written.update({"both": p}))
    discovery.join("other", {"db": "10.1.0.7"}, ["other"], lambda p: written.update({"other": p}))

    discovery.refresh(["web", "bridge"])

    assert len(written) == 51 and "other" not in written  # every job in web, no one else
    assert all(written[f"web{i}"] == {"a": "10.0.0.2", "b": "10.0.0.3"} for i in range(50))
    assert written["both"] == {"a": "10.0.0.2", "b": "10.0.0.3", "d": "10.1.0.2"}
    assert sorted(store.reads) == [["db", "web"], ["web"]]  # once per set, not 51 times
    assert store.events == [{"kind": "hosts", "networks": ["web"], "node": "n1"}]


def test_a_network_without_discovery_writes_nothing() -> None:
    store = CountingStore({})
    discovery = Discovery(store, "n1")  # type: ignore[arg-type]
    written: list[str] = []
    discovery.join("j", {"bridge": "172.20.0.2"}, ["j"], lambda p: written.append("j"))
    discovery.refresh(["bridge"])
    assert written == [] and store.reads == [] and store.events == []


def test_a_workflows_names_resolve_for_its_own_jobs_only() -> None:
    entries = [
        {"ip": "10.0.0.2", "names": ["aaaaaaaaaaaa", "db"]},  # a job outside workflows
        {"ip": "10.0.0.3", "names": ["bbbbbbbbbbbb", "db"], "scope": "wf1"},
        {"ip": "10.0.0.4", "names": ["cccccccccccc", "db"], "scope": "wf2"},  # a second run
        {"ip": "10.0.0.5", "names": ["dddddddddddd", "cache"], "scope": "wf2"},
    ]
    ids = {
        "aaaaaaaaaaaa": "10.0.0.2",
        "bbbbbbbbbbbb": "10.0.0.3",
        "cccccccccccc": "10.0.0.4",
        "dddddddddddd": "10.0.0.5",
    }
    assert resolve_names(entries) == {**ids, "db": "10.0.0.2"}  # no workflow takes the name
    assert resolve_names(entries, "wf1") == {**ids, "db": "10.0.0.3"}  # each run its own
    assert resolve_names(entries, "wf2") == {**ids, "db": "10.0.0.4", "cache": "10.0.0.5"}
    assert resolve_names(entries[1:2], "") == {"bbbbbbbbbbbb": "10.0.0.3"}
    # a run whose db has not started (or has ended): its db is no outside job's, and is absent
    assert resolve_names(entries[:1] + entries[3:], "wf2", {"db", "cache"}) == {
        "aaaaaaaaaaaa": "10.0.0.2",
        "dddddddddddd": "10.0.0.5",
        "cache": "10.0.0.5",
    }
    assert resolve_names(entries[:1], "wf2", {"cache"})["db"] == "10.0.0.2"  # the control: not its name


def test_a_jobs_short_id_is_its_own_whatever_another_is_named() -> None:
    victim = {"ip": "10.0.0.2", "names": ["3f50626394c6", "victim"]}
    squatter = {"ip": "10.0.0.3", "names": ["aaaaaaaaaaaa", "3f50626394c6"]}  # an older client's name
    for entries in ([victim, squatter], [squatter, victim]):
        assert resolve_names(entries)["3f50626394c6"] == "10.0.0.2"
