"""The ``bgpspeaker controller`` process: watch Services, elect a leader, allocate, write.

Threads: the Service watcher (``cluster.watch.Watcher`` into a ``ClaimStore``), the
Lease elector, the allocation loop, the Event writer, and the HTTP server
(``/metrics``, ``/healthz``, ``/readyz``). The main thread polls the config file and
waits for SIGTERM, which only sets a flag: the loop finishes its pass, the Lease is
released, and the process exits 0.

One allocation pass, leader only: (a new term first rereads every Service from the API
server) → ``allocate(pools, every claim)`` → for each Service whose status differs, a
status write against the resourceVersion decided on → the written objects go back
into the store (a 409 rereads the Service instead) → Events and metrics.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bgpspeaker.cluster.access import Access
from bgpspeaker.cluster.api import ApiPaths, list_page
from bgpspeaker.config import SpeakerConfig, read_prefix
from bgpspeaker.controller.allocate import Allocation, Assignment, Outcome, allocate, is_ours
from bgpspeaker.controller.claims import Claim, parse_claim
from bgpspeaker.controller.leader import LeaseElector
from bgpspeaker.controller.store import ClaimStore
from bgpspeaker.controller.writer import EventWriter, StatusWriter
from bgpspeaker.errors import ConfigError
from bgpspeaker.httpserver import METHODS, HttpLimits, HttpServer, Render, Reply, Request
from bgpspeaker.signals import SignalRelay
from bgpspeaker.threads import guarded

__all__ = ["DEFAULT_METRICS_ADDRESS", "Controller", "run_controller"]

API_ACCESS = (
    Access("", "services", frozenset({"list", "watch"}), "Service watcher, a new leader's reread: /api/v1/services"),
)
"""The calls below; RBAC: deploy/controller.yaml."""

log = structlog.get_logger("bgpspeaker.controller")

DEFAULT_METRICS_ADDRESS = ":7474"
"""The speaker serves :7473 on the node; the controller's own port differs, so both fit one host."""
RESYNC_S = 30.0
"""A pass at least this often even when nothing changed (a lost wake-up costs at most this)."""
RETRY_S = 1.0
"""After a failed write (API server unreachable, 5xx), the next pass comes this soon."""
WRITE_WORKERS = 8
"""Status writes in flight at once: one is ~2 ms of our CPU and a round trip; 8 keep a
10,000-Service allocation within seconds without flooding the API server."""


