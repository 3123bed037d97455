"""Watchers against a real-HTTP API server through the real kubernetes client (no root needed)."""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client as k8s
from structlog.testing import capture_logs

from bgpspeaker.cluster.api import (
    MAX_JSON_DEPTH,
    ApiPaths,
    Expired,
    ResponseInvalid,
    api_client,
    decode_json,
    json_depth_exceeds,
    list_page,
    watch_event,
    watch_lines,
)
from bgpspeaker.cluster.model import parse_endpoint_slice, parse_node, parse_service
from bgpspeaker.cluster.store import ClusterStore
from bgpspeaker.cluster.watch import Watcher, WatchSettings, make_watchers
from lab.kubeapi import FakeKubeApi, endpoint_slice, node, service
from lab.netns import wait_until

# A watcher thread that dies of an exception fails the test that was running.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

FAST = WatchSettings(
    server_timeout_s=30, inactivity_timeout_s=1.5, connect_timeout_s=2.0, backoff_s=(0.05, 0.1, 0.2), page_size=3
)


class Harness:
    def __init__(self, api: FakeKubeApi, tmp: Path, settings: WatchSettings = FAST) -> None:
        self.api = api
        self.changes = 0
        self.service_sets: list[set[str]] = []
        """The services in the store at every change, in order (intermediate states)."""
        self.store = ClusterStore(on_change=self._changed)
        self.stop = threading.Event()
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig())
        self.watchers = make_watchers(
            api_client(str(kubeconfig)), self.store, node_name="node-a", settings=settings, stop=self.stop
        )

    def _changed(self) -> None:
        self.changes += 1
        self.service_sets.append(self.services())

    def start(self) -> Harness:
        for watcher in self.watchers:
            watcher.thread.start()
        wait_until(lambda: self.store.synced, timeout_s=10, desc="initial lists")
        self.service_sets.clear()
        return self

    def services(self) -> set[str]:
        return set(self.store.snapshot().services)

    def watcher(self, kind: str):  # type: ignore[no-untyped-def]
        return next(w for w in self.watchers if w.kind == kind)


def _harness(tmp_path: Path, settings: WatchSettings) -> Iterator[Harness]:
    api = FakeKubeApi(bookmark_interval_s=0.3).start()
    api.apply(node("node-a"))
    api.apply(node("node-b"))
    h = Harness(api, tmp_path, settings)
    yield h
    h.stop.set()
    api.stop()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from _harness(tmp_path, FAST)


@pytest.fixture
def default_harness(tmp_path: Path) -> Iterator[Harness]:
    """Watchers with the daemon's default settings (real backoff schedule)."""
    yield from _harness(tmp_path, WatchSettings())


def test_paginated_initial_list_then_events(harness: Harness) -> None:
    """Lists page by page (limit/continue), then watch events update the store."""
    for i in range(8):
        harness.api.apply(service("default", f"s{i}", ips=[f"192.0.2.{i}"]))
    harness.start()
    assert harness.services() == {f"default/s{i}" for i in range(8)}
    assert any("continue=" in path for _, path in harness.api.requests)
    harness.api.apply(service("default", "new", ips=["192.0.2.50"]))
    harness.api.apply(
        endpoint_slice("default", "new-1", service_name="new", endpoints=[("10.1.0.1", "node-a", True, True)])
    )
    wait_until(lambda: "default/new" in harness.store.snapshot().slices_by_service, timeout_s=5, desc="slice indexed")
    harness.api.delete("services", "default/s0")
    wait_until(lambda: "default/s0" not in harness.services(), timeout_s=5, desc="delete seen")


def test_only_this_node_is_watched(harness: Harness) -> None:
    """The node watcher uses a field selector: other nodes never enter the store."""
    harness.start()
    assert set(harness.store.snapshot().nodes) == {"node-a"}


def test_410_relists_and_keeps_the_store_whole(harness: Harness) -> None:
    """Expired resourceVersion: relist; the store is replaced at once, never emptied."""
    harness.api.apply(service("default", "a", ips=["192.0.2.1"]))
    harness.start()
    with capture_logs() as logs:
        harness.api.compact()  # open streams end with a 410 ERROR event
        harness.api.apply(service("default", "b", ips=["192.0.2.2"]))
        wait_until(lambda: harness.services() == {"default/a", "default/b"}, timeout_s=10, desc="relisted")
        wait_until(
            lambda: sum(1 for e in logs if e["event"] == "watch_listed") >= 3, timeout_s=10, desc="all kinds relisted"
        )
    assert sum(1 for e in logs if e["event"] == "watch_expired") >= 3


