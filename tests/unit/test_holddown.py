"""Hold-down (pure, with a fake clock passed in): delays only what it is allowed to delay."""

from __future__ import annotations

import ipaddress

from bgpspeaker.config import HoldDownConfig
from bgpspeaker.holddown import HoldDown
from bgpspeaker.routes import Attributes

KEY = ("tor-a", ipaddress.ip_network("192.0.2.1/32"))
PLAIN = Attributes()


def yes(_key: object) -> bool:
    return True


def no(_key: object) -> bool:
    return False


def test_defaults_change_nothing() -> None:
    """0/0: the desired set passes through untouched and nothing is scheduled."""
    hold = HoldDown(HoldDownConfig())
    assert hold.apply({KEY: PLAIN}, {}, now=0, may_delay_announce=yes, may_delay_withdraw=yes) == (
        {KEY: PLAIN},
        None,
        [],
    )
    assert hold.apply({}, {KEY: PLAIN}, now=0, may_delay_announce=yes, may_delay_withdraw=yes) == ({}, None, [])


def test_withdraw_after_keeps_the_route_until_unwanted_long_enough() -> None:
    """Unwanted at t=10: kept (deadline 13) at 10 and 12, withdrawn at 13; wanted again in between resets it."""
    hold = HoldDown(HoldDownConfig(withdraw_after_s=3))
    acked = {KEY: PLAIN}
    assert hold.apply({}, acked, now=10, may_delay_announce=no, may_delay_withdraw=yes) == ({KEY: PLAIN}, 13, [KEY])
    assert hold.apply({}, acked, now=12, may_delay_announce=no, may_delay_withdraw=yes) == ({KEY: PLAIN}, 13, [])
    assert hold.apply({KEY: PLAIN}, acked, now=12.5, may_delay_announce=no, may_delay_withdraw=yes)[0] == {KEY: PLAIN}
    assert hold.apply({}, acked, now=14, may_delay_announce=no, may_delay_withdraw=yes) == ({KEY: PLAIN}, 17, [KEY])
    assert hold.apply({}, acked, now=17, may_delay_announce=no, may_delay_withdraw=yes) == ({}, None, [])


def test_announce_after_waits_for_a_steady_want() -> None:
    """Wanted from t=0 with announceAfter 2: not sent at 0 or 1.9, sent at 2."""
    hold = HoldDown(HoldDownConfig(announce_after_s=2))
    assert hold.apply({KEY: PLAIN}, {}, now=0, may_delay_announce=yes, may_delay_withdraw=no) == ({}, 2, [])
    assert hold.apply({KEY: PLAIN}, {}, now=1.9, may_delay_announce=yes, may_delay_withdraw=no) == ({}, 2, [])
    assert hold.apply({KEY: PLAIN}, {}, now=2, may_delay_announce=yes, may_delay_withdraw=no) == (
        {KEY: PLAIN},
        None,
        [],
    )


def test_changes_it_may_not_delay_go_through() -> None:
    """A deleted service or a Cluster-policy VIP (the callbacks say no): immediate."""
    hold = HoldDown(HoldDownConfig(announce_after_s=5, withdraw_after_s=5))
    assert hold.apply({KEY: PLAIN}, {}, now=0, may_delay_announce=no, may_delay_withdraw=no) == ({KEY: PLAIN}, None, [])
    assert hold.apply({}, {KEY: PLAIN}, now=1, may_delay_announce=no, may_delay_withdraw=no) == ({}, None, [])
