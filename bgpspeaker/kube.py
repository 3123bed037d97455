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

What the API server sends is data from a stranger: every JSON document is bounded
(size, nesting) before ``json.loads``, and every list page and watch event is checked
for shape (``list_page``, ``watch_event``) before use. A bad page or line is an error
for that list or stream (``ResponseInvalid``: logged, backed off, retried), a bad
object is that object's problem (``object_invalid``), and nothing from one attempt
ends a watcher (``watch_internal_error``, counted in ``Watcher.internal_errors``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import reprlib
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
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
    "MAX_JSON_DEPTH",
    "MAX_WATCH_LINE_BYTES",
    "ApiPaths",
    "ClusterStore",
    "ListPage",
    "ResponseInvalid",
    "WatchEvent",
    "WatchSettings",
    "Watcher",
    "api_client",
    "decode_json",
    "json_depth_exceeds",
    "list_page",
    "make_watchers",
    "resource_path",
    "return_memory",
    "watch_event",
    "watch_lines",
]

log = structlog.get_logger("bgpspeaker.kube")

Parsed = Service | EndpointSlice | Node
Timeout = float | tuple[float, float] | None

MAX_JSON_DEPTH = 100
"""Deepest nesting accepted in JSON from the API server. Ours need about 12 (list, items,
an object, metadata.managedFields[], fieldsV1 mirroring the object's fields); json.loads
recurses once per level, and a line nested 200,000 deep raised RecursionError."""
MAX_WATCH_LINE_BYTES = 16 << 20
"""Longest watch line accepted: a line is one event with one object, and etcd stores
objects of at most ~1.5 MiB."""
_READ_BYTES = 1 << 20
"""A watch stream is read at most this much at a time (a huge chunk arrives in pieces)."""


class ResponseInvalid(ValueError):
    """A list page or watch line from the API server cannot be used: not UTF-8 JSON, too
    long, nested too deep, the wrong shape, or an ERROR event. An error for that list or
    stream (logged, backed off, retried), never "nothing exists" and never a crash."""


_BRACKETS_AND_QUOTES = bytes(sorted(set(range(256)) - set(b'[]{}"')))
"""Everything but brackets and quotes (``bytes.translate`` deletes it)."""
_BRACKETS = bytes.maketrans(b"[]{}", b"()()")


def json_depth_exceeds(data: bytes, limit: int) -> bool:
    """Whether ``json.loads`` of UTF-8 ``data`` could nest deeper than ``limit``, found
    without recursion and in C (a 500-Service list page: ~2 ms, json.loads ~5 ms).

    Strings are dropped first (UTF-8 never hides a quote, backslash or bracket inside a
    multi-byte character): escaped backslashes and quotes go, then every second run
    between quotes. Each pass over the brackets left removes the innermost pairs, one
    level; what stays unmatched counts in full. Exact for valid JSON; for anything else an
    upper bound of the depth json.loads reaches before its first error."""
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = data.translate(None, _BRACKETS_AND_QUOTES)
    if kept.count(b"[") + kept.count(b"{") <= limit:  # brackets in strings too: an upper bound
        return False
    brackets = b"".join(kept.split(b'"')[::2]).translate(_BRACKETS)
    levels = 0
    for _ in range(limit + 1):
        inner_removed = brackets.replace(b"()", b"")
        if len(inner_removed) == len(brackets):
            break
        brackets = inner_removed
        levels += 1
    return levels + brackets.count(b"(") > limit