def test_dropped_stream_resumes_from_its_resource_version(harness: Harness) -> None:
    """A cut stream re-watches from the last resourceVersion: no relist, no missed event."""
    harness.start()
    with capture_logs() as logs:
        harness.api.drop_watches()
        harness.api.apply(service("default", "during", ips=["192.0.2.3"]))
        wait_until(lambda: "default/during" in harness.services(), timeout_s=10, desc="event after reconnect")
    events = [e["event"] for e in logs]
    assert "watch_listed" not in events and "watch_expired" not in events
    assert "watch_restarted" in events


def test_silent_stream_is_restarted_after_the_inactivity_timeout(harness: Harness) -> None:
    """A stream that stays open but sends nothing is abandoned after inactivity_timeout_s."""
    harness.start()
    with capture_logs() as logs:
        harness.api.silence_watches(True)
        wait_until(lambda: any(e["event"] == "watch_restarted" for e in logs), timeout_s=10, desc="inactivity restart")
        harness.api.silence_watches(False)
        harness.api.apply(service("default", "after", ips=["192.0.2.4"]))
        wait_until(lambda: "default/after" in harness.services(), timeout_s=10, desc="event after silence")
    restarted = next(e for e in logs if e["event"] == "watch_restarted")
    assert "timed out" in restarted["error"].lower() or "ReadTimeout" in restarted["error"]


def test_outage_backs_off_then_recovers(harness: Harness) -> None:
    """503 for a while: bounded backoff, store kept, then resync when the server answers again."""
    harness.api.apply(service("default", "a", ips=["192.0.2.1"]))
    harness.start()
    with capture_logs() as logs:
        harness.api.set_outage(503)
        wait_until(
            lambda: sum(1 for e in logs if e["event"] == "watch_restarted") >= 6,
            timeout_s=10,
            desc="retries during outage",
        )
        assert harness.services() == {"default/a"}
        harness.api.set_outage(None)
        harness.api.apply(service("default", "b", ips=["192.0.2.2"]))
        wait_until(lambda: harness.services() == {"default/a", "default/b"}, timeout_s=10, desc="recovered")
    delays = [e["retry_in_s"] for e in logs if e["event"] == "watch_restarted"]
    assert max(delays) <= FAST.backoff_s[-1]
    assert any("503" in e["error"] for e in logs if e["event"] == "watch_restarted")


