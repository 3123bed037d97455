"""A small Kubernetes API server for tests and the demo: real HTTP, real list/watch semantics.

It serves Services, EndpointSlices and Nodes the way kube-apiserver does for the
calls bgpspeaker makes: paginated lists (``limit``/``continue``) that carry a
``resourceVersion``; chunked watch streams that start *after* the given
resourceVersion, send BOOKMARK events when asked (``allowWatchBookmarks``), end after
``timeoutSeconds``, and answer a compacted resourceVersion with an in-stream ERROR
event of code 410 (Gone); ``fieldSelector`` on ``metadata.name``/``metadata.namespace``.

Faults for tests: ``drop_watches()`` cuts every open stream mid-flight,
``compact()`` makes every earlier resourceVersion too old (410 on the next watch, and
on the next page of a list begun before it: its continue token expires),
``silence_watches()`` leaves streams open but mute, ``set_outage(503)`` answers
every request with an error, ``stop()``/``start()`` make it unreachable;
``inject_list()`` answers the next list of a kind with a given raw body and
``inject_watch_line()`` slips a given raw line into a kind's watch stream (malformed
data from the server); ``inject_conflicts()`` makes the next writes of a kind lose a
race (another writer updates the object first: 409 Conflict); ``hold_list_pages()``
makes the later pages of a kind's lists wait (a fault lands between two pages).

Writes as kube-apiserver does them: ``PUT`` replaces an object (its ``status`` is
kept: for Services the status belongs to the subresource), ``PUT``/``PATCH`` on
``services/NAME/status`` change only the status, and a ``metadata.resourceVersion`` in
a PUT body or a merge patch that is not the current one is refused with 409 Conflict
(a ``Status`` with reason Conflict); a create of an existing name is 409 AlreadyExists.
Leases (``coordination.k8s.io/v1``) and Events are served like the rest.

The server can listen inside a network namespace (``netns=``), so a speaker in that
namespace reaches it on its own loopback while the test drives it from here.
"""

from __future__ import annotations

import base64
import collections
import copy
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lab.netns import enter_netns

__all__ = ["FakeKubeApi", "endpoint_slice", "node", "service"]

# kind -> (URL prefix, plural, namespaced, apiVersion, Kind)
_RESOURCES = {
    "services": ("/api/v1", "services", True, "v1", "Service"),
    "endpointslices": ("/apis/discovery.k8s.io/v1", "endpointslices", True, "discovery.k8s.io/v1", "EndpointSlice"),
    "nodes": ("/api/v1", "nodes", False, "v1", "Node"),
    "secrets": ("/api/v1", "secrets", True, "v1", "Secret"),
    "events": ("/api/v1", "events", True, "v1", "Event"),
    "leases": ("/apis/coordination.k8s.io/v1", "leases", True, "coordination.k8s.io/v1", "Lease"),
}
_STATUS_SUBRESOURCE = frozenset({"services"})
"""Kinds whose ``status`` is written only through ``/status`` (a PUT of the object keeps it)."""


