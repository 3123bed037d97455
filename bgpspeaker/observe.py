"""What operators see besides the log: Prometheus metrics, probes and ``/status``.

Two small HTTP servers: the metrics address (default ``:9479``, every address: Prometheus
and the kubelet reach it on the node IP) serves ``/metrics``, ``/healthz`` and ``/readyz``;
the status address (default ``127.0.0.1:9480``, loopback) serves ``/status`` (JSON, read by
``bgpspeaker status``) and ``/config`` (the config file in force, read by ``bgpspeaker
explain``), and the probes too. Everything is read from the
daemon's state at request time; nothing here writes to ExaBGP or the API server.
Metric names follow MetalLB's where an equivalent exists, under ``bgpspeaker_``, so
dashboards port over: ``bgpspeaker_bgp_session_up{peer}``,
``bgpspeaker_bgp_announced_prefixes_total{peer}``, ``bgpspeaker_bgp_updates_total{peer}``,
``bgpspeaker_speaker_announced{ip,node,protocol,service}``.

The port is reachable by anyone who can reach the node, so the server is bounded (see
``HttpServer``): a fixed number of threads and connections whatever clients do, and the
probes answered even while strangers hold connections open. ``/status`` (Service names,
peers, ASNs, PIDs) and ``/config`` answer on the metrics address only clients on this
host, unless ``status_remote`` is set; on the status address, whoever can reach it (its
bind address is the control: loopback unless the operator chose another).

Ports: 7472/7473 are MetalLB's (speaker/controller metrics, FRR-mode metrics), 7946 its
memberlist; 9479 and 9480 are used by none of the host-network components commonly on a
node (MetalLB; Cilium 4240, 4244, 9234, 9879, 9890, 9962-9965; kube-vip 2112; Calico
9091, 9093, 9099; node-exporter 9100; kube-proxy 10249, 10256; the kubelet 10248, 10250).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bgpspeaker.httpserver import METHODS, HttpLimits, HttpServer, Render, Reply, Request, is_local_client
from bgpspeaker.ports import DEFAULT_METRICS_ADDRESS, DEFAULT_STATUS_ADDRESS
from bgpspeaker.routes import Attributes, Prefix, RouteKey, Unknown, prefix_order
from bgpspeaker.session import SessionStatus

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_METRICS_ADDRESS",
    "DEFAULT_STATUS_ADDRESS",
    "Observer",
    "StatusSource",
    "parse_listen",
]

log = structlog.get_logger("bgpspeaker.observe")

DEFAULT_LISTEN = DEFAULT_METRICS_ADDRESS
PRIVATE_PATHS = frozenset({"/status", "/config"})
"""What the metrics address answers only to clients on this host (unless ``status_remote``)."""


def _no_config() -> bytes | None:
    return None


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (all addresses) -> (host, port); ValueError when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address must be HOST:PORT or :PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # hostNetwork pods are scraped on the node IP


class RouteState(Protocol):
    """What the reconciler shows: sessions, acknowledged routes and their services."""

    @property
    def acknowledged(self) -> Mapping[RouteKey, Attributes | Unknown]: ...

    @property
    def updates_sent(self) -> Mapping[str, int]: ...

    def statuses(self) -> Mapping[str, SessionStatus]: ...

    def announced_services(self) -> Mapping[Prefix, frozenset[str]]: ...


class ApiState(Protocol):
    """What the cluster store shows about the API server."""

    @property
    def outage_since(self) -> float | None: ...

    @property
    def synced(self) -> bool: ...

    last_sync_monotonic: dict[str, float]


class WatcherState(Protocol):
    """One watcher's counters."""

    kind: str
    restarts: int


@dataclasses.dataclass
class StatusSource:
    """Views into the running daemon, as protocols (this module imports no daemon internals)."""

    node: str
    reconciler: RouteState
    store: ApiState
    watchers: Sequence[WatcherState]
    config_valid: Callable[[], bool]
    threads_alive: Callable[[], bool]
    internal_errors: Callable[[], Mapping[str, int]] = dict
    bfd: Callable[[], Mapping[str, Mapping[str, Any]]] = dict
    """Peer -> its BFD session's status document (``bgpspeaker.bfd.client.BfdStatus``)."""
    """Thread name -> unexpected exceptions its last-resort guard caught and recovered from."""
    config_text: Callable[[], bytes | None] = _no_config
    """The config file in force, as read (``/config``). It holds no secret: passwords are only
    ever named (``passwordFile``, ``passwordSecret``), never written in the config."""
    started_monotonic: float = dataclasses.field(default_factory=time.monotonic)


