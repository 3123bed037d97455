"""Password Secrets watched by name: a rotated ``passwordSecret`` re-keys its session.

Every Secret a peer's ``passwordSecret`` names gets its own watcher (the list, watch,
relist-on-410 and backoff of ``bgpspeaker.cluster.watch.Watcher``) on its namespace
with the field selector ``metadata.name=NAME``, so the speaker reads that one Secret
and no other (RBAC can grant exactly it: ``resourceNames`` applies to a list or watch
that selects one name). The watchers fill a ``SecretCache``; when it changes, the main
thread asks ``rekeyed`` (pure) which peers' passwords differ from the ones their
sessions run with, and hands the reconciler those runtimes: the session whose key
changed restarts with the new key (its ExaBGP config differs), the others are left
as they are.

A Secret that disappears, or loses its key, or holds no usable password, changes
nothing: the running session keeps the key it has (a working session is not taken
down for a missing Secret), and one ``password_secret_unusable`` line says so.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from bgpspeaker.cluster.access import Access
from bgpspeaker.cluster.api import ApiPaths, resource_path
from bgpspeaker.cluster.model import ObjectInvalid
from bgpspeaker.cluster.watch import Watcher, WatchSettings
from bgpspeaker.config import PeerConfig, SecretRef, SpeakerConfig
from bgpspeaker.peers import MD5_MAX_BYTES, Password, PeerRuntime

__all__ = [
    "Lookup",
    "Rekeyer",
    "SecretCache",
    "SecretWatches",
    "Unusable",
    "parse_secret",
    "rekeyed",
]

log = structlog.get_logger("bgpspeaker.secrets")

API_ACCESS = (
    Access(
        "",
        "secrets",
        frozenset({"list", "watch"}),
        "SecretWatches: each passwordSecret by fieldSelector metadata.name (deploy/rbac.yaml grants it by name)",
        own_namespace=True,
    ),
)
"""The calls below (RBAC resourceNames admit a list or watch only with that field selector)."""

MAX_SECRET_KEYS = 256
"""A password Secret holds a handful of keys; more is not one we should keep in memory."""
MAX_ENCODED_VALUE = 4 * (MD5_MAX_BYTES + 2) // 3 + 4
"""Longer base64 text than this cannot be an MD5 key; such a value is kept as 'too long'."""


@dataclasses.dataclass(frozen=True, slots=True)
class SecretData:
    """What the cache keeps of one Secret: each key's base64 text (bounded), undecoded."""

    data: Mapping[str, str | None]
    """Key -> base64 text, or None when the value is too long to be an MD5 key."""


@dataclasses.dataclass(frozen=True, slots=True)
class Unusable:
    """Why a Secret gives no password now (the running session keeps its key)."""

    reason: str


Lookup = Callable[[SecretRef], Password | Unusable | None]
"""A password Secret's key now: the password, why there is none, or None (not known yet)."""


def parse_secret(obj: Any) -> SecretData:
    """A Secret's ``data`` (ObjectInvalid when it is not a mapping of strings)."""
    raw = obj.get("data") if isinstance(obj, Mapping) else None
    if raw is None:
        return SecretData({})
    if not isinstance(raw, Mapping) or len(raw) > MAX_SECRET_KEYS:
        raise ObjectInvalid(f"data: must be a mapping of at most {MAX_SECRET_KEYS} keys to base64 strings")
    data: dict[str, str | None] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ObjectInvalid("data: must map strings to base64 strings")
        data[key] = value if len(value) <= MAX_ENCODED_VALUE else None
    return SecretData(data)


def _password(secret: SecretData | None, ref: SecretRef) -> Password | Unusable:
    if secret is None:
        return Unusable(f"Secret {ref.namespace}/{ref.name} does not exist")
    if ref.key not in secret.data:
        return Unusable(f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r} (keys: {sorted(secret.data)})")
    encoded = secret.data[ref.key]
    if encoded is None:
        return Unusable(f"key {ref.key!r} holds more than {MD5_MAX_BYTES} bytes (the longest MD5 key)")
    try:
        value = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return Unusable(f"key {ref.key!r} is not valid base64")
    if not 1 <= len(value) <= MD5_MAX_BYTES:
        return Unusable(f"key {ref.key!r}: the password must be 1..{MD5_MAX_BYTES} bytes, got {len(value)} bytes")
    return Password(value)


def rekeyed(runtimes: Mapping[str, PeerRuntime], lookup: Lookup) -> tuple[dict[str, PeerRuntime], dict[str, Unusable]]:
    """(the runtimes with each ``passwordSecret`` peer's password as the Secret holds it now,
    the peers whose Secret gives no password: they keep the one they run with). Peers whose
    password is unchanged, or not yet known, keep their runtime object."""
    updated: dict[str, PeerRuntime] = {}
    unusable: dict[str, Unusable] = {}
    for name, runtime in runtimes.items():
        ref = runtime.peer.password_secret
        found = lookup(ref) if ref is not None else None
        if isinstance(found, Unusable):
            unusable[name] = found
        if isinstance(found, Password) and found != runtime.password:
            updated[name] = dataclasses.replace(runtime, password=found)
        else:
            updated[name] = runtime
    return updated, unusable


def _secret_key(ref: SecretRef) -> str:
    return f"{ref.namespace}/{ref.name}"


