"""Giving memory back to the operating system, and keeping glibc from holding more."""

from __future__ import annotations

import ctypes

__all__ = ["MALLOC_ARENAS", "limit_malloc_arenas", "return_memory"]

MALLOC_ARENAS = 2
"""glibc's malloc arenas for the daemon (its default is 8 per core). Each thread that
meets contention gets an arena of its own, which keeps what it freed: the daemon's
threads (watchers, the reconciler, one sender per peer) cost ~3 MB RSS at 10,000
services and two peers that two arenas do not (cold start unchanged; docs/performance.md).
Python's own small objects do not use malloc arenas; larger blocks (dict tables, lists,
API pages, command lines) do."""
_M_ARENA_MAX = -8  # mallopt parameter number, glibc malloc.h


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``count`` (as ``MALLOC_ARENA_MAX`` would, for this process
    only: the ExaBGP children are not affected). Call before starting threads; True when set."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, count))
    except (OSError, AttributeError):  # not glibc: nothing to do
        return False


def return_memory() -> None:
    """After a list or a big reconcile pass: hand freed memory back to the OS (glibc keeps
    the peak otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
