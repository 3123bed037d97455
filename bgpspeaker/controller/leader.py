"""Leader election through a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does it.

Every replica tries every ``retryPeriod``: it reads the Lease; when nobody holds it, or
its holder has not renewed for ``leaseDuration`` (timed on this replica's own clock,
from when it last saw the record change: clocks of two hosts are never compared), it
writes itself in as the holder with the Lease's resourceVersion, so of two replicas
trying at once exactly one wins (the other gets 409 Conflict). The leader renews the
same way; one that has not renewed for ``renewDeadline`` (< leaseDuration) stops
writing before anyone else may start. ``release()`` (SIGTERM) clears the holder and
sets the duration to 1 s, so a standby takes over at its next try instead of waiting
out the lease.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from kubernetes.client.exceptions import ApiException

from bgpspeaker.cluster.access import Access
from bgpspeaker.cluster.api import ApiPaths, resource_path
from bgpspeaker.controller.settings import ControllerConfig

__all__ = ["LEASE_NAME", "LeaseElector"]

log = structlog.get_logger("bgpspeaker.controller")

LEASE_NAME = "bgpspeaker-controller"
_PREFIX = "/apis/coordination.k8s.io/v1"
_TIMEOUT = (5.0, 5.0)

API_ACCESS = (
    Access(
        "coordination.k8s.io",
        "leases",
        frozenset({"get", "create", "update"}),
        "LeaseElector: GET, POST and PUT of the Lease bgpspeaker-controller",
        own_namespace=True,
    ),
)
"""The calls below; RBAC: deploy/controller.yaml."""


def _micro_time(now: datetime.datetime | None = None) -> str:
    """A ``MicroTime`` as the API server writes it."""
    return (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Acquires and renews the Lease in a thread (``run``); ``is_leader()`` gates every write."""

    def __init__(
        self,
        api: ApiPaths,
        *,
        namespace: str,
        identity: str,
        timing: ControllerConfig,
        stop: threading.Event,
        on_change: Callable[[bool], None],
        name: str = LEASE_NAME,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._name = name
        self.lease = f"{namespace}/{name}"
        self.identity = identity
        self._timing = timing
        self._stop = stop
        self._on_change = on_change
        self._lock = threading.Lock()
        self._renewed_at: float | None = None
        """Monotonic time of our last successful acquire or renew; None: not leader."""
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        """When the record last changed, on our clock (client-go's observedTime)."""
        self.term = 0
        """Counts the times this replica became leader (a new term must reread every Service)."""
        self.holder: str | None = None
        """The holder seen last (for logs and /readyz)."""

    def is_leader(self) -> bool:
        """Leader, and renewed within ``renewDeadline``: only then may anything be written."""
        with self._lock:
            renewed = self._renewed_at
        return renewed is not None and time.monotonic() - renewed < self._timing.renew_deadline_s

    def run(self) -> None:
        """Try to acquire or renew every ``retryPeriod`` until stopped."""
        while not self._stop.is_set():
            was_leader = self.is_leader()
            try:
                self._try_acquire_or_renew()
            except Exception as error:  # noqa: BLE001  # any failure is "not renewed this time"; the deadline decides
                log.warning("lease_update_failed", lease=self._path(), error=_describe(error))
            leader = self.is_leader()
            if leader != was_leader:
                self._became(leader)
            self._stop.wait(self._timing.retry_period_s)

    def _became(self, leader: bool) -> None:
        if leader:
            self.term += 1
            log.info("leader_elected", lease=self._path(), identity=self.identity, term=self.term)
        else:
            with self._lock:
                self._renewed_at = None
            log.warning("leader_lost", lease=self._path(), identity=self.identity, holder=self.holder)
        self._on_change(leader)

    def _path(self, *, named: bool = True) -> str:
        return resource_path(_PREFIX, "leases", namespace=self._namespace, name=self._name if named else None)

    def _record(self, *, acquire_time: str, transitions: int, now: str) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self._timing.lease_duration_s,
            "acquireTime": acquire_time,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _try_acquire_or_renew(self) -> None:
        started = time.monotonic()
        now = _micro_time()
        try:
            lease = self._api.call("GET", self._path(), timeout=_TIMEOUT)
        except ApiException as error:
            if error.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self._name, "namespace": self._namespace},
                "spec": self._record(acquire_time=now, transitions=0, now=now),
            }
            try:
                self._api.call(
                    "POST", self._path(named=False), body=body, content_type="application/json", timeout=_TIMEOUT
                )
            except ApiException as create_error:
                if create_error.status == 409:  # another replica created it first
                    return
                raise
            self._renewed(started, self.identity)
            return
        if not isinstance(lease, dict):
            raise ValueError("the Lease is not an object")
        raw_spec, raw_metadata = lease.get("spec"), lease.get("metadata")
        spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
        metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
        holder = spec.get("holderIdentity") or None
        duration = spec.get("leaseDurationSeconds")
        duration_s = duration if isinstance(duration, int) and duration > 0 else self._timing.lease_duration_s
        seen = (holder, spec.get("renewTime"), duration_s, metadata.get("resourceVersion"))
        if seen != self._observed:
            self._observed, self._observed_at = seen, time.monotonic()
        self.holder = holder
        ours = holder == self.identity
        if holder is not None and not ours and time.monotonic() < self._observed_at + duration_s:
            return  # held by another replica that renewed within its lease duration
        transitions = spec.get("leaseTransitions")
        transitions = transitions if isinstance(transitions, int) else 0
        previous = spec.get("acquireTime")
        acquire_time = previous if ours and isinstance(previous, str) else now
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self._name,
                "namespace": self._namespace,
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "spec": self._record(acquire_time=acquire_time, transitions=transitions + (0 if ours else 1), now=now),
        }
        try:
            self._api.call("PUT", self._path(), body=body, content_type="application/json", timeout=_TIMEOUT)
        except ApiException as error:
            if error.status == 409:  # another replica wrote first: not ours this time
                return
            raise
        if not ours:
            log.info("lease_acquired", lease=self._path(), identity=self.identity, previous=holder)
        self._renewed(started, self.identity)

    def _renewed(self, started: float, holder: str) -> None:
        """Counted from before the request: the deadline errs on the side of stopping early."""
        with self._lock:
            self._renewed_at = started
        self.holder = holder

    def release(self) -> bool:
        """Give the Lease up (SIGTERM): holder cleared, duration 1 s, as client-go's
        ReleaseOnCancel does. Returns whether it was released."""
        if not self.is_leader():
            return False
        with self._lock:
            self._renewed_at = None  # stop writing first
        try:
            lease = self._api.call("GET", self._path(), timeout=_TIMEOUT)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return False
            now = _micro_time()
            lease["spec"] = {
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": spec.get("leaseTransitions") or 0,
            }
            self._api.call("PUT", self._path(), body=lease, content_type="application/json", timeout=_TIMEOUT)
        except Exception as error:  # noqa: BLE001  # the standby then waits out the lease instead
            log.warning("lease_release_failed", lease=self._path(), error=_describe(error))
            return False
        log.info("lease_released", lease=self._path(), identity=self.identity)
        return True


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}".strip()
    return f"{type(error).__name__}: {error}"[:300]
