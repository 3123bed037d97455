"""What the watchers know: the cluster store, thread-safe, with a change log for the decision memo."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog

from bgpspeaker.cluster.model import (
    ChangeLog,
    EndpointSlice,
    Node,
    Service,
    Snapshot,
)

__all__ = ["ClusterStore", "Parsed"]

log = structlog.get_logger("bgpspeaker.cluster")

Parsed = Service | EndpointSlice | Node


def _own_keys(items: Mapping[str, Parsed]) -> Iterator[tuple[str, Parsed]]:
    """``items`` keyed by each value's own key string where it is equal: the watcher's key
    is another string with the same text (10,000 Services and their slices: ~1.2 MB)."""
    for key, value in items.items():
        own = value.name if isinstance(value, Node) else value.key
        yield (own if own == key else key), value


class ClusterStore:
    """What the watchers know. Thread-safe; calls ``on_change`` when something relevant changed.

    Only parsed values are stored, and an update that leaves the parsed value equal
    (a Node's heartbeat, a Service's unrelated annotation) changes nothing downstream.
    """

    KINDS = ("services", "endpointslices", "nodes")

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._services: dict[str, Service] = {}
        self._slices: dict[str, EndpointSlice] = {}
        self._slices_by_service: dict[str, dict[str, EndpointSlice]] = {}
        self._nodes: dict[str, Node] = {}
        self._listed: set[str] = set()
        self._log: list[str] = []
        """Keys of the services whose Service or slices changed, one entry per change (for
        the decision memo). Only appended to; restarted (a new list) when long or on a relist."""
        self._log_base = 0
        self._version = 0
        self.last_sync_monotonic: dict[str, float] = {}
        self._failing: dict[str, tuple[float, int]] = {}
        """Kind -> (when its list/watch started failing, consecutive failures)."""
        self._in_outage = False

    # -- API server health (for the apiOutage policy and staleness) ---------------------

    @property
    def outage_since(self) -> float | None:
        """Monotonic time since which the API server cannot be reached (a kind failed twice
        in a row: one dropped stream that reconnects at once is no outage); None otherwise."""
        with self._lock:
            starts = [since for since, failures in self._failing.values() if failures >= 2]
            return min(starts) if starts else None

    def report_failure(self, kind: str, error: str) -> None:
        """A list or watch of ``kind`` failed. The start of an outage is logged once."""
        with self._lock:
            since, failures = self._failing.get(kind, (time.monotonic(), 0))
            self._failing[kind] = (since, failures + 1)
            started = failures + 1 >= 2 and not self._in_outage
            self._in_outage = self._in_outage or started
        if started:
            log.warning("api_unreachable", kind=kind, error=error)
            self._on_change()

    def report_ok(self, kind: str) -> None:
        """A list or watch of ``kind`` succeeded; the end of an outage is logged once."""
        with self._lock:
            entry = self._failing.pop(kind, None)
            ended = self._in_outage and not any(f >= 2 for _, f in self._failing.values())
            if ended:
                self._in_outage = False
        if ended and entry is not None:
            log.info("api_recovered", outage_s=round(time.monotonic() - entry[0], 1))
            self._on_change()

    @property
    def synced(self) -> bool:
        """True once every kind has completed its first list."""
        with self._lock:
            return self._listed.issuperset(self.KINDS)

    def snapshot(self) -> Snapshot:
        """A consistent copy for one decision."""
        with self._lock:
            return Snapshot(
                services=dict(self._services),
                slices_by_service=dict(self._slices_by_service),  # buckets are copy-on-write
                nodes=dict(self._nodes),
                changes=ChangeLog(self, self._log, self._log_base, self._version),
            )

    def _changed(self, *service_keys: str | None) -> None:
        """Log that these services' objects changed (called with the lock held)."""
        for key in service_keys:
            if key is not None:
                self._log.append(key)
                self._version += 1
        if len(self._log) > 50_000:
            self._restart_log()

    def _restart_log(self) -> None:
        # A new list: snapshots keep the old one, and a memo older than the new base
        # simply compares everything once.
        self._version += 1
        self._log, self._log_base = [], self._version

    def _table(self, kind: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {
            "services": self._services,
            "endpointslices": self._slices,
            "nodes": self._nodes,
        }
        return tables[kind]

    def _index_slice(self, key: str, value: EndpointSlice | None) -> None:
        """Move slice ``key`` to its (new) service's bucket and log both services as changed."""
        # Copy-on-write: a bucket handed out in a snapshot is never changed afterwards, so
        # snapshot() copies only the outer dict (10,000 services: no 10,000 dict copies).
        old = self._slices.get(key)
        self._changed(old.service_key if old is not None else None, value.service_key if value is not None else None)
        if old is not None and old.service_key is not None:
            bucket = {k: v for k, v in self._slices_by_service.get(old.service_key, {}).items() if k != key}
            if bucket:
                self._slices_by_service[old.service_key] = bucket
            else:
                self._slices_by_service.pop(old.service_key, None)
        if value is not None and value.service_key is not None:
            self._slices_by_service[value.service_key] = {
                **self._slices_by_service.get(value.service_key, {}),
                key: value,
            }

    def replace(self, kind: str, items: Mapping[str, Parsed]) -> None:
        """Replace every object of ``kind`` at once (after a list); no partial state is seen."""
        with self._lock:
            table = self._table(kind)
            changed = table != items or kind not in self._listed
            owned = dict(_own_keys(items))
            if kind == "endpointslices":
                self._slices_by_service = {}
                for key, value in owned.items():
                    assert isinstance(value, EndpointSlice)
                    if value.service_key is not None:
                        self._slices_by_service.setdefault(value.service_key, {})[key] = value
            table.clear()
            table.update(owned)
            if changed and kind != "nodes":
                self._restart_log()
            self._listed.add(kind)
            self.last_sync_monotonic[kind] = time.monotonic()
        if changed:
            self._on_change()

    def upsert(self, kind: str, key: str, value: Parsed) -> None:
        """Add or update one object."""
        with self._lock:
            table = self._table(kind)
            if table.get(key) == value:
                return
            if kind == "endpointslices":
                assert isinstance(value, EndpointSlice)
                self._index_slice(key, value)
            elif kind == "services":
                self._changed(key)
            table[key] = value
        self._on_change()

    def delete(self, kind: str, key: str) -> None:
        """Remove one object (no-op when unknown)."""
        with self._lock:
            table = self._table(kind)
            if key not in table:
                return
            if kind == "endpointslices":
                self._index_slice(key, None)
            elif kind == "services":
                self._changed(key)
            del table[key]
        self._on_change()

    def mark_synced(self, kind: str) -> None:
        """Record that ``kind`` is known current now (a bookmark or event arrived)."""
        with self._lock:
            self.last_sync_monotonic[kind] = time.monotonic()
            failing = kind in self._failing
        if failing:
            self.report_ok(kind)
