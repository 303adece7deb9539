"""The `rnx` command's entry point: Ctrl-C while rnx is still loading ends it quietly, as a
shell's command would (130), instead of a traceback from whichever import it interrupted."""

from __future__ import annotations

import contextlib
import os
import sys


def main() -> None:
    mode = os.environ.get("_RNX_COMPLETE", "")
    if mode.endswith("_complete") and not {"COMP_WORDS", "COMP_CWORD"} <= os.environ.keys():
        # a completion request without the shell's words (run by hand): click's KeyError
        # traceback; there is nothing to complete
        raise SystemExit(0)
    # text the terminal's encoding cannot show (PYTHONIOENCODING=ascii, LANG=C on an old
    # Python: a job's `echo été` in `rnx list`, a workflow's emoji) is escaped, not a traceback
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        from joblet.cli.main import main as run

        if mode.endswith("_complete"):
            from joblet.cli.complete import use_shell_words

            use_shell_words()
    except KeyboardInterrupt:
        os._exit(130)
    run()
