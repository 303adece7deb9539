"""An undo stack for a job's setup (netavark's shape): each step that changed the host pushes
its undo; on failure or at the end every undo runs, newest first, and errors are collected
instead of stopping at the first (a later undo may still free what an earlier one could not)."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class UndoStack:
    """Undo steps of what was applied, run newest first, each at most once."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, undo: Callable[[], object]) -> None:
        self._steps.append((what, undo))

    def __len__(self) -> int:
        return len(self._steps)

    def names(self) -> list[str]:
        """What would be undone, in the order it would be."""
        return [what for what, _ in reversed(self._steps)]

    def unwind(self) -> list[str]:
        """Run every undo (newest first); returns "what: error" for each that failed."""
        errors = []
        while self._steps:
            what, undo = self._steps.pop()
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - collected; the other undos still run
                if not isinstance(exc, OSError) and type(exc).__module__.split(".")[0] != "joblet":
                    log.exception("undo %r failed unexpectedly", what)
                errors.append(f"{what}: {exc}")
        return errors
