"""ExaBGP command encoding and the desired/acknowledged diff."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bgpspeaker.diff import diff
from bgpspeaker.errors import CommandValueError
from bgpspeaker.exabgp.commands import announce_line, check_line, withdraw_line
from bgpspeaker.routes import UNKNOWN, Attributes, Prefix
from bgpspeaker.sessions import chunks

PEER = ipaddress.ip_address("10.0.0.1")
P1, P2, P3 = (ipaddress.ip_network(f"192.0.2.{i}/32") for i in (1, 2, 3))
V6 = ipaddress.ip_network("2001:db8::1/128")


def test_announce_line_is_one_bulk_command() -> None:
    """Bulk announce: neighbor-scoped, next-hop self, attributes, then the NLRI list."""
    line = announce_line(PEER, Attributes(communities=("64512:100",), med=10), [P1, P2])
    assert line == (
        "neighbor 10.0.0.1 announce attributes next-hop self community [64512:100] med 10 "
        "nlri 192.0.2.1/32 192.0.2.2/32"
    )


def test_withdraw_line() -> None:
    """Bulk withdraw, same shape."""
    assert withdraw_line(PEER, [V6]) == "neighbor 10.0.0.1 withdraw attributes next-hop self nlri 2001:db8::1/128"


def test_chunks_split_in_order() -> None:
    """Batches keep order and size."""
    assert [list(b) for b in chunks([P1, P2, P3], 2)] == [[P1, P2], [P3]]


@pytest.mark.parametrize("line", ["announce route 1.2.3.4/32\nshutdown", "x\r", "caf\u00e9", ""])
def test_check_line_refuses_anything_but_one_printable_line(line: str) -> None:
    """Control characters, non-ASCII and empty lines never reach ExaBGP."""
    with pytest.raises(CommandValueError):
        check_line(line)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"communities": ("1:2 shutdown",)},
        {"communities": ("70000:1",)},
        {"large_communities": ("1:2",)},
        {"large_communities": ("1:2:4294967296",)},
        {"med": -1},
        {"local_pref": 2**32},
        {"as_path_prepend": 17},
    ],
)
def test_attributes_reject_values_that_do_not_encode(kwargs: dict[str, object]) -> None:
    """Attribute values are range-checked again where they are encoded."""
    with pytest.raises(CommandValueError):
        announce_line(PEER, Attributes(**kwargs), [P1])  # type: ignore[arg-type]


def test_every_attribute_encodes_in_exabgp_syntax() -> None:
    """Large communities, local-pref, an explicit next hop and a prepend of our AS (plus ExaBGP's own copy)."""
    attributes = Attributes(
        communities=("64512:100", "no-export"),
        large_communities=("64512:1:1",),
        local_pref=200,
        as_path_prepend=2,
        next_hop=ipaddress.ip_address("fd00::2"),
    )
    assert announce_line(PEER, attributes, [V6], my_asn=64513) == (
        "neighbor 10.0.0.1 announce attributes next-hop fd00::2 community [64512:100 no-export]"
        " large-community [64512:1:1] local-preference 200 as-path [64513 64513 64513] nlri 2001:db8::1/128"
    )


def test_withdraw_keeps_an_explicit_next_hop() -> None:
    """ExaBGP refuses next-hop self for an IPv6 prefix on an IPv4 session, so the withdraw names it."""
    line = withdraw_line(PEER, [V6], next_hop=ipaddress.ip_address("fd00::2"))
    assert line == "neighbor 10.0.0.1 withdraw attributes next-hop fd00::2 nlri 2001:db8::1/128"


@pytest.mark.parametrize(
    ("hop", "prefix"), [("fd00::2", P1), ("10.0.0.2", V6)], ids=["ipv4-prefix-ipv6-hop", "ipv6-prefix-ipv4-hop"]
)
def test_a_next_hop_of_the_other_family_is_refused(hop: str, prefix: Prefix) -> None:
    """ExaBGP would mis-encode it (no RFC 8950): refused before it is written."""
    with pytest.raises(CommandValueError, match="not of the prefixes' family"):
        announce_line(PEER, Attributes(next_hop=ipaddress.ip_address(hop)), [prefix])


@given(st.lists(st.ip_addresses(), min_size=1, max_size=20))
def test_any_prefix_list_encodes_to_exactly_one_line(addresses: list[ipaddress.IPv4Address]) -> None:
    """Whatever the addresses, the command is one line holding each prefix once."""
    prefixes = [ipaddress.ip_network(a) for a in addresses]
    line = announce_line(PEER, Attributes(), prefixes)
    assert "\n" not in line and line.split(" nlri ", 1)[1].split(" ") == [str(p) for p in prefixes]


def test_diff_sends_only_the_difference() -> None:
    """New routes announce, stale ones withdraw, unchanged ones send nothing."""
    plain = Attributes()
    changes = diff({("a", P1): plain, ("a", P2): plain}, {("a", P2): plain, ("a", P3): plain})
    assert dict(changes.announces) == {("a", plain): [P1]}
    assert dict(changes.withdraws) == {"a": [P3]}


def test_diff_resends_changed_attributes_and_unknown_entries() -> None:
    """Changed attributes re-announce; UNKNOWN is re-sent either way."""
    old, new = Attributes(), Attributes(med=5)
    changes = diff({("a", P1): new, ("a", P2): old}, {("a", P1): old, ("a", P2): UNKNOWN, ("a", P3): UNKNOWN})
    assert dict(changes.announces) == {("a", new): [P1], ("a", old): [P2]}
    assert dict(changes.withdraws) == {"a": [P3]}


def test_diff_of_equal_states_is_empty() -> None:
    """Converged: nothing to send."""
    state = {("a", P1): Attributes()}
    assert not diff(state, dict(state))
