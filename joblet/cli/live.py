"""Redrawing a view every few seconds (`rnx list --watch`, `rnx stats`) until Ctrl-C."""

from __future__ import annotations

import sys
from collections.abc import Callable

from joblet import wakeup

CLEAR = "\x1b[H\x1b[2J"


def refresh(draw: Callable[[], None], interval: float | None, clear: bool = True) -> None:
    """Draw once (interval None), or redraw every `interval` seconds; Ctrl-C ends it, exit 0.
    On a terminal the screen is cleared first; piped, the frames follow one another. With
    `clear` off (JSON) nothing is added at the end."""
    if interval is None:
        draw()
        return
    try:
        while True:
            if clear and sys.stdout.isatty():
                sys.stdout.write(CLEAR)
            draw()
            sys.stdout.flush()
            wakeup.sleep(interval)
    except KeyboardInterrupt:
        if clear:  # a terminal's prompt on a line of its own; JSON lines stay JSON lines
            sys.stdout.write("\n")
    sys.stdout.flush()
