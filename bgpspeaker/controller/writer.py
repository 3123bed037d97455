"""What the controller writes: Service status through the status subresource, and Events.

A status write is a JSON merge patch of ``services/NAME/status`` carrying the
resourceVersion the decision was made on, so the API server applies it only to the
Service as it was decided (``metadata.resourceVersion`` in a patch is a precondition:
409 Conflict when the Service changed since). On 409 the Service is read again and the
next pass decides again. Events are best effort: queued, rate-limited, written by one
thread, never in the way of an allocation.
"""

from __future__ import annotations

import dataclasses
import datetime
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence

import structlog
from kubernetes.client.exceptions import ApiException

from bgpspeaker.cluster.access import Access
from bgpspeaker.cluster.api import ApiPaths, resource_path
from bgpspeaker.controller.claims import Claim, parse_claim
from bgpspeaker.routes import IPAddress

__all__ = ["EventWriter", "StatusWriter", "Written"]

log = structlog.get_logger("bgpspeaker.controller")

_TIMEOUT = (5.0, 15.0)

API_ACCESS = (
    Access("", "services/status", frozenset({"patch"}), "StatusWriter: merge patch of services/NAME/status"),
    Access("", "services", frozenset({"get"}), "StatusWriter: reread one Service after a 409"),
    Access("", "events", frozenset({"create"}), "EventWriter: POST IPAllocated / AllocationFailed"),
)
"""The calls below; RBAC: deploy/controller.yaml."""


@dataclasses.dataclass(frozen=True, slots=True)
class Written:
    """The outcome of one status write."""

    ok: bool
    conflict: bool = False
    claim: Claim | None = None
    """The Service as the API server returned it (after the write, or reread after a 409)."""
    gone: bool = False
    not_leader: bool = False
    """Not written: this replica stopped leading during the pass (the new leader decides again)."""
    error: str = ""


class StatusWriter:
    """Writes ``status.loadBalancer.ingress`` of one Service; ``is_leader`` is asked right before."""

    def __init__(self, api: ApiPaths, *, is_leader: Callable[[], bool]) -> None:
        self._api = api
        self._is_leader = is_leader

    def write(self, claim: Claim, ips: Sequence[IPAddress]) -> Written:
        """Patch the status from ``claim.resource_version`` to hold exactly ``ips``."""
        if not self._is_leader():
            return Written(ok=False, not_leader=True)
        namespace, _, name = claim.key.partition("/")
        path = resource_path("/api/v1", "services", namespace=namespace, name=name) + "/status"
        ingress = [{"ip": str(ip), "ipMode": "VIP"} for ip in ips] or None
        body = {
            "metadata": {"resourceVersion": claim.resource_version},
            "status": {"loadBalancer": {"ingress": ingress}},
        }
        try:
            obj = self._api.call(
                "PATCH", path, body=body, content_type="application/merge-patch+json", timeout=_TIMEOUT
            )
        except ApiException as error:
            if error.status == 409:
                return Written(ok=False, conflict=True, claim=self._reread(claim), error="409 Conflict")
            if error.status == 404:
                return Written(ok=False, gone=True, error="404 Not Found")
            return Written(ok=False, error=f"HTTP {error.status} {error.reason}".strip())
        except Exception as error:  # noqa: BLE001  # unreachable, bad response: retried next pass
            return Written(ok=False, error=f"{type(error).__name__}: {error}"[:300])
        try:
            return Written(ok=True, claim=parse_claim(obj))
        except Exception:  # noqa: BLE001  # written; the watch brings the object anyway
            return Written(ok=True)

    def _reread(self, claim: Claim) -> Claim | None:
        namespace, _, name = claim.key.partition("/")
        try:
            obj = self._api.call(
                "GET", resource_path("/api/v1", "services", namespace=namespace, name=name), timeout=_TIMEOUT
            )
            return parse_claim(obj)
        except Exception:  # noqa: BLE001  # the watch brings it; the next pass decides again
            return None


@dataclasses.dataclass
class _Bucket:
    tokens: float
    updated: float


class EventWriter:
    """Queues Events on Services and writes them from one thread (``run``), rate-limited
    (``burst``, then one per ``refill_s``); what the limit or a full queue drops is counted."""

    def __init__(
        self,
        api: ApiPaths,
        *,
        identity: str,
        stop: threading.Event,
        burst: int = 50,
        refill_s: float = 0.1,
        queue_size: int = 1000,
    ) -> None:
        self._api = api
        self._identity = identity
        self._stop = stop
        self._burst = burst
        self._refill_s = refill_s
        self._bucket = _Bucket(float(burst), time.monotonic())
        self._queue: queue.Queue[tuple[str, str, str, str]] = queue.Queue(queue_size)
        self.dropped = 0

    def event(self, service: str, *, type_: str, reason: str, message: str) -> None:
        """Queue one Event (never blocks)."""
        try:
            self._queue.put_nowait((service, type_, reason, message[:1024]))
        except queue.Full:
            self.dropped += 1

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if self._admit():
                self._write(*item)
            else:
                self.dropped += 1

    def _admit(self) -> bool:
        now = time.monotonic()
        bucket = self._bucket
        bucket.tokens = min(float(self._burst), bucket.tokens + (now - bucket.updated) / self._refill_s)
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _write(self, service: str, type_: str, reason: str, message: str) -> None:
        namespace, _, name = service.partition("/")
        stamp = datetime.datetime.now(datetime.UTC)
        try:
            self._api.call(
                "POST",
                resource_path("/api/v1", "events", namespace=namespace),
                content_type="application/json",
                timeout=_TIMEOUT,
                body={
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
                    "involvedObject": {"apiVersion": "v1", "kind": "Service", "namespace": namespace, "name": name},
                    "reason": reason,
                    "message": message,
                    "type": type_,
                    "count": 1,
                    "firstTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "lastTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "source": {"component": "bgpspeaker-controller"},
                    "reportingComponent": "bgpspeaker.io/controller",
                    "reportingInstance": self._identity,
                },
            )
        except Exception as error:  # noqa: BLE001  # Events are best effort
            log.warning("event_write_failed", service=service, reason=reason, error=str(error)[:300])