def test_node_heartbeat_updates_do_not_wake_the_reconciler(harness: Harness) -> None:
    """A Node update that changes nothing we read is not a change."""
    harness.start()
    before = harness.changes
    obj = node("node-a")
    obj["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-11-26T10:00:00Z"
    harness.api.apply(obj)
    harness.api.apply(service("default", "marker", ips=["192.0.2.9"]))
    wait_until(lambda: "default/marker" in harness.services(), timeout_s=5, desc="marker seen")
    assert harness.changes == before + 1


def test_each_rejected_object_is_logged_once_and_the_rest_is_kept(harness: Harness) -> None:
    """A malformed Service (ingress not a list) and a slice with a bad endpoint: one object_invalid line
    each, naming the object and the field, even as they are re-listed and modified; good objects stay."""
    bad_service = service("default", "bad", ips=["192.0.2.9"])
    bad_service["status"]["loadBalancer"]["ingress"] = "192.0.2.9"
    bad_slice = endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.1.0.1", "node-a", True, True)])
    bad_slice["endpoints"][0]["conditions"]["ready"] = "yes\nshutdown"
    harness.api.apply(service("default", "good", ips=["192.0.2.1"]))
    with capture_logs() as logs:
        harness.api.apply(bad_service)
        harness.api.apply(bad_slice)
        harness.start()
        harness.api.compact()  # relist: the same objects are parsed again
        bad_service["metadata"]["labels"] = {"touched": "yes"}
        harness.api.apply(bad_service)  # and once more through the watch
        harness.api.apply(service("default", "later", ips=["192.0.2.2"]))
        wait_until(lambda: "default/later" in harness.services(), timeout_s=10, desc="later service")
    invalid = [e for e in logs if e["event"] == "object_invalid"]
    assert sorted((e["kind"], e["object"]) for e in invalid) == [
        ("endpointslices", "default/web-1"),
        ("services", "default/bad"),
    ], invalid
    assert "status.loadBalancer.ingress" in next(e["error"] for e in invalid if e["kind"] == "services")
    assert harness.services() == {"default/good", "default/later"}


DEPTH = 200_000


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"[" * DEPTH + b"]" * DEPTH, id="nested-lists"),
        pytest.param(b'{"a":' * DEPTH + b"1" + b"}" * DEPTH, id="nested-objects"),
        pytest.param(b'{"type":"ADDED","object":' + b"[" * DEPTH, id="nested-unterminated"),
    ],
)
def test_deep_nested_watch_line_is_a_stream_error(harness: Harness, line: bytes) -> None:
    """A watch line nested 200,000 levels deep ends that stream (watch_restarted), never the watcher."""
    harness.api.apply(service("default", "a", ips=["192.0.2.1"]))
    harness.start()
    with capture_logs() as logs:
        harness.api.inject_watch_line("services", line)
        wait_until(
            lambda: [e for e in logs if e["event"] == "watch_restarted" and e["kind"] == "services"],
            timeout_s=10,
            desc="the deep line ends the stream",
        )
        harness.api.apply(service("default", "b", ips=["192.0.2.2"]))
        wait_until(lambda: harness.services() == {"default/a", "default/b"}, timeout_s=10, desc="later event applied")
    restarted = next(e for e in logs if e["event"] == "watch_restarted" and e["kind"] == "services")
    assert "deeper than" in restarted["error"], restarted
    assert all("default/a" in seen for seen in harness.service_sets)
    assert harness.watcher("services").thread.is_alive()
    assert harness.watcher("services").internal_errors == 0


def test_overlong_watch_line_is_a_stream_error(harness: Harness) -> None:
    """A watch line over 16 MiB ends that stream; the watcher re-watches and applies later events."""
    harness.api.apply(service("default", "a", ips=["192.0.2.1"]))
    harness.start()
    with capture_logs() as logs:
        harness.api.inject_watch_line("services", b'{"type":"ADDED","object":"' + b"x" * (17 << 20) + b'"}')
        wait_until(
            lambda: [e for e in logs if e["event"] == "watch_restarted" and e["kind"] == "services"],
            timeout_s=10,
            desc="the long line ends the stream",
        )
        harness.api.apply(service("default", "b", ips=["192.0.2.2"]))
        wait_until(lambda: harness.services() == {"default/a", "default/b"}, timeout_s=10, desc="later event applied")
    restarted = next(e for e in logs if e["event"] == "watch_restarted" and e["kind"] == "services")
    assert "longer than" in restarted["error"], restarted


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(b'{"kind":"ServiceList","metadata":[1],"items":[]}', "metadata", id="metadata-list"),
        pytest.param(b'{"metadata":{"resourceVersion":"9"},"items":"abc"}', "items", id="items-string"),
        pytest.param(b'{"metadata":{"resourceVersion":"9"},"items":{"a":1}}', "items", id="items-object"),
        pytest.param(b'{"metadata":{"resourceVersion":9},"items":[]}', "resourceVersion", id="rv-number"),
        pytest.param(b'{"metadata":{"resourceVersion":"9","continue":7},"items":[]}', "continue", id="continue-number"),
        pytest.param(b"[1]", "not an object", id="body-list"),
        pytest.param(b"[" * DEPTH + b"]" * DEPTH, "deeper than", id="body-deep"),
    ],
)
def test_malformed_list_keeps_the_store_and_is_retried(harness: Harness, body: bytes, error: str) -> None:
    """A malformed list page is an error for that list: the store is not replaced, the list is retried."""
    harness.api.apply(service("default", "a", ips=["192.0.2.1"]))
    harness.start()
    with capture_logs() as logs:
        harness.api.inject_list("services", body, times=2)
        harness.api.compact()  # every watcher relists; the services list gets the bad body twice
        harness.api.apply(service("default", "b", ips=["192.0.2.2"]))
        wait_until(
            lambda: [e for e in logs if e["event"] == "watch_listed" and e["kind"] == "services"],
            timeout_s=10,
            desc="services relisted after two bad pages",
        )
        wait_until(lambda: harness.services() == {"default/a", "default/b"}, timeout_s=10, desc="recovered")
    failures = [e for e in logs if e["event"] == "watch_restarted" and e["kind"] == "services"]
    assert len(failures) == 2, failures
    assert all(error in e["error"] for e in failures), failures
    assert all("default/a" in seen for seen in harness.service_sets), harness.service_sets
    assert not [e for e in logs if e["event"] == "object_invalid"]
    assert harness.watcher("services").thread.is_alive()


