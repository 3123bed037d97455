"""Signals turned into calls on an ordinary thread.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds a ``threading.Event``'s lock inside ``wait()``: a handler that sets an Event
itself can deadlock the daemon (rarely, and then for ever). Here the handlers do nothing;
the interpreter's C-level handler writes the signal number to a pipe
(``signal.set_wakeup_fd``) and the ``signals`` thread reads it and calls ``on_signal``,
where taking locks is safe.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["SignalRelay"]


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: nothing (installing one makes the C handler write the fd)."""


class SignalRelay:
    """``on_signal(signum)`` on the ``signals`` thread for each of ``signums`` received.
    Install from the main thread; ``close`` restores the handlers it replaced and ends the thread."""

    def __init__(self, on_signal: Callable[[int], None], signums: tuple[int, ...]) -> None:
        self._on_signal = on_signal
        self._signums = signums
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(self._read_fd, True)  # the thread blocks; the C handler never does
        self._thread = threading.Thread(target=self._run, name="signals", daemon=True)
        self._previous_fd = -1
        self._previous: dict[int, Any] = {}

    def install(self) -> SignalRelay:
        self._thread.start()
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in self._signums:
            self._previous[signum] = signal.signal(signum, _ignore)
        return self

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                return
            if not data:
                return  # closed
            for signum in data:
                if signum in self._signums:
                    self._on_signal(signum)

    def close(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._write_fd)  # the reader sees end of file
        self._thread.join(timeout=1.0)
        os.close(self._read_fd)