def service(
    namespace: str,
    name: str,
    *,
    ips: list[str] | None = None,
    hostnames: list[str] | None = None,
    policy: str = "Cluster",
    type_: str = "LoadBalancer",
    lb_class: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Service object as the API server would return it."""
    ingress = [{"ip": ip} for ip in ips or []] + [{"hostname": h} for h in hostnames or []]
    spec: dict[str, Any] = {"type": type_, "externalTrafficPolicy": policy, "ports": [{"port": 80, "protocol": "TCP"}]}
    if lb_class is not None:
        spec["loadBalancerClass"] = lb_class
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": namespace, "name": name, "labels": labels or {}, "annotations": annotations or {}},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": ingress} if ingress else {}},
    }


def endpoint_slice(
    namespace: str, name: str, *, service_name: str, endpoints: list[tuple[str, str, bool | None, bool | None]]
) -> dict[str, Any]:
    """An EndpointSlice; ``endpoints`` are (address, nodeName, ready, serving)."""
    items = []
    for address, node_name, ready, serving in endpoints:
        conditions: dict[str, Any] = {}
        if ready is not None:
            conditions["ready"] = ready
        if serving is not None:
            conditions["serving"] = serving
        items.append({"addresses": [address], "nodeName": node_name, "conditions": conditions})
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": items,
    }


def secret(namespace: str, name: str, data: dict[str, bytes]) -> dict[str, Any]:
    """An Opaque Secret; values are base64-encoded as the API server returns them."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"namespace": namespace, "name": name},
        "data": {key: base64.b64encode(value).decode("ascii") for key, value in data.items()},
    }


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    network_unavailable: bool = False,
    addresses: list[str] | None = None,
) -> dict[str, Any]:
    """A Node with a Ready condition, optionally NetworkUnavailable=True, and InternalIP addresses."""
    conditions = [{"type": "Ready", "status": "True"}]
    conditions.append({"type": "NetworkUnavailable", "status": "True" if network_unavailable else "False"})
    status: dict[str, Any] = {"conditions": conditions}
    if addresses:
        status["addresses"] = [{"type": "InternalIP", "address": a} for a in addresses] + [
            {"type": "Hostname", "address": name}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "status": status,
    }


def _key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]


def _socket_in_netns(netns: str | None, host: str, port: int) -> socket.socket:
    """Create a listening TCP socket, inside ``netns`` when given (setns on a scratch thread)."""
    result: list[Any] = []

    def create() -> None:
        try:
            if netns is not None:
                enter_netns(netns)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
            result.append(sock)
        except BaseException as error:  # noqa: BLE001  # handed to the caller's thread
            result.append(error)

    # The scratch thread's namespace switch ends with the thread; the socket stays there.
    thread = threading.Thread(target=create)
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    sock: socket.socket = result[0]
    return sock


