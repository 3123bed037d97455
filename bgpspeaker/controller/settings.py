"""The ``controller:`` section of the SpeakerConfig: leader election timing (pure).

::

    controller:
      leaseDuration: 15s   # a standby takes over at most this long after the leader died
      renewDeadline: 10s   # a leader that could not renew for this long stops writing
      retryPeriod: 2s      # how often the leader renews and a standby tries to acquire

The defaults are client-go's (15 s, 10 s, 2 s). ``renewDeadline`` must be below
``leaseDuration``: the old leader stops writing before a standby may take over.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bgpspeaker.values import parse_duration, show

__all__ = ["CONTROLLER_KEYS", "ControllerConfig", "parse_controller"]

CONTROLLER_KEYS = frozenset({"leaseDuration", "renewDeadline", "retryPeriod"})


@dataclasses.dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Leader election timing of ``bgpspeaker controller``."""

    lease_duration_s: int = 15
    """How long a Lease nobody renews stays taken (client-go's default)."""
    renew_deadline_s: int = 10
    """A leader that has not renewed for this long stops writing (before the lease can pass on)."""
    retry_period_s: int = 2
    """Between renewals, and between a standby's attempts to acquire."""


def parse_controller(value: Any, path: str, problems: list[str]) -> ControllerConfig:
    """The section, defaults for what it leaves out; problems for bad values."""
    if value is None:
        return ControllerConfig()
    if not isinstance(value, Mapping):
        problems.append(f"{path}: must be a mapping with {', '.join(sorted(CONTROLLER_KEYS))}; got {show(value)}")
        return ControllerConfig()
    for key in sorted(set(value) - CONTROLLER_KEYS, key=str):
        problems.append(f"{path}.{show(key)[1:-1]}: unknown field (allowed: {', '.join(sorted(CONTROLLER_KEYS))})")
    default = ControllerConfig()
    before = len(problems)
    lease = parse_duration(value.get("leaseDuration", default.lease_duration_s), f"{path}.leaseDuration", problems)
    renew = parse_duration(value.get("renewDeadline", default.renew_deadline_s), f"{path}.renewDeadline", problems)
    retry = parse_duration(value.get("retryPeriod", default.retry_period_s), f"{path}.retryPeriod", problems)
    if len(problems) != before or lease is None or renew is None or retry is None:
        return default
    if not 2 <= lease <= 3600:
        problems.append(f"{path}.leaseDuration: must be 2s..1h, got {show(value.get('leaseDuration'))}")
    elif not 1 <= renew < lease:
        problems.append(
            f"{path}.renewDeadline: must be 1s..leaseDuration ({lease}s) exclusive,"
            f" got {show(value.get('renewDeadline', renew))}"
        )
    elif not 1 <= retry < renew:
        problems.append(
            f"{path}.retryPeriod: must be 1s..renewDeadline ({renew}s) exclusive,"
            f" got {show(value.get('retryPeriod', retry))}"
        )
    if len(problems) != before:
        return default
    return ControllerConfig(lease_duration_s=lease, renew_deadline_s=renew, retry_period_s=retry)
