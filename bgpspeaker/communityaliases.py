"""Community aliases (MetalLB's ``Community`` resource): ``communityAliases: [{name:
vpn-only, value: "64512:100"}]`` at the top of the config, usable wherever a community is
(advertisements' ``communities``, the per-service communities annotation). Pure: parsing
and validation only; ``values.parse_communities`` resolves the names.

A value is a standard (``"64512:100"``) or large (``"large:64512:1:2"``) community, or a
well-known name. An alias name is a lowercase DNS label that cannot be read as a
community itself (no ``no-export``, no digits-and-colons), so a name never changes what
an existing community string means.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bgpspeaker.values import WELL_KNOWN_COMMUNITIES, parse_communities, show

__all__ = ["ALIAS_KEYS", "MAX_ALIASES", "parse_community_aliases"]

ALIAS_KEYS = frozenset({"name", "value"})
MAX_ALIASES = 1000
"""Far more than any network names; bounds the table an annotation is looked up in."""
_ALIAS_NAME = re.compile(r"^[a-z]([-a-z0-9.]{0,61}[a-z0-9])?$")


def parse_community_aliases(value: Any, path: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """((name, community text), ...) from the ``communityAliases`` list; problems appended."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ALIASES:
        problems.append(f"{path}: must be a list of at most {MAX_ALIASES} {{name, value}} mappings, got {show(value)}")
        return ()
    aliases: dict[str, str] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: must be a mapping with name and value, got {show(item)}")
            continue
        for key in sorted(set(item) - ALIAS_KEYS, key=str):
            label = str(key) if len(str(key)) <= 80 else show(str(key))  # keys come from strangers too
            problems.append(f"{where}.{label}: unknown field (allowed: name, value)")
        name = item.get("name")
        if not isinstance(name, str) or not _ALIAS_NAME.match(name):
            problems.append(
                f"{where}.name: must be a lowercase name starting with a letter (letters, digits, '-', '.',"
                f" at most 63), got {show(name)}"
            )
            name = None
        elif name in WELL_KNOWN_COMMUNITIES:
            problems.append(f"{where}.name: {show(name)} is a well-known community already; pick another name")
            name = None
        elif name in first:
            problems.append(f"{where}.name: duplicate of {path}[{first[name]}], got {show(name)}")
            name = None
        raw = item.get("value")
        parsed = parse_communities([raw], f"{where}.value", problems) if isinstance(raw, str) else None
        if not isinstance(raw, str):
            problems.append(
                f"{where}.value: must be a community like '64512:100' or 'large:64512:1:2', got {show(raw)}"
            )
        if name is not None and parsed is not None and isinstance(raw, str):
            first[name] = index
            aliases[name] = raw.strip()
    return tuple(sorted(aliases.items()))
