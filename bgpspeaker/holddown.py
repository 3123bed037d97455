"""Hold-down against churn (pure: the caller passes the clock).

During a rollout a Local-policy service's only local endpoint can disappear and come
back within seconds. With ``withdrawAfter`` a route that stops being wanted for such
an endpoint reason stays announced until it has been unwanted that long; with
``announceAfter`` a new route waits until it has been wanted that long. Every other
change (service deleted, IP removed, node excluded, a Cluster-policy service) is
applied at once. Both delays default to 0: today's behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bgpspeaker.config import HoldDownConfig
from bgpspeaker.routes import Attributes, RouteKey, Unknown

__all__ = ["HoldDown"]


class HoldDown:
    """Remembers since when each route has been wanted (or unwanted) and filters the desired set."""

    def __init__(self, config: HoldDownConfig) -> None:
        self.config = config
        self._wanted_since: dict[RouteKey, float] = {}
        self._unwanted_since: dict[RouteKey, float] = {}

    def apply(
        self,
        desired: Mapping[RouteKey, Attributes],
        acked: Mapping[RouteKey, Attributes | Unknown],
        *,
        now: float,
        may_delay_announce: Callable[[RouteKey], bool],
        may_delay_withdraw: Callable[[RouteKey], bool],
    ) -> tuple[dict[RouteKey, Attributes], float | None, list[RouteKey]]:
        """(the desired set to converge on now, when to look again, routes newly held up)."""
        announce_after = self.config.announce_after_s
        withdraw_after = self.config.withdraw_after_s
        effective = dict(desired)
        deadline: float | None = None
        newly_held: list[RouteKey] = []

        def soonest(at: float) -> None:
            nonlocal deadline
            deadline = at if deadline is None else min(deadline, at)

        wanted_since: dict[RouteKey, float] = {}
        if announce_after:
            for key in desired:
                if key in acked or not may_delay_announce(key):
                    continue
                since = self._wanted_since.get(key, now)
                wanted_since[key] = since
                if now - since < announce_after:
                    del effective[key]
                    soonest(since + announce_after)
        self._wanted_since = wanted_since

        unwanted_since: dict[RouteKey, float] = {}
        if withdraw_after:
            for key, attributes in acked.items():
                if key in desired or not isinstance(attributes, Attributes) or not may_delay_withdraw(key):
                    continue
                since = self._unwanted_since.get(key, now)
                unwanted_since[key] = since
                if now - since < withdraw_after:
                    if key not in self._unwanted_since:
                        newly_held.append(key)
                    effective[key] = attributes
                    soonest(since + withdraw_after)
        self._unwanted_since = unwanted_since
        return effective, deadline, newly_held