class SecretCache:
    """The password Secrets as their watchers last saw them (a ``WatchStore`` for each watcher,
    whose kind is ``secret NAMESPACE/NAME``). Thread-safe; ``on_change`` after a change."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._secrets: dict[str, SecretData | None] = {}
        """``namespace/name`` -> its data, or None when listed and absent; a followed Secret
        not listed yet has no entry."""
        self._followed: set[str] = set()

    def follow(self, keys: Iterable[str]) -> None:
        """Keep (only) these Secrets; a writer for another one is ignored from now on."""
        with self._lock:
            self._followed = set(keys)
            self._secrets = {key: value for key, value in self._secrets.items() if key in self._followed}

    def lookup(self, ref: SecretRef) -> Password | Unusable | None:
        """The password the Secret holds now; None while its first list is outstanding."""
        key = _secret_key(ref)
        with self._lock:
            if key not in self._secrets:
                return None
            secret = self._secrets[key]
        return _password(secret, ref)

    def _set(self, kind: str, value: SecretData | None) -> None:
        key = kind.removeprefix("secret ")
        with self._lock:
            if key not in self._followed or (key in self._secrets and self._secrets[key] == value):
                return
            self._secrets[key] = value
        self._on_change()

    # -- WatchStore (cluster/watch.py) ---------------------------------------------------------

    def replace(self, kind: str, items: Mapping[str, Any]) -> None:
        """A list: the Secret (one name) or nothing."""
        self._set(kind, items.get(kind.removeprefix("secret ")))

    def upsert(self, kind: str, key: str, value: Any) -> None:
        """A watch event adding or changing the Secret."""
        if key == kind.removeprefix("secret "):
            self._set(kind, value)

    def delete(self, kind: str, key: str) -> None:
        """A watch event deleting the Secret."""
        if key == kind.removeprefix("secret "):
            self._set(kind, None)

    def mark_synced(self, kind: str) -> None:
        """Nothing to do: a Secret not listed yet is simply unknown."""

    def report_ok(self, kind: str) -> None:
        """The watcher logs its own failures and recoveries."""

    def report_failure(self, kind: str, error: str) -> None:
        """An unreachable API server leaves the last known password in force."""


class SecretWatches:
    """One watcher per Secret the peers name, started and stopped as the config changes."""

    def __init__(self, api: ApiPaths, *, settings: WatchSettings, on_change: Callable[[], None]) -> None:
        self._api = api
        self._settings = settings
        self.cache = SecretCache(on_change)
        self._watchers: dict[str, tuple[Watcher, threading.Event]] = {}

    def follow(self, peers: Iterable[PeerConfig]) -> None:
        """Watch exactly the Secrets ``peers`` name (call with every loaded config)."""
        refs = {_secret_key(p.password_secret): p.password_secret for p in peers if p.password_secret is not None}
        self.cache.follow(refs)
        for key in sorted(set(self._watchers) - set(refs)):
            watcher, stop = self._watchers.pop(key)
            stop.set()  # the thread ends at its stream's next line or timeout; the cache ignores it
            log.info("password_secret_unwatched", secret=key)
        for key, ref in sorted(refs.items()):
            if key in self._watchers:
                continue
            stop = threading.Event()
            watcher = Watcher(
                f"secret {key}",
                self._api,
                resource_path("/api/v1", "secrets", namespace=ref.namespace),
                parse_secret,
                self.cache,
                settings=self._settings,
                stop=stop,
                field_selector=f"metadata.name={ref.name}",
            )
            self._watchers[key] = (watcher, stop)
            watcher.thread.start()
            log.info("password_secret_watched", secret=key)

    def stop(self) -> None:
        """Stop every watcher (they are daemon threads: nothing waits for them)."""
        for _, stop in self._watchers.values():
            stop.set()

    @property
    def internal_errors(self) -> int:
        """Bugs the watchers caught and survived."""
        return sum(watcher.internal_errors for watcher, _ in self._watchers.values())


Loaded = tuple[SpeakerConfig, dict[str, PeerRuntime], Any]
"""(config, peer runtimes, router ID), as ``_ConfigSource.load`` returns them."""


class Rekeyer:
    """The main thread's side: the config in force, and the Secrets' passwords applied to it.

    ``loaded`` after every config load; ``poll`` when the cache changed: it returns the
    runtimes to hand the reconciler when a password changed (None otherwise), and logs
    each peer's unusable Secret once per reason."""

    def __init__(self, watches: SecretWatches) -> None:
        self._watches = watches
        self._current: Loaded | None = None
        self._reported: dict[str, str] = {}

    def loaded(self, current: Loaded) -> None:
        """A config (re)loaded: its runtimes hold the passwords read at load."""
        self._current = current
        self._watches.follow(current[0].peers)

    def poll(self) -> Loaded | None:
        """The config with re-keyed runtimes when some Secret's password changed."""
        if self._current is None:
            return None
        config, runtimes, router_id = self._current
        updated, unusable = rekeyed(runtimes, self._watches.cache.lookup)
        for name, problem in unusable.items():
            if self._reported.get(name) != problem.reason:
                ref = runtimes[name].peer.password_secret
                assert ref is not None
                log.warning(
                    "password_secret_unusable",
                    peer=name,
                    secret=_secret_key(ref),
                    key=ref.key,
                    reason=problem.reason,
                    kept="the running session and its key",
                )
        self._reported = {name: problem.reason for name, problem in unusable.items()}
        changed = sorted(name for name, runtime in updated.items() if runtime is not runtimes[name])
        if not changed:
            return None
        for name in changed:
            ref = runtimes[name].peer.password_secret
            assert ref is not None
            log.info("password_secret_rotated", peer=name, secret=_secret_key(ref), key=ref.key)
        self._current = (config, updated, router_id)
        return self._current