def test_outage_recovery_is_fast_with_the_default_backoff(default_harness: Harness) -> None:
    """After a 20 s outage (503s) under the default backoff, a new Service is in the store within 2 s
    of the API server answering again."""
    harness = default_harness
    harness.api.apply(service("default", "a", ips=["192.0.2.1"]))
    harness.start()
    with capture_logs() as logs:
        harness.api.set_outage(503)
        started = time.monotonic()
        wait_until(
            lambda: max((e["retry_in_s"] for e in logs if e["event"] == "watch_restarted"), default=0) >= 5,
            timeout_s=15,
            desc="watchers backing off",
        )
        time.sleep(max(0.0, started + 20.0 - time.monotonic()))  # the outage lasts 20 s (not a synchronization)
        assert harness.services() == {"default/a"}
        harness.api.set_outage(None)
        restored = time.monotonic()
        harness.api.apply(service("default", "new", ips=["192.0.2.2"]))
        wait_until(lambda: "default/new" in harness.services(), timeout_s=15, desc="new Service after the outage")
        recovery_s = time.monotonic() - restored
    print(f"outage recovery: new Service in the store {recovery_s:.2f} s after the API server answered again")
    assert recovery_s <= 2.0, f"new Service in the store {recovery_s:.2f} s after restore (limit 2 s)"
    assert any(e["event"] == "api_recovered" for e in logs)


# -- the parsing layer, fed anything ------------------------------------------------------

CHARS = st.characters(blacklist_categories=("Cs",))  # no lone surrogates: they are not UTF-8
TEXT = st.text(st.sampled_from('[]{}"\\/: \n') | CHARS, max_size=6)  # JSON's own characters often
LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
JSON = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=16,
)
TEMPLATES = [
    service("default", "web", ips=["192.0.2.1"], hostnames=["lb.example"], annotations={"bgpspeaker.io/med": "5"}),
    endpoint_slice("default", "web-1", service_name="web", endpoints=[("10.1.0.1", "node-a", True, None)]),
    node("node-a", labels={"rack": "r1"}, addresses=["10.0.0.2"]),
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON value (keys and indices), the value itself first."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


@st.composite
def near_objects(draw: st.DrawFn) -> Any:
    """A real Service, EndpointSlice or Node with a few fields replaced by arbitrary JSON."""
    obj = copy.deepcopy(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(list(_paths(obj))))
        if not path:
            return draw(JSON)
        parent = obj
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = draw(JSON)
    return obj


EVENTS = JSON | st.fixed_dictionaries(
    {
        "type": st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR", "WHAT"]) | JSON,
        "object": near_objects() | JSON,
    }
)
LIST_BODIES = JSON | st.fixed_dictionaries(
    {"metadata": JSON | st.fixed_dictionaries({}, optional={"resourceVersion": JSON, "continue": JSON})},
    optional={"items": JSON | st.lists(near_objects(), max_size=3)},
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@given(value=JSON, limit=st.integers(0, 6), ascii_only=st.booleans())
def test_depth_check_is_exact_for_json(value: Any, limit: int, ascii_only: bool) -> None:
    """json_depth_exceeds agrees with the real nesting of any JSON document, brackets in strings ignored."""
    data = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert json_depth_exceeds(data, limit) == (_depth(value) > limit)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'["' + b"]" * 5000 + b'", ' + b"[" * 5000 + b"]" * 5000 + b"]", id="closers-in-a-string"),
        pytest.param(b'[" ]", ' * 5000 + b"1" + b"]" * 5000, id="a-closer-string-per-level"),
        pytest.param(b'["\\", ' * 5000 + b"1" + b"]" * 5000, id="escaped-backslashes"),
        pytest.param(b'["\\"]", ' * 5000 + b"1" + b"]" * 5000, id="escaped-quotes"),
        pytest.param(b"[" * 5000 + b'"' + b"]" * 5000, id="unterminated-string"),
        pytest.param(b"[" * 5000 + b"}" * 5000, id="mismatched"),
    ],
)
def test_strings_and_junk_hide_no_depth(data: bytes) -> None:
    """Brackets in strings, escapes and mismatched closers cannot make a deep document look shallow."""
    assert json_depth_exceeds(data, MAX_JSON_DEPTH)
    with pytest.raises(ResponseInvalid, match="deeper than"):
        decode_json(data, what="test")


