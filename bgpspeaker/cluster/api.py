"""The API server as a data source: requests on API paths through the official client,
and every response bounded and shape-checked before use (data from a stranger)."""

from __future__ import annotations

import dataclasses
import json
import reprlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import structlog
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_WATCH_LINE_BYTES",
    "READ_BYTES",
    "ApiPaths",
    "Expired",
    "ListPage",
    "ResponseInvalid",
    "Timeout",
    "WatchEvent",
    "api_client",
    "decode_json",
    "json_depth_exceeds",
    "list_page",
    "resource_path",
    "watch_event",
    "watch_lines",
]

log = structlog.get_logger("bgpspeaker.cluster")

Timeout = float | tuple[float, float] | None

MAX_JSON_DEPTH = 100
"""Deepest nesting accepted in JSON from the API server. Ours need about 12 (list, items,
an object, metadata.managedFields[], fieldsV1 mirroring the object's fields); json.loads
recurses once per level, and a line nested 200,000 deep raised RecursionError."""
MAX_WATCH_LINE_BYTES = 16 << 20
"""Longest watch line accepted: a line is one event with one object, and etcd stores
objects of at most ~1.5 MiB."""
READ_BYTES = 1 << 20
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


class Expired(Exception):
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

    An ERROR event with code 410 raises ``Expired`` (relist). ResponseInvalid, an error for
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
            raise Expired()
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