def decode_json(data: bytes, *, what: str, max_bytes: int | None = None) -> Any:
    """``json.loads`` of data from the API server, bounded first: at most ``max_bytes``,
    strict UTF-8, nested at most ``MAX_JSON_DEPTH``. Raises only ResponseInvalid."""
    if max_bytes is not None and len(data) > max_bytes:
        raise ResponseInvalid(f"{what}: longer than {max_bytes} bytes ({len(data)})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ResponseInvalid(f"{what}: not UTF-8 ({error.reason} at byte {error.start})") from None
    if json_depth_exceeds(data, MAX_JSON_DEPTH):
        raise ResponseInvalid(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError as error:  # JSONDecodeError, or int() of a number of 4,300+ digits
        raise ResponseInvalid(f"{what}: not JSON ({str(error)[:200]})") from None


def _shape(value: Any) -> str:
    """A short description of an unexpected value (type and a bounded repr)."""
    return f"{type(value).__name__} {reprlib.repr(value)}"


@dataclasses.dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a list response, checked."""

    items: list[Any]
    """The raw objects, each still to be parsed (one bad object is that object's problem)."""
    continue_token: str | None
    """None on the last page."""
    resource_version: str | None
    """Where to watch from; always set on the last page."""


def list_page(body: Any, kind: str) -> ListPage:
    """Check the shape of one decoded list response; ResponseInvalid when it cannot be used.

    The body must be an object, ``items`` a list (null as empty: some servers send it for
    an empty collection, kube-apiserver sends ``[]``), ``metadata`` an object, ``continue``
    and ``resourceVersion`` strings, and the last page must carry a resourceVersion. A
    malformed page is an error for the whole list, never "nothing exists"."""
    what = f"list of {kind}"
    if not isinstance(body, dict):
        raise ResponseInvalid(f"{what}: not an object, got {_shape(body)}")
    items = body.get("items")
    if items is None:
        items = []
    elif not isinstance(items, list):
        raise ResponseInvalid(f"{what}: items must be a list, got {_shape(items)}")
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        raise ResponseInvalid(f"{what}: metadata must be an object, got {_shape(metadata)}")
    token = metadata.get("continue")
    resource_version = metadata.get("resourceVersion")
    for field, value in (("continue", token), ("resourceVersion", resource_version)):
        if value is not None and not isinstance(value, str):
            raise ResponseInvalid(f"{what}: metadata.{field} must be a string, got {_shape(value)}")
    if not token and not resource_version:
        raise ResponseInvalid(f"{what}: the last page has no metadata.resourceVersion")
    return ListPage(items=items, continue_token=token or None, resource_version=resource_version or None)


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


@dataclasses.dataclass(frozen=True, slots=True)
class WatchEvent:
    """One watch event, checked."""

    type: str
    """ADDED, MODIFIED, DELETED or BOOKMARK."""
    object: dict[str, Any]
    """The raw object, still to be parsed (one bad object is that object's problem)."""
    resource_version: str | None
    """The object's ``metadata.resourceVersion``; None when it has no readable one (then
    the watch resumes from the previous one). Always set for a BOOKMARK."""


_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})


def watch_event(event: Any) -> WatchEvent:
    """Check the shape of one decoded watch line.

    An ERROR event with code 410 raises ``_Expired`` (relist). ResponseInvalid, an error for
    the stream: any other ERROR event, a line that is not an object, an unknown ``type``, an
    ``object`` that is not an object, a BOOKMARK without a resourceVersion. An object whose
    metadata is bad is that object's problem, reported when it is parsed."""
    if not isinstance(event, dict):
        raise ResponseInvalid(f"watch event: not an object, got {_shape(event)}")
    kind = event.get("type")
    obj = event.get("object")
    if not isinstance(obj, dict):
        raise ResponseInvalid(f"watch event {_shape(kind)}: object must be an object, got {_shape(obj)}")
    if kind == "ERROR":
        if obj.get("code") == 410:
            raise _Expired()
        message = obj.get("message")
        text = message[:300] if isinstance(message, str) else _shape(message)
        raise ResponseInvalid(f"watch ERROR event: code {reprlib.repr(obj.get('code'))}: {text}")
    if not isinstance(kind, str) or kind not in _EVENT_TYPES:
        raise ResponseInvalid(f"watch event: unknown type {_shape(kind)}")
    metadata = obj.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    if not isinstance(version, str) or not version:
        if kind == "BOOKMARK":
            raise ResponseInvalid(f"watch BOOKMARK without a resourceVersion: {_shape(obj)}")
        version = None
    return WatchEvent(type=kind, object=obj, resource_version=version)


def watch_lines(chunks: Iterable[bytes], *, max_line_bytes: int) -> Iterator[bytes]:
    """Split a watch stream, as its chunks arrive, into its non-blank lines. A line longer
    than ``max_line_bytes`` raises ResponseInvalid as soon as that many bytes are pending
    (its end need not arrive). Linear in the stream's length, however it is chunked."""
    pending: list[bytes] = []
    pending_bytes = 0
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:end]
            start = end + 1
            if pending_bytes + len(piece) > max_line_bytes:
                raise ResponseInvalid(f"watch line longer than {max_line_bytes} bytes")
            line = b"".join([*pending, piece]) if pending else piece
            pending, pending_bytes = [], 0
            if line and not line.isspace():
                yield line
        if start < len(chunk):
            rest = chunk[start:]
            pending.append(rest)
            pending_bytes += len(rest)
            if pending_bytes > max_line_bytes:
                raise ResponseInvalid(f"watch line longer than {max_line_bytes} bytes")
    line = b"".join(pending)
    if line and not line.isspace():
        yield line


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
        frees the connection for the next request: an unread body would be read as its reply).
        A body that is not JSON, or nested deeper than ``MAX_JSON_DEPTH``, raises ResponseInvalid."""
        response = self.request(method, path, **options)
        try:
            return decode_json(response.data, what=f"{method} {path}")
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
    """Delays between failed attempts; the last repeats. Resets once the kind is served
    again: a list, or a watch event or bookmark (a watch that only opens does not count,
    so a stream that fails on its first line keeps backing off)."""
    recovery_probe_s: float = 1.0
    """While the watchers wait out a delay longer than this after the API server was
    unreachable or answered 5xx, one of them lists one object this often; when that is
    answered they all retry at once. Changes flow within ~1 s of the API server's return
    instead of up to the 10 s delay, for ~1 cheap request/s per node during an outage
    (the backoff alone: 3 per 10 s)."""
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


class _Parser:
    """Parses one kind's objects and logs each distinct problem once.

    An exception other than ObjectInvalid is a bug in the parser, but still only that
    object's: it is logged as ``watch_internal_error`` (once per object and error),
    counted in ``internal_errors``, and the object is skipped like an invalid one."""

    def __init__(self, kind: str, parse: Callable[[Any], Parsed]) -> None:
        self.kind = kind
        self._parse = parse
        self._reported: dict[str, str] = {}
        self.internal_errors = 0

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
        except Exception as error:  # noqa: BLE001  # a parser bug is still one object's problem
            self.internal_errors += 1
            if self._reported.get(key) != repr(error):
                self._reported[key] = repr(error)
                log.error("watch_internal_error", kind=self.kind, object=key, **_error_fields(error))
            return None
        self._reported.pop(key, None)
        return key, value


class _Recovery:
    """The watchers of one API server wait out their backoff together.

    While any of them waits longer than ``interval_s``, one at a time sends a probe (a
    cheap request) every ``interval_s``; once one is answered, every waiting watcher
    retries at once. The API server's return is seen within about ``interval_s``, at one
    request per interval per process rather than one attempt per watcher."""

    _STOP_POLL_S = 0.25
    """How often a waiting watcher looks at its stop event (a Condition cannot wait on both)."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._cond = threading.Condition()
        self._answered = 0
        """How many probes were answered: a waiter that sees it change stops waiting."""
        self._next_probe = 0.0

    def wait(self, delay_s: float, *, stop: threading.Event, probe: Callable[[], bool]) -> bool:
        """Wait ``delay_s`` (or until ``stop``); True when cut short by an answered probe."""
        if delay_s <= self._interval_s:
            stop.wait(delay_s)
            return False
        deadline = time.monotonic() + delay_s
        with self._cond:
            seen = self._answered
            now = time.monotonic()
            if self._next_probe < now:  # the attempt that just failed was a probe too
                self._next_probe = now + self._interval_s
        while not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                return False
            with self._cond:
                if self._answered != seen:
                    return True
                if now < self._next_probe:
                    self._cond.wait(min(deadline, self._next_probe, now + self._STOP_POLL_S) - now)
                    continue
                self._next_probe = now + self._interval_s
            if probe():
                with self._cond:
                    self._answered += 1
                    self._cond.notify_all()
                return True
        return False


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
        recovery: _Recovery | None = None,
    ) -> None:
        self.kind = kind
        self._api = api
        self._path = path
        self._parser = _Parser(kind, parse)
        self._store = store
        self._settings = settings
        self._stop = stop
        self._field_selector = field_selector
        self._recovery = recovery or _Recovery(settings.recovery_probe_s)
        """Shared with the other watchers of the same API server (``make_watchers``)."""
        self.restarts = 0
        self._attempt_errors = 0
        self._served = False
        """This attempt got a list or a watch event from the API server (resets the backoff)."""
        self.resource_version: str | None = None
        """Where the next watch starts; None: list first."""
        self.thread = threading.Thread(target=self.run, name=f"watch-{kind}", daemon=True)

    @property
    def internal_errors(self) -> int:
        """Unexpected exceptions (bugs) caught and survived: from whole attempts and from
        single objects (``watch_internal_error`` log lines)."""
        return self._attempt_errors + self._parser.internal_errors

    def _selector(self) -> list[tuple[str, Any]]:
        return [("fieldSelector", self._field_selector)] if self._field_selector else []

    def run(self) -> None:
        """Forever: list, then watch until expired or broken; back off after failures.

        The delay grows with consecutive failures and starts over once the kind is served
        again (a list, a watch event or bookmark). Nothing from one attempt ends the loop."""
        failures = 0
        woken_early = False
        while not self._stop.is_set():
            failure = self._attempt()
            if failure is None:  # the server ended the watch, or expired it: go on at once
                woken_early = False
                continue
            if self._served:
                failures = 0
            # A retry the probe brought forward that failed again waits its whole delay.
            woken_early = self._back_off(failure, failures, probe=self._served or not woken_early)
            failures += 1

    def _attempt(self) -> BaseException | None:
        """List if needed, then watch one request. Returns the error that ended it, or None.

        An unexpected exception is a bug, but only this attempt's: it is logged
        (``watch_internal_error``), counted in ``internal_errors``, and the next attempt
        relists, since the store may have missed part of the stream."""
        self._served = False
        try:
            if self.resource_version is None:
                self.resource_version = self._list()
                self._served = True
            started = time.monotonic()
            self._watch()
            if time.monotonic() - started < 1.0:
                # Ended at once without an error: do not spin against such a server.
                self._stop.wait(self._settings.backoff_s[0])
        except _Expired:
            self._expired()
        except ApiException as error:
            if error.status != 410:
                return error
            self._expired()
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            return error
        except Exception as error:  # noqa: BLE001  # last resort: a bug in one attempt must not end the watcher
            self._attempt_errors += 1
            self.resource_version = None
            log.error("watch_internal_error", kind=self.kind, **_error_fields(error))
            return error
        return None

    def _expired(self) -> None:
        log.info("watch_expired", kind=self.kind, resource_version=self.resource_version)
        self.resource_version = None
        self.restarts += 1

    def _back_off(self, error: BaseException, failures: int, *, probe: bool) -> bool:
        """Log the failure and wait the backoff delay for the ``failures`` before it; True when
        the wait was cut short because the API server answers again."""
        if self._stop.is_set():
            return False
        delay = self._settings.backoff_s[min(failures, len(self._settings.backoff_s) - 1)]
        self.restarts += 1
        if _is_api_failure(error):
            self._store.report_failure(self.kind, _describe(error))
        log.warning("watch_restarted", kind=self.kind, error=_describe(error), attempt=failures + 1, retry_in_s=delay)
        if probe and _is_unreachable(error):
            return self._recovery.wait(delay, stop=self._stop, probe=self._probe)
        self._stop.wait(delay)
        return False

    def _probe(self) -> bool:
        """Whether the API server answers a list of one object of this kind."""
        timeout_s = 3 * self._settings.recovery_probe_s
        try:
            self._api.call("GET", self._path, query=[*self._selector(), ("limit", 1)], timeout=(timeout_s, timeout_s))
        except Exception:  # noqa: BLE001  # any failure is "not yet"; the real attempt will say why
            return False
        return True

    def _list(self) -> str:
        items: dict[str, Parsed] = {}
        token: str | None = None
        while True:
            query = [*self._selector(), ("limit", self._settings.page_size)]
            if token:
                query.append(("continue", token))
            body = self._api.call("GET", self._path, query=query, timeout=(self._settings.connect_timeout_s, 60.0))
            page = list_page(body, self.kind)
            for obj in page.items:
                parsed = self._parser(obj)
                if parsed is not None:
                    items[parsed[0]] = parsed[1]
            token = page.continue_token
            if token is None:
                assert page.resource_version is not None  # list_page: the last page has one
                resource_version = page.resource_version
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
        ended = False
        try:
            chunks = response.stream(amt=_READ_BYTES, decode_content=False)
            for line in watch_lines(chunks, max_line_bytes=MAX_WATCH_LINE_BYTES):
                if self._stop.is_set():
                    break
                event = decode_json(line, what="watch line", max_bytes=MAX_WATCH_LINE_BYTES)
                self.resource_version = self._apply(event, self.resource_version or "")
            else:
                ended = True
        finally:
            if not ended:  # the rest of the stream must not be read as the next request's reply
                response.close()
            response.release_conn()

    def _apply(self, event: Any, resource_version: str) -> str:
        """Apply one decoded watch line to the store; return the resourceVersion to resume from."""
        checked = watch_event(event)
        if checked.type in ("ADDED", "MODIFIED"):
            parsed = self._parser(checked.object)
            if parsed is not None:
                self._store.upsert(self.kind, *parsed)
        elif checked.type == "DELETED":
            try:
                key = object_key(checked.object)
            except ObjectInvalid as error:
                log.warning("object_invalid", kind=self.kind, object="?", error=str(error))
            else:
                self._store.delete(self.kind, key)
        self._store.mark_synced(self.kind)
        self._served = True
        return checked.resource_version or resource_version


