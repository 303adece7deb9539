"""Redrawing a view every few seconds (`rnx list --watch`, `rnx stats`) until Ctrl-C."""

from __future__ import annotations

import sys
from collections.abc import Callable

from joblet import wakeup

CLEAR = "\x1b[H\x1b[2J"


def refresh(draw: Callable[[], bool | None], interval: float | None, clear: bool = True) -> None:
    """Draw once (interval None), or redraw every `interval` seconds until Ctrl-C (exit 0) or
    a frame whose `draw` returned False (nothing left to change: its last frame stays). On a
    terminal the screen is cleared first; piped, the frames follow one another. With `clear`
    off (JSON) nothing is added at the end."""
    if interval is None:
        draw()
        return
    try:
        while True:
            if clear and sys.stdout.isatty():
                sys.stdout.write(CLEAR)
            more = draw()
            sys.stdout.flush()
            if more is False:
                return
            wakeup.sleep(interval)
    except KeyboardInterrupt:
        if clear:  # a terminal's prompt on a line of its own; JSON lines stay JSON lines
            sys.stdout.write("\n")
    sys.stdout.flush()
