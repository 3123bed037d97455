"""Kubernetes watchers and the in-memory cluster store they fill.

Each watcher lists, then watches from the list's resourceVersion, through the official
client's ``ApiClient`` (its configuration, auth, TLS and connection pool) on the API
paths themselves (``ApiPaths``): we read the raw JSON and keep a few fields per
object, not the client's model objects, and skip its generated per-resource classes
(in client 37, importing ``CoreV1Api`` alone takes 0.6-0.9 s and 21 MB). Layers,
as in kopf: ``run`` reconnects forever with a bounded backoff that resets on
success; ``_list`` replaces the whole kind atomically; ``_watch`` streams one
request, returns on 410 Gone (relist) or when the server ends the request (re-watch
from the last resourceVersion), and raises on errors or silence longer than the
inactivity timeout.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import structlog
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from bgpspeaker.model import (
    ChangeLog,
    EndpointSlice,
    Node,
    ObjectInvalid,
    Service,
    Snapshot,
    object_key,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)

__all__ = [
    "ApiPaths",
    "ClusterStore",
    "WatchSettings",
    "Watcher",
    "api_client",
    "make_watchers",
    "resource_path",
    "return_memory",
]

log = structlog.get_logger("bgpspeaker.kube")

Parsed = Service | EndpointSlice | Node
Timeout = float | tuple[float, float] | None


def resource_path(prefix: str, resource: str, *, namespace: str | None = None, name: str | None = None) -> str:
    """``/api/v1/namespaces/NS/services/NAME`` and friends, each segment quoted."""
    path = prefix
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{resource}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    return path


class ApiPaths:
    """Requests on API paths through the official client's ``ApiClient``.

    ``param_serialize`` applies the client's configuration (server, auth: token files,
    exec plugins and their refresh) and ``call_api`` its TLS settings and connection
    pool, exactly as the generated per-resource methods do; only those generated
    classes are skipped. Responses come back unread (urllib3), so lists and watch
    streams are read as raw JSON. A non-2xx status raises ``ApiException``."""

    def __init__(self, client: k8s.ApiClient) -> None:
        self.client = client

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str | None = None,
        timeout: Timeout = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        serialized = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(*serialized, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()  # type: ignore[no-untyped-call]  # untyped library
            raise ApiException(http_resp=response)
        return response.response

    def call(self, method: str, path: str, **options: Any) -> Any:
        """``request`` (same options), then read and decode the whole JSON body (which also
        frees the connection for the next request: an unread body would be read as its reply)."""
        response = self.request(method, path, **options)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()


@dataclasses.dataclass(frozen=True, slots=True)
class WatchSettings:
    """Timeouts and backoff of the watchers."""

    server_timeout_s: int = 300
    """Asked of the API server per watch request (client-go uses 5-10 minutes)."""
    inactivity_timeout_s: float = 90.0
    """No byte for this long ends the stream: API servers send a bookmark about every
    60 s when asked (allowWatchBookmarks), so 90 s of silence means a dead stream."""
    connect_timeout_s: float = 10.0
    backoff_s: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
    """Delays between failed attempts; the last repeats; resets after a good list."""
    page_size: int = 500
    """``limit`` of each list page, as client-go's reflector."""


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
            if kind == "endpointslices":
                self._slices_by_service = {}
                for key, value in items.items():
                    assert isinstance(value, EndpointSlice)
                    if value.service_key is not None:
                        self._slices_by_service.setdefault(value.service_key, {})[key] = value
            table.clear()
            table.update(items)
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


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


class _Parser:
    """Parses one kind's objects and logs each distinct problem once."""

    def __init__(self, kind: str, parse: Callable[[Any], Parsed]) -> None:
        self.kind = kind
        self._parse = parse
        self._reported: dict[str, str] = {}

    def __call__(self, obj: Any) -> tuple[str, Parsed] | None:
        try:
            key = object_key(obj)
        except ObjectInvalid as error:
            log.warning("object_invalid", kind=self.kind, object="?", error=str(error))
            return None
        try:
            value = self._parse(obj)
        except ObjectInvalid as error:
            if self._reported.get(key) != str(error):
                self._reported[key] = str(error)
                log.warning("object_invalid", kind=self.kind, object=key, error=str(error))
            return None
        self._reported.pop(key, None)
        return key, value


