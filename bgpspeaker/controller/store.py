"""The controller's view of every Service: claims by key, never older than what it saw.

The Service watcher (``cluster.watch.Watcher``) fills it; the controller's own writes
and rereads do too. Each claim carries its resourceVersion, and an update older than
the one held is ignored: a late watch event must not undo what a write or a fresh
list already showed (a stale view of *another* Service is how an address would get
two owners; a stale view of the written Service itself is caught by its 409)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from bgpspeaker.controller.claims import Claim

__all__ = ["ClaimStore"]

log = structlog.get_logger("bgpspeaker.controller")


def _newer_or_same(new: Claim, old: Claim) -> bool:
    """resourceVersions are opaque, but etcd's are integers that grow: compare those."""
    if new.resource_version.isdigit() and old.resource_version.isdigit():
        return int(new.resource_version) >= int(old.resource_version)
    return True


def _after(claim: Claim, resource_version: str | None) -> bool:
    """The claim is newer than a list at ``resource_version`` (unknown: assume so, and keep it)."""
    if resource_version is None or not resource_version.isdigit() or not claim.resource_version.isdigit():
        return True
    return int(claim.resource_version) > int(resource_version)


class ClaimStore:
    """Thread-safe; calls ``on_change`` after every change."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._claims: dict[str, Claim] = {}
        self._deleted: dict[str, str] = {}
        """Key -> resourceVersion of its deletion, for ``refresh`` (forgotten after a watcher's list)."""
        self._listed = False
        self.last_sync_monotonic: float | None = None
        self.failing_since: float | None = None

    @property
    def synced(self) -> bool:
        """The first list is complete."""
        with self._lock:
            return self._listed

    def snapshot(self) -> dict[str, Claim]:
        """A copy for one allocation pass."""
        with self._lock:
            return dict(self._claims)

    def replace(self, kind: str, items: Mapping[str, Any]) -> None:
        """After a list: every claim at once, except those the store already knows newer."""
        del kind
        with self._lock:
            fresh: dict[str, Claim] = {}
            for key, claim in items.items():
                held = self._claims.get(key)
                fresh[key] = held if held is not None and not _newer_or_same(claim, held) else claim
            self._claims = fresh
            self._deleted = {}
            self._listed = True
            self.last_sync_monotonic = time.monotonic()
        self._on_change()

    def refresh(self, items: Mapping[str, Claim], resource_version: str | None) -> None:
        """A fresh list read while the watch goes on: what the store knows newer than the list
        stays (an object created after the list was taken, an update the watch delivered first)."""
        with self._lock:
            fresh: dict[str, Claim] = {}
            for key, held in self._claims.items():
                if key not in items and _after(held, resource_version):
                    fresh[key] = held
            for key, claim in items.items():
                known = self._claims.get(key)
                gone = self._deleted.get(key)
                if gone is not None and not _after(claim, gone):
                    continue  # the watch saw it deleted after the list was taken
                fresh[key] = known if known is not None and not _newer_or_same(claim, known) else claim
            self._claims = fresh
        self._on_change()

    def upsert(self, kind: str, key: str, value: Any, *, notify: bool = True) -> None:
        """Add or update one claim (never to an older version); ``notify=False``: the change
        needs no new decision (the controller's own write, as it decided it)."""
        del kind
        assert isinstance(value, Claim)
        with self._lock:
            held = self._claims.get(key)
            if held is not None and (held == value or not _newer_or_same(value, held)):
                return
            self._claims[key] = value
        if notify:
            self._on_change()

    def delete(self, kind: str, key: str, resource_version: str | None = None) -> None:
        del kind
        with self._lock:
            gone = self._claims.pop(key, None)
            if gone is None:
                return
            if len(self._deleted) > 100_000:
                self._deleted.clear()
            self._deleted[key] = resource_version or gone.resource_version
        self._on_change()

    def mark_synced(self, kind: str) -> None:
        del kind
        with self._lock:
            self.last_sync_monotonic = time.monotonic()
            self.failing_since = None

    def report_ok(self, kind: str) -> None:
        self.mark_synced(kind)

    def report_failure(self, kind: str, error: str) -> None:
        with self._lock:
            first = self.failing_since is None
            if first:
                self.failing_since = time.monotonic()
        if first:
            log.warning("api_unreachable", kind=kind, error=error)
