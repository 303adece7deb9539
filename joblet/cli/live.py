"""Redrawing a view every few seconds (`rnx list --watch`, `rnx stats`) until Ctrl-C."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from joblet import wakeup
from joblet.errors import BackendRefused, BackendUnavailable, NotFound

CLEAR = "\x1b[H\x1b[2J"


class Interval(click.FloatRange):
    """--interval's seconds: 0.2 to a day. click's range let `nan` through (every comparison
    false: a redraw loop reading Redis hundreds of times a second) and `inf` or `1e10` (a
    traceback at the first wait: no such timeout) (usability run)."""

    def __init__(self) -> None:
        super().__init__(min=0.2, max=86400.0)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


def refresh(draw: Callable[[], bool | None], interval: float | None, clear: bool = True) -> None:
    """Draw once (interval None), or redraw every `interval` seconds until Ctrl-C (exit 0) or
    a frame whose `draw` returned False (nothing left to change: its last frame stays). On a
    terminal the screen is cleared first; piped, the frames follow one another. With `clear`
    off (JSON) nothing is added at the end. Redis going away after the first frame is said
    once on stderr, the last frame kept, and tried again each interval until it is back: a
    restart ended the view at once, and a hung server froze it without a word (usability
    run); the first frame's failure ends it (a wrong URL)."""
    if interval is None:
        draw()
        return
    drawn, since = False, None
    try:
        while True:
            began = time.strftime("%H:%M:%S")  # a hung Redis went as the draw began
            try:
                more = _draw(draw, clear)
            except BackendRefused:
                raise
            except NotFound:
                if since is None:  # Redis back empty: the jobs' workers write them again at their
                    raise  # next heartbeat ("no such job" ended `rnx stats ID`: usability run)
                wakeup.sleep(interval)
                continue
            except BackendUnavailable as exc:
                if not drawn:
                    raise
                if since is None:
                    since = began
                    sys.stdout.flush()
                    print(f"rnx: {exc} (since {since}); trying again every {interval:g} s", file=sys.stderr)
                wakeup.sleep(interval)
                continue
            if since is not None:
                print(f"rnx: Redis is back (unreachable since {since})", file=sys.stderr)
                since = None
            drawn = True
            sys.stdout.flush()
            if more is False:
                return
            wakeup.sleep(interval)
    except KeyboardInterrupt:
        if clear:  # a terminal's prompt on a line of its own; JSON lines stay JSON lines
            sys.stdout.write("\n")
    sys.stdout.flush()


def _draw(draw: Callable[[], bool | None], clear: bool) -> bool | None:
    """One frame; on a terminal the screen is cleared by its first write: a draw that fails
    first keeps the last frame (review)."""
    out = sys.stdout
    try:
        if clear and out.isatty():
            sys.stdout = ClearFirst(out)
        return draw()
    finally:
        sys.stdout = out


class ClearFirst:
    """A terminal's stdout that clears the screen before the first thing written to it."""

    def __init__(self, out: Any) -> None:
        self._out, self._pending = out, True

    def write(self, text: str) -> int:
        if self._pending and text:
            self._pending = False
            self._out.write(CLEAR)
        return self._out.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)
