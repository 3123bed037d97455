"""A BFD child process (``python -m bgpspeaker.bfd``) in a namespace, for tests and the
bench: send it the wanted sessions, read its events."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

from lab.netns import stop_pid, wait_until

__all__ = ["BfdChild", "session_json"]


def session_json(
    peer: str, local: str, remote: str, *, tx_ms: float = 300, rx_ms: float = 300, mult: int = 3, **extra: Any
) -> dict[str, Any]:
    """One session as the child's ``set`` command takes it."""
    return {"peer": peer, "local": local, "remote": remote, "tx_ms": tx_ms, "rx_ms": rx_ms, "multiplier": mult, **extra}


class BfdChild:
    """One child in ``netns``; ``events`` holds every line it wrote, with the receive time."""

    def __init__(self, netns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "bgpspeaker.bfd"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        wait_until(lambda: self.find("ready"), timeout_s=10, desc="the BFD child's ready line")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            event["received"] = time.monotonic()
            with self._lock:
                self.events.append(event)

    def send(self, message: dict[str, Any]) -> None:
        """One command line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def find(self, event: str, **match: Any) -> list[dict[str, Any]]:
        """Events named ``event`` whose fields equal ``match``."""
        with self._lock:
            return [e for e in self.events if e["event"] == event and all(e.get(k) == v for k, v in match.items())]

    def kill(self) -> None:
        """SIGKILL (the child stops sending without a word)."""
        self.proc.kill()
        self.proc.wait(5)

    def close(self) -> None:
        """Stop it by PID."""
        if self.proc.poll() is None:
            stop_pid(self.proc.pid)
        self.proc.wait(5)