class Watcher:
    """Keeps one kind in the store current: list, watch, relist on 410, reconnect on errors."""

    def __init__(
        self,
        kind: str,
        api: ApiPaths,
        path: str,
        parse: Callable[[Any], Parsed],
        store: ClusterStore,
        *,
        settings: WatchSettings,
        stop: threading.Event,
        field_selector: str | None = None,
    ) -> None:
        self.kind = kind
        self._api = api
        self._path = path
        self._parser = _Parser(kind, parse)
        self._store = store
        self._settings = settings
        self._stop = stop
        self._field_selector = field_selector
        self.restarts = 0
        self.resource_version: str | None = None
        """Where the next watch starts; None: list first."""
        self.thread = threading.Thread(target=self.run, name=f"watch-{kind}", daemon=True)

    def _selector(self) -> list[tuple[str, Any]]:
        return [("fieldSelector", self._field_selector)] if self._field_selector else []

    def run(self) -> None:
        """Forever: list, then watch until expired or broken; back off after failures."""
        failures = 0
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self.resource_version = self._list()
                    failures = 0
                started = time.monotonic()
                self._watch()
                if time.monotonic() - started < 1.0:
                    # Ended at once without an error: do not spin against such a server.
                    self._stop.wait(self._settings.backoff_s[0])
            except (ApiException, _Expired) as error:
                if isinstance(error, ApiException) and error.status != 410:
                    failures = self._failed(error, failures)
                    continue
                log.info("watch_expired", kind=self.kind, resource_version=self.resource_version)
                self.resource_version = None
                self.restarts += 1
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                failures = self._failed(error, failures)

    def _failed(self, error: BaseException, failures: int) -> int:
        """Log the failure and wait the backoff delay; return the new failure count."""
        if self._stop.is_set():
            return failures
        delay = self._settings.backoff_s[min(failures, len(self._settings.backoff_s) - 1)]
        self.restarts += 1
        self._store.report_failure(self.kind, _describe(error))
        log.warning("watch_restarted", kind=self.kind, error=_describe(error), attempt=failures + 1, retry_in_s=delay)
        self._stop.wait(delay)
        return failures + 1

    def _list(self) -> str:
        items: dict[str, Parsed] = {}
        token: str | None = None
        while True:
            query = [*self._selector(), ("limit", self._settings.page_size)]
            if token:
                query.append(("continue", token))
            body = self._api.call("GET", self._path, query=query, timeout=(self._settings.connect_timeout_s, 60.0))
            if not isinstance(body, dict):
                raise ValueError(f"list of {self.kind} is not an object: {str(body)[:200]}")
            for obj in body.get("items") or []:
                parsed = self._parser(obj)
                if parsed is not None:
                    items[parsed[0]] = parsed[1]
            metadata = body.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                resource_version = metadata.get("resourceVersion")
                if not isinstance(resource_version, str) or not resource_version:
                    raise ValueError(f"list of {self.kind} returned no resourceVersion")
                break
        self._store.replace(self.kind, items)
        self._store.report_ok(self.kind)
        return_memory()
        log.info("watch_listed", kind=self.kind, objects=len(items), resource_version=resource_version)
        return resource_version

    def _watch(self) -> None:
        response = self._api.request(
            "GET",
            self._path,
            query=[
                *self._selector(),
                ("watch", True),
                ("resourceVersion", self.resource_version),
                ("allowWatchBookmarks", True),
                ("timeoutSeconds", self._settings.server_timeout_s),
            ],
            timeout=(self._settings.connect_timeout_s, self._settings.inactivity_timeout_s),
        )
        self._store.report_ok(self.kind)  # the stream is open: the API server answers
        try:
            for line in _lines(response):
                if self._stop.is_set():
                    break
                self.resource_version = self._apply(json.loads(line), self.resource_version or "")
        finally:
            response.release_conn()

    def _apply(self, event: Any, resource_version: str) -> str:
        if not isinstance(event, dict):
            raise ValueError(f"watch event is not an object: {str(event)[:200]}")
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"watch event without an object: {str(event)[:200]}")
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise ValueError(f"watch error event: {json.dumps(obj)[:300]}")
        metadata = obj.get("metadata")
        new_version = (metadata.get("resourceVersion") if isinstance(metadata, dict) else None) or resource_version
        if kind == "BOOKMARK":
            self._store.mark_synced(self.kind)
            return str(new_version)
        if kind in ("ADDED", "MODIFIED"):
            parsed = self._parser(obj)
            if parsed is not None:
                self._store.upsert(self.kind, *parsed)
        elif kind == "DELETED":
            try:
                self._store.delete(self.kind, object_key(obj))
            except ObjectInvalid as error:
                log.warning("object_invalid", kind=self.kind, object="?", error=str(error))
        else:
            raise ValueError(f"unknown watch event type {kind!r}")
        self._store.mark_synced(self.kind)
        return str(new_version)


def return_memory() -> None:
    """After a list or a big reconcile pass: hand freed memory back to the OS (glibc keeps
    the peak otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _lines(response: Any) -> Iterator[bytes]:
    """Split a chunked watch response into JSON lines."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}".strip()
    return f"{type(error).__name__}: {error}"[:300]


def api_client(kubeconfig: str | None) -> k8s.ApiClient:
    """``--kubeconfig`` if given, else in-cluster config, else the usual kubeconfig lookup."""
    configuration = k8s.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]  # untyped library
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # untyped library
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # untyped library
    return k8s.ApiClient(configuration)


def make_watchers(
    api: k8s.ApiClient,
    store: ClusterStore,
    *,
    node_name: str,
    settings: WatchSettings,
    stop: threading.Event,
) -> list[Watcher]:
    """The three watchers the daemon runs. Nodes: only this node (a field selector)."""
    paths = ApiPaths(api)
    common: dict[str, Any] = {"settings": settings, "stop": stop}
    return [
        Watcher("services", paths, "/api/v1/services", parse_service, store, **common),
        Watcher(
            "endpointslices", paths, "/apis/discovery.k8s.io/v1/endpointslices", parse_endpoint_slice, store, **common
        ),
        Watcher(
            "nodes", paths, "/api/v1/nodes", parse_node, store, field_selector=f"metadata.name={node_name}", **common
        ),
    ]
