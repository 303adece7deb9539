"""A worker's place (its host's boot and its state_dir) tells its own restarted heartbeat
from another worker's under the same node name (fleet.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from joblet.errors import JobletError
from joblet.worker import fleet


class Beats:
    def __init__(self, beat: dict | None) -> None:
        self.beat = beat

    def node_beat(self, node: str) -> dict | None:
        return self.beat


def test_a_place_is_its_boot_and_state_dir(tmp_path: Path):
    boot = tmp_path / "boot_id"
    boot.write_text("b1\n")
    here = fleet.place(tmp_path / "state", str(boot))
    assert here == fleet.place(tmp_path / "state", str(boot))  # a restart here: the same
    assert here != fleet.place(tmp_path / "other", str(boot))  # another state_dir
    boot.write_text("b2\n")
    assert here != fleet.place(tmp_path / "state", str(boot))  # another host (or boot)


def test_start_is_refused_only_under_another_places_live_name():
    fleet.refuse_taken_node(Beats(None), "n1", "p1")  # no live heartbeat
    fleet.refuse_taken_node(Beats({"place": "p1", "beat": 0}), "n1", "p1")  # its own, restarted
    fleet.refuse_taken_node(Beats({"beat": 0}), "n1", "p1")  # an older worker's: it cannot tell
    with pytest.raises(JobletError, match="^node 'n1' is up on another worker"):
        fleet.refuse_taken_node(Beats({"place": "p2", "beat": 0}), "n1", "p1")


def test_another_worker_beating_under_the_name_is_logged_once(caplog):
    seen: set[str] = set()
    with caplog.at_level(logging.ERROR):
        for replaced in (None, {"place": "p1"}, {"place": "p2"}, {"place": "p2"}, {"place": "p3"}):
            fleet.other_worker("n1", replaced, "p1", seen)
    lines = [r.getMessage() for r in caplog.records if "another worker beats under this name" in r.getMessage()]
    assert len(lines) == 2 and seen == {"p2", "p3"}