class _Watch:
    """One open watch stream (for fault injection)."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.handler = handler
        self.dropped = False


class FakeKubeApi:
    """In-memory API server. Thread-safe; drive it from the test, talk to it over HTTP."""

    def __init__(
        self,
        *,
        netns: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        bookmark_interval_s: float = 1.0,
        history: int = 100_000,
    ) -> None:
        self.netns = netns
        self.host = host
        self.port = port
        self.bookmark_interval_s = bookmark_interval_s
        self._cond = threading.Condition()
        self._objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in _RESOURCES}
        self._events: collections.deque[tuple[int, str, str, dict[str, Any]]] = collections.deque(maxlen=history)
        self._rv = 1000
        self._compacted_rv = 0
        self._list_snapshots: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self._snapshot_seq = 0
        self._held_pages: set[str] = set()
        self._watches: set[_Watch] = set()
        self._silent = False
        self._outage: int | None = None
        self._injected_lists: dict[str, collections.deque[bytes]] = collections.defaultdict(collections.deque)
        self._injected_lines: dict[str, collections.deque[bytes]] = collections.defaultdict(collections.deque)
        self._injected_conflicts: dict[str, int] = collections.defaultdict(int)
        self.requests: list[tuple[str, str]] = []
        """(method, path?query) of every request received, in order."""
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL (valid inside ``netns``)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeKubeApi:
        """Listen (again, on the same port after a stop) and serve in a thread."""
        sock = _socket_in_netns(self.netns, self.host, self.port)
        self.port = sock.getsockname()[1]
        api = self

        class Handler(_Handler):
            server_api = api

        server = ThreadingHTTPServer((self.host, self.port), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.server_address = sock.getsockname()
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open stream: the API server is unreachable."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.hold_list_pages(None)
        self.drop_watches()

    def kubeconfig(self) -> str:
        """A kubeconfig document pointing at this server."""
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "fake", "user": {"token": "test-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )

    # -- state changes ----------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion."""
        with self._cond:
            return self._rv

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object; returns the stored copy (with resourceVersion)."""
        return copy.deepcopy(self._store(copy.deepcopy(obj)))

    def _store(self, stored: dict[str, Any]) -> dict[str, Any]:
        """Store a fresh object (its metadata dict is ours to change; the rest is never
        changed again: lists and watches hand stored objects out as they are)."""
        kind = _kind_of(stored)
        with self._cond:
            self._rv += 1
            meta = stored.setdefault("metadata", {})
            key = _key(stored)
            old = self._objects[kind].get(key)
            meta["resourceVersion"] = str(self._rv)
            meta["uid"] = old["metadata"]["uid"] if old else str(uuid.uuid4())
            if old is not None:
                meta["creationTimestamp"] = old["metadata"].get("creationTimestamp")
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            self._objects[kind][key] = stored
            self._events.append((self._rv, kind, "MODIFIED" if old else "ADDED", stored))
            self._cond.notify_all()
            return stored

    def delete(self, kind: str, key: str) -> None:
        """Delete an object by kind and ``namespace/name`` (or name)."""
        with self._cond:
            stored = self._objects[kind].pop(key)
            self._rv += 1
            gone = copy.deepcopy(stored)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._events.append((self._rv, kind, "DELETED", gone))
            self._cond.notify_all()

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """Every stored object of ``kind`` (copies)."""
        with self._cond:
            return [copy.deepcopy(obj) for obj in self._objects[kind].values()]

    def count(self, kind: str, where: Callable[[dict[str, Any]], bool]) -> int:
        """How many stored objects of ``kind`` satisfy ``where`` (no copies: cheap at 10,000)."""
        with self._cond:
            return sum(1 for obj in self._objects[kind].values() if where(obj))

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The stored object, or None."""
        with self._cond:
            obj = self._objects[kind].get(key)
            return copy.deepcopy(obj) if obj else None

    # -- faults -----------------------------------------------------------------------

    def compact(self) -> None:
        """Make every resourceVersion handed out so far too old: open watches end with an
        in-stream 410 ERROR event, and new watches from an older version get one at once."""
        with self._cond:
            self._rv += 1
            self._compacted_rv = self._rv
            self._list_snapshots.clear()  # continue tokens too: 410 "continue parameter is too old"
            self._cond.notify_all()

    def drop_watches(self) -> int:
        """Cut every open watch stream abruptly (no terminating chunk); returns how many."""
        with self._cond:
            watches = list(self._watches)
            for watch in watches:
                watch.dropped = True
            self._cond.notify_all()
        for watch in watches:
            try:
                watch.handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(watches)

    def silence_watches(self, silent: bool = True) -> None:
        """Keep streams open but send nothing at all (no events, no bookmarks)."""
        with self._cond:
            self._silent = silent
            self._cond.notify_all()

    def set_outage(self, status: int | None) -> None:
        """Answer every request with HTTP ``status`` (e.g. 503); None ends the outage."""
        with self._cond:
            self._outage = status
        if status is not None:
            self.drop_watches()

    def hold_list_pages(self, kind: str | None) -> None:
        """Requests for a later page of a ``kind`` list (those with a continue token) wait
        until this is called again with None (or the server stops); they are logged in
        ``requests`` on arrival. Faults set meanwhile (``compact``, ``inject_list``) apply
        to them when released."""
        with self._cond:
            self._held_pages = {kind} if kind is not None else set()
            self._cond.notify_all()

    def _wait_while_held(self, kind: str) -> None:
        with self._cond:
            while kind in self._held_pages:
                self._cond.wait()

    def inject_list(self, kind: str, body: bytes, *, times: int = 1) -> None:
        """Answer the next ``times`` lists of ``kind`` (any page) with HTTP 200 and this raw body."""
        with self._cond:
            self._injected_lists[kind].extend([body] * times)

    def drop_injected_lists(self, kind: str) -> int:
        """Forget the injected lists of ``kind`` not served yet (the next list is a real one);
        how many there were."""
        with self._cond:
            dropped = len(self._injected_lists[kind])
            self._injected_lists[kind].clear()
            return dropped

    def inject_watch_line(self, kind: str, line: bytes) -> None:
        """Send this raw line (a newline is added) once, on the open or next watch stream of ``kind``,
        before its next event."""
        with self._cond:
            self._injected_lines[kind].append(line)
            self._cond.notify_all()

    def inject_conflicts(self, kind: str, times: int = 1) -> None:
        """The next ``times`` writes (PUT or PATCH) of ``kind`` lose a race: another writer
        updates the object first (a new resourceVersion, a MODIFIED event), so the write is
        answered 409 Conflict as the API server answers a stale resourceVersion."""
        with self._cond:
            self._injected_conflicts[kind] += times

    def _take_conflict(self, kind: str) -> bool:
        with self._cond:
            if self._injected_conflicts[kind] <= 0:
                return False
            self._injected_conflicts[kind] -= 1
            return True

    def update(
        self, kind: str, key: str, body: dict[str, Any], *, subresource: str | None, patch: bool
    ) -> tuple[int, dict[str, Any]]:
        """A PUT or merge PATCH of an object or its status, as kube-apiserver applies it:
        (HTTP code, the stored object or a Status). The resourceVersion check and the write
        are one step under the lock, so two writers from the same version cannot both win."""
        _, plural, _, _, kind_name = _RESOURCES[kind]
        name = key.rpartition("/")[2]
        if self._take_conflict(kind):
            current = self.get(kind, key)
            if current is not None:
                self.apply(current)  # another writer got there first
        with self._cond:
            current = self._objects[kind].get(key)
            if current is None:
                return 404, _status_body(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)
            meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            wanted = meta.get("resourceVersion") if meta else None
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                return 409, _conflict(kind, name)
            if subresource == "status":  # only the status changes; the rest is shared, never changed
                raw_status = body.get("status") if isinstance(body.get("status"), dict) else {}
                status = _merge(copy.deepcopy(current.get("status") or {}), raw_status) if patch else raw_status
                updated = {**current, "metadata": dict(current["metadata"]), "status": copy.deepcopy(status)}
                return 200, self._store(updated)
            if patch:
                merged = _merge(copy.deepcopy(current), body)
            else:
                merged = copy.deepcopy(body)
                merged["metadata"] = {**merged.get("metadata", {}), "namespace": current["metadata"].get("namespace")}
                merged["kind"], merged["apiVersion"] = kind_name, current.get("apiVersion")
            result = merged
            if kind in _STATUS_SUBRESOURCE:  # the status belongs to the subresource
                result["status"] = copy.deepcopy(current.get("status", {}))
            for field in ("uid", "creationTimestamp"):
                result.setdefault("metadata", {})[field] = current["metadata"].get(field)
            result.setdefault("metadata", {})["name"] = current["metadata"]["name"]
            return 200, self._store(result)

    @property
    def open_watches(self) -> int:
        """How many watch streams are open now."""
        with self._cond:
            return len(self._watches)

    # -- serving (called by the handler) ---------------------------------------------

    def _injected_list(self, kind: str) -> bytes | None:
        with self._cond:
            injected = self._injected_lists[kind]
            return injected.popleft() if injected else None

    def _list(self, kind: str, query: dict[str, str]) -> dict[str, Any] | None:
        """One list page, or None when the continue token is unknown (the handler answers 410).

        As the real API server, a paginated list is one consistent snapshot: the first page
        fixes the selection at its resourceVersion and the continue token points into it
        (and it costs one sort per list, not one per page)."""
        limit = int(query.get("limit") or 0)
        token = query.get("continue") or ""
        with self._cond:
            if token:
                snapshot_id, _, offset = token.partition(":")
                snapshot = self._list_snapshots.get(snapshot_id)
                if snapshot is None or not offset.isdigit():
                    return None
                start = int(offset)
            else:
                objects = self._objects[kind]
                # Stored objects are never mutated (apply stores a fresh copy), so a list
                # can hand them out as they are; the handler serializes them right away.
                items = [objects[key] for key in sorted(objects) if _selected(objects[key], query)]
                snapshot = (items, self._rv)
                start = 0
                if limit and len(items) > limit:
                    self._snapshot_seq += 1
                    snapshot_id = str(self._snapshot_seq)
                    self._list_snapshots[snapshot_id] = snapshot
                    while len(self._list_snapshots) > 16:
                        del self._list_snapshots[next(iter(self._list_snapshots))]
        items, rv = snapshot
        page = items[start : start + limit] if limit else items
        metadata: dict[str, Any] = {"resourceVersion": str(rv)}
        if limit and start + limit < len(items):
            metadata["continue"] = f"{snapshot_id}:{start + limit}"
        _, _, _, api_version, kind_name = _RESOURCES[kind]
        return {"apiVersion": api_version, "kind": f"{kind_name}List", "metadata": metadata, "items": page}

    def _watch_events(self, kind: str, query: dict[str, str], watch: _Watch) -> Iterator[dict[str, Any] | bytes]:
        """Events after the requested resourceVersion, then live ones, until timeout or drop."""
        timeout_s = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout_s
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        try:
            since = int(query.get("resourceVersion") or 0)
        except ValueError:
            since = 0
        with self._cond:
            if not since:
                since = self._rv
                initial = [copy.deepcopy(o) for o in self._objects[kind].values() if _selected(o, query)]
            else:
                initial = []
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        next_bookmark = time.monotonic() + self.bookmark_interval_s
        while True:
            with self._cond:
                if watch.dropped:
                    return
                if since < self._compacted_rv:
                    # As kube-apiserver does when a watcher falls out of its window:
                    # an ERROR event with code 410 in the stream, then the end.
                    expired = _expired(since, self._compacted_rv)
                    break
                silent = self._silent
                injected = list(self._injected_lines[kind])
                self._injected_lines[kind].clear()
                # `pending` and `latest` are read together: every event of this kind up to
                # `latest` is in `pending`, so a bookmark at `latest` skips nothing.
                pending = []
                if not silent:  # newest first, back to `since`: O(new events), not O(history)
                    for rv, k, t, obj in reversed(self._events):
                        if rv <= since:
                            break
                        if k == kind:
                            pending.append((rv, t, obj))
                    pending.reverse()
                latest = self._rv
            yield from injected
            for rv, event_type, obj in pending:
                since = rv
                if _selected(obj, query):
                    yield {"type": event_type, "object": obj}  # stored objects are never changed
            now = time.monotonic()
            if silent:
                with self._cond:  # a mute stream: no events, no bookmarks, no end
                    if self._silent and not watch.dropped:
                        self._cond.wait(0.5)
                continue
            if now >= deadline:
                return
            if bookmarks and now >= next_bookmark:
                since = max(since, latest)
                yield _bookmark(kind, since)
                next_bookmark = now + self.bookmark_interval_s
            if not pending:
                with self._cond:
                    if self._rv == latest and not watch.dropped and not self._silent and not self._injected_lines[kind]:
                        wake = min(deadline, next_bookmark) if bookmarks else deadline
                        self._cond.wait(max(0.0, wake - time.monotonic()))
        yield expired


