"""Run nftables commands in-process through libnftables (the library `nft` itself uses).

Per-job changes (a job's port-security elements, added at start and deleted at its end) sit on
the job's start path: `nft -f -` costs ~6 ms here (exec, library start, first cache fill),
one reused libnftables context ~0.1 ms. A buffer is one transaction, like `nft -f`. The
context caches the ruleset and refreshes it when the kernel's generation id moves, so a
ruleset flushed by someone else is seen. One context per process, used under a lock (it is
not thread-safe); its netlink socket belongs to the namespace the worker runs in, and is
made close-on-exec (libnftables 1.0.6 opens it without), so no job inherits a handle on the
host's firewall. Without the library, `nft` is run as a program.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import subprocess
import threading
from typing import Any

from joblet.errors import NetworkError

_lock = threading.Lock()
_ctx: tuple[Any, int] | None = None  # (library, context)
_tried = False


def _context() -> tuple[Any, int] | None:
    global _ctx, _tried
    if _tried:
        return _ctx
    _tried = True
    try:
        lib = ctypes.CDLL("libnftables.so.1")
    except OSError:
        return None
    lib.nft_ctx_new.restype, lib.nft_ctx_new.argtypes = ctypes.c_void_p, [ctypes.c_uint32]
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).restype, getattr(lib, name).argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    before = _sockets()
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        return None
    for fd, target in _sockets().items():
        if before.get(fd) != target:
            _cloexec(fd)
    lib.nft_ctx_buffer_output(ctx)
    lib.nft_ctx_buffer_error(ctx)
    _ctx = (lib, ctx)
    return _ctx


def _sockets() -> dict[int, str]:
    """This process's socket descriptors (fd -> "socket:[inode]")."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # listdir's own descriptor, or closed meanwhile
        if target.startswith("socket:"):
            found[int(name)] = target
    return found


def _cloexec(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
    except OSError:
        pass  # closed meanwhile


def listing(command: str) -> tuple[int, str]:
    """Run one `list` command; returns (0 or an error code, what it printed)."""
    rc, out, _ = _nft(command, ["nft", *command.split()])
    return rc, out


def run(commands: str) -> tuple[int, str]:
    """Run nft commands as one transaction; returns (0 or an error code, error text)."""
    rc, _, error = _nft(commands, ["nft", "-f", "-"], commands)
    return rc, error.strip()


def _nft(commands: str, argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    """(0 or an error code, output, error text) of `commands`: through the library, else `argv`."""
    with _lock:
        found = _context()
        if found is not None:
            lib, ctx = found
            rc = lib.nft_run_cmd_from_buffer(ctx, commands.encode())
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")  # drained:
            error = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")  # they grow
            return (0 if rc == 0 else 1), out, error
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NetworkError("nft not found: install nftables") from None
    return proc.returncode, proc.stdout, proc.stderr
