"""Kubernetes watchers and the in-memory cluster store they fill.

Each watcher lists, then watches from the list's resourceVersion, through the official
client's ``ApiClient`` (its configuration, auth, TLS and connection pool) on the API
paths themselves (``ApiPaths``): we read the raw JSON and keep a few fields per
object, not the client's model objects, and skip its generated per-resource classes
(in client 37, importing ``CoreV1Api`` alone takes 0.6-0.9 s and 21 MB). Layers,
as in kopf: ``run`` reconnects forever with a bounded backoff that resets on
success; ``_list`` replaces the whole kind atomically (its pages fetched one ahead,
while the page before is parsed: ``pages.prefetched_pages``); ``_watch`` streams one
request, returns on 410 Gone (relist) or when the server ends the request (re-watch
from the last resourceVersion), and raises on errors or silence longer than the
inactivity timeout.

What the API server sends is data from a stranger: every JSON document is bounded
(size, nesting) before ``json.loads``, and every list page and watch event is checked
for shape (``list_page``, ``watch_event``) before use. A bad page or line is an error
for that list or stream (``ResponseInvalid``: logged, backed off, retried), a bad
object is that object's problem (``object_invalid``), and nothing from one attempt
ends a watcher (``watch_internal_error``, counted in ``Watcher.internal_errors``)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from bgpspeaker.cluster.access import Access
from bgpspeaker.cluster.api import (
    MAX_WATCH_LINE_BYTES,
    READ_BYTES,
    ApiPaths,
    Expired,
    ListPage,
    decode_json,
    list_page,
    watch_event,
    watch_lines,
)
from bgpspeaker.cluster.model import (
    EndpointSlice,
    Node,
    ObjectInvalid,
    Service,
    object_key,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
from bgpspeaker.cluster.pages import Stopped, prefetched_pages
from bgpspeaker.cluster.store import ClusterStore, Parsed
from bgpspeaker.memory import return_memory

__all__ = ["WatchSettings", "WatchStore", "Watcher", "make_watchers"]

log = structlog.get_logger("bgpspeaker.cluster")

API_ACCESS = (
    Access("", "services", frozenset({"list", "watch"}), "make_watchers: /api/v1/services"),
    Access("discovery.k8s.io", "endpointslices", frozenset({"list", "watch"}), "make_watchers: endpointslices"),
    Access("", "nodes", frozenset({"list", "watch"}), "make_watchers: this node (fieldSelector metadata.name)"),
)
"""The calls below (lists, watches and the outage probe, a list with limit 1); RBAC: deploy/rbac.yaml."""


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


class WatchStore(Protocol):
    """Where a Watcher puts what it parses: the speaker's ClusterStore, the controller's ClaimStore."""

    def replace(self, kind: str, items: Mapping[str, Any]) -> None: ...
    def upsert(self, kind: str, key: str, value: Any) -> None: ...
    def delete(self, kind: str, key: str) -> None: ...
    def mark_synced(self, kind: str) -> None: ...
    def report_ok(self, kind: str) -> None: ...
    def report_failure(self, kind: str, error: str) -> None: ...


class _Parser:
    """Parses one kind's objects and logs each distinct problem once.

    An exception other than ObjectInvalid is a bug in the parser, but still only that
    object's: it is logged as ``watch_internal_error`` (once per object and error),
    counted in ``internal_errors``, and the object is skipped like an invalid one."""

    def __init__(self, kind: str, parse: Callable[[Any], Any], key_of: Callable[[Any], str] | None = None) -> None:
        self.kind = kind
        self._parse = parse
        self._key_of = key_of
        """The key of a parsed value (``Service.key``, ``Node.name``), which the parse already
        checked and built: the raw object's key is then read only for an object that failed.
        None: ``object_key`` before every parse."""
        self._reported: dict[str, str] = {}
        self.internal_errors = 0

    def __call__(self, obj: Any) -> tuple[str, Parsed] | None:
        key: str | None = None
        if self._key_of is None:
            key = self._key(obj)
            if key is None:
                return None
        try:
            value = self._parse(obj)
        except Exception as error:  # noqa: BLE001  # a parser bug is still one object's problem
            if key is None:
                key = self._key(obj)
                if key is None:  # a bad key is reported as such, as when it is read first
                    return None
            self._report(key, error)
            return None
        if key is None:
            assert self._key_of is not None  # without it, the key was read before the parse
            key = self._key_of(value)
        self._reported.pop(key, None)
        return key, value

    def _key(self, obj: Any) -> str | None:
        try:
            return object_key(obj)
        except ObjectInvalid as error:
            log.warning("object_invalid", kind=self.kind, object="?", error=str(error))
            return None

    def _report(self, key: str, error: Exception) -> None:
        if isinstance(error, ObjectInvalid):
            if self._reported.get(key) != str(error):
                self._reported[key] = str(error)
                log.warning("object_invalid", kind=self.kind, object=key, error=str(error))
            return
        self.internal_errors += 1
        if self._reported.get(key) != repr(error):
            self._reported[key] = repr(error)
            log.error("watch_internal_error", kind=self.kind, object=key, **_error_fields(error))


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
        parse: Callable[[Any], Any],
        store: WatchStore,
        *,
        settings: WatchSettings,
        stop: threading.Event,
        field_selector: str | None = None,
        recovery: _Recovery | None = None,
        key_of: Callable[[Any], str] | None = None,
    ) -> None:
        self.kind = kind
        self._api = api
        self._path = path
        self._parser = _Parser(kind, parse, key_of)
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
        except Stopped:
            return None  # run() sees the stop event
        except Expired:
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
        """Every page (page k+1 fetched while page k is parsed: ``prefetched_pages``), then
        the store's kind replaced at once; the resourceVersion to watch from. Any failed
        page fails the whole list (raised as the fetch raised it); the store is untouched."""
        items: dict[str, Parsed] = {}
        resource_version: str | None = None
        pages = prefetched_pages(self._page, stop=self._stop, name=f"watch-{self.kind}-pages")
        with contextlib.closing(pages):
            for page in pages:
                for obj in page.items:
                    parsed = self._parser(obj)
                    if parsed is not None:
                        items[parsed[0]] = parsed[1]
                resource_version = page.resource_version
        assert resource_version is not None  # list_page: the last page has one
        self._store.replace(self.kind, items)
        self._store.report_ok(self.kind)
        return_memory()
        log.info("watch_listed", kind=self.kind, objects=len(items), resource_version=resource_version)
        return resource_version

    def _page(self, token: str | None) -> ListPage:
        """One list page, fetched and checked (on the page fetcher's thread)."""
        query = [*self._selector(), ("limit", self._settings.page_size)]
        if token:
            query.append(("continue", token))
        body = self._api.call("GET", self._path, query=query, timeout=(self._settings.connect_timeout_s, 60.0))
        return list_page(body, self.kind)

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
            chunks = response.stream(amt=READ_BYTES, decode_content=False)
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


def _service_key(service: Service) -> str:
    return service.key


def _slice_key(endpoint_slice: EndpointSlice) -> str:
    return endpoint_slice.key


def _node_key(node: Node) -> str:
    return node.name


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
        Watcher("services", paths, "/api/v1/services", parse_service, store, key_of=_service_key, **common),
        Watcher(
            "endpointslices",
            paths,
            "/apis/discovery.k8s.io/v1/endpointslices",
            parse_endpoint_slice,
            store,
            key_of=_slice_key,
            **common,
        ),
        Watcher(
            "nodes",
            paths,
            "/api/v1/nodes",
            parse_node,
            store,
            field_selector=f"metadata.name={node_name}",
            key_of=_node_key,
            **common,
        ),
    ]
