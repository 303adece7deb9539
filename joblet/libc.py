"""The C library, loaded once for the modules that make system calls Python does not offer
(mount, unshare, setns, inotify, Landlock's); `ctypes.get_errno()` reads the calling thread's
errno after each."""

from __future__ import annotations

import ctypes
import ctypes.util

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.syscall.restype = ctypes.c_long  # a descriptor, or -1: wider than the default int
