"""structlog setup: JSON lines by default, the console renderer on a TTY.

Event names are fixed snake_case phrases; values go in keys. Configured once by the
entry point (``configure``), never at import time.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

__all__ = ["LogFormat", "configure"]

LogFormat = Literal["auto", "json", "console"]


def configure(*, log_format: LogFormat = "auto", level: str = "info") -> None:
    """Route structlog to stderr as JSON lines (or console lines on a TTY)."""
    use_console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
