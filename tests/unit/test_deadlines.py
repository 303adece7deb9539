"""The worker's deadline thread (a stopped job's SIGKILL after its grace period)."""

from __future__ import annotations

import threading

from joblet.worker.deadlines import Deadlines

WAIT = 5.0  # generous: only a broken implementation waits this long


def test_deadlines_run_in_time_order_on_one_thread() -> None:
    deadlines, ran, threads, done = Deadlines(), [], set(), threading.Event()

    def mark(name: str) -> None:
        ran.append(name)
        threads.add(threading.current_thread().name)
        if len(ran) == 3:
            done.set()

    deadlines.after(0.06, lambda: mark("late"))
    deadlines.after(0.0, lambda: mark("now"))
    deadlines.after(0.03, lambda: mark("soon"))
    assert done.wait(WAIT)
    assert ran == ["now", "soon", "late"]
    assert threads == {"joblet-deadlines"}


def test_a_cancelled_deadline_does_not_run_and_later_ones_do() -> None:
    deadlines, ran, later = Deadlines(), [], threading.Event()
    cancel = deadlines.after(0.02, lambda: ran.append("cancelled"))
    deadlines.after(0.04, later.set)  # the positive control: a deadline after the cancelled one
    cancel()
    assert later.wait(WAIT)
    assert ran == []


def test_a_failing_action_does_not_end_the_others() -> None:
    deadlines, after = Deadlines(), threading.Event()

    def fail() -> None:
        raise OSError("the cgroup is gone")

    deadlines.after(0.0, fail)
    deadlines.after(0.01, after.set)
    assert after.wait(WAIT)


def test_a_cancel_after_the_action_ran_is_harmless() -> None:
    deadlines, ran = Deadlines(), threading.Event()
    cancel = deadlines.after(0.0, ran.set)
    assert ran.wait(WAIT)
    cancel()
    again = threading.Event()
    deadlines.after(0.0, again.set)  # the thread still serves new deadlines
    assert again.wait(WAIT)
