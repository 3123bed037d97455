"""Diff the desired routes against what ExaBGP acknowledged (pure).

State is a mapping ``RouteKey -> Attributes``. An acknowledged entry may be
``UNKNOWN``: a command was in flight when the API connection broke, so ExaBGP may or
may not hold the route. Unknown entries are always re-sent (announce if desired,
withdraw if not): both are no-ops in ExaBGP when already true.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from bgpspeaker.routes import Attributes, Prefix, RouteKey, Unknown, prefix_order

__all__ = ["Changes", "diff"]


@dataclasses.dataclass(frozen=True, slots=True)
class Changes:
    """What to send: announces grouped by (peer, attributes), withdraws by peer; sorted."""

    announces: Mapping[tuple[str, Attributes], list[Prefix]]
    withdraws: Mapping[str, list[Prefix]]

    def __bool__(self) -> bool:
        return bool(self.announces or self.withdraws)


def diff(desired: Mapping[RouteKey, Attributes], acked: Mapping[RouteKey, Attributes | Unknown]) -> Changes:
    """Only the difference: new or changed routes to announce, stale ones to withdraw."""
    announces: dict[tuple[str, Attributes], list[Prefix]] = {}
    withdraws: dict[str, list[Prefix]] = {}
    for key, attributes in desired.items():
        if acked.get(key) != attributes:
            announces.setdefault((key[0], attributes), []).append(key[1])
    for key in acked:
        if key not in desired:
            withdraws.setdefault(key[0], []).append(key[1])
    for prefixes in (*announces.values(), *withdraws.values()):
        prefixes.sort(key=prefix_order)
    return Changes(announces=announces, withdraws=withdraws)