@given(data=st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()) | st.text(CHARS).map(str.encode))
def test_decode_json_raises_only_response_invalid(data: bytes) -> None:
    """decode_json returns a value or raises ResponseInvalid, whatever the bytes."""
    try:
        decode_json(data, what="test", max_bytes=48)
    except ResponseInvalid:
        pass


@given(body=LIST_BODIES)
def test_list_page_raises_only_response_invalid(body: Any) -> None:
    """A list body is a checked page or ResponseInvalid: items a list, metadata an object, strings."""
    try:
        page = list_page(body, "services")
    except ResponseInvalid:
        return
    assert isinstance(page.items, list)
    assert page.continue_token is None or isinstance(page.continue_token, str)
    assert page.resource_version is not None or page.continue_token is not None


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(EVENTS, min_size=1, max_size=5))
def test_apply_raises_only_on_purpose(events: list[Any]) -> None:
    """Any decoded watch line: Watcher._apply updates the store, or raises ResponseInvalid / Expired;
    parsers never fail unexpectedly (internal_errors stays 0)."""
    store = ClusterStore(on_change=lambda: None)
    api = ApiPaths(k8s.ApiClient())  # never called: _apply does no I/O
    common: dict[str, Any] = {"settings": WatchSettings(), "stop": threading.Event()}
    watchers = [
        Watcher("services", api, "/api/v1/services", parse_service, store, **common),
        Watcher(
            "endpointslices", api, "/apis/discovery.k8s.io/v1/endpointslices", parse_endpoint_slice, store, **common
        ),
        Watcher("nodes", api, "/api/v1/nodes", parse_node, store, **common),
    ]
    for event in events:
        for watcher in watchers:
            try:
                version = watcher._apply(event, "7")
            except (ResponseInvalid, Expired):
                continue
            assert isinstance(version, str) and version
            checked = watch_event(event)
            assert version == (checked.resource_version or "7")
    assert [w.internal_errors for w in watchers] == [0, 0, 0]
    store.snapshot()


@given(
    lines=st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    cuts=st.lists(st.integers(0, 120), max_size=8),
)
def test_watch_lines_however_the_stream_is_chunked(lines: list[bytes], cuts: list[int]) -> None:
    """watch_lines yields the stream's non-blank lines wherever the chunks are cut."""
    stream = b"".join(line + b"\n" for line in lines)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert list(watch_lines(chunks, max_line_bytes=12)) == [line for line in lines if line.strip()]
    if any(len(line) > 4 for line in lines):
        with pytest.raises(ResponseInvalid, match="longer than"):
            list(watch_lines(chunks, max_line_bytes=4))


def _services_watcher(
    api: FakeKubeApi, tmp: Path, store: ClusterStore, stop: threading.Event, parse: Any = parse_service
) -> Watcher:
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(api.kubeconfig())
    paths = ApiPaths(api_client(str(kubeconfig)))
    return Watcher("services", paths, "/api/v1/services", parse, store, settings=FAST, stop=stop)


