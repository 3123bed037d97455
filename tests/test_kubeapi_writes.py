"""The test API server's writes, through the real client over HTTP, as kube-apiserver answers them:
resourceVersion preconditions (409 Conflict), the status subresource, Leases, AlreadyExists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from bgpspeaker.cluster.api import ApiPaths, api_client
from lab.kubeapi import FakeKubeApi, service

STATUS = "/api/v1/namespaces/default/services/web/status"
OBJECT = "/api/v1/namespaces/default/services/web"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[FakeKubeApi, ApiPaths]]:
    api = FakeKubeApi().start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(api.kubeconfig())
    try:
        yield api, ApiPaths(api_client(str(kubeconfig)))
    finally:
        api.stop()


def _error(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as raised:
        call()
    return raised.value.status, json.loads(raised.value.body)


def test_a_stale_resource_version_is_a_409_conflict(client: tuple[FakeKubeApi, ApiPaths]) -> None:
    """PUT and merge PATCH from an old resourceVersion: 409 with the apiserver's Status; the current one applies."""
    api, paths = client
    stored = api.apply(service("default", "web"))
    version = stored["metadata"]["resourceVersion"]
    api.apply(service("default", "web", labels={"changed": "yes"}))  # someone else wrote first
    stale = {"metadata": {"resourceVersion": version}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}
    status, body = _error(lambda: paths.call("PATCH", STATUS, body=stale, content_type="application/merge-patch+json"))
    assert (status, body) == (
        409,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'Operation cannot be fulfilled on services "web": the object has been modified;'
            " please apply your changes to the latest version and try again",
            "reason": "Conflict",
            "details": {"name": "web", "kind": "services"},
            "code": 409,
        },
    )
    whole = {**service("default", "web"), "metadata": {"name": "web", "resourceVersion": version}}
    assert _error(lambda: paths.call("PUT", STATUS, body=whole, content_type="application/json"))[0] == 409
    current = api.get("services", "default/web") or {}
    fresh = {**stale, "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}}
    written = paths.call("PATCH", STATUS, body=fresh, content_type="application/merge-patch+json")
    assert written["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1"}]
    assert int(written["metadata"]["resourceVersion"]) > int(current["metadata"]["resourceVersion"])


def test_the_status_subresource_changes_only_the_status(client: tuple[FakeKubeApi, ApiPaths]) -> None:
    """A status PUT carrying a new spec leaves the spec; an object PUT carrying a status leaves the status."""
    api, paths = client
    stored = api.apply(service("default", "web"))
    body = json.loads(json.dumps(stored))
    body["spec"]["type"] = "ClusterIP"
    body["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    written = paths.call("PUT", STATUS, body=body, content_type="application/json")
    assert (written["spec"]["type"], written["status"]["loadBalancer"]["ingress"]) == (
        "LoadBalancer",
        [{"ip": "192.0.2.1"}],
    )
    body = json.loads(json.dumps(written))
    body["spec"]["type"] = "ClusterIP"
    body["status"] = {}
    replaced = paths.call("PUT", OBJECT, body=body, content_type="application/json")
    assert (replaced["spec"]["type"], replaced["status"]["loadBalancer"]["ingress"]) == (
        "ClusterIP",
        [{"ip": "192.0.2.1"}],
    )


def test_leases_create_get_update(client: tuple[FakeKubeApi, ApiPaths]) -> None:
    """A Lease: created once (then 409 AlreadyExists), read, updated only from its current version."""
    _, paths = client
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "l"},
        "spec": {"holderIdentity": "a"},
    }
    created = paths.call("POST", LEASES, body=lease, content_type="application/json")
    status, body = _error(lambda: paths.call("POST", LEASES, body=lease, content_type="application/json"))
    assert (status, body["reason"], body["message"], body["details"]) == (
        409,
        "AlreadyExists",
        'leases.coordination.k8s.io "l" already exists',
        {"name": "l", "kind": "leases", "group": "coordination.k8s.io"},
    )
    got = paths.call("GET", f"{LEASES}/l")
    assert (got["metadata"]["namespace"], got["spec"]) == ("ns", {"holderIdentity": "a"})
    got["spec"]["holderIdentity"] = "b"
    updated = paths.call("PUT", f"{LEASES}/l", body=got, content_type="application/json")
    assert updated["spec"]["holderIdentity"] == "b"
    status, body = _error(lambda: paths.call("PUT", f"{LEASES}/l", body=got, content_type="application/json"))
    assert (status, body["reason"], body["details"]["kind"]) == (409, "Conflict", "leases")
    assert created["metadata"]["uid"] == updated["metadata"]["uid"]


def test_injected_conflicts_are_real_races(client: tuple[FakeKubeApi, ApiPaths]) -> None:
    """inject_conflicts: another writer updates the object first, so the write from the version read gets 409."""
    api, paths = client
    version = api.apply(service("default", "web"))["metadata"]["resourceVersion"]
    api.inject_conflicts("services", 1)
    patch = {"metadata": {"resourceVersion": version}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}
    assert (
        _error(lambda: paths.call("PATCH", STATUS, body=patch, content_type="application/merge-patch+json"))[0] == 409
    )
    newer = (api.get("services", "default/web") or {})["metadata"]["resourceVersion"]
    assert int(newer) > int(version)
    patch["metadata"]["resourceVersion"] = newer
    assert paths.call("PATCH", STATUS, body=patch, content_type="application/merge-patch+json")["status"]
