"""Value types shared by the config and the per-service annotations (pure).

Each parser takes untrusted input and returns a typed value, or appends one problem
(``path: what is wrong, got VALUE``) and returns None. Nothing here raises on bad input.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import reprlib
from collections.abc import Collection, Mapping
from typing import Any

from bgpspeaker.routes import IPAddress

__all__ = [
    "ASN_MAX",
    "ASN_MIN",
    "U32_MAX",
    "WELL_KNOWN_COMMUNITIES",
    "LabelSelector",
    "Requirement",
    "matches_any",
    "parse_asn",
    "parse_communities",
    "parse_duration",
    "parse_duration_ms",
    "parse_int",
    "parse_ip",
    "parse_selectors",
    "parse_unsigned_text",
    "show",
]

ASN_MIN, ASN_MAX = 1, 4_294_967_295
U32_MAX = 4_294_967_295

WELL_KNOWN_COMMUNITIES = {
    "no-export": "no-export",
    "no-advertise": "no-advertise",
    "no-export-subconfed": "no-export-subconfed",
    "no-peer": "nopeer",
    "blackhole": "blackhole",
    "graceful-shutdown": "65535:0",
}
"""Names accepted in ``communities`` and how ExaBGP spells them."""

# ASCII digits only ([0-9], not \d: Python's \d also matches '٦' and int() takes it), and
# bounded counts, so int() never sees more digits than the field can hold.
_STANDARD = re.compile(r"^([0-9]{1,5}):([0-9]{1,5})$")
_LARGE = re.compile(r"^large:([0-9]{1,10}):([0-9]{1,10}):([0-9]{1,10})$")
_DURATION = re.compile(r"^(?:([0-9]{1,7})h)?(?:([0-9]{1,9})m(?!s))?(?:([0-9]{1,10})s)?(?:([0-9]{1,10})ms)?$")
_UNSIGNED = re.compile(r"^[0-9]{1,20}$")
_ALIAS_LIKE = re.compile(r"^[a-z]([-a-z0-9.]{0,61}[a-z0-9])?$")  # bgpspeaker.communityaliases names
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxlist = _SHOW.maxdict = _SHOW.maxtuple = _SHOW.maxset = 6
_SHOW.maxlevel = 3
_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def show(value: Any) -> str:
    """``repr(value)`` cut to a readable size: values in messages come from strangers
    (a 5,000-digit number, a string of megabytes, a list nested 50 deep)."""
    return _SHOW.repr(value)


def parse_unsigned_text(text: str, *, high: int) -> int | None:
    """An integer 0..``high`` written in ASCII digits (at most 20 of them); None otherwise.

    The length is checked before ``int()``: Python refuses to convert more than 4,300
    digits with a ValueError, and a caller that did not expect one crashed on it."""
    if not _UNSIGNED.match(text):
        return None
    value = int(text)
    return value if value <= high else None


def parse_ip(value: Any) -> IPAddress | None:
    """An IPv4/IPv6 address from untrusted text; None for anything else (non-strings included)."""
    if not isinstance(value, str) or len(value) > 64:  # the longest IPv6 text with a scope fits
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def parse_int(value: Any, path: str, problems: list[str], *, low: int, high: int) -> int | None:
    """An integer in ``low..high`` (booleans and strings are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(f"{path}: must be an integer {low}..{high}, got {show(value)}")
        return None
    return value


def parse_asn(value: Any, path: str, problems: list[str]) -> int | None:
    """A 4-byte AS number."""
    return parse_int(value, path, problems, low=ASN_MIN, high=ASN_MAX)


def parse_duration(value: Any, path: str, problems: list[str]) -> int | None:
    """Whole seconds from ``90``, ``"90s"``, ``"2m"``, ``"1h2m3s"`` or ``"2000ms"``."""
    milliseconds = _milliseconds(value)
    if milliseconds is not None and milliseconds % 1000 == 0:
        return milliseconds // 1000
    problems.append(f"{path}: must be a duration in whole seconds like 90s, 2m or 1m30s, got {show(value)}")
    return None


def parse_duration_ms(value: Any, path: str, problems: list[str]) -> int | None:
    """Milliseconds from ``"300ms"``, ``"1s"``, ``"1s500ms"`` or a bare number of seconds."""
    milliseconds = _milliseconds(value)
    if milliseconds is None:
        problems.append(f"{path}: must be a duration like 300ms, 1s or 1s500ms, got {show(value)}")
    return milliseconds


def _milliseconds(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value * 1000
    if isinstance(value, str):
        match = _DURATION.match(value)
        if value and match and any(match.groups()):
            hours, minutes, seconds, milliseconds = (int(part or 0) for part in match.groups())
            return ((hours * 60 + minutes) * 60 + seconds) * 1000 + milliseconds
        if value == "0":
            return 0
    return None


def parse_communities(
    value: Any, path: str, problems: list[str], *, aliases: Mapping[str, str] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(standard, large) communities in ExaBGP's spelling, from a list of strings.

    Accepted: ``"64512:100"`` (both halves 0..65535), the names in
    ``WELL_KNOWN_COMMUNITIES``, ``"large:GLOBAL:LOCAL1:LOCAL2"`` (each 0..2^32-1), and the
    names in ``aliases`` (``communityAliases``: name -> one of the former).
    """
    if not isinstance(value, list):
        problems.append(f"{path}: must be a list of communities, got {show(value)}")
        return None
    standard: list[str] = []
    large: list[str] = []
    before = len(problems)
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, str):
            problems.append(f"{where}: must be a string like '64512:100', got {show(item)}")
            continue
        alias = aliases.get(item.strip()) if aliases else None
        text = (alias if alias is not None else item).strip().lower()
        if text in WELL_KNOWN_COMMUNITIES:
            spelled = WELL_KNOWN_COMMUNITIES[text]
            if spelled not in standard:
                standard.append(spelled)
            continue
        match = _STANDARD.match(text)
        if match and int(match[1]) <= 65535 and int(match[2]) <= 65535:
            spelled = f"{int(match[1])}:{int(match[2])}"
            if spelled not in standard:
                standard.append(spelled)
            continue
        match = _LARGE.match(text)
        if match and all(int(part) <= U32_MAX for part in match.groups()):
            spelled = ":".join(str(int(part)) for part in match.groups())
            if spelled not in large:
                large.append(spelled)
            continue
        if _ALIAS_LIKE.match(item.strip()):
            names = ", ".join(sorted(aliases or {})[:20]) or "none defined"
            problems.append(f"{where}: no community alias named {show(item.strip())} (communityAliases: {names})")
            continue
        problems.append(
            f"{where}: must be 'ASN:VALUE' (each 0..65535), 'large:GLOBAL:LOCAL1:LOCAL2' (each 0..4294967295),"
            f" one of {', '.join(sorted(WELL_KNOWN_COMMUNITIES))} or a communityAliases name; got {show(item)}"
        )
    if len(problems) != before:
        return None
    return tuple(standard), tuple(large)


@dataclasses.dataclass(frozen=True, slots=True)
class Requirement:
    """One ``matchExpressions`` entry."""

    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes semantics: NotIn and DoesNotExist match a missing key."""
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclasses.dataclass(frozen=True, slots=True)
class LabelSelector:
    """A standard label selector: every matchLabels pair and every expression must hold."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when ``labels`` satisfy the selector (an empty selector matches everything)."""
        return all(labels.get(key) == value for key, value in self.match_labels) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )


def parse_unicast(value: Any, path: str, problems: list[str]) -> IPAddress | None:
    """A unicast IPv4 or IPv6 address (``sourceAddress``); missing or null: None."""
    if value is None:
        return None
    parsed = parse_ip(value)
    if parsed is None or parsed.is_unspecified or parsed.is_multicast:
        problems.append(f"{path}: must be a unicast IPv4 or IPv6 address, got {show(value)}")
        return None
    return parsed


def parse_router_id(value: Any, path: str, problems: list[str]) -> ipaddress.IPv4Address | None:
    """A BGP router ID: a non-zero IPv4 address; missing or null: None."""
    if value is None:
        return None
    parsed = parse_ip(value)
    if not isinstance(parsed, ipaddress.IPv4Address) or parsed.is_unspecified:
        problems.append(f"{path}: must be a non-zero IPv4 address (dotted quad), got {show(value)}")
        return None
    return parsed


def parse_names(
    value: Any, path: str, known: Collection[str], problems: list[str], *, what: str, listing: str
) -> tuple[str, ...]:
    """A list of names, each one of ``known`` (an advertisement's ``peers``, ``addressPools``);
    order kept, repeats dropped; missing or null: ``()``. ``what`` names one (``peer``),
    ``listing`` the section the known names come from (``peers``)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(f"{path}: must be a list of {what} names, got {show(value)}")
        return ()
    names: list[str] = []
    for index, name in enumerate(value):
        if not isinstance(name, str) or name not in known:
            problems.append(
                f"{path}[{index}]: no {what} named {show(name)} ({listing}: {', '.join(sorted(known)) or 'none'})"
            )
        elif name not in names:
            names.append(name)
    return tuple(names)


def matches_any(selectors: tuple[LabelSelector, ...], labels: Mapping[str, str]) -> bool:
    """An empty list selects everything; otherwise any one selector must match."""
    return not selectors or any(selector.matches(labels) for selector in selectors)


def _label_key(value: Any, path: str, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not _LABEL_NAME.match(value):
        problems.append(f"{path}: must be a label key like 'rack' or 'example.com/rack', got {show(value)}")
        return None
    return value


def _label_value(value: Any, path: str, problems: list[str]) -> str | None:
    if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
        problems.append(f"{path}: must be a label value (at most 63 letters, digits, '-', '_', '.'), got {show(value)}")
        return None
    return value


def _selector(value: Any, path: str, problems: list[str]) -> LabelSelector | None:
    if not isinstance(value, Mapping):
        problems.append(f"{path}: must be a label selector with matchLabels and/or matchExpressions, got {show(value)}")
        return None
    before = len(problems)
    for key in sorted(set(value) - {"matchLabels", "matchExpressions"}, key=str):
        problems.append(f"{path}.{key}: unknown field (allowed: matchExpressions, matchLabels)")
    raw_labels = value.get("matchLabels") or {}
    labels: list[tuple[str, str]] = []
    if not isinstance(raw_labels, Mapping):
        problems.append(f"{path}.matchLabels: must be a mapping of label key to value, got {show(raw_labels)}")
    else:
        for key, label_value in raw_labels.items():
            parsed_key = _label_key(key, f"{path}.matchLabels", problems)
            parsed_value = _label_value(label_value, f"{path}.matchLabels.{key}", problems)
            if parsed_key is not None and parsed_value is not None:
                labels.append((parsed_key, parsed_value))
    raw_expressions = value.get("matchExpressions") or []
    expressions: list[Requirement] = []
    if not isinstance(raw_expressions, list):
        problems.append(f"{path}.matchExpressions: must be a list, got {show(raw_expressions)}")
        raw_expressions = []
    for index, raw in enumerate(raw_expressions):
        where = f"{path}.matchExpressions[{index}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: must be a mapping with key, operator and values, got {show(raw)}")
            continue
        key = _label_key(raw.get("key"), f"{where}.key", problems)
        operator = raw.get("operator")
        if operator not in _OPERATORS:
            problems.append(f"{where}.operator: must be one of {', '.join(_OPERATORS)}, got {show(operator)}")
            continue
        raw_values = raw.get("values") or []
        if not isinstance(raw_values, list):
            problems.append(f"{where}.values: must be a list of strings, got {show(raw_values)}")
            continue
        if operator in ("In", "NotIn") and not raw_values:
            problems.append(f"{where}.values: must be non-empty for operator {operator}")
            continue
        if operator in ("Exists", "DoesNotExist") and raw_values:
            problems.append(f"{where}.values: must be empty for operator {operator}, got {show(raw_values)}")
            continue
        values = [_label_value(v, f"{where}.values[{i}]", problems) for i, v in enumerate(raw_values)]
        if key is not None and None not in values:
            expressions.append(Requirement(key, operator, frozenset(v for v in values if v is not None)))
    if len(problems) != before:
        return None
    return LabelSelector(tuple(sorted(labels)), tuple(expressions))


def parse_selectors(value: Any, path: str, problems: list[str]) -> tuple[LabelSelector, ...]:
    """A list of label selectors (absent or empty: select everything)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(f"{path}: must be a list of label selectors, got {show(value)}")
        return ()
    selectors = [_selector(item, f"{path}[{index}]", problems) for index, item in enumerate(value)]
    return tuple(selector for selector in selectors if selector is not None)