class _Metrics(Collector):
    """Pool size and use from the last pass, leadership; failures are a Counter beside it."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    def collect(self) -> Iterator[Metric]:
        config, allocation = self._controller.current()
        size = GaugeMetricFamily("bgpspeaker_address_pool_size", "Addresses a pool can hand out", labels=["pool"])
        in_use = GaugeMetricFamily(
            "bgpspeaker_address_pool_in_use",
            "Addresses of a pool held by Services (a shared one counts once)",
            labels=["pool"],
        )
        for pool in config.address_pools if config is not None else ():
            size.add_metric([pool.name], float(pool.size()))
            in_use.add_metric([pool.name], float(allocation.in_use.get(pool.name, 0) if allocation else 0))
        yield size
        yield in_use
        leader = GaugeMetricFamily("bgpspeaker_controller_leader", "1 while this replica holds the Lease")
        leader.add_metric([], 1.0 if self._controller.elector.is_leader() else 0.0)
        yield leader


class Controller:
    """The allocation loop (``run``) and what serves ``/metrics``, ``/healthz``, ``/readyz`` (``route``)."""

    def __init__(
        self,
        api: ApiPaths,
        *,
        store: ClaimStore,
        elector: LeaseElector,
        events: EventWriter,
        config: Callable[[], SpeakerConfig],
        stop: threading.Event,
        dirty: threading.Event,
        threads_alive: Callable[[], bool],
    ) -> None:
        self._api = api
        self.store = store
        self.elector = elector
        self._events = events
        self._config = config
        self._stop = stop
        self._dirty = dirty
        self._threads_alive = threads_alive
        self._status = StatusWriter(api, is_leader=elector.is_leader)
        self._reported: dict[str, tuple[Outcome, str]] = {}
        """Service -> the failure or warning last reported (an Event only when it changes)."""
        self._retry_at: float | None = None
        self._idle_logged: SpeakerConfig | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(WRITE_WORKERS, thread_name_prefix="status-write")
        self.last: tuple[SpeakerConfig | None, Allocation | None] = (None, None)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Metrics(self))
        self.failures = Counter(
            "bgpspeaker_allocation_failures",
            "Allocations that failed, by reason (counted when a Service's failure is first reported)",
            ["reason"],
            registry=self.registry,
        )

    def current(self) -> tuple[SpeakerConfig | None, Allocation | None]:
        """The last pass's allocation; a standby (which makes no passes) decides one for the
        metrics, from what it watches, so its pool figures are the leader's."""
        if self.elector.is_leader() or not self.store.synced:
            return self.last
        config = self._config()
        return config, allocate(
            config.address_pools, self.store.snapshot(), load_balancer_class=config.load_balancer_class
        )

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        term = 0
        while not self._stop.is_set():
            timeout = RESYNC_S if self._retry_at is None else max(0.0, self._retry_at - time.monotonic())
            self._dirty.wait(timeout)
            if self._stop.is_set():
                break
            self._dirty.clear()
            self._retry_at = None
            if not self.store.synced or not self.elector.is_leader():
                continue
            if self.elector.term != term:
                # A new leader trusts no cache: every Service's status is read again before
                # anything is assigned (the previous leader's last writes are in it).
                if not self._relist():
                    self._retry_at = time.monotonic() + RETRY_S
                    continue
                term = self.elector.term
            self._pass()
        self._pool.shutdown(wait=True)

    def _relist(self) -> bool:
        items: dict[str, Claim] = {}
        token: str | None = None
        try:
            while True:
                query: list[tuple[str, Any]] = [("limit", 500)]
                if token:
                    query.append(("continue", token))
                page = list_page(
                    self._api.call("GET", "/api/v1/services", query=query, timeout=(5.0, 60.0)), "services"
                )
                for obj in page.items:
                    try:
                        claim = parse_claim(obj)
                    except ValueError:
                        continue
                    items[claim.key] = claim
                token = page.continue_token
                if token is None:
                    resource_version = page.resource_version
                    break
        except Exception as error:  # noqa: BLE001  # unreachable or a bad page: no pass until it works
            log.warning("relist_failed", error=str(error)[:300])
            return False
        self.store.refresh(items, resource_version)
        log.info("services_reread", services=len(items), term=self.elector.term)
        return True

    def _pass(self) -> None:
        started = time.monotonic()
        config = self._config()
        if not config.address_pools:
            # Nothing to hand out: touch nothing (no Events, no writes), e.g. another allocator runs.
            if self._idle_logged is not config:
                self._idle_logged = config
                log.warning("no_address_pools", hint="add addressPools to the config, or do not run the controller")
            self.last = (config, None)
            return
        claims = self.store.snapshot()
        allocation = allocate(config.address_pools, claims, load_balancer_class=config.load_balancer_class)
        self.last = (config, allocation)
        self._report(allocation, claims, config)
        writes = [(claims[key], a) for key, a in allocation.assignments.items() if a.write]
        results = list(self._pool.map(self._write, writes)) if writes else []
        if not all(results):
            self._retry_at = time.monotonic() + RETRY_S
        log.debug(
            "allocation_pass",
            services=len(claims),
            writes=len(writes),
            failed_writes=results.count(False),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _write(self, item: tuple[Claim, Assignment]) -> bool:
        """One status write; True unless it must be retried (a 409 or a gone Service need no retry)."""
        claim, assignment = item
        result = self._status.write(claim, assignment.ips)
        if result.claim is not None:  # what was decided, now written: no new pass for it
            self.store.upsert("services", claim.key, result.claim, notify=not result.ok)
        if result.ok:
            self._written(claim, assignment)
            return True
        if result.conflict:
            log.info("status_conflict", service=claim.key, resource_version=claim.resource_version)
            self._dirty.set()
            return True
        if result.gone or result.not_leader:
            return True
        log.warning("status_write_failed", service=claim.key, error=result.error)
        return False

    def _written(self, claim: Claim, assignment: Assignment) -> None:
        ips = [str(ip) for ip in assignment.ips]
        if assignment.outcome is Outcome.ALLOCATED:
            log.info("ip_allocated", service=claim.key, ips=ips, pool=assignment.pool, detail=assignment.detail or None)
            detail = f" ({assignment.detail})" if assignment.detail else ""
            self._events.event(
                claim.key,
                type_="Normal",
                reason="IPAllocated",
                message=f"Assigned IP {', '.join(ips)} from pool {assignment.pool}{detail}",
            )
        elif assignment.outcome is Outcome.RELEASED:
            log.info(
                "ip_released", service=claim.key, released=[str(ip) for ip in claim.ingress_ips if str(ip) not in ips]
            )
        else:
            log.info("status_corrected", service=claim.key, ips=ips, outcome=assignment.outcome.value)

    def _report(self, allocation: Allocation, claims: Mapping[str, Claim], config: SpeakerConfig) -> None:
        """An Event and a log line when a Service's failure or warning changes; counted once."""
        for key in [k for k in self._reported if k not in claims or not is_ours(claims[k], config.load_balancer_class)]:
            del self._reported[key]
        for key, assignment in allocation.assignments.items():
            if assignment.outcome not in (Outcome.FAILED, Outcome.OUTSIDE_POOLS):
                self._reported.pop(key, None)
                continue
            seen = (assignment.outcome, f"{assignment.failure}:{assignment.detail}")
            if self._reported.get(key) == seen:
                continue
            self._reported[key] = seen
            if assignment.failure is not None:
                self.failures.labels(assignment.failure.value).inc()
                log.warning("allocation_failed", service=key, reason=assignment.failure.value, detail=assignment.detail)
                self._events.event(
                    key,
                    type_="Warning",
                    reason="AllocationFailed",
                    message=f"{assignment.failure.value}: {assignment.detail}",
                )
            else:
                log.warning(
                    "ip_outside_pools", service=key, ips=[str(ip) for ip in assignment.ips], detail=assignment.detail
                )
                self._events.event(key, type_="Warning", reason="IPOutsidePools", message=assignment.detail)

    # -- HTTP ------------------------------------------------------------------------------

    def route(self, request: Request) -> Reply | Render:
        if request.method not in METHODS:
            return Reply(405, b"method not allowed: GET or HEAD only\n", headers=(("Allow", "GET, HEAD"),))
        if request.path == "/metrics":
            return lambda: Reply(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if request.path == "/healthz":
            alive = self._threads_alive()
            return Reply(200 if alive else 503, b"ok\n" if alive else b"a controller thread died\n")
        if request.path == "/readyz":
            if not self.store.synced:
                return Reply(503, b"initial list of services not complete\n")
            role = "leader" if self.elector.is_leader() else f"standby (leader: {self.elector.holder or 'none'})"
            return Reply(200, f"ok: {role}\n".encode())
        return Reply(404, b"not found: /metrics /healthz /readyz\n")


@dataclasses.dataclass(frozen=True, slots=True)
class ControllerOptions:
    config_path: str
    kubeconfig: str | None
    lease_namespace: str
    identity: str
    metrics_address: str
    config_poll_s: float = 2.0


def default_identity() -> str:
    """``$POD_NAME``; else the host name and a random suffix (two processes on one host differ)."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def default_lease_namespace() -> str:
    return os.environ.get("POD_NAMESPACE") or "bgpspeaker-system"


def run_controller(options: ControllerOptions, load_config: Callable[[str], SpeakerConfig]) -> int:
    """The process; returns its exit code (0 after SIGTERM, 1 after a thread died, 2 for bad input)."""
    from bgpspeaker.cluster.api import api_client
    from bgpspeaker.cluster.watch import Watcher, WatchSettings
    from bgpspeaker.observe import parse_listen

    try:
        config = load_config(options.config_path)
    except ConfigError as error:
        log.error("config_invalid", path=options.config_path, problems=error.problems)
        return 2
    try:
        host, port = parse_listen(options.metrics_address)
        client = api_client(options.kubeconfig)
    except Exception as error:  # noqa: BLE001  # a bad flag or kubeconfig: one clear line, exit 2
        log.error("controller_options_invalid", error=str(error).strip()[:300])
        return 2
    api = ApiPaths(client)
    stop = threading.Event()
    crashed = threading.Event()
    dirty = threading.Event()
    current = [config]

    def on_leadership(_leader: bool) -> None:
        dirty.set()

    store = ClaimStore(on_change=dirty.set)
    elector = LeaseElector(
        api,
        namespace=options.lease_namespace,
        identity=options.identity,
        timing=config.controller,
        stop=stop,
        on_change=on_leadership,
    )
    events = EventWriter(api, identity=options.identity, stop=stop)
    controller = Controller(
        api,
        store=store,
        elector=elector,
        events=events,
        config=lambda: current[0],
        stop=stop,
        dirty=dirty,
        threads_alive=lambda: not crashed.is_set(),
    )
    watcher = Watcher("services", api, "/api/v1/services", parse_claim, store, settings=WatchSettings(), stop=stop)
    server = HttpServer(host, port, controller, HttpLimits())
    try:
        bound = server.start()
    except OSError as error:
        log.error("http_listen_failed", address=options.metrics_address, error=str(error))
        return 2

    def on_signal(_signum: int) -> None:  # on the signals thread (bgpspeaker.signals)
        stop.set()
        dirty.set()

    relay = SignalRelay(on_signal, (signal.SIGTERM, signal.SIGINT)).install()
    loop = guarded(controller.run, "allocate", crashed, log)
    lease = guarded(elector.run, "lease", crashed, log)
    threads = [guarded(watcher.run, "watch-services", crashed, log), lease, loop]
    threads.append(guarded(events.run, "events", crashed, log))
    log.info(
        "controller_starting",
        identity=options.identity,
        lease=elector.lease,
        pools=[pool.name for pool in config.address_pools],
        metrics=f"{host}:{bound}",
        lease_duration_s=config.controller.lease_duration_s,
        pid=os.getpid(),
    )
    for thread in threads:
        thread.start()
    text = _read(options.config_path)
    exit_code = 0
    next_poll = time.monotonic() + options.config_poll_s
    while not stop.wait(0.25):
        if crashed.is_set():
            exit_code = 1
            break
        if time.monotonic() >= next_poll:
            next_poll = time.monotonic() + options.config_poll_s
            new_text = _read(options.config_path)
            if new_text != text:
                text = new_text
                try:
                    current[0] = load_config(options.config_path)
                except ConfigError as error:
                    log.error(
                        "config_reload_failed", path=options.config_path, problems=error.problems, kept="running config"
                    )
                else:
                    log.info(
                        "config_reloaded", path=options.config_path, pools=[p.name for p in current[0].address_pools]
                    )
                    dirty.set()
    stop.set()
    dirty.set()
    loop.join(timeout=20.0)  # the pass in flight finishes its writes
    lease.join(timeout=12.0)  # an acquire in flight completes (then it is ours to release)
    released = elector.release()
    server.stop()
    relay.close()
    log.info("controller_stopped", exit_code=exit_code, lease_released=released)
    return exit_code


def _read(path: str) -> bytes | None:
    """The config file's bytes as ``load_config`` bounds them, None when unreadable."""
    try:
        return read_prefix(path)
    except OSError:
        return None
