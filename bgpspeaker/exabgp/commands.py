"""ExaBGP text-API command encoding (pure).

Every line is built from typed values (``ipaddress`` objects, ints) and then checked
once more: a line holds printable ASCII only, so no value can smuggle a newline and
turn one command into two.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bgpspeaker.config import MAX_PREPEND
from bgpspeaker.errors import CommandValueError
from bgpspeaker.routes import Attributes, IPAddress, Prefix
from bgpspeaker.values import U32_MAX, WELL_KNOWN_COMMUNITIES

__all__ = [
    "Attributes",
    "announce_line",
    "check_line",
    "encode_attributes",
    "eor_line",
    "withdraw_line",
]

_COMMUNITY = re.compile(r"^(\d{1,5}):(\d{1,5})$")
_LARGE = re.compile(r"^(\d{1,10}):(\d{1,10}):(\d{1,10})$")
_NAMED = frozenset(WELL_KNOWN_COMMUNITIES.values())
_PRINTABLE = re.compile(r"^[\x20-\x7e]+$")
_AS2_MAX = 65535
_AS_TRANS = 23456


def check_line(line: str) -> str:
    """Return ``line`` if it is exactly one printable-ASCII command; raise otherwise."""
    if not _PRINTABLE.match(line):
        raise CommandValueError(f"refusing a command line with control or non-ASCII characters: {line[:120]!r}")
    return line


def encode_attributes(attributes: Attributes, *, my_asn: int) -> str:
    """The attribute words of an announce command, next hop first.

    An explicit AS path is sent verbatim by ExaBGP, so a prepend spells out our AS
    ``1 + as_path_prepend`` times (the decision only sets a prepend on eBGP routes).
    """
    words = [f"next-hop {attributes.next_hop or 'self'}"]
    if attributes.communities:
        words.append(f"community [{' '.join(attributes.communities)}]")
    if attributes.large_communities:
        words.append(f"large-community [{' '.join(attributes.large_communities)}]")
    if attributes.med is not None:
        words.append(f"med {attributes.med}")
    if attributes.local_pref is not None:
        words.append(f"local-preference {attributes.local_pref}")
    if attributes.as_path_prepend:
        words.append(f"as-path [{' '.join([str(my_asn)] * (attributes.as_path_prepend + 1))}]")
    if attributes.link_bandwidth is not None:
        # Two-octet AS specific (RFC 10005): a four-octet ASN is written as AS_TRANS.
        asn = my_asn if 0 < my_asn <= _AS2_MAX else _AS_TRANS
        words.append(f"extended-community [bandwidth:{asn}:{attributes.link_bandwidth}]")
    return " ".join(words)


def announce_line(peer: IPAddress, attributes: Attributes, prefixes: Sequence[Prefix], *, my_asn: int = 0) -> str:
    """One bulk ``announce attributes ... nlri P...`` line for one peer."""
    _check_attributes(attributes)
    hop = attributes.next_hop
    if hop is not None and any(prefix.version != hop.version for prefix in prefixes):
        # ExaBGP 5.0.15 acks such a route "done" and, without the extended next hop
        # capability (RFC 8950, never configured here), sends an IPv4 prefix with an
        # IPv6 next hop as an IPv6 prefix of its bytes (FRR: c000:20a::/32 for 192.0.2.10/32).
        raise CommandValueError(f"next hop {hop} is not of the prefixes' family: {prefixes[0]} ...")
    nlri = " ".join(map(str, prefixes))
    return check_line(f"neighbor {peer} announce attributes {encode_attributes(attributes, my_asn=my_asn)} nlri {nlri}")


def withdraw_line(peer: IPAddress, prefixes: Sequence[Prefix], *, next_hop: IPAddress | None = None) -> str:
    """One bulk ``withdraw attributes ... nlri P...`` line for one peer.

    The next hop must be the one announced when it is explicit: ExaBGP refuses
    ``next-hop self`` for an IPv6 prefix on an IPv4 session."""
    nlri = " ".join(map(str, prefixes))
    return check_line(f"neighbor {peer} withdraw attributes next-hop {next_hop or 'self'} nlri {nlri}")


def eor_line(peer: IPAddress, family: str) -> str:
    """End-of-RIB for one family (``ipv4`` or ``ipv6``), sent when every route is queued."""
    if family not in ("ipv4", "ipv6"):
        raise CommandValueError(f"family: must be ipv4 or ipv6, got {family!r}")
    return check_line(f"neighbor {peer} announce eor {family} unicast")


def _check_attributes(attributes: Attributes) -> None:
    for community in attributes.communities:
        match = _COMMUNITY.match(community)
        if not (match and int(match[1]) <= 65535 and int(match[2]) <= 65535) and community not in _NAMED:
            raise CommandValueError(f"community: must be ASN:VALUE with both 0..65535, got {community!r}")
    for community in attributes.large_communities:
        match = _LARGE.match(community)
        if not match or any(int(part) > U32_MAX for part in match.groups()):
            raise CommandValueError(f"large community: must be GLOBAL:LOCAL1:LOCAL2, got {community!r}")
    for name, value in (("med", attributes.med), ("local_pref", attributes.local_pref)):
        if value is not None and (isinstance(value, bool) or not 0 <= value <= U32_MAX):
            raise CommandValueError(f"{name}: must be 0..4294967295, got {value!r}")
    bandwidth = attributes.link_bandwidth
    if bandwidth is not None and (isinstance(bandwidth, bool) or not 0 <= bandwidth <= U32_MAX):
        raise CommandValueError(f"link_bandwidth: must be 0..4294967295 bytes/s, got {bandwidth!r}")
    if not 0 <= attributes.as_path_prepend <= MAX_PREPEND:
        raise CommandValueError(f"as_path_prepend: must be 0..{MAX_PREPEND}, got {attributes.as_path_prepend!r}")
