"""Kubernetes Events on Services: ``Announced`` / ``Withdrawn`` by this node, with the reason.

``kubectl describe service web`` then answers "which nodes announce my VIP, and since
when". The reconciler hands route changes to ``route()``, which only queues them (it
never blocks the writer); one thread turns them into core/v1 Events:

- de-duplicated: the same (service, reason, message) within ``dedup_window_s`` bumps
  the existing Event's ``count`` (a PATCH) instead of creating another one, as
  client-go's event correlator does;
- rate-limited per service by a token bucket (``burst`` Events, then one per
  ``refill_s``), so a flapping service cannot flood the API server, and for all
  services together (20, then 2 a second), so a restart announcing 10,000 VIPs does
  not either; what is dropped is counted and logged once per service per window.
"""

from __future__ import annotations

import dataclasses
import datetime
import queue
import threading
import time
import uuid
from collections.abc import Sequence

import structlog

from bgpspeaker.cluster.access import Access
from bgpspeaker.cluster.api import ApiPaths, resource_path
from bgpspeaker.routes import Prefix

__all__ = ["EventRecorder"]

log = structlog.get_logger("bgpspeaker.events")

API_ACCESS = (Access("", "events", frozenset({"create", "patch"}), "EventRecorder: POST, then PATCH count"),)
"""The calls below; RBAC: deploy/rbac.yaml."""

_REASONS = {"announced": "Announced", "withdrawn": "Withdrawn"}


@dataclasses.dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


def without_full_buckets(buckets: dict[str, _Bucket], now: float, burst: int, refill_s: float) -> dict[str, _Bucket]:
    """``buckets`` less the ones refilled to ``burst`` by ``now``: a full bucket is what a
    service without one gets, so it need not be kept (a 10,000-VIP start leaves one per
    service otherwise, ~1.5 MB)."""
    return {key: bucket for key, bucket in buckets.items() if bucket.tokens + (now - bucket.updated) / refill_s < burst}


def _take(bucket: _Bucket, now: float, burst: int, refill_s: float) -> bool:
    bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) / refill_s)
    bucket.updated = now
    if bucket.tokens < 1.0:
        return False
    bucket.tokens -= 1.0
    return True


@dataclasses.dataclass(slots=True)
class _Sent:
    name: str
    count: int
    first: str
    at: float


class EventRecorder:
    """Queues route changes and writes them as Events on their Services."""

    def __init__(
        self,
        api: ApiPaths,
        *,
        node: str,
        stop: threading.Event,
        burst: int = 5,
        refill_s: float = 10.0,
        global_burst: int = 20,
        global_refill_s: float = 0.5,
        dedup_window_s: float = 600.0,
        queue_size: int = 1000,
    ) -> None:
        self._api = api
        self._node = node
        self._stop = stop
        self._burst = burst
        self._refill_s = refill_s
        self._window_s = dedup_window_s
        self._queue: queue.Queue[tuple[str, str, str, str]] = queue.Queue(queue_size)
        self._buckets: dict[str, _Bucket] = {}
        self._pruned_at = time.monotonic()
        """When full buckets were last dropped (when idle, at most once per ``refill_s``)."""
        self._global = _Bucket(float(global_burst), time.monotonic())
        self._global_burst = global_burst
        self._global_refill_s = global_refill_s
        self._sent: dict[tuple[str, str, str], _Sent] = {}
        self._suppressed_logged: dict[str, float] = {}

    def route(self, event: str, prefix: Prefix, peers: Sequence[str], services: Sequence[str], reason: str) -> None:
        """Queue one route change for each service that wants the prefix (never blocks)."""
        where = f" to {', '.join(peers)}" if peers else ""
        verb = "announces" if event == "announced" else "withdrew"
        message = f"node {self._node} {verb} {prefix}{where} ({reason})"
        for service in services:
            try:
                self._queue.put_nowait((service, _REASONS[event], message, reason))
            except queue.Full:  # a burst beyond the queue: these Events are dropped, routing is not
                pass

    def run(self) -> None:
        """Write queued Events until stopped."""
        while not self._stop.is_set():
            try:
                service, reason, message, _why = self._queue.get(timeout=0.5)
            except queue.Empty:
                now = time.monotonic()
                if self._buckets and now - self._pruned_at > self._refill_s:
                    self._buckets = without_full_buckets(self._buckets, now, self._burst, self._refill_s)
                    self._pruned_at = now
                continue
            self._record(service, reason, message)

    def _limit(self, service: str, now: float) -> str | None:
        """None when this Event may be written; else which limit refused it."""
        bucket = self._buckets.get(service)
        if bucket is None:
            bucket = self._buckets[service] = _Bucket(float(self._burst), now)
        if not _take(bucket, now, self._burst, self._refill_s):
            return service
        # And all services together: a restart announcing 10,000 VIPs must not become
        # 10,000 API writes from every node.
        return None if _take(self._global, now, self._global_burst, self._global_refill_s) else "*"

    def _record(self, service: str, reason: str, message: str) -> None:
        now = time.monotonic()
        refused_by = self._limit(service, now)
        if refused_by is not None:
            # One line per flapping service, but one line in all when the global limit
            # refuses (a cold start of 10,000 VIPs once logged 10,000 lines here).
            if now - self._suppressed_logged.get(refused_by, -1e9) > self._window_s:
                self._suppressed_logged[refused_by] = now
                if refused_by == "*":
                    log.info(
                        "events_rate_limited",
                        scope="all_services",
                        burst=self._global_burst,
                        refill_s=self._global_refill_s,
                    )
                else:
                    log.info(
                        "events_rate_limited",
                        scope="service",
                        service=service,
                        burst=self._burst,
                        refill_s=self._refill_s,
                    )
            return
        namespace, _, name = service.partition("/")
        key = (service, reason, message)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sent = self._sent.get(key)
        try:
            if sent is not None and now - sent.at < self._window_s:
                sent.count += 1
                sent.at = now
                self._api.call(
                    "PATCH",
                    resource_path("/api/v1", "events", namespace=namespace, name=sent.name),
                    body={"count": sent.count, "lastTimestamp": stamp},
                    content_type="application/merge-patch+json",
                )
                return
            event_name = f"{name}.{uuid.uuid4().hex[:16]}"
            self._api.call(
                "POST",
                resource_path("/api/v1", "events", namespace=namespace),
                content_type="application/json",
                body={
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": event_name, "namespace": namespace},
                    "involvedObject": {"apiVersion": "v1", "kind": "Service", "namespace": namespace, "name": name},
                    "reason": reason,
                    "message": message,
                    "type": "Normal",
                    "count": 1,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "source": {"component": "bgpspeaker", "host": self._node},
                    "reportingComponent": "bgpspeaker",
                    "reportingInstance": self._node,
                },
            )
            self._sent[key] = _Sent(event_name, 1, stamp, now)
        except Exception as error:  # noqa: BLE001  # Events are best effort: never stop routing for them
            log.warning("event_write_failed", service=service, reason=reason, error=str(error)[:300])
        if len(self._sent) > 10_000:  # forget the oldest correlations
            cutoff = now - self._window_s
            self._sent = {k: v for k, v in self._sent.items() if v.at >= cutoff}
