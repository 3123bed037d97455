"""A process of ours whose JSON log lines (structlog, ``--log-format json``) a test reads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from lab.netns import wait_until

__all__ = ["JsonLogProcess"]


class JsonLogProcess:
    """``proc`` writes JSON lines to ``log_path``; ``label`` names it in failure messages."""

    log_path: Path
    label: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def events(self, event: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Every JSON log line so far, optionally only ``event`` with keys equal to ``match``."""
        out: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if event is not None and record.get("event") != event:
                continue
            if all(record.get(k) == v for k, v in match.items()):
                out.append(record)
        return out

    def wait_event(self, event: str, *, timeout_s: float = 10.0, after: int = 0, **match: Any) -> dict[str, Any]:
        """Wait for the (after+1)-th matching log event."""
        found: list[dict[str, Any]] = wait_until(
            lambda: (events := self.events(event, **match)) and len(events) > after and events,
            timeout_s=timeout_s,
            desc=f"{self.label}log event {event} {match} (#{after + 1}); log tail: {self.tail()}",
        )
        return found[after]

    def tail(self, lines: int = 15) -> str:
        """The end of the log, for failure messages."""
        if not self.log_path.exists():
            return "(no log yet)"
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])