def return_memory() -> None:
    """After a list or a big reconcile pass: hand freed memory back to the OS (glibc keeps
    the peak otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}".strip()
    return f"{type(error).__name__}: {error}"[:300]


def _error_fields(error: BaseException) -> dict[str, str]:
    """Log fields for an unexpected exception: its type, message, and where it was raised."""
    fields = {"error_type": type(error).__name__, "error": str(error)[:300]}
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        fields["at"] = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}"
    return fields


def _is_api_failure(error: BaseException) -> bool:
    """The API server failed us (unreachable, an error status, a bad response), as opposed
    to a bug of ours: only those count toward an outage."""
    return isinstance(error, ApiException | urllib3.exceptions.HTTPError | OSError | ValueError)


def _is_unreachable(error: BaseException) -> bool:
    """The API server could not be reached or answered 5xx: worth probing for its return."""
    if isinstance(error, ApiException):
        return error.status is not None and error.status >= 500
    return isinstance(error, urllib3.exceptions.HTTPError | OSError)


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
    recovery = _Recovery(settings.recovery_probe_s)
    common: dict[str, Any] = {"settings": settings, "stop": stop, "recovery": recovery}
    return [
        Watcher("services", paths, "/api/v1/services", parse_service, store, **common),
        Watcher(
            "endpointslices", paths, "/apis/discovery.k8s.io/v1/endpointslices", parse_endpoint_slice, store, **common
        ),
        Watcher(
            "nodes", paths, "/api/v1/nodes", parse_node, store, field_selector=f"metadata.name={node_name}", **common
        ),
    ]