def _expired(since: int, compacted: int) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": f"too old resource version: {since} ({compacted})",
            "reason": "Expired",
            "code": 410,
        },
    }


def _status_body(code: int, reason: str, message: str, **details: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _resource_name(kind: str) -> tuple[str, str]:
    """(group, ``plural.group`` as the API server names the resource in messages)."""
    prefix, plural, _, _, _ = _RESOURCES[kind]
    group = prefix.split("/")[2] if prefix.startswith("/apis/") else ""
    return group, f"{plural}.{group}" if group else plural


def _conflict(kind: str, name: str) -> dict[str, Any]:
    """kube-apiserver's answer to a stale resourceVersion."""
    group, resource = _resource_name(kind)
    details = {"name": name, "kind": _RESOURCES[kind][1], **({"group": group} if group else {})}
    return _status_body(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified;'
        " please apply your changes to the latest version and try again",
        **details,
    )


def _already_exists(kind: str, name: str) -> dict[str, Any]:
    group, resource = _resource_name(kind)
    details = {"name": name, "kind": _RESOURCES[kind][1], **({"group": group} if group else {})}
    return _status_body(409, "AlreadyExists", f'{resource} "{name}" already exists', **details)


def _bookmark(kind: str, rv: int) -> dict[str, Any]:
    _, _, _, api_version, kind_name = _RESOURCES[kind]
    return {
        "type": "BOOKMARK",
        "object": {"apiVersion": api_version, "kind": kind_name, "metadata": {"resourceVersion": str(rv)}},
    }


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
    return target


def _kind_of(obj: dict[str, Any]) -> str:
    for kind, (_, _, _, _, kind_name) in _RESOURCES.items():
        if obj.get("kind") == kind_name:
            return kind
    raise ValueError(f"unsupported kind {obj.get('kind')!r}")


def _selected(obj: dict[str, Any], query: dict[str, str]) -> bool:
    selector = query.get("fieldSelector") or ""
    meta = obj.get("metadata", {})
    for term in filter(None, (query.get("labelSelector") or "").split(",")):
        key, _, value = term.partition("=")
        if (meta.get("labels") or {}).get(key) != value:
            return False
    for term in filter(None, selector.split(",")):
        field, _, value = term.partition("=")
        field = field.rstrip("=!")
        negate = "!=" in term
        actual = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}.get(field)
        if (actual == value) == negate:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    """TCP_NODELAY, as Go's net/http (kube-apiserver) sets it: the reply's head and body go in
    two writes, and with Nagle's algorithm the body waited for the client's delayed ACK
    (~40 ms per request on a kept-alive connection)."""
    server_api: FakeKubeApi

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _route(self, path: str) -> tuple[str, str | None, str | None] | None:
        """(kind, namespace, name) for a collection or object path."""
        if path.endswith("/status"):
            return None  # a subresource: see _subresource_route
        return self._object_route(path)

    def _subresource_route(self, path: str) -> tuple[str, str | None, str, str | None] | None:
        """(kind, namespace, name, subresource or None) for an object or its ``/status``."""
        subresource = None
        if path.endswith("/status"):
            path, subresource = path[: -len("/status")], "status"
        route = self._object_route(path)
        if route is None or route[2] is None:
            return None
        return route[0], route[1], route[2], subresource

    def _object_route(self, path: str) -> tuple[str, str | None, str | None] | None:
        for kind, (prefix, plural, namespaced, _, _) in _RESOURCES.items():
            if not path.startswith(prefix + "/"):
                continue
            parts = path[len(prefix) + 1 :].strip("/").split("/")
            if parts[0] == plural and len(parts) <= 2:
                return kind, None, parts[1] if len(parts) == 2 else None
            if namespaced and len(parts) in (3, 4) and parts[0] == "namespaces" and parts[2] == plural:
                return kind, parts[1], parts[3] if len(parts) == 4 else None
        return None

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        self._send_raw(status, json.dumps(body).encode())

    def _send_raw(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send_json(
            code,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            },
        )

    def do_GET(self) -> None:  # http.server's naming
        api = self.server_api
        split = urlsplit(self.path)
        api.requests.append(("GET", self.path))
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        with api._cond:
            outage = api._outage
        if outage is not None:
            self._status(outage, "ServiceUnavailable", "injected outage")
            return
        route = self._route(split.path)
        if route is None:
            self._status(404, "NotFound", f"no route for {split.path}")
            return
        kind, namespace, name = route
        if namespace:
            query["fieldSelector"] = ",".join(
                filter(None, [query.get("fieldSelector"), f"metadata.namespace={namespace}"])
            )
        if name is not None:
            obj = api.get(kind, f"{namespace}/{name}" if namespace else name)
            if obj is None:
                self._status(404, "NotFound", f"{kind} {name!r} not found")
            else:
                self._send_json(200, obj)
            return
        if query.get("watch") in ("true", "1"):
            self._stream(kind, query)
            return
        if query.get("continue"):
            api._wait_while_held(kind)
        if (injected := api._injected_list(kind)) is not None:
            self._send_raw(200, injected)
        else:
            page = api._list(kind, query)
            if page is None:
                self._status(410, "Expired", "the provided continue parameter is too old")
            else:
                self._send_json(200, page)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_POST(self) -> None:  # http.server's naming: create
        api = self.server_api
        api.requests.append(("POST", self.path))
        route = self._route(urlsplit(self.path).path)
        body = self._body()
        if route is None or route[2] is not None or not isinstance(body, dict):
            self._status(404 if route is None else 400, "BadRequest", f"cannot create at {self.path}")
            return
        kind, namespace, _ = route
        meta = body.setdefault("metadata", {})
        if namespace:
            meta["namespace"] = namespace
        if not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', 'obj-')}{uuid.uuid4().hex[:5]}"
        meta.pop("resourceVersion", None)  # a create ignores it, as the API server does
        with api._cond:  # the existence check and the create are one step
            if api.get(kind, _key(body)) is not None:
                self._send_json(409, _already_exists(kind, meta["name"]))
                return
            created = api.apply(body)
        self._send_json(201, created)

    def do_PATCH(self) -> None:  # http.server's naming: merge patch
        self._write("PATCH", patch=True)

    def do_PUT(self) -> None:  # http.server's naming: replace
        self._write("PUT", patch=False)

    def _write(self, method: str, *, patch: bool) -> None:
        api = self.server_api
        api.requests.append((method, self.path))
        route = self._subresource_route(urlsplit(self.path).path)
        body = self._body()
        if route is None or not isinstance(body, dict):
            self._status(404 if route is None else 400, "BadRequest", f"cannot {method} {self.path}")
            return
        with api._cond:
            outage = api._outage
        if outage is not None:
            self._status(outage, "ServiceUnavailable", "injected outage")
            return
        kind, namespace, name, subresource = route
        if patch and "merge-patch" not in (self.headers.get("Content-Type") or ""):
            self._status(415, "UnsupportedMediaType", "only application/merge-patch+json is served here")
            return
        body_name = (body.get("metadata") or {}).get("name") if isinstance(body.get("metadata"), dict) else None
        if not patch and body_name not in (None, name):
            self._status(400, "BadRequest", f"the name of the object ({body_name}) does not match the URL ({name})")
            return
        code, result = api.update(
            kind, f"{namespace}/{name}" if namespace else name, body, subresource=subresource, patch=patch
        )
        self._send_json(code, result)

    def _stream(self, kind: str, query: dict[str, str]) -> None:
        api = self.server_api
        watch = _Watch(self)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with api._cond:
            api._watches.add(watch)
        try:
            for event in api._watch_events(kind, query, watch):
                line = (event if isinstance(event, bytes) else json.dumps(event).encode()) + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            if not watch.dropped:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except OSError:
            pass
        finally:
            with api._cond:
                api._watches.discard(watch)
            if watch.dropped:
                self.close_connection = True


def main() -> None:
    """``python -m lab.kubeapi --listen HOST:PORT --seed FILE.json``: serve until SIGTERM (compose demo)."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="a small Kubernetes API server, seeded from a JSON list")
    parser.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    parser.add_argument("--seed", default=None, help='JSON file: {"items": [objects]}')
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    api = FakeKubeApi(host=host, port=int(port), bookmark_interval_s=30.0)
    for obj in load_seed(args.seed) if args.seed else []:
        api.apply(obj)
    api.start()
    print(f"listening on {api.url}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    api.stop()


def load_seed(path: str) -> list[dict[str, Any]]:
    """The objects of a seed file (``{"items": [...]}``)."""
    with open(path) as handle:
        items: list[dict[str, Any]] = json.load(handle)["items"]
    return items


if __name__ == "__main__":
    main()
