"""A signal ends rnx's waits without fail (joblet/wakeup.py).

The lost wake-up is a race of microseconds: a signal that comes after the main thread's last
check for one and before its wait blocks. It is made certain here: the main thread blocks the
signal, so the kernel hands it to another thread, whose arrival then never interrupts the main
thread's wait, as a signal in that window does not. Python still runs the handler in the main
thread, once its wait returns."""

from __future__ import annotations

import os
import platform
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from joblet import wakeup
from joblet.api import resp

# the system calls a wait blocks in (poll, select, pselect6, ppoll, nanosleep, clock_nanosleep)
WAITS = {"x86_64": {7, 23, 270, 271, 35, 230}, "aarch64": {72, 73, 101, 115}}


class Interrupted(Exception):
    pass


handled = threading.Event()  # the handler ran: the main thread's wait returned


def _raise(signum: int, frame: object) -> None:
    handled.set()
    raise Interrupted


@pytest.fixture
def installed() -> Iterator[None]:
    """wakeup.install for one test, then the process as it was."""
    if platform.machine() not in WAITS:
        pytest.skip(f"system call numbers of {platform.machine()} not listed")
    previous = signal.signal(signal.SIGUSR1, _raise)
    handled.clear()
    wakeup.install()
    try:
        yield
    finally:
        write_end = signal.set_wakeup_fd(-1)
        if write_end >= 0:
            os.close(write_end)
        if wakeup._read_end is not None:
            os.close(wakeup._read_end)
        wakeup._read_end = None
        signal.signal(signal.SIGUSR1, previous)


def _blocked_in_a_wait(tid: int) -> bool:
    try:
        call = Path(f"/proc/self/task/{tid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return False
    return call.isdigit() and int(call) in WAITS[platform.machine()]


def signal_once_waiting(
    stuck: list[bool], before: Callable[[], None] = lambda: None, after: Callable[[], None] = lambda: None
) -> threading.Thread:
    """A thread that runs `before`, waits until the main thread blocks in a wait, then sends
    the process SIGUSR1, which only this thread takes (the caller blocks it). If the handler
    has not run 10 s later (microseconds, with the pipe), the main thread sat on: `stuck`
    says so, and `after` ends its wait. `stuck` also says when the main thread never waited."""
    main = threading.get_native_id()

    def send() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        before()
        deadline = time.monotonic() + 10  # a main thread that never waits ends the test, not hangs it
        while not _blocked_in_a_wait(main):
            if time.monotonic() > deadline:
                stuck.append(True)
                return
        os.kill(os.getpid(), signal.SIGUSR1)
        if not handled.wait(10):
            stuck.append(True)
            after()

    return threading.Thread(target=send, daemon=True)


def test_a_signal_ends_a_wait_for_a_reply_that_never_comes(installed: None, tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "redis.sock"))
    listener.listen(1)
    listener.settimeout(10)  # accept() ends the test if the client never connects
    conn = resp.Connection(f"unix://{tmp_path / 'redis.sock'}")
    accepted: list[socket.socket] = []

    def read_the_command() -> None:  # the client sent it, and waits for the reply
        peer, _ = listener.accept()
        accepted.append(peer)
        assert peer.recv(100).startswith(b"*1\r\n$4\r\nPING")

    stuck: list[bool] = []
    sender = signal_once_waiting(stuck, read_the_command, lambda: accepted[0].shutdown(socket.SHUT_RDWR))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        sender.start()
        with pytest.raises(Interrupted):
            conn.call(["PING"])
        sender.join()
        assert not stuck, "the signal waited for the read to end"
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        sender.join()
        conn.close()
        for peer in accepted:
            peer.close()
        listener.close()


def test_a_reply_still_reads(installed: None, tmp_path: Path) -> None:
    """The control: with the pipe watched, a reply that comes is read as before."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "redis.sock"))
    listener.listen(1)
    conn = resp.Connection(f"unix://{tmp_path / 'redis.sock'}")

    def answer() -> None:
        peer, _ = listener.accept()
        with peer:
            peer.recv(100)
            peer.sendall(b"+PONG\r\n")

    server = threading.Thread(target=answer, daemon=True)
    server.start()
    try:
        assert conn.call(["PING"]) == b"PONG"
    finally:
        server.join()
        conn.close()
        listener.close()


def test_a_signal_ends_a_sleep(installed: None) -> None:
    """`rnx list --watch` and `rnx workflow run` between their looks."""
    stuck: list[bool] = []
    sender = signal_once_waiting(stuck)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        sender.start()
        with pytest.raises(Interrupted):
            wakeup.sleep(20)
        sender.join()
        assert not stuck, "the signal waited for the sleep to end"
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        sender.join()
