"""Giving memory back to the operating system."""

from __future__ import annotations

import ctypes

__all__ = ["return_memory"]


def return_memory() -> None:
    """After a list or a big reconcile pass: hand freed memory back to the OS (glibc keeps
    the peak otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
