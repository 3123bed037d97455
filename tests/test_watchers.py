"""Watchers against a real-HTTP API server through the real kubernetes client (no root needed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bgpspeaker.kube import ClusterStore, WatchSettings, api_client, make_watchers
from tests.lab.kubeapi import FakeKubeApi, endpoint_slice, node, service
from tests.lab.netns import wait_until

FAST = WatchSettings(
    server_timeout_s=30, inactivity_timeout_s=1.5, connect_timeout_s=2.0, backoff_s=(0.05, 0.1, 0.2), page_size=3
)


class Harness:
    def __init__(self, api: FakeKubeApi, tmp: Path) -> None:
        self.api = api
        self.changes = 0
        self.store = ClusterStore(on_change=self._changed)
        self.stop = threading.Event()
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig())
        self.watchers = make_watchers(
            api_client(str(kubeconfig)), self.store, node_name="node-a", settings=FAST, stop=self.stop
        )

    def _changed(self) -> None:
        self.changes += 1

    def start(self) -> Harness:
        for watcher in self.watchers:
            watcher.thread.start()
        wait_until(lambda: self.store.synced, timeout_s=10, desc="initial lists")
        return self

    def services(self) -> set[str]:
        return set(self.store.snapshot().services)

    def watcher(self, kind: str):  # type: ignore[no-untyped-def]
        return next(w for w in self.watchers if w.kind == kind)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    api = FakeKubeApi(bookmark_interval_s=0.3).start()
    api.apply(node("node-a"))
    api.apply(node("node-b"))
    h = Harness(api, tmp_path)
    yield h
    h.stop.set()
    api.stop()


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