def test_a_bug_in_one_attempt_is_logged_counted_and_survived(tmp_path: Path) -> None:
    """An unexpected exception (here from the store's change callback) ends the attempt, not the
    watcher: watch_internal_error with type and place, internal_errors counted, relist, events flow."""
    failures = [RuntimeError("reconciler wake-up failed")]

    def on_change() -> None:
        if failures and "default/b" in store.snapshot().services:
            raise failures.pop()

    api = FakeKubeApi(bookmark_interval_s=0.3).start()
    api.apply(service("default", "a", ips=["192.0.2.1"]))
    store = ClusterStore(on_change=on_change)
    stop = threading.Event()
    watcher = _services_watcher(api, tmp_path, store, stop)
    try:
        with capture_logs() as logs:
            watcher.thread.start()
            wait_until(lambda: "services" in store.last_sync_monotonic, timeout_s=10, desc="listed")
            api.apply(service("default", "b", ips=["192.0.2.2"]))
            wait_until(lambda: watcher.internal_errors == 1, timeout_s=10, desc="internal error counted")
            api.apply(service("default", "c", ips=["192.0.2.3"]))
            wait_until(lambda: set(store.snapshot().services) >= {"default/a", "default/c"}, timeout_s=10, desc="c")
        internal = [e for e in logs if e["event"] == "watch_internal_error"]
        assert [(e["kind"], e["error_type"], e["error"]) for e in internal] == [
            ("services", "RuntimeError", "reconciler wake-up failed")
        ]
        assert "test_watchers.py" in internal[0]["at"]
        assert sum(1 for e in logs if e["event"] == "watch_listed") == 2  # the first list, then the relist
        assert watcher.thread.is_alive()
    finally:
        stop.set()
        api.stop()


def test_a_parser_bug_is_that_objects_problem(tmp_path: Path) -> None:
    """A parser that fails unexpectedly on one object skips that object (logged once, counted);
    the list and the other objects are kept."""

    def parse(obj: Any) -> Any:
        if obj["metadata"]["name"] == "boom":
            raise TypeError("unhashable thing")
        return parse_service(obj)

    api = FakeKubeApi(bookmark_interval_s=0.3).start()
    api.apply(service("default", "a", ips=["192.0.2.1"]))
    api.apply(service("default", "boom", ips=["192.0.2.9"]))
    store = ClusterStore(on_change=lambda: None)
    stop = threading.Event()
    watcher = _services_watcher(api, tmp_path, store, stop, parse)
    try:
        with capture_logs() as logs:
            watcher.thread.start()
            wait_until(lambda: "default/a" in store.snapshot().services, timeout_s=10, desc="listed")
            api.compact()  # relisted: the same object fails again, logged once
            api.apply(service("default", "b", ips=["192.0.2.2"]))
            wait_until(lambda: set(store.snapshot().services) == {"default/a", "default/b"}, timeout_s=10, desc="b")
        internal = [e for e in logs if e["event"] == "watch_internal_error"]
        assert [(e["object"], e["error_type"]) for e in internal] == [("default/boom", "TypeError")]
        assert watcher.internal_errors == 2
        assert not [e for e in logs if e["event"] == "watch_restarted"]
    finally:
        stop.set()
        api.stop()


# -- pipelined list pages (bgpspeaker.cluster.pages) ---------------------------------------


def _page_requests(api: FakeKubeApi, path: str = "/api/v1/services") -> list[str]:
    """The later-page requests (with a continue token) of lists of ``path``, in order."""
    return [p for method, p in api.requests if method == "GET" and p.startswith(path + "?") and "continue=" in p]


def _pages_threads(kind: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"watch-{kind}-pages"]


def test_next_page_is_fetched_while_a_page_is_parsed(tmp_path: Path) -> None:
    """Page 2 is requested before the first object of page 1 is parsed (its continue token is
    read first); the list is whole and the page fetcher ends with it."""
    api = FakeKubeApi(bookmark_interval_s=0.3).start()
    for i in range(8):  # pages of 3: three pages
        api.apply(service("default", f"s{i}", ips=[f"192.0.2.{i}"]))
    requested_during_parse: list[bool] = []

    def parse(obj: Any) -> Any:
        if not requested_during_parse:
            try:
                wait_until(lambda: _page_requests(api), timeout_s=5, desc="page 2 requested during the parse")
            except AssertionError:
                requested_during_parse.append(False)
            else:
                requested_during_parse.append(True)
        return parse_service(obj)

    store = ClusterStore(on_change=lambda: None)
    stop = threading.Event()
    watcher = _services_watcher(api, tmp_path, store, stop, parse)
    try:
        watcher.thread.start()
        wait_until(lambda: "services" in store.last_sync_monotonic, timeout_s=10, desc="listed")
        assert requested_during_parse == [True]
        assert set(store.snapshot().services) == {f"default/s{i}" for i in range(8)}
        assert len(_page_requests(api)) == 2
        wait_until(lambda: not _pages_threads("services"), timeout_s=5, desc="the page fetcher ended")
    finally:
        stop.set()
        api.stop()


