"""What a config reload changes, by name: the ``config_reloaded`` log line's keys.

Pure: two validated configs in, a value out. Peers and advertisements are compared by
name (a renamed one is one removed and one added); every other top-level setting by its
key in the config file.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bgpspeaker.config import SpeakerConfig

__all__ = ["ConfigChanges", "config_changes"]

_FILE_KEYS = {
    "my_asn": "myASN",
    "router_id": "routerID",
    "allowed_vip_ranges": "allowedVIPRanges",
}
"""Field names whose config-file key is not plain camelCase of the field."""
_BY_NAME = ("peers", "advertisements")


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigChanges:
    """Names of what differs between the config in force and the new one (each sorted)."""

    peers_added: tuple[str, ...] = ()
    peers_removed: tuple[str, ...] = ()
    peers_changed: tuple[str, ...] = ()
    """Peers whose settings differ (their sessions restart only if ExaBGP needs it)."""
    advertisements_added: tuple[str, ...] = ()
    advertisements_removed: tuple[str, ...] = ()
    advertisements_changed: tuple[str, ...] = ()
    settings_changed: tuple[str, ...] = ()
    """Other top-level keys that differ (``myASN``, ``shutdown``, ``addressPools``, ...)."""

    @property
    def changed(self) -> bool:
        """True when anything at all differs."""
        return any(dataclasses.astuple(self))

    def fields(self) -> dict[str, Any]:
        """The log line's keys: every list, plus ``changed``."""
        return {**{key: list(value) for key, value in dataclasses.asdict(self).items()}, "changed": self.changed}


def config_changes(old: SpeakerConfig, new: SpeakerConfig) -> ConfigChanges:
    """What ``new`` adds, removes and changes relative to ``old``."""
    peers = _by_name({p.name: p for p in old.peers}, {p.name: p for p in new.peers})
    advertisements = _by_name({a.name: a for a in old.advertisements}, {a.name: a for a in new.advertisements})
    settings = sorted(
        _file_key(field.name)
        for field in dataclasses.fields(SpeakerConfig)
        if field.name not in _BY_NAME and getattr(old, field.name) != getattr(new, field.name)
    )
    return ConfigChanges(
        peers_added=peers[0],
        peers_removed=peers[1],
        peers_changed=peers[2],
        advertisements_added=advertisements[0],
        advertisements_removed=advertisements[1],
        advertisements_changed=advertisements[2],
        settings_changed=tuple(settings),
    )


def _by_name(old: dict[str, Any], new: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(added, removed, changed) names."""
    added = tuple(sorted(set(new) - set(old)))
    removed = tuple(sorted(set(old) - set(new)))
    changed = tuple(sorted(name for name in set(old) & set(new) if old[name] != new[name]))
    return added, removed, changed


def _file_key(field_name: str) -> str:
    """``hold_down`` -> ``holdDown``; the exceptions from ``_FILE_KEYS``."""
    if field_name in _FILE_KEYS:
        return _FILE_KEYS[field_name]
    head, *rest = field_name.split("_")
    return head + "".join(part.capitalize() for part in rest)
