"""Threads whose unexpected death ends the process through its normal shutdown."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["guarded"]


def guarded(target: Callable[[], None], name: str, crashed: threading.Event, log: Any) -> threading.Thread:
    """A daemon thread running ``target``; an exception out of it is logged (``thread_crashed``
    on ``log``) and sets ``crashed``, which the main loop turns into a shutdown: a half-alive
    process is worse than a restart."""

    def body() -> None:
        try:
            target()
        except BaseException:
            log.exception("thread_crashed", thread=name)
            crashed.set()

    return threading.Thread(target=body, name=name, daemon=True)