def test_expired_continue_token_relists_from_scratch(harness: Harness) -> None:
    """A compaction between two pages: the next page is 410 (continue token too old), the list
    starts over from the first page, and the store is replaced once with the new state (a
    deletion made meanwhile included), never with part of a list."""
    for i in range(8):
        harness.api.apply(service("default", f"s{i}", ips=[f"192.0.2.{i}"]))
    harness.api.hold_list_pages("services")
    with capture_logs() as logs:
        for watcher in harness.watchers:
            watcher.thread.start()
        wait_until(lambda: _page_requests(harness.api), timeout_s=10, desc="page 2 requested")
        harness.api.delete("services", "default/s0")  # on page 1, already parsed
        harness.api.apply(service("default", "new", ips=["192.0.2.50"]))
        harness.api.compact()
        harness.api.hold_list_pages(None)
        wanted = {f"default/s{i}" for i in range(1, 8)} | {"default/new"}
        wait_until(lambda: harness.services() == wanted, timeout_s=10, desc="relisted")
    services_listed = [e for e in logs if e["event"] == "watch_listed" and e["kind"] == "services"]
    assert [e["objects"] for e in services_listed] == [8]
    assert [e for e in logs if e["event"] == "watch_expired" and e["kind"] == "services"]
    assert not [e for e in logs if e["event"] == "watch_restarted" and e["kind"] == "services"]
    assert all(seen in (set(), wanted) for seen in harness.service_sets), harness.service_sets
    first_pages = [
        p
        for m, p in harness.api.requests
        if p.startswith("/api/v1/services?") and "continue=" not in p and "watch" not in p
    ]
    assert len(first_pages) == 2  # the first list, then the relist from the first page


def test_a_failed_page_fails_the_whole_list(harness: Harness) -> None:
    """A malformed second page: the list fails (watch_restarted, backed off), the store is not
    touched, and the retry lists every page again."""
    for i in range(8):
        harness.api.apply(service("default", f"s{i}", ips=[f"192.0.2.{i}"]))
    harness.api.hold_list_pages("services")
    with capture_logs() as logs:
        for watcher in harness.watchers:
            watcher.thread.start()
        wait_until(lambda: _page_requests(harness.api), timeout_s=10, desc="page 2 requested")
        harness.api.inject_list("services", b'{"metadata":{"resourceVersion":"9"},"items":"abc"}')
        harness.api.hold_list_pages(None)
        wanted = {f"default/s{i}" for i in range(8)}
        wait_until(lambda: harness.services() == wanted, timeout_s=10, desc="listed after the retry")
    failures = [e for e in logs if e["event"] == "watch_restarted" and e["kind"] == "services"]
    assert len(failures) == 1 and "items must be a list" in failures[0]["error"], failures
    assert failures[0]["retry_in_s"] == FAST.backoff_s[0]
    assert [e["objects"] for e in logs if e["event"] == "watch_listed" and e["kind"] == "services"] == [8]
    assert all(seen in (set(), wanted) for seen in harness.service_sets), harness.service_sets


def test_stopping_mid_list_leaves_nothing_running(tmp_path: Path) -> None:
    """The watcher is stopped while page 2 is on its way: the watcher and its page fetcher both
    end, no further page is asked for, and the store keeps no part of the list."""
    api = FakeKubeApi(bookmark_interval_s=0.3).start()
    for i in range(8):
        api.apply(service("default", f"s{i}", ips=[f"192.0.2.{i}"]))
    store = ClusterStore(on_change=lambda: None)
    stop = threading.Event()
    watcher = _services_watcher(api, tmp_path, store, stop)
    api.hold_list_pages("services")
    try:
        watcher.thread.start()
        wait_until(lambda: _page_requests(api), timeout_s=10, desc="page 2 requested")
        stop.set()
        api.hold_list_pages(None)
        wait_until(
            lambda: not watcher.thread.is_alive() and not _pages_threads("services"),
            timeout_s=10,
            desc="watcher and page fetcher ended",
        )
        assert len(_page_requests(api)) == 1
        assert "services" not in store.last_sync_monotonic
        assert watcher.internal_errors == 0
    finally:
        stop.set()
        api.stop()
