"""Landlock's scope for jobs: no connection to an abstract unix socket made outside the job.

An abstract unix socket (a name starting with a NUL byte, no file) belongs to a network
namespace, not to a filesystem: no bind mount hides it. A host-mode job shares the host's
namespace and could connect to every one the host's services listen on (container runtimes'
shims did: CVE-2020-15257), whatever its root. Landlock's scope (ABI 6, Linux 6.12) stops it:
a process in a Landlock domain connects only to abstract sockets made in its domain or one
nested in it (EPERM otherwise). The job's thread enters a domain of its own before it spawns
the sandbox, so bwrap and everything the job runs inherit it; the job's own abstract sockets
still work among its processes. No filesystem or TCP rights are handled; like every Landlock
domain it also keeps its processes from ptracing ones outside it (jobs cannot ptrace anyway).
The thread is the job's alone and never reused (worker/nsthread.py): a domain is for good.

Not covered: a host-mode job may still bind an abstract name before a host service does
and be talked to by the host's clients (Landlock scopes connecting, not binding); only a
network namespace of its own prevents that.

Two system calls through libc's `syscall`; no library wraps Landlock's scopes for Python.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct

from joblet.errors import ExecutionError
from joblet.libc import libc as _libc

CREATE_RULESET, RESTRICT_SELF = 444, 446  # x86_64 and aarch64 (and every asm-generic one)
CREATE_RULESET_VERSION = 1 << 0
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPED_SINCE = 6  # the ABI that brought `scoped`
_ATTR = struct.Struct("=QQQ")  # struct landlock_ruleset_attr: handled_access_fs, _net, scoped


def abi() -> int:
    """Landlock's ABI version here; 0 where the kernel lacks it or it is not enabled."""
    version = _create_ruleset(None, 0, CREATE_RULESET_VERSION)
    return max(version, 0)


@functools.cache
def can_scope() -> bool:
    """Whether this kernel can keep jobs from abstract sockets made outside them."""
    return abi() >= SCOPED_SINCE


def scope_abstract_sockets() -> None:
    """Put the calling thread (and what it spawns from now on, for good) in a new domain
    that reaches no abstract unix socket made outside it. The worker holds CAP_SYS_ADMIN, so
    this needs no no_new_privs of the thread (bwrap sets it for the job)."""
    attr = ctypes.create_string_buffer(_ATTR.pack(0, 0, SCOPE_ABSTRACT_UNIX_SOCKET), _ATTR.size)
    fd = _create_ruleset(attr, _ATTR.size, 0)
    if fd < 0:
        raise _error("create a Landlock ruleset")
    try:
        if _libc.syscall(ctypes.c_long(RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0)) < 0:
            raise _error("enter a Landlock domain")
    finally:
        os.close(fd)


def _create_ruleset(attr: ctypes.Array[ctypes.c_char] | None, size: int, flags: int) -> int:
    return int(_libc.syscall(ctypes.c_long(CREATE_RULESET), attr, ctypes.c_size_t(size), ctypes.c_uint32(flags)))


def _error(what: str) -> ExecutionError:
    return ExecutionError(f"failed to {what}: {os.strerror(ctypes.get_errno())}")
