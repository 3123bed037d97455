"""Password Secrets: what a watched Secret's state means for each peer's key (no API server)."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest

from bgpspeaker.cluster.model import ObjectInvalid
from bgpspeaker.config import SecretRef, parse_config
from bgpspeaker.peers import Password, PeerRuntime
from bgpspeaker.secretwatch import SecretCache, Unusable, parse_secret, rekeyed

REF = SecretRef(name="bgp-auth", namespace="bgpspeaker-system", key="tor-b")
KIND = "secret bgpspeaker-system/bgp-auth"
KEY = "bgpspeaker-system/bgp-auth"


def runtimes() -> dict[str, PeerRuntime]:
    config = parse_config(
        {
            "apiVersion": "bgpspeaker.io/v1alpha1",
            "kind": "SpeakerConfig",
            "myASN": 64513,
            "peers": [
                {"name": "tor-a", "peerAddress": "10.0.0.1", "peerASN": 64512},
                {
                    "name": "tor-b",
                    "peerAddress": "10.0.1.1",
                    "peerASN": 64513,
                    "passwordSecret": {"name": REF.name, "namespace": REF.namespace, "key": REF.key},
                },
            ],
        }
    )
    return {
        "tor-a": PeerRuntime(config.peers[0]),
        "tor-b": PeerRuntime(config.peers[1], password=Password(b"old-key")),
    }


def secret(data: dict[str, bytes] | None, *, raw: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"namespace": REF.namespace, "name": REF.name}}
    if data is not None:
        body["data"] = {key: base64.b64encode(value).decode() for key, value in data.items()}
    if raw is not None:
        body["data"] = raw
    return body


def cache_with(*events: tuple[str, Any]) -> tuple[SecretCache, list[int]]:
    changes: list[int] = []
    cache = SecretCache(on_change=lambda: changes.append(1))
    cache.follow([KEY])
    for event, obj in events:
        if event == "list":
            cache.replace(KIND, {} if obj is None else {KEY: parse_secret(obj)})
        elif event == "upsert":
            cache.upsert(KIND, KEY, parse_secret(obj))
        else:
            cache.delete(KIND, KEY)
    return cache, changes


ROTATION_CASES = [
    # (desc, watch events, tor-b's password afterwards, tor-b's problem)
    ("not listed yet: keep the key", [], b"old-key", None),
    ("listed, same key: nothing to do", [("list", secret({"tor-b": b"old-key"}))], b"old-key", None),
    ("listed with a new key: re-key", [("list", secret({"tor-b": b"new-key"}))], b"new-key", None),
    (
        "modified to a new key",
        [("list", secret({"tor-b": b"old-key"})), ("upsert", secret({"tor-b": b"new-key", "x": b"y"}))],
        b"new-key",
        None,
    ),
    (
        "deleted: keep the running key",
        [("list", secret({"tor-b": b"old-key"})), ("delete", None)],
        b"old-key",
        "does not exist",
    ),
    ("absent at list: keep", [("list", None)], b"old-key", "does not exist"),
    ("key removed: keep", [("upsert", secret({"other": b"x"}))], b"old-key", "has no key 'tor-b'"),
    ("empty value: keep", [("upsert", secret({"tor-b": b""}))], b"old-key", "1..80 bytes, got 0"),
    ("81 bytes: keep", [("upsert", secret({"tor-b": b"k" * 81}))], b"old-key", "1..80 bytes, got 81"),
    ("huge value: keep", [("upsert", secret({"tor-b": b"k" * 5000}))], b"old-key", "more than 80 bytes"),
    ("not base64: keep", [("upsert", secret(None, raw={"tor-b": "!!!"}))], b"old-key", "not valid base64"),
    (
        "deleted then back with a new key",
        [("delete", None), ("upsert", secret({"tor-b": b"third"}))],
        b"third",
        None,
    ),
]


@pytest.mark.parametrize(
    ("events", "want_password", "want_problem"),
    [case[1:] for case in ROTATION_CASES],
    ids=[case[0] for case in ROTATION_CASES],
)
def test_rekeyed_follows_the_secret_and_keeps_the_key_when_it_is_unusable(
    events: list[tuple[str, Any]], want_password: bytes, want_problem: str | None
) -> None:
    """Only tor-b's runtime changes, and only to a usable new key; tor-a keeps its very object."""
    before = runtimes()
    cache, _ = cache_with(*events)
    after, unusable = rekeyed(before, cache.lookup)
    assert after["tor-a"] is before["tor-a"]
    password = after["tor-b"].password
    assert password is not None and password.reveal() == want_password
    if want_password == b"old-key":
        assert after["tor-b"] is before["tor-b"]
    else:
        assert after["tor-b"] == dataclasses.replace(before["tor-b"], password=Password(want_password))
    if want_problem is None:
        assert unusable == {}
    else:
        assert list(unusable) == ["tor-b"] and want_problem in unusable["tor-b"].reason
        assert isinstance(unusable["tor-b"], Unusable)


def test_cache_calls_on_change_only_for_a_different_value_of_a_followed_secret() -> None:
    """A resync of the same Secret is not a change; a Secret no longer followed is ignored."""
    same = secret({"tor-b": b"k1"})
    cache, changes = cache_with(("list", same), ("upsert", same), ("upsert", secret({"tor-b": b"k2"})))
    assert len(changes) == 2
    cache.follow([])
    cache.upsert(KIND, KEY, parse_secret(secret({"tor-b": b"k3"})))
    assert len(changes) == 2 and cache.lookup(REF) is None


@pytest.mark.parametrize(
    "data",
    [["a"], {"k": 1}, {1: "a"}, {f"k{i}": "a" for i in range(300)}],
    ids=["list", "int-value", "int-key", "300-keys"],
)
def test_parse_secret_refuses_bad_data_shapes(data: Any) -> None:
    """A Secret whose data is not a small mapping of strings is that object's error."""
    with pytest.raises(ObjectInvalid):
        parse_secret({"metadata": {"name": "x", "namespace": "y"}, "data": data})