class _Collector(Collector):
    def __init__(self, source: StatusSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        source = self._source
        reconciler = source.reconciler
        sessions = reconciler.statuses()
        acked = reconciler.acknowledged
        up = GaugeMetricFamily("bgpspeaker_bgp_session_up", "BGP session Established (1) or not (0)", labels=["peer"])
        prefixes = GaugeMetricFamily(
            "bgpspeaker_bgp_announced_prefixes_total",
            "Prefixes ExaBGP acknowledged as announced to the peer",
            labels=["peer"],
        )
        restarts = CounterMetricFamily(
            "bgpspeaker_exabgp_restarts", "ExaBGP child restarts (exits, kills after a missed ack)", labels=["peer"]
        )
        counts = _count_by_peer(acked)
        for name in sorted(sessions):
            session = sessions[name]
            up.add_metric([name], 1.0 if session.established else 0.0)
            prefixes.add_metric([name], float(counts.get(name, 0)))
            restarts.add_metric([name], float(session.restarts))
        yield up
        yield prefixes
        yield restarts
        yield _message_metric(sessions)
        updates = CounterMetricFamily(
            "bgpspeaker_bgp_updates",
            "announce/withdraw commands sent (each becomes at least one UPDATE)",
            labels=["peer"],
        )
        for name, count in sorted(reconciler.updates_sent.items()):
            updates.add_metric([name], float(count))
        yield updates
        announced = GaugeMetricFamily(
            "bgpspeaker_speaker_announced",
            "1 for each service VIP this node announces",
            labels=["ip", "node", "protocol", "service"],
        )
        for prefix, services in sorted(reconciler.announced_services().items(), key=lambda kv: prefix_order(kv[0])):
            for service in sorted(services):
                announced.add_metric([str(prefix.network_address), source.node, "bgp", service], 1.0)
        yield announced
        watch = CounterMetricFamily("bgpspeaker_watch_restarts", "Watch/list restarts (errors, 410s)", labels=["kind"])
        for watcher in source.watchers:
            watch.add_metric([watcher.kind], float(watcher.restarts))
        yield watch
        yield GaugeMetricFamily(
            "bgpspeaker_api_last_sync_age_seconds",
            "Seconds since the last successful list, event or bookmark from the API server (any kind)",
            value=_sync_age(source.store),
        )
        outage = source.store.outage_since
        yield GaugeMetricFamily(
            "bgpspeaker_api_outage_seconds",
            "Seconds the API server has been unreachable (0 when reachable)",
            value=0.0 if outage is None else time.monotonic() - outage,
        )
        yield GaugeMetricFamily(
            "bgpspeaker_config_valid",
            "1 when the config file in force is the latest one on disk",
            value=float(source.config_valid()),
        )
        yield GaugeMetricFamily(  # MetalLB's metallb_k8s_client_config_stale_bool, the other way round
            "bgpspeaker_config_stale",
            "1 after a reload failed (the previous config still runs), 0 after a good one",
            value=float(not source.config_valid()),
        )
        internal = CounterMetricFamily(
            "bgpspeaker_internal_errors",
            "Unexpected exceptions caught by a thread's last-resort guard (a bug; the thread recovered)",
            labels=["thread"],
        )
        for thread, count in sorted(source.internal_errors().items()):
            internal.add_metric([thread], float(count))
        yield internal
        yield from _bfd_metrics(source.bfd())
        yield GaugeMetricFamily(
            "bgpspeaker_initial_sync_complete",
            "1 once services, endpointslices and nodes have listed",
            value=float(source.store.synced),
        )


MESSAGE_TYPES = {"open": "open", "update": "update", "keepalive": "keepalive", "notification": "notification"}
MESSAGE_TYPES |= {"refresh": "route-refresh", "route-refresh": "route-refresh"}
"""ExaBGP's counter suffix -> the ``type`` label (FRR's names for route refresh differ)."""


def _message_metric(sessions: Mapping[str, SessionStatus]) -> Metric:
    """``bgpspeaker_bgp_messages_total{peer,direction,type}``: every type, both directions."""
    family = CounterMetricFamily(
        "bgpspeaker_bgp_messages",
        "BGP messages sent and received over the session, by type (from ExaBGP's own counters)",
        labels=["peer", "direction", "type"],
    )
    for name in sorted(sessions):
        counts: dict[tuple[str, str], int] = {}
        for key, value in sessions[name].messages.items():
            direction, _, suffix = key.partition("-")
            kind = MESSAGE_TYPES.get(suffix)
            if direction in ("send", "receive") and kind is not None:
                label = "sent" if direction == "send" else "received"
                counts[label, kind] = counts.get((label, kind), 0) + value
        for direction in ("sent", "received"):
            for kind in ("open", "update", "keepalive", "notification", "route-refresh"):
                family.add_metric([name, direction, kind], float(counts.get((direction, kind), 0)))
    return family


def _bfd_metrics(statuses: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    up = GaugeMetricFamily("bgpspeaker_bfd_session_up", "BFD session Up (1) or not (0)", labels=["peer"])
    downs = CounterMetricFamily(
        "bgpspeaker_bfd_session_down_events", "BFD session transitions from Up to anything else", labels=["peer"]
    )
    for peer, status in sorted(statuses.items()):
        up.add_metric([peer], 1.0 if status["state"] == "up" else 0.0)
        downs.add_metric([peer], float(status["down_events"]))
    yield up
    yield downs


def _count_by_peer(acked: Mapping[RouteKey, Attributes | Unknown]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (peer, _prefix), value in acked.items():
        if not isinstance(value, Unknown):
            counts[peer] = counts.get(peer, 0) + 1
    return counts


def _sync_age(store: ApiState) -> float:
    last = store.last_sync_monotonic
    return time.monotonic() - max(last.values()) if last else float("nan")


class Observer:
    """The routes: metrics, probes, status; served by an ``HttpServer`` on the metrics
    address and, when ``status_address`` is set, another on the status address."""

    def __init__(
        self,
        source: StatusSource,
        listen: str = DEFAULT_LISTEN,
        *,
        status_address: str | None = None,
        status_remote: bool = False,
        limits: HttpLimits | None = None,
    ) -> None:
        self.source = source
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(source))
        self.reconcile_duration = Histogram(
            "bgpspeaker_reconcile_duration_seconds",
            "Duration of one reconcile pass (decide, diff, send, acks)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.status_remote = status_remote
        """True: anyone may read ``/status`` on the metrics address; False: only clients on
        this host (``is_local_client``)."""
        host, port = parse_listen(listen)
        self._server = HttpServer(host, port, self, limits or HttpLimits())
        self._status_server: HttpServer | None = None
        if status_address is not None:
            status_host, status_port = parse_listen(status_address)
            self._status_server = HttpServer(status_host, status_port, _StatusRouter(self), _STATUS_LIMITS)
        self.status_port: int | None = None
        """The status address's bound port once started (None: no status address)."""

    def start(self) -> int:
        """Bind and serve in background threads; returns the metrics address's bound port
        (OSError when an address cannot be bound: nothing is left listening then)."""
        port = self._server.start()
        log.info(
            "http_listening",
            address=f"{self._server.host}:{port}",
            paths=["/metrics", "/healthz", "/readyz"],
        )
        if self._status_server is not None:
            try:
                self.status_port = self._status_server.start()
            except OSError:
                self._server.stop()
                raise
            log.info(
                "http_listening",
                address=f"{self._status_server.host}:{self.status_port}",
                paths=["/status", "/config", "/healthz", "/readyz"],
            )
        return port

    def stop(self) -> None:
        """Stop serving and close every connection."""
        self._server.stop()
        if self._status_server is not None:
            self._status_server.stop()

    def route(self, request: Request, *, private_open: bool = False) -> Reply | Render:
        """The reply to one request: probes and refusals at once (they read a few flags);
        ``/metrics`` and ``/status`` as a ``Render`` (they walk every route).
        ``private_open``: the status address, where ``/status`` and ``/config`` answer anyone."""
        if request.method not in METHODS:
            return Reply(405, b"method not allowed: GET or HEAD only\n", headers=(("Allow", "GET, HEAD"),))
        path = request.path
        if path == "/metrics":
            return self._metrics
        if path == "/healthz":
            ok, detail = self.healthy()
            return Reply(200 if ok else 503, (detail + "\n").encode())
        if path == "/readyz":
            ok, detail = self.ready()
            return Reply(200 if ok else 503, (detail + "\n").encode())
        if path in PRIVATE_PATHS:
            if not (private_open or self.status_remote or is_local_client(request.client, request.local)):
                return Reply(403, _STATUS_FORBIDDEN)
            return self._status if path == "/status" else self._config()
        return Reply(404, b"not found: /metrics /healthz /readyz /status /config\n")

    def _config(self) -> Reply:
        text = self.source.config_text()
        if text is None:
            return Reply(503, b"no config loaded yet\n")
        return Reply(200, text, "application/yaml")

    def _metrics(self) -> Reply:
        return Reply(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    def _status(self) -> Reply:
        return Reply(200, json.dumps(self.status(), indent=2).encode(), "application/json")

    def healthy(self) -> tuple[bool, str]:
        """Alive: every thread runs and every ExaBGP child is running (or being restarted)."""
        if not self.source.threads_alive():
            return False, "a bgpspeaker thread died"
        for name, session in self.source.reconciler.statuses().items():
            if session.failed is not None:
                return False, f"ExaBGP for peer {name} gave up: {session.failed}"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Ready: initial lists complete and the config on disk is valid."""
        if not self.source.store.synced:
            return False, "initial list of services, endpointslices and nodes not complete"
        if not self.source.config_valid():
            return False, "the config file on disk is invalid (running with the previous one)"
        return True, "ok"

    def status(self) -> dict[str, Any]:
        """The /status document: peers, announced prefixes with their services, health."""
        source = self.source
        reconciler = source.reconciler
        acked = reconciler.acknowledged
        counts = _count_by_peer(acked)
        now = time.monotonic()
        peers = []
        for name, session in sorted(reconciler.statuses().items()):
            peer = session.runtime.peer
            peers.append(
                {
                    "name": name,
                    "address": str(peer.peer_address),
                    "asn": peer.peer_asn,
                    "local_asn": peer.my_asn,
                    "state": "established" if session.established else session.state,
                    "since_s": round(now - session.since_monotonic, 1),
                    "prefixes_sent": counts.get(name, 0),
                    "exabgp_pid": session.pid,
                    "exabgp_restarts": session.restarts,
                }
            )
        by_prefix: dict[Any, list[str]] = {}
        for (peer_name, prefix), value in acked.items():
            if not isinstance(value, Unknown):
                by_prefix.setdefault(prefix, []).append(peer_name)
        services = reconciler.announced_services()
        prefixes = [
            {"prefix": str(prefix), "peers": sorted(names), "services": sorted(services.get(prefix, ()))}
            for prefix, names in sorted(by_prefix.items(), key=lambda kv: prefix_order(kv[0]))
        ]
        outage = source.store.outage_since
        ready, ready_detail = self.ready()
        return {
            "node": source.node,
            "uptime_s": round(now - source.started_monotonic, 1),
            "ready": ready,
            "ready_detail": ready_detail,
            "config_valid": source.config_valid(),
            "api": {
                "reachable": outage is None,
                "outage_s": None if outage is None else round(now - outage, 1),
                "last_sync_age_s": round(_sync_age(source.store), 1) if source.store.last_sync_monotonic else None,
            },
            "peers": peers,
            "bfd": [{"peer": peer, **status} for peer, status in sorted(source.bfd().items())],
            "prefixes": prefixes,
        }


_STATUS_FORBIDDEN = (
    b"forbidden: /status answers only clients on this node (run `bgpspeaker status` there),"
    b" or start the speaker with --status-remote or a reachable --status-address\n"
)
_STATUS_LIMITS = HttpLimits(max_connections=16, render_workers=1)
"""The status address has a handful of clients (an operator's ``status``/``explain``)."""


class _StatusRouter:
    """The status address's routes: the metrics address's, with ``/status`` and ``/config`` open."""

    def __init__(self, observer: Observer) -> None:
        self._observer = observer

    def route(self, request: Request) -> Reply | Render:
        return self._observer.route(request, private_open=True)
