"""The `rnx` command's entry point: Ctrl-C while rnx is still loading ends it quietly, as a
shell's command would (130), instead of a traceback from whichever import it interrupted."""

from __future__ import annotations

import os


def main() -> None:
    try:
        from joblet.cli.main import main as run
    except KeyboardInterrupt:
        os._exit(130)
    run()
